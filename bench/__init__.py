"""`make bench`: verification and signing costs, and HTTP throughput of the three designs."""
