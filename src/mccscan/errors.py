"""The project's error types: what a user can act on, as opposed to a bug.

The CLI and the server catch `MccscanError` and print or return its message; anything
else is a bug and keeps its traceback. Each subclass also derives from the built-in type
callers already expect (ValueError, FileNotFoundError, KeyError).
"""

from __future__ import annotations


class MccscanError(Exception):
    """An error the user can fix; the message names the file, folder or option at fault."""


class InputError(MccscanError, ValueError):
    """A bad option or a malformed dataset."""


class MissingDataError(MccscanError, FileNotFoundError):
    """A file or folder the command needs is not there."""


class UnknownNameError(MccscanError, KeyError):
    """A name (architecture, source, …) that is not one of the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
