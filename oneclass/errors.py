"""User-facing errors: each one becomes a single line on stderr and exit code 2."""


class OneclassError(Exception):
    """A mistake in the user's input (file, flag, recipe key), not a bug."""

    exit_code = 2
