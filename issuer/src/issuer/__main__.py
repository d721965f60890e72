"""Run the issuer's command-line interface: `python -m issuer --help`."""

from issuer.cli import main

main()
