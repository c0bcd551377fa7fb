"""A study with a dead worker's trial (RUNNING, its heartbeat ageing), on a real SQLite file, nothing trained."""

from __future__ import annotations

import optuna

from hpsearch.search.orchestrator import Heartbeat, Orchestrator
from hpsearch.search.resolved import resolve
from hpsearch.search.spec import StudySpec

# Short enough that a trial left RUNNING goes stale within seconds.
QUICK = Heartbeat(interval=1, grace_period=2)


def two_point_orchestrator(tmp_path, name: str) -> Orchestrator:
    spec = StudySpec(models=("tfn_classifier",), sweep=("embed_dim:16,32",), task_options={"dataset_size": 100},
                     study_name=name, output_dir=str(tmp_path))
    return Orchestrator(resolve(spec), echo=lambda line: None, progress=False, heartbeat=QUICK)


def start_trial(study: optuna.Study) -> optuna.Trial:
    """Take a queued trial as a worker does, with one heartbeat, and leave it RUNNING (its worker "dies")."""
    trial = study.ask()
    for name, value in study._storage.get_trial(trial._trial_id).system_attrs["fixed_params"].items():
        # The fixed grid point becomes the trial's params, as in a real trial (the model, embed_dim).
        trial.suggest_categorical(name, [value]) if isinstance(value, str) else trial.suggest_int(name, 1, 1024)
    study._storage.record_heartbeat(trial._trial_id)
    return trial
