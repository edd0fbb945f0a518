"""The ``adconnect`` command line."""

from adconnect.cli.app import app, main

__all__ = ["app", "main"]
