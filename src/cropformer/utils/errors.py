"""One error type for problems the user can fix (bad config value, missing file, bad input)."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, reported as one readable line (no stack trace).

    The message must name the key, file or value and say what to do.
    """


class Interrupted(Exception):  # noqa: N818 (not an error: the user stopped the run)
    """Ctrl-C caught by a task: the message says what was saved and how to resume.

    Reported at the command boundary as one ``interrupted: ...`` line (exit code 130).
    """
