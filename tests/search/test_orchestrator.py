"""The orchestrator's grid queue, on a real SQLite file (nothing is trained)."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from hpsearch.search.orchestrator import Orchestrator
from hpsearch.search.spec import StudySpec, resolve

SWEEP = ("embed_dim:16,32", "lr:1e-3,3e-3,1e-2,3e-2", "kernel_type:rbf,compact")


def queued_points(tmp_path, name: str, seed: int) -> tuple[list[dict], list[dict]]:
    spec = StudySpec(
        models=("tfn_classifier",),
        sweep=SWEEP,
        task_options={"dataset_size": 100},
        train={"seed": seed},
        study_name=name,
        output_dir=str(tmp_path),
    )
    resolved = resolve(spec)
    orchestrator = Orchestrator(resolved, echo=lambda line: None, progress=False)
    study, planned = orchestrator.create(None)
    assert planned == 16
    trials = sorted(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)), key=lambda t: t.number)
    orchestrator.storage.engine.dispose()
    return [t.system_attrs["fixed_params"] for t in trials], resolved.sweep.grid_points()


def test_grid_points_queue_once_each_in_an_order_seeded_by_seed(tmp_path):
    first, written = queued_points(tmp_path, "seed0", seed=0)
    again, _ = queued_points(tmp_path / "again", "seed0", seed=0)
    other, _ = queued_points(tmp_path, "seed1", seed=1)

    key = lambda point: sorted(point.items())  # noqa: E731
    assert sorted(first, key=key) == sorted(written, key=key)  # every point, once
    assert first == again  # the same seed, the same order
    assert first != written and other != first
    # The written order would start with 4 points of the smallest model and LR; a pruner's
    # first trials should not all come from one corner of the grid.
    assert {p["lr"] for p in first[:4]} != {1e-3}


def test_resuming_a_grid_queues_only_the_points_not_yet_run(tmp_path):
    _, written = queued_points(tmp_path, "resume", seed=0)
    storage = f"sqlite:///{tmp_path / 'hpsearch.db'}"
    study = optuna.load_study(study_name="resume", storage=storage)
    waiting = sorted(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)), key=lambda t: t.number)
    assert len(waiting) == len(written)
    again, _ = queued_points(tmp_path, "resume", seed=0)
    assert len(again) == len(written)  # the same points, not queued twice
