"""The study orchestrator: open the study, queue the work, run the trials."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from hpsearch.search.errors import UsageError
from hpsearch.search.objective import Objective
from hpsearch.search.samplers import make_pruner, make_sampler
from hpsearch.search.spec import ResolvedSpec, StudySpec
from hpsearch.storage.engine import open_optuna_storage
from hpsearch.storage.epoch_metrics import EpochMetricsTable
from hpsearch.storage.urls import mask_password, resolve_storage_url

SPEC_ATTR = "hpsearch.spec"


@dataclass(frozen=True)
class SearchOutcome:
    """What one ``Orchestrator.run`` did."""

    study: optuna.Study
    storage_url: str
    trials_run: int
    trials_failed: int


def open_study(url: str) -> Any:
    """An Optuna storage on ``url``; an unreachable database is a ``UsageError`` naming it."""
    import sqlalchemy.exc

    try:
        return open_optuna_storage(url)
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        raise UsageError(f"cannot open storage {mask_password(url)}: {mask_password(reason)}") from None


class Orchestrator:
    """Creates or loads the study for a ``ResolvedSpec`` and runs its trials."""

    def __init__(self, resolved: ResolvedSpec, echo: Callable[[str], None] = tqdm.write, progress: bool = True) -> None:
        self.resolved = resolved
        self.spec: StudySpec = resolved.spec
        self.storage_url = resolve_storage_url(self.spec.storage, self.spec.output_dir)
        self.echo = echo
        self.progress = progress

    def run(self) -> SearchOutcome:
        resolved, spec = self.resolved, self.spec
        Path(spec.output_dir).mkdir(parents=True, exist_ok=True)
        storage = open_study(self.storage_url)
        seed = resolved.train_config.seed
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            sampler=make_sampler(resolved.sampler, seed),
            pruner=make_pruner(spec.pruner, resolved.train_config.epochs),
            direction=resolved.direction,
            load_if_exists=True,
        )
        self._claim(study)
        n_trials = self._queue_grid(study) if resolved.sampler == "grid" else resolved.n_trials
        if resolved.sampler == "grid" and spec.n_trials is not None:
            n_trials = min(n_trials, spec.n_trials)
        if n_trials == 0:
            self.echo(f"Study {spec.name!r}: every grid point has already run; nothing to do.")
            return SearchOutcome(study, self.storage_url, 0, 0)

        epoch_table = EpochMetricsTable(self.storage_url)
        bar = tqdm(total=n_trials, desc=spec.name, unit="trial", disable=not self.progress)
        finished: list[TrialState] = []

        def on_trial_end(_study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            finished.append(trial.state)
            bar.update(1)

        try:
            study.optimize(
                Objective(resolved, epoch_table, self.echo),
                n_trials=n_trials,
                timeout=spec.timeout,
                catch=(Exception,),
                callbacks=[on_trial_end, self._stop_when_grid_done],
            )
        finally:
            bar.close()
            epoch_table.close()
        return SearchOutcome(study, self.storage_url, len(finished), finished.count(TrialState.FAIL))

    def _claim(self, study: optuna.Study) -> None:
        """Store the spec with a new study; refuse to resume one that holds another search."""
        stored = study.user_attrs.get(SPEC_ATTR)
        if stored is None:
            study.set_user_attr(SPEC_ATTR, self.spec.to_json())
            study.set_user_attr("hpsearch.metric", self.spec.metric)
            return
        previous = StudySpec.from_json(stored)
        if previous.identity() != self.spec.identity() or previous.metric != self.spec.metric:
            raise UsageError(
                f"study {self.spec.name!r} already holds a different search "
                f"(models {','.join(previous.models)}, sweep {' '.join(previous.sweep) or 'none'}, metric {previous.metric}); "
                "pass --study-name to start a new study"
            )

    def _queue_grid(self, study: optuna.Study) -> int:
        """Enqueue every grid point not yet finished, queued or running; return how many wait."""
        taken = []
        for trial in study.get_trials(deepcopy=False):
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
                taken.append(trial.params)
            elif trial.state == TrialState.WAITING:
                taken.append(trial.system_attrs.get("fixed_params", {}))
        waiting = sum(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False))
        for point in self.resolved.sweep.grid_points():
            if point not in taken:
                study.enqueue_trial(point)
                waiting += 1
        return waiting

    def _stop_when_grid_done(self, study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        # Another worker may have taken the last queued point; sampling past the grid would
        # run a point twice.
        if self.resolved.sampler == "grid" and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            study.stop()
