"""Checkpoints: the full training state after every epoch, the last and the best kept."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

LAST = "last.pt"
BEST = "best.pt"


class CheckpointStore:
    """Saves and loads training states in one directory (``last.pt`` and ``best.pt``).

    Writes go to a temporary file first and are renamed into place, so a crash mid-write
    leaves the previous checkpoint intact.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @property
    def last_path(self) -> Path:
        return self.directory / LAST

    @property
    def best_path(self) -> Path:
        return self.directory / BEST

    def save(self, state: dict[str, Any], is_best: bool) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / f".{LAST}.partial"
        torch.save(state, partial)
        os.replace(partial, self.last_path)
        if is_best:
            shutil.copyfile(self.last_path, self.best_path)
        return self.last_path

    def load_last(self) -> dict[str, Any] | None:
        """The last saved state, or None if there is none."""
        return load_checkpoint(self.last_path) if self.last_path.exists() else None


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers, no code."""
    return torch.load(path, map_location="cpu", weights_only=True)
