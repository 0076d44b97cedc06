"""Base class of every user-facing error in emologic.

``neural`` is the package everything else depends on, so the base lives here.
The CLI prints a ``UserError`` as one line (exit code 2), never a traceback;
anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error caused by the user's input, data or environment."""
