"""Run the issuer's command-line interface: `python -m issuer --help`."""

import os
from pathlib import Path

from issuer.cli import main
from issuer.settings import IssuerSettings
from shared import audit

# The operator's changes go to stderr as audit lines; on a terminal, to audit.log in the data directory.
data_dir = Path(os.environ.get("ISSUER_DATA_DIR") or IssuerSettings.data_dir)
audit.use_command_line("issuer-cli", terminal_trail=data_dir / "audit.log")
main()
