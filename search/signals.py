"""Graceful stops: the first SIGINT or SIGTERM fails the running trial cleanly, a second SIGINT exits."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any, Iterator


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by the first SIGINT or SIGTERM.

    A ``KeyboardInterrupt`` so that Optuna records the running trial as FAIL and stops the
    study, while ``catch=(Exception,)`` does not swallow it.
    """

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name

    @property
    def exit_code(self) -> int:
        return 128 + signal.Signals[self.signal_name].value


def interruption(error: BaseException) -> Interrupted | None:
    """The ``Interrupted`` that ``error`` is, or that was being raised when ``error`` was; else None.

    The handler raises wherever the main thread happens to be. Where that is inside code whose
    cleanup then fails (tqdm's write lock raised "cannot release un-acquired lock"), the interrupt
    arrives as that second error, with the interrupt as its context.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, Interrupted):
            return current
        seen.add(id(current))
        current = current.__context__
    return None


@contextlib.contextmanager
def graceful_interrupts() -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM raise ``Interrupted``; a second SIGINT exits at once."""
    received: list[str] = []

    def handle(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if received:
            if signum == signal.SIGINT:
                print("hpsearch: second interrupt; exiting now", file=sys.stderr, flush=True)
                os._exit(128 + signum)
            return
        received.append(name)
        raise Interrupted(name)

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
