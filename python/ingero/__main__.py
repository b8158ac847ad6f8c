"""`python -m ingero`: the same as the `ingero` command."""

from ingero.cli import main

main()
