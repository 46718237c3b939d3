"""The one exception type users see: its message is a single line that names the file or
key at fault and what was expected. The CLI prints it as ``edge: <message>`` and exits 2."""


class EdgeError(Exception):
    """A user-facing error with a one-line message."""
