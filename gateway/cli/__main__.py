"""`python -m gateway.cli` is `citynerve`."""

from gateway.cli import main

main()
