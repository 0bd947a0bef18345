"""The one exception type users see.

Every failure caused by the user's input (config, data, checkpoint, command line) is raised as a
`HopeError` with a one-line message; the CLI prints it and exits with status 2 instead of a traceback.
"""


class HopeError(Exception):
    """A user-facing error: the message is one line that says what is wrong and how to fix it."""
