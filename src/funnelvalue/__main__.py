"""`python -m funnelvalue` is the same as the `funnelvalue` command."""

from funnelvalue.cli import main

main()
