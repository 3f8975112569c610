"""User-facing errors: each one becomes a single line on stderr and a non-zero exit.

Exit statuses: 2 for a mistake in the user's input (file, flag, recipe key), 1 for a file
that could not be written (full disk, read-only or missing permission), 130 for Ctrl-C.
"""


class OneclassError(Exception):
    """A mistake in the user's input (file, flag, recipe key), not a bug."""

    exit_code = 2


class OutputError(OneclassError):
    """A file or folder could not be written: the input was fine, the destination was not."""

    exit_code = 1
