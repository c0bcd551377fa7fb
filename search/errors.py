"""The error a user can fix: printed as one line on stderr, exit code 2."""


class UsageError(Exception):
    """Bad input from the user; the message says what is wrong and how to fix it."""


EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
