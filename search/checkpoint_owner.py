"""Which study a checkpoint folder belongs to: a study's folder is named by its name alone, and
two databases may each hold a study of one name.

``OUTPUT_DIR/checkpoints/STUDY/study.json`` (and ``STUDY/study.json`` in an artifact store) names
the study that writes there by its uid (a user attribute drawn when the study was stored) and its
database. A study of the same name from another database is refused before it stores anything (it
would overwrite the first one's checkpoints, and ``load_model`` would hand back its weights for
the other's trials); one from the same database is the name's study deleted and begun again, which
takes the folder over, unless a copy of the deleted study (``optuna.copy_study`` keeps the uid)
still points into it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hpsearch.search.errors import UsageError
from hpsearch.search.trial import checkpoint_dir, study_folder
from hpsearch.storage.attributes import UID_ATTR
from hpsearch.storage.errors import DiskFullError
from hpsearch.storage.urls import absolute_storage_url, mask_password

if TYPE_CHECKING:
    import optuna

    from hpsearch.storage.artifacts import CheckpointArchive

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


def refuse_other_owner(owner: FolderOwner | None, place: str, study: str, uid: str | None, storage_url: str,
                       holder_of: Callable[[str], str | None] = lambda uid: None) -> None:
    """``UsageError`` where ``owner``, the study that ``place`` records, is another study than ``study`` (``uid``).

    ``uid`` is None for a study not stored yet. An owner from the same database with another uid
    is a study of that name deleted there, not refused, unless ``holder_of`` (the name of the
    study of this database that holds a uid) finds it under another name: a copy
    (``optuna.copy_study``), whose trials' checkpoints are still in that folder.
    """
    if owner is None or owner.uid == uid:
        return
    fix = "--artifacts URL (artifacts= in Python)" if "://" in place else "--output-dir DIR (output_dir= in Python)"
    if owner.storage != mask_password(storage_url):
        raise UsageError(f"{place} holds the checkpoints of another study named {study!r}, in {owner.storage}: pass {fix} "
                         "for this one, or --study-name NEW (study_name=), or delete that folder if its study is gone")
    holder = holder_of(owner.uid)
    if holder is not None:
        raise UsageError(f"{place} holds the checkpoints of study {holder!r} of this database (a copy of the study once "
                         f"named {study!r}): pass {fix} for this one, or --study-name NEW (study_name=)")


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
    owner = FolderOwner.read(folder)
    refuse_other_owner(owner, str(folder), study, uid, storage_url)
    if owner is None or owner.uid == uid:
        return None
    mine.write(folder, replace=True)
    return _taken_over(mine, str(folder))


def archived_owner(archive: CheckpointArchive, study: str) -> FolderOwner | None:
    """The owner that the study folder of ``archive`` (``--artifacts``) records, if any."""
    with tempfile.TemporaryDirectory(prefix="hpsearch-owner-") as scratch:
        if not archive.fetch(owner_key(study), Path(scratch) / OWNER_FILE):
            return None
        return FolderOwner.read(Path(scratch))


def claim_archived_folder(archive: CheckpointArchive, study: str, uid: str, storage_url: str) -> str | None:
    """``claim_checkpoint_folder`` for the study's folder in ``archive``.

    An object store has no create-if-absent that every store offers, so two databases' studies
    starting in the same second could both claim it; one started later is refused.
    """
    owner = archived_owner(archive, study)
    place = archive.uri(study_folder(study))
    refuse_other_owner(owner, place, study, uid, storage_url)
    if owner is not None and owner.uid == uid:
        return None
    mine = FolderOwner(study, uid, mask_password(storage_url))
    with tempfile.TemporaryDirectory(prefix="hpsearch-owner-") as scratch:
        mine.write(Path(scratch), replace=True)
        archive.upload(Path(scratch) / OWNER_FILE, owner_key(study))
    return None if owner is None else _taken_over(mine, place)


def owner_key(study: str) -> str:
    """The key of ``study``'s owner record in an artifact store, beside its trials' folders (``artifact_key``)."""
    return f"{study_folder(study)}/{OWNER_FILE}"


def _taken_over(mine: FolderOwner, place: str) -> str:
    return (f"Study {mine.study!r} began anew in {mine.storage} (a study of that name was deleted there): its checkpoints "
            f"in {place} are replaced as its trials run")


@dataclass(frozen=True)
class CheckpointPlaces:
    """Where a study's trials keep checkpoints: its folder under the output directory, and in ``artifacts``."""

    study: str
    folder: Path
    artifacts: str | None
    storage_url: str  # a SQLite file's path absolute: how another process reaches the database

    @classmethod
    def of(cls, study: str, output_dir: str, checkpoints: str, artifacts: str | None,
           storage_url: str) -> CheckpointPlaces | None:
        """The places of ``study``; None where its trials keep no checkpoints (``--checkpoints none``)."""
        if checkpoints == "none":
            return None
        return cls(study, checkpoint_dir(output_dir, study, 0).parent, artifacts, absolute_storage_url(storage_url))

    def refuse_taken(self, storage: optuna.storages.BaseStorage | None) -> None:
        """``UsageError`` where another study than the one of this name in ``storage`` (if any) owns a place.

        ``storage`` None: a database not made yet, which holds no study.
        """
        uid = None if storage is None else stored_uid(storage, self.study)
        owners = [(FolderOwner.read(self.folder), str(self.folder))]
        if self.artifacts:
            from hpsearch.storage.artifacts import CheckpointArchive

            archive = CheckpointArchive.open(self.artifacts)
            owners.append((archived_owner(archive, self.study), archive.uri(study_folder(self.study))))
        for owner, place in owners:
            refuse_other_owner(owner, place, self.study, uid, self.storage_url,
                               lambda held: None if storage is None else _holder(storage, held))

    def claim(self, uid: str, archive: CheckpointArchive | None) -> list[str]:
        """Record the study (``uid``) as the owner of each place; the notes of places taken over from a deleted study."""
        notes = [claim_checkpoint_folder(self.folder, self.study, uid, self.storage_url)]
        if archive is not None:
            notes.append(claim_archived_folder(archive, self.study, uid, self.storage_url))
        return [note for note in notes if note is not None]


def stored_uid(storage: optuna.storages.BaseStorage, study: str) -> str | None:
    """The uid of the study named ``study`` in ``storage``; None where there is none (or it predates uids)."""
    try:
        return storage.get_study_user_attrs(storage.get_study_id_from_name(study)).get(UID_ATTR)
    except KeyError:
        return None


def _holder(storage: optuna.storages.BaseStorage, uid: str) -> str | None:
    """The name of the study in ``storage`` whose uid is ``uid``, if any."""
    import optuna

    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    return next((summary.study_name for summary in summaries if summary.user_attrs.get(UID_ATTR) == uid), None)


def check_checkpoint_owner(owner: FolderOwner | None, place: str, study: str, uid: str | None) -> None:
    """``UsageError`` where ``place`` records another study (``owner``) than ``study`` (``uid``) as its owner."""
    if owner is not None and uid is not None and owner.uid != uid:
        raise UsageError(f"the checkpoints of study {study!r} were overwritten: {place} now holds those of study "
                         f"{owner.study!r} (in {owner.storage})")
