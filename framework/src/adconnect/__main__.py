"""``python -m adconnect``: the same as the ``adconnect`` command."""

from adconnect.cli import main

main()
