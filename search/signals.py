"""Graceful stops: the first SIGINT or SIGTERM fails the running trial cleanly, a second SIGINT exits.

A worker treats SIGTERM as preemption instead (``Preemption``): the trial stops at a step or
epoch boundary and is handed back to the queue, so that the next worker resumes it at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

# A preempted worker's exit code: a process ended by SIGTERM, as a shell reports it. A scheduler
# reads it as "stopped, run me again" (see the README's "Preemption"); 0 means the work is done.
EXIT_PREEMPTED = 128 + signal.SIGTERM.value


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
    arrives as that second error, with the interrupt as its context. A plain ``KeyboardInterrupt``
    (Python's own SIGINT handler: a notebook's interrupt, a ``search()`` from a script) is SIGINT's.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, Interrupted):
            return current
        if isinstance(current, KeyboardInterrupt):
            return Interrupted("SIGINT")
        seen.add(id(current))
        current = current.__context__
    return None


class Preempted(Exception):
    """Raised at a step or epoch boundary of a trial whose worker was asked to stop (SIGTERM).

    An ``Exception``: Optuna records the trial as FAIL and its loop goes on to the callbacks,
    which stop the study; the objective has queued the trial's retry by then.
    """

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"preempted by {signal_name}")
        self.signal_name = signal_name


class Preemption:
    """A worker's stop request: when it came, and how long training may go on to reach a checkpoint.

    After the request, training continues up to ``grace`` seconds to finish its epoch, whose
    checkpoint is then saved, and stops there; an epoch that cannot end within the grace is
    stopped at the next optimizer step, and the trial resumes from the previous epoch's checkpoint.
    """

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.signal_name: str | None = None
        self.since: float | None = None

    def request(self, signal_name: str) -> None:
        """Ask the worker to stop; a repeated request changes nothing."""
        if self.since is None:
            self.signal_name, self.since = signal_name, time.monotonic()

    @property
    def requested(self) -> bool:
        return self.since is not None

    def deadline(self) -> float | None:
        """The ``time.monotonic()`` past which nothing waits any more (the database included); None before a request."""
        return None if self.since is None else self.since + self.grace

    def check(self, at_epoch_end: bool = False) -> None:
        """``Preempted`` if a request came and this boundary is where to stop: an epoch's end, or any step past the grace."""
        if self.since is None:
            return
        if at_epoch_end or time.monotonic() - self.since >= self.grace:
            raise Preempted(self.signal_name or "SIGTERM")


@contextlib.contextmanager
def graceful_interrupts(preemption: Preemption | None = None) -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM raise ``Interrupted``; a second SIGINT exits at once.

    With ``preemption``, SIGTERM raises nothing: it makes the request, and the worker stops at
    the next boundary (``Preemption.check``).
    """
    received: list[str] = []

    def handle(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if preemption is not None and signum == signal.SIGTERM:
            # No print here: a handler that writes while the main thread writes raises "reentrant call".
            preemption.request(name)
            return
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


class ServerStopped(Exception):
    """Raised in the main thread by SIGTERM while a server runs under ``sigterm_stops_server``."""


@contextlib.contextmanager
def sigterm_stops_server() -> Iterator[None]:
    """Make SIGTERM end a server (``hpsearch dashboard``, ``hpsearch proxy``) as Ctrl-C does.

    Kubernetes, Slurm and systemd stop a server with SIGTERM. Only the main thread may set
    handlers; elsewhere (a server started from a test's thread) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise ServerStopped

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
