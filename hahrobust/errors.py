"""One exception type for problems the user can fix: the CLI prints its message on one line and exits 2."""


class HahrobustError(Exception):
    """Bad input or an unusable environment, described in one line that names the problem."""

    exit_code: int = 2
