"""Which study a checkpoint folder belongs to: a study's folder is named by its name alone, and
two databases may each hold a study of one name.

``OUTPUT_DIR/checkpoints/STUDY/study.json`` names the study that writes there by its uid (a user
attribute drawn when the study was stored) and its database. A study of the same name from
another database is refused before it trains a trial (it would overwrite the first one's
checkpoints, and ``load_model`` would hand back its weights for the other's trials); one from
the same database is the name's study deleted and begun again, whose files it takes over.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hpsearch.search.errors import UsageError
from hpsearch.storage.errors import DiskFullError
from hpsearch.storage.urls import mask_password

OWNER_FILE = "study.json"


@dataclass(frozen=True)
class FolderOwner:
    """The study a checkpoint folder's ``study.json`` names."""

    study: str
    uid: str
    storage: str

    @classmethod
    def read(cls, folder: Path) -> FolderOwner | None:
        """The owner ``folder`` records; None where it records none (a folder of an earlier hpsearch, or unreadable)."""
        try:
            stored = json.loads((folder / OWNER_FILE).read_text())
            return cls(str(stored["study"]), str(stored["uid"]), str(stored["storage"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, folder: Path, replace: bool) -> bool:
        """Record this owner in ``folder``; False where another process recorded one first (and ``replace`` is off)."""
        folder.mkdir(parents=True, exist_ok=True)
        handle, scratch = tempfile.mkstemp(dir=folder, prefix=f".{OWNER_FILE}.", suffix=".partial")
        try:
            with os.fdopen(handle, "w") as out:
                json.dump({"study": self.study, "uid": self.uid, "storage": self.storage}, out)
            if replace:
                os.replace(scratch, folder / OWNER_FILE)
                return True
            try:
                # A link appears whole or not at all: of workers starting at once, one records its study.
                os.link(scratch, folder / OWNER_FILE)
                return True
            except FileExistsError:
                return False
        finally:
            with contextlib.suppress(OSError):
                os.unlink(scratch)


def refuse_other_owner(folder: Path, study: str, uid: str | None, storage_url: str) -> FolderOwner | None:
    """``UsageError`` where another database's study named ``study`` owns ``folder``; else its owner, if any.

    ``uid`` is None for a study not stored yet. An owner from the same database with another uid
    is a study of that name deleted there: not refused.
    """
    owner = FolderOwner.read(folder)
    if owner is not None and owner.uid != uid and owner.storage != mask_password(storage_url):
        raise UsageError(
            f"{folder} holds the checkpoints of another study named {study!r}, in {owner.storage}: pass --output-dir "
            "DIR (output_dir= in Python) for this one, or --study-name NEW, or delete that folder if its study is gone"
        )
    return owner


def claim_checkpoint_folder(folder: Path, study: str, uid: str, storage_url: str) -> str | None:
    """Record ``study`` as ``folder``'s owner, or refuse (``refuse_other_owner``).

    Returns a note where it took over the folder of a deleted study of the same database.
    """
    mine = FolderOwner(study, uid, mask_password(storage_url))
    try:
        if mine.write(folder, replace=False):
            return None
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise DiskFullError(str(folder), "recording which study writes its checkpoints there") from None
        raise
    owner = refuse_other_owner(folder, study, uid, storage_url)
    if owner is None or owner.uid == uid:
        return None
    mine.write(folder, replace=True)
    return (f"Study {study!r} began anew in {mine.storage} (a study of that name was deleted there): its checkpoints "
            f"in {folder} are replaced as its trials run")


def check_checkpoint_owner(folder: Path, study: str, uid: str | None) -> None:
    """``UsageError`` where ``folder`` records another study than ``study`` (``uid``) as its owner."""
    owner = FolderOwner.read(folder)
    if owner is not None and uid is not None and owner.uid != uid:
        raise UsageError(f"{folder} now holds the checkpoints of another study named {study!r} (in {owner.storage}), "
                         "which overwrote this one's")
