"""The exit statuses of ``hahrobust`` and the exception type for problems the user can fix.

Every status means one thing, so CI can tell them apart (``hahrobust --help`` lists them, from :data:`EXIT_STATUSES`).
"""

#: Success.
EXIT_OK = 0
#: ``hahrobust check`` found a regression.
EXIT_REGRESSION = 1
#: Bad input or an unusable environment (a :class:`HahrobustError`): the user can fix it.
EXIT_BAD_INPUT = 2
#: An adversarial example failed verification: a defect in the toolkit (or a tampered file), never a user error.
EXIT_VERIFICATION = 3
#: Any other exception: an internal error; the traceback goes to a file named in the one-line message.
EXIT_INTERNAL = 4
#: Interrupted (Ctrl-C); finished work is saved.
EXIT_INTERRUPTED = 130

EXIT_STATUSES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_REGRESSION: "check found a regression",
    EXIT_BAD_INPUT: "bad input",
    EXIT_VERIFICATION: "an adversarial example failed verification (a toolkit defect)",
    EXIT_INTERNAL: "internal error (traceback saved to a file named in the message)",
    EXIT_INTERRUPTED: "interrupted",
}


class HahrobustError(Exception):
    """Bad input or an unusable environment, described in one line that names the problem."""

    exit_code: int = EXIT_BAD_INPUT
