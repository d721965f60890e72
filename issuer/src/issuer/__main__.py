"""Run the issuer's command-line interface: `python -m issuer --help`."""

from issuer.cli import main
from shared import audit

audit.use_command_line("issuer-cli")  # the operator's changes go to stderr as audit lines
main()
