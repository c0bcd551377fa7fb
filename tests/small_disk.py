"""A real full disk for tests: a 2 MiB tmpfs mounted in the test's folder, filled and freed on demand.

Needs root and a kernel that allows the mount (a container may refuse it); where the mount
fails, ``small_disk`` skips with the reason (fails under ``$CI``).
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

FILLER = ".filler"


class SmallDisk:
    """A tmpfs at ``path``: ``fill`` takes every free byte, ``free`` gives them back."""

    def __init__(self, path: Path, size: str = "2m") -> None:
        path.mkdir(parents=True, exist_ok=True)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=False,
                                 capture_output=True, text=True)
        if mounted.returncode != 0:
            reason = f"a full disk needs a tmpfs mount, which this machine refuses: {mounted.stderr.strip()}"
            if os.environ.get("CI"):
                pytest.fail(f"CI is set but {reason}")
            pytest.skip(reason)
        self.path = path

    def fill(self) -> None:
        """Write a file until the disk is full: the next write of any size fails with ENOSPC."""
        with open(self.path / FILLER, "ab", buffering=0) as filler:
            chunk = b"\0" * 4096
            try:
                while True:
                    filler.write(chunk)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
            try:  # the last partial page
                while True:
                    filler.write(b"\0")
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise

    def free(self) -> None:
        (self.path / FILLER).unlink(missing_ok=True)

    def partial_files(self) -> list[Path]:
        """The ``.partial`` files a checkpoint save left behind (there should be none)."""
        return sorted(self.path.rglob("*.partial"))

    def unmount(self) -> None:
        subprocess.run(["umount", "--lazy", str(self.path)], check=False, capture_output=True)
