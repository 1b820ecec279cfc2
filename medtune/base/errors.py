"""The base of every error a user can fix; the CLI prints it as one line, no traceback."""


class UserError(RuntimeError):
    """Something about the input, the run directory or the environment that the user must change."""


class RecipeError(UserError, ValueError):
    """A recipe a user can fix; ``str()`` is one line per problem, ``problems`` the list.

    A `UserError` (the CLI prints each problem as its own ``medtune: error:``
    line, exit code 2) and a `ValueError` (what a bad value is).
    """

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def error_lines(err: UserError) -> str:
    """`err` as every medtune entry point prints it: ``medtune: error: `` before each problem
    (a `RecipeError` is one line per problem, any other `UserError` one line)."""
    problems = err.problems if isinstance(err, RecipeError) else [str(err)]
    return "\n".join(f"medtune: error: {p}" for p in problems)
