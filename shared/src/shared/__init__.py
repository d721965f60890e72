"""Code shared by the jwt-split services: settings, logging, JOSE helpers and errors."""
