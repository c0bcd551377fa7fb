"""Checkpoints: the full training state after every epoch; the last, the one before it and the best kept."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

LAST = "last.pt"
PREVIOUS = "prev.pt"
BEST = "best.pt"
# The suffix of a file being written, renamed into place only once complete.
PARTIAL = ".partial"
# What ``Trainer._state`` writes; a file without these keys is not a training checkpoint.
STATE_KEYS = ("model", "optimizer", "scaler", "rng", "guard", "progress")


class ForeignCheckpoint(ValueError):
    """A file that loads but holds no training state for this model."""


class CheckpointStore:
    """Saves and loads training states in one directory: ``last.pt``, ``prev.pt`` and ``best.pt``.

    ``keep`` says which: ``all``; ``last`` (``last.pt`` and ``prev.pt``, what a resume needs);
    ``best`` (``best.pt`` alone, what ``load_model`` loads).

    A save writes a temporary file and fsyncs it; only then does the old ``last.pt`` become
    ``prev.pt`` (a hard link renamed into place, so ``last.pt`` never goes missing) and the new
    file ``last.pt``, and the directory is fsynced. A crash or signal at any point leaves a
    complete ``last.pt``, the old one or the new.
    """

    def __init__(self, directory: str | os.PathLike[str], keep: str = "all") -> None:
        self.directory = Path(directory)
        self.keep = keep

    @property
    def last_path(self) -> Path:
        return self.directory / LAST

    @property
    def previous_path(self) -> Path:
        return self.directory / PREVIOUS

    @property
    def best_path(self) -> Path:
        return self.directory / BEST

    def save(self, state: dict[str, Any], is_best: bool) -> Path | None:
        """Save ``state``; the path of ``last.pt`` (``best.pt`` when only it is kept, None if not written).

        A save that fails (a full disk, a signal) removes its temporary files and raises: the
        folder keeps the complete files it had, and a retry finds no half-written file to skip.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._partials_removed_on_failure():
            return self._save(state, is_best)

    def adopt(self, source: str | os.PathLike[str], best_only: bool = False) -> list[Path]:
        """Copy the files that ``keep`` asks for (``best.pt`` alone with ``best_only``) from another trial's folder ``source``.

        For a trial that takes over one whose every epoch is done: its own folder then holds the
        model it reports. For a trial that resumes another: the best epoch may be behind it, and
        its ``best.pt`` is then the other's. Each file lands complete or not at all, as a save's do.
        Returns the paths written.
        """
        wanted = {"all": (LAST, PREVIOUS, BEST), "last": (LAST, PREVIOUS), "best": (BEST,)}.get(self.keep, ())
        wanted = tuple(name for name in wanted if name == BEST) if best_only else wanted
        self.directory.mkdir(parents=True, exist_ok=True)
        written = []
        with self._partials_removed_on_failure():
            for name in wanted:
                original = Path(source) / name
                if original.exists():
                    partial = self.directory / f".{name}{PARTIAL}"
                    _write_synced(partial, lambda f, original=original: _copy_into(original, f))
                    os.replace(partial, self.directory / name)
                    written.append(self.directory / name)
            _fsync_directory(self.directory)
        return written

    @contextlib.contextmanager
    def _partials_removed_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            for partial in self.directory.glob(f".*{PARTIAL}"):
                partial.unlink(missing_ok=True)
            raise

    def _save(self, state: dict[str, Any], is_best: bool) -> Path | None:
        if self.keep == "best":
            if not is_best:
                return None
            best_partial = self.directory / f".{BEST}{PARTIAL}"
            _write_synced(best_partial, lambda f: torch.save(state, f))
            os.replace(best_partial, self.best_path)
            _fsync_directory(self.directory)
            return self.best_path
        partial = self.directory / f".{LAST}{PARTIAL}"
        _write_synced(partial, lambda f: torch.save(state, f))
        if self.last_path.exists():
            linked = self.directory / f".{PREVIOUS}{PARTIAL}"
            linked.unlink(missing_ok=True)
            try:
                os.link(self.last_path, linked)
            except OSError:  # a filesystem without hard links
                shutil.copyfile(self.last_path, linked)
            os.replace(linked, self.previous_path)
        os.replace(partial, self.last_path)
        if is_best and self.keep == "all":
            best_partial = self.directory / f".{BEST}{PARTIAL}"
            _write_synced(best_partial, lambda f: _copy_into(self.last_path, f))
            os.replace(best_partial, self.best_path)
        _fsync_directory(self.directory)
        return self.last_path

    def candidates(self) -> list[Path]:
        """The files a resume tries, newest first."""
        return [self.last_path, self.previous_path]

    def load_last(self) -> dict[str, Any] | None:
        """The newest readable state (``last.pt``, else ``prev.pt``), or None if there is none."""
        return first_readable(self.candidates()).state


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers, no code."""
    return torch.load(path, map_location="cpu", weights_only=True)


@dataclass(frozen=True)
class Unreadable:
    """A checkpoint file that could not be used, and why."""

    path: Path
    cause: str

    def __str__(self) -> str:
        return f"{self.path}: {self.cause}"


@dataclass
class Readable:
    """The outcome of ``first_readable``: the state found (if any), and the files passed over."""

    path: Path | None = None
    state: dict[str, Any] | None = None
    skipped: list[Unreadable] = field(default_factory=list)


def first_readable(
    paths: Iterable[str | os.PathLike[str]], check: Callable[[dict[str, Any]], None] | None = None
) -> Readable:
    """Load the first of ``paths`` that exists, loads and passes ``check`` (which raises to refuse it).

    Missing files are passed over silently (a trial killed before its first epoch has none);
    each unreadable one is listed in ``skipped`` with its cause.
    """
    found = Readable()
    for candidate in map(Path, paths):
        if not candidate.exists():
            continue
        try:
            state = load_checkpoint(candidate)
            if check is not None:
                check(state)
        except Exception as error:  # noqa: BLE001 - any failure to read means "use the one before"
            found.skipped.append(Unreadable(candidate, describe_failure(candidate, error)))
            continue
        found.path, found.state = candidate, state
        return found
    return found


def describe_failure(path: Path, error: BaseException) -> str:
    """Why a checkpoint could not be used, in one line (an empty file's ``EOFError`` says nothing)."""
    size = path.stat().st_size if path.exists() else None
    if size == 0:
        return "empty file (0 bytes)"
    if isinstance(error, ForeignCheckpoint):
        return str(error)
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    cause = f"{type(error).__name__}: {message}" if message else type(error).__name__
    # The size tells a truncated file from a corrupt one.
    return cause if size is None else f"{cause} ({size} bytes)"


def check_training_state(state: Any, model_state: Mapping[str, torch.Tensor] | None = None) -> None:
    """Raise ``ForeignCheckpoint`` unless ``state`` is a trainer checkpoint, of a model shaped as ``model_state``."""
    if not isinstance(state, dict):
        raise ForeignCheckpoint(f"not a training checkpoint (holds a {type(state).__name__})")
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise ForeignCheckpoint(f"not a training checkpoint (no {', '.join(missing)})")
    if model_state is not None:
        saved = {k: tuple(v.shape) for k, v in state["model"].items()}
        expected = {k: tuple(v.shape) for k, v in model_state.items()}
        if saved != expected:
            differing = sorted({k for k in saved.keys() | expected.keys() if saved.get(k) != expected.get(k)})
            raise ForeignCheckpoint(
                f"checkpoint of another model ({len(differing)} tensors differ, e.g. {differing[0]})"
            )


def _write_synced(path: Path, write: Callable[[Any], None]) -> None:
    with open(path, "wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())


def _copy_into(source: Path, destination: Any) -> None:
    with open(source, "rb") as file:
        shutil.copyfileobj(file, destination)


def _fsync_directory(directory: Path) -> None:
    """Make the renames durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
