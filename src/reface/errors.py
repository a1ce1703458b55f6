"""The one user-facing error type; cli.py turns it into a one-line message and exit code 2."""


class RefaceError(ValueError):
    """A problem with the user's input or files that the user can fix (not a bug in reface)."""
