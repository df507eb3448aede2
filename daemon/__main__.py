"""`python -m daemon` is `qa-daemon`."""

from daemon.cli import main

main()
