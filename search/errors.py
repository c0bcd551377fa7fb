"""The error a user can fix: printed as one line on stderr, exit code 2."""

from hpsearch.models.registry import did_you_mean

__all__ = ["EXIT_DISK_FULL", "EXIT_OK", "EXIT_RUN_FAILED", "EXIT_USAGE", "UsageError", "did_you_mean"]


class UsageError(Exception):
    """Bad input from the user; the message says what is wrong and how to fix it."""


EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
# A disk hpsearch writes to is full (sysexits.h's EX_IOERR): free space, then start the worker again.
# Not 2, which promises that nothing was written; not 1, which a retry loop may take for a bad trial.
EXIT_DISK_FULL = 74
