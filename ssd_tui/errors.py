"""The one error type users see: a precise, one-line message, never a traceback."""


class SSDError(Exception):
    """A problem with the user's input or environment, reported as one line.

    The CLI catches it, prints ``error: <message>`` and exits with status 2.
    """


class ConfigChangedError(SSDError):
    """A run was resumed with a config that differs from the one it started with."""
