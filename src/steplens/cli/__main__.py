"""`python -m steplens.cli ...` runs the `steplens` command."""

from . import main

main()
