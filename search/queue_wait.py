"""``wait_for_queue``: a worker whose queue is empty waits while another worker's trial runs."""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from hpsearch.storage.attributes import FAIL_REASON_ATTR

# How often a worker with an empty queue looks at the study while another worker's trial runs:
# two small reads and a stale-trial check, cheap next to the heartbeats it waits on.
POLL_SECONDS = 1.0
# Polls a waiting worker gives a trial it saw RUNNING, now FAIL, for its retry to be queued; at
# most this many, so a trial that gets no retry (out of retries) delays the exit by seconds only.
RETRY_SETTLE_POLLS = 5
# As many while such a trial has no fail_reason yet: the stale-trial callback writes it after it
# queued the retry, so the handover is still under way (a loaded proxy took longer than 5 polls).
RETRY_HANDOVER_POLLS = 60


def wait_for_queue(
    study: optuna.Study,
    deadline: float | None,
    on_poll: Callable[[], None] | None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> bool:
    """Wait while another worker's trial runs; True as soon as a trial waits in the queue.

    Exiting on an empty queue would leave a dying worker's trial RUNNING for good: only a
    live worker can fail it once its heartbeat is older than the grace period, and queue its
    retry. So each poll fails stale trials (Optuna's retry callback queues the retry, which
    this worker then takes). False when nothing waits or runs (a trial just failed stale is given
    ``RETRY_SETTLE_POLLS`` polls for its retry to appear, ``RETRY_HANDOVER_POLLS`` while it has no
    ``fail_reason`` yet), at the ``deadline``, or once ``stop_requested``.
    """
    # Imported here: handover imports torch, which hpsearch --help (through the orchestrator) must not wait for.
    from hpsearch.search.handover import taken_over_by

    seen_running: set[int] = set()
    settled_polls = 0
    while not stop_requested():
        optuna.storages.fail_stale_trials(study)
        unfinished = study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
        states = {t.state for t in unfinished}
        if TrialState.WAITING in states:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if TrialState.RUNNING not in states:
            # A stale trial is told FAIL first and its retry queued after (by whichever process
            # failed it: a peer, or the gRPC proxy): between the two nothing waits or runs.
            if not seen_running:
                return False
            trials = study.get_trials(deepcopy=False)
            awaiting_retry = seen_running - {number for t in trials for number in taken_over_by(t)}
            failed = [t for t in trials if t.number in awaiting_retry and t.state == TrialState.FAIL]
            handing_over = any(FAIL_REASON_ATTR not in t.user_attrs for t in failed)
            if not failed or settled_polls >= (RETRY_HANDOVER_POLLS if handing_over else RETRY_SETTLE_POLLS):
                return False
            settled_polls += 1
        seen_running |= {t.number for t in unfinished if t.state == TrialState.RUNNING}
        if on_poll is not None:
            on_poll()
        time.sleep(POLL_SECONDS if deadline is None else min(POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))
    return False
