"""Errors shared by the command-line modules (kept below them so none imports another's)."""

from __future__ import annotations


class UsageError(Exception):
    """A bad command line: the CLI prints it and exits with status 2."""
