"""After faults, count what a study lost: epochs trained twice, epochs never stored, trials left RUNNING."""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from optuna.trial import TrialState

from hpsearch.search.checkpoint_sync import artifact_key
from hpsearch.search.errors import UsageError
from hpsearch.search.study_claim import load_spec
from hpsearch.search.trial import checkpoint_dir
from hpsearch.storage.artifacts import CheckpointArchive
from hpsearch.storage.attributes import EPOCHS_RUN_ATTR, SIMULATED_ATTR
from hpsearch.storage.database import StudyDatabase
from hpsearch.storage.epoch_metrics import EpochMetricsTable
from hpsearch.storage.urls import parse_storage_url
from hpsearch.trainers.checkpoints import LAST
from hpsearch.trainers.trainer import checkpoint_records

# The --checkpoints choices that keep each trial's last.pt, which the audit reads.
KEEPS_LAST = ("all", "last")

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class EpochAudit:
    """What a study's trials did to its configurations (a configuration is one set of parameters).

    ``trained_twice``: epochs of a configuration that more than one of its trials trained (a
    retry that resumed from the checkpoint trains none twice). ``lost``: epochs that a finished
    trial ran but the epoch table lacks. ``running``: trials still RUNNING. ``unreadable``: the
    checkpoints that could not be read (truncated or damaged by the incident), each with why;
    their trials' epochs are not counted as trained. ``missing``: the ``last.pt`` of trials that
    stored an epoch, found neither in the folder nor in the store (a wrong ``--output-dir`` or
    ``--artifacts``, or files deleted): their epochs could not be counted. ``counted``: False where
    the study keeps no ``last.pt`` (``--checkpoints best|none``), so nothing could be.
    """

    configurations: int
    finished: int
    trained_twice: int
    lost: int
    running: int
    unreadable: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    counted: bool = True

    @property
    def clean(self) -> bool:
        """Nothing trained twice or lost, no trial left RUNNING, every checkpoint there and readable."""
        return self.counted and not (self.trained_twice or self.lost or self.running or self.unreadable or self.missing)


def audit_epochs(storage_url: str, study_name: str, output_dir: str | None = None, artifacts: str | None = None) -> EpochAudit:
    """Audit study ``study_name`` from its trials, the epoch table and each trial's ``last.pt``.

    A trial trained the epochs in its last checkpoint after the one it resumed from
    (``resumed_from``); an epoch that no checkpoint holds was not finished, so not counted. A
    ``last.pt`` not under ``output_dir`` (default: the study's ``--output-dir``) is read from the
    artifact store: ``artifacts``, else the study's ``--artifacts`` (workers that shared no
    filesystem each kept their own files).
    """
    parse_storage_url(storage_url)  # a proxy's URL (it reads the epoch table) or a malformed one: one line, before any read
    with StudyDatabase.open_for_reading(storage_url) as database:  # a missing file or study: one line, nothing created
        study = database.load_study(study_name)
        trials = study.get_trials(deepcopy=False)
        if SIMULATED_ATTR in study.user_attrs:
            raise UsageError(f"study {study_name!r} was simulated (hpsearch simulate): it trained nothing, so there is nothing to audit")
        spec = load_spec(study)
    artifacts = artifacts or spec.artifacts
    output_dir = output_dir or spec.output_dir
    counted = spec.train.get("checkpoints", "all") in KEEPS_LAST
    archive = CheckpointArchive.open(artifacts) if artifacts else None
    table = EpochMetricsTable(storage_url)
    try:
        rows = table.frame(study_name)
    finally:
        table.close()
    stored = Counter(zip(rows["number"], rows["epoch"]))
    stored_epochs = Counter(rows["number"])
    trained: dict[tuple, Counter] = {}
    finished: set[tuple] = set()
    unreadable: list[str] = []
    lost = 0
    missing: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hpsearch-audit-") as scratch:  # what is fetched from the store
        for trial in trials:
            key = tuple(sorted(trial.params.items()))
            path = checkpoint_dir(output_dir, study_name, trial.number) / LAST
            if not path.exists() and archive is not None:
                fetched = Path(scratch) / f"trial-{trial.number}.pt"
                # What stops the store (no credentials, no such bucket, an outage) is an ArtifactStoreError: one line.
                path = fetched if archive.fetch(artifact_key(study_name, trial.number, LAST), fetched) else path
            if counted and not path.exists() and stored_epochs[trial.number]:
                where = f"{path}{f' or {archive.uri(artifact_key(study_name, trial.number, LAST))}' if archive else ''}"
                missing.append(f"trial {trial.number}: stored {stored_epochs[trial.number]} epochs, and {where} does not exist")
            if path.exists():
                resumed = trial.user_attrs.get("resumed_from", {}).get("epoch", 0)
                try:
                    records = checkpoint_records(path)
                except Exception as error:  # noqa: BLE001  whatever a damaged file makes torch.load raise: an audit reports it
                    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                    unreadable.append(f"trial {trial.number}: {path}: {reason}")
                else:
                    trained.setdefault(key, Counter()).update(r.epoch for r in records if r.epoch > resumed)
            if trial.state in FINISHED:
                finished.add(key)
                lost += sum(stored[(trial.number, epoch)] == 0 for epoch in range(1, trial.user_attrs.get(EPOCHS_RUN_ATTR, 0) + 1))
    return EpochAudit(
        configurations=len({tuple(sorted(t.params.items())) for t in trials}),
        finished=len(finished),
        trained_twice=sum(count - 1 for counts in trained.values() for count in counts.values() if count > 1),
        lost=lost,
        running=sum(t.state == TrialState.RUNNING for t in trials),
        unreadable=tuple(unreadable),
        missing=tuple(missing),
        counted=counted,
    )
