"""A trial's checkpoints in the study's artifact store (``--artifacts``): sent as they are written, fetched to resume.

Each trial has two objects, ``<prefix>/<study folder>/trial-<n>/last.pt`` and ``best.pt``, under
the same names as its local files (``checkpoint_dir``), so the store holds the last good
checkpoint and the best one, not one per epoch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.search.trial import checkpoint_dir, study_folder
from hpsearch.storage.artifacts import CheckpointArchive
from hpsearch.trainers.checkpoints import BEST, LAST, CheckpointStore, check_training_state, first_readable
from hpsearch.trainers.records import EpochRecord

if TYPE_CHECKING:
    from torch import nn

__all__ = ["CheckpointUploads", "ResumeCandidates", "ResumePoint", "artifact_key"]


def artifact_key(study_name: str, trial_number: int, filename: str) -> str:
    """The key of a trial's ``filename`` (``last.pt``, ``best.pt``) in the artifact store, below its prefix."""
    return f"{study_folder(study_name)}/trial-{trial_number}/{filename}"


class CheckpointUploads:
    """Sends one trial's ``last.pt`` and ``best.pt`` to the archive whenever they change, from a background thread.

    ``epoch_ended`` (a trainer callback; the epoch's checkpoint is on disk by then) only asks for
    an upload, so training does not wait on the store. The thread uploads one file at a time, each
    as it is when read: the store's copy only moves forward, and an upload asked for while
    another runs is folded into the next. ``flush`` waits until the files as they are now are
    stored, and raises what stopped that (``ArtifactStoreUnavailable`` after an outage past the
    archive's timeout); ``close`` flushes and ends the thread.
    """

    def __init__(self, archive: CheckpointArchive, directory: Path, study_name: str, trial_number: int) -> None:
        self.archive, self.directory = archive, directory
        self.keys = {name: artifact_key(study_name, trial_number, name) for name in (LAST, BEST)}
        self._sent: dict[str, tuple[int, int, int]] = {}
        self._wanted = self._busy = self._closed = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    @property
    def uri(self) -> str:
        """Where the trial's objects are: the folder of ``last.pt`` and ``best.pt`` in the store."""
        return self.archive.uri(self.keys[LAST].rpartition("/")[0])

    def epoch_ended(self, record: EpochRecord) -> None:
        """Ask for the epoch's checkpoint files to be sent."""
        del record
        self._ask()

    def flush(self) -> None:
        """Block until the checkpoint files as they are now are in the store; raise the error that prevented it."""
        self._ask()
        with self._changed:
            self._changed.wait_for(lambda: not self._wanted and not self._busy)
            if self._error is not None:
                raise self._error

    def close(self) -> BaseException | None:
        """Flush, end the thread, and return (not raise) what stopped the last upload, if anything did."""
        with self._changed:
            error = self._error
        if error is None:  # a flush that failed already waited out the store's timeout once
            try:
                self.flush()
            except Exception as failure:  # noqa: BLE001 - the caller reports it; the trial's own outcome stands
                error = failure
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join()
        return error

    def _ask(self) -> None:
        with self._changed:
            self._wanted = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._send_loop, name="checkpoint-uploads", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def _send_loop(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._wanted or self._closed)
                if not self._wanted:
                    return
                self._wanted, self._busy = False, True
            error: BaseException | None = None
            try:
                self._send_changed()
            except BaseException as failure:  # noqa: BLE001 - handed to flush(), in the training thread
                error = failure
            with self._changed:
                # A later upload that succeeds stores the newest files: nothing is lost any more.
                self._error, self._busy = error, False
                self._changed.notify_all()

    def _send_changed(self) -> None:
        for name, key in self.keys.items():
            path = self.directory / name
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # --checkpoints last keeps no best.pt; --checkpoints best no last.pt
            # A save renames a new file into place: a new inode, so a new signature.
            signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if self._sent.get(name) != signature:
                self.archive.upload(path, key)
                self._sent[name] = signature


class ResumeCandidates:
    """The checkpoint files a retry tries, newest first, fetched from the store where this machine has none.

    For each trial taken over (newest first): its local ``last.pt`` and ``prev.pt`` if this machine
    ran it; else its ``last.pt`` from the store, downloaded into its local folder only when the
    trials before it had nothing readable (with its ``best.pt``). ``shown`` names a file as a user
    should read it: the store's URL for a downloaded one.
    """

    def __init__(self, output_dir: str, study_name: str, numbers: Iterable[int], archive: CheckpointArchive | None) -> None:
        self.output_dir, self.study_name, self.archive = output_dir, study_name, archive
        self.numbers = sorted(set(numbers), reverse=True)
        self.fetched: dict[Path, str] = {}

    def __iter__(self) -> Iterator[Path]:
        for number in self.numbers:
            local = CheckpointStore(checkpoint_dir(self.output_dir, self.study_name, number))
            candidates = local.candidates()
            if self.archive is None or any(path.exists() for path in candidates):
                yield from candidates
                continue
            key = artifact_key(self.study_name, number, LAST)
            if self.archive.download(key, local.last_path):
                self.fetched[local.last_path] = self.archive.uri(key)
                # Beside it, the trial's best.pt: a retry keeps it as its own best until an epoch beats it.
                self.archive.download(artifact_key(self.study_name, number, BEST), local.best_path)
                yield local.last_path

    def shown(self, path: Path) -> str:
        return self.fetched.get(path, str(path))


@dataclass(frozen=True)
class ResumePoint:
    """Where a retry resumes: the checkpoint as a user should read its name, its training state and epoch records.

    ``fallback`` says which checkpoints could not be used and why, and where training starts
    instead; it is None when nothing was passed over. An empty point starts fresh.
    """

    where: str | None = None
    state: dict[str, Any] | None = None
    records: list[EpochRecord] = field(default_factory=list)
    fallback: str | None = None
    path: Path | None = None  # the file on this machine (``where`` may be the store's URL of it)

    @classmethod
    def first_readable(cls, candidates: ResumeCandidates, model: nn.Module) -> ResumePoint:
        """The first of ``candidates`` that reads as a training checkpoint of ``model``'s architecture."""
        expected = model.state_dict()
        parsed: list[EpochRecord] = []

        def check(state: dict) -> None:
            check_training_state(state, expected)
            parsed[:] = [EpochRecord(**r) for r in state["progress"]["records"]]

        found = first_readable(candidates, check)
        where = candidates.shown(found.path) if found.path is not None else None
        fallback = None
        if found.skipped:
            outcome = f"resumed from {where}" if where is not None else "started fresh from epoch 1"
            fallback = "; ".join(f"unreadable checkpoint {skipped}" for skipped in found.skipped) + f"; {outcome}"
        return cls(where, found.state, parsed if found.path is not None else [], fallback, found.path)
