"""``StorageError``: what the storage layer raises when a study database cannot be used as asked."""


class StorageError(ValueError):
    """The study database cannot be used as asked; ``str()`` is one line saying what is wrong and what to do.

    Every kind the user can act on derives from it (a malformed URL, a missing file, a damaged
    one, a server that does not answer when a command starts, an unknown study), so the CLI
    turns them all into one line and exit 2 in one place. An outage during a run is not one:
    that is ``DatabaseUnavailable``, a run-time failure.
    """


class StorageOpenError(StorageError):
    """The database did not answer, or refused, when it was opened."""
