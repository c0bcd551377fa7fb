"""The error a user can fix: printed as one line on stderr, exit code 2."""

import difflib
from collections.abc import Iterable


class UsageError(Exception):
    """Bad input from the user; the message says what is wrong and how to fix it."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the known name closest to a mistyped ``name``, else nothing."""
    known = list(known)
    # Case first: "ot" for "OT" or "FLOPs" for "flops" is no typo difflib would rank close.
    same = [k for k in known if k.lower() == name.lower()]
    close = same or difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
# A disk hpsearch writes to is full (sysexits.h's EX_IOERR): free space, then start the worker again.
# Not 2, which promises that nothing was written; not 1, which a retry loop may take for a bad trial.
EXIT_DISK_FULL = 74
