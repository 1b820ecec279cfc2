"""The base of every error a user can fix; the CLI prints it as one line, no traceback."""


class UserError(RuntimeError):
    """Something about the input, the run directory or the environment that the user must change."""
