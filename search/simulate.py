"""Simulated searches: trials whose epochs are read from a learning-curve benchmark instead of trained.

A simulated trial is sampled, recorded and pruned by the code a real search runs: the sampler
and pruner factories (``search/samplers.py``), ``SweepParam.suggest``, ``TrialRecording`` (epoch
rows, reports, the pruner's verdict, closing attributes) and a storage recorder. Only the fit
differs: each epoch's record comes from the benchmark's curve, and a simulated clock advances by
the benchmark's time for that epoch. N simulated workers take trials asynchronously, as real
workers would: whichever is free first asks the sampler for the next trial.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from hpsearch.search.convergence import ConvergenceStop
from hpsearch.search.errors import UsageError, did_you_mean
from hpsearch.search.goals import TIME_OBJECTIVE, Goal
from hpsearch.search.pareto import ParetoPruner
from hpsearch.search.quiet import quiet_optuna
from hpsearch.search.recording import TrialRecording
from hpsearch.search.samplers import (
    DATA_ENV,
    DEFAULT_PRUNER,
    DEFAULT_SAMPLER,
    NOT_SIMULATED,
    SAMPLERS,
    SIMULATED_PRUNERS,
    make_pruner,
    make_sampler,
    pruner_that_runs,
)
from hpsearch.search.sweep import SweepParam
from hpsearch.storage.attributes import METRIC_ATTR, PRUNE_REASON_ATTR, SIMULATED_ATTR, SIMULATED_SECONDS_ATTR
from hpsearch.storage.database import StudyDatabase
from hpsearch.storage.recorder import MemoryRecorder, TrialRecorder
from hpsearch.storage.urls import mask_password
from hpsearch.trainers.records import EpochRecord

BENCHMARKS = ("lcbench",)
# The protocol of the YAHPO Gym paper for lcbench (7 hyperparameters, 52 epochs):
# ceil(20·52 + sqrt(7)·52·40) epochs per run.
LCBENCH_BUDGET = math.ceil(20 * 52 + math.sqrt(7) * 52 * 40)
BUDGET_SPENT = "stopped: the simulated budget of {budget} epochs was spent"
# The objectives a simulated study may have, with their directions: lcbench's curves, and the
# simulated training time (``goals.TIME_OBJECTIVE``: the sum of the epochs' simulated seconds).
SIMULATED_OBJECTIVES = {
    "val_accuracy": "maximize",
    "val_balanced_accuracy": "maximize",
    "val_loss": "minimize",
    TIME_OBJECTIVE: "minimize",
}


@dataclass(frozen=True)
class FinishedTrial:
    """One simulated trial as it ended: when, after how much work, and its value(s) if it ran every epoch.

    ``value`` is its first objective's; ``values`` holds every objective's, in the study's order.
    """

    number: int
    epochs: int
    value: float | None
    spent: int  # epochs trained by every worker when it ended
    clock: float  # simulated seconds when it ended
    values: tuple[float, ...] = ()


@dataclass
class SimulationResult:
    """A finished simulation: its study, its trials in the order they ended, and what it cost.

    ``target_range`` is the benchmark's (min, max) of the first objective on the instance, which
    ``regret`` normalizes by (None where the benchmark has none for it).
    """

    study: optuna.Study
    finished: list[FinishedTrial]
    spent: int
    clock: float
    recorder: TrialRecorder
    converged: bool = False  # the convergence stop ended it before its budget or trials
    target_range: tuple[float, float] | None = None
    direction: str = "maximize"
    budget: int | None = None  # the epochs it could spend (None: bounded by its trials alone)

    def best(self, spent: float = math.inf) -> float | None:
        """The best first-objective value of the trials that ran every epoch, by the time ``spent`` epochs were trained."""
        values = [t.value for t in self.finished if t.value is not None and t.spent <= spent]
        if not values:
            return None
        return max(values) if self.direction == "maximize" else min(values)

    def regret(self, spent: float = math.inf) -> float | None:
        """The normalized regret of ``best(spent)``: 0 at the benchmark's best, 1 at its worst; None without both."""
        best = self.best(spent)
        if best is None or self.target_range is None:
            return None
        low, high = self.target_range
        return (high - best) / (high - low) if self.direction == "maximize" else (best - low) / (high - low)


@dataclass(order=True)
class _Running:
    due: float  # simulated time at which its next epoch ends
    order: int
    trial: optuna.Trial = field(compare=False)
    recording: TrialRecording = field(compare=False)
    curve: dict[str, np.ndarray] = field(compare=False)
    epoch: int = field(default=1, compare=False)


def load_benchmark(benchmark: str, instance: str, data_dir: str | Path) -> Any:
    """The benchmark's surrogate; ``UsageError`` for an unknown benchmark or instance, or a missing data folder."""
    if benchmark not in BENCHMARKS:
        raise UsageError(f"unknown benchmark {benchmark!r}; choose from {', '.join(BENCHMARKS)}")
    from hpsearch.trainers.lcbench import LCBenchSurrogate

    try:
        return LCBenchSurrogate(instance, data_dir)
    except FileNotFoundError as error:
        raise UsageError(f"{str(error).rstrip('.')}; pass --data with YAHPO Gym's data folder (yahpo_data)") from None
    except (ValueError, ImportError) as error:
        raise UsageError(str(error).rstrip(".")) from None


def space_params(surrogate: Any) -> tuple[SweepParam, ...]:
    """The benchmark's search space as sweep ranges, so trials suggest values as a real sweep's do."""
    return tuple(
        SweepParam(name, "int" if r.integer else "float", (), low=r.low, high=r.high, log=r.log)
        for name, r in surrogate.space.items()
    )


class CurveSimulation:
    """A search whose trials read their epochs from ``surrogate``'s learning curves.

    ``budget`` caps the epochs trained by all workers together (trials still running when it is
    spent end PRUNED, with a ``prune_reason`` that says so); ``n_trials`` caps the trials started;
    ``stop`` (``--stop-when-converged``) starts no trial once the complete ones have converged.
    ``objectives`` are the study's (``SIMULATED_OBJECTIVES``; default: maximize ``val_accuracy``);
    with several, the study is multi-objective, and its pruner ``pareto`` or ``none``.
    """

    def __init__(
        self,
        surrogate: Any,
        sampler: str,
        pruner: str,
        seed: int | None = 0,
        workers: int = 1,
        budget: int | None = LCBENCH_BUDGET,
        n_trials: int | None = None,
        study: optuna.Study | None = None,
        recorder: TrialRecorder | None = None,
        echo: Callable[[str], None] = lambda line: None,
        stop: ConvergenceStop | None = None,
        objectives: Sequence[Goal] = (Goal("val_accuracy", "maximize"),),
    ) -> None:
        if workers < 1:
            raise UsageError(f"--workers must be at least 1 (got {workers})")
        if budget is None and n_trials is None:
            raise UsageError("a simulation needs a budget of epochs or a number of trials")
        if stop is not None and len(objectives) > 1:
            raise UsageError("--stop-when-converged takes a single objective; a Pareto front has no one best to stop on")
        from hpsearch.trainers.lcbench import EPOCHS

        self.surrogate, self.sampler, self.epochs, self.goals = surrogate, sampler, EPOCHS, tuple(objectives)
        self.metric, self.direction = self.goals[0].name, self.goals[0].direction
        self.multi_objective = len(self.goals) > 1
        self.pruner = pruner_that_runs(pruner, sampler, self.multi_objective)
        # The curves have no warmup: a pruner may judge from the first epoch.
        self.pareto = ParetoPruner.for_study(self.pruner, self.goals, self.epochs, 0)
        self.workers, self.budget, self.n_trials, self.echo = workers, budget, n_trials, echo
        self.params = space_params(surrogate)
        directions = [goal.direction for goal in self.goals]
        self.study = study if study is not None else optuna.create_study(directions=directions)
        self.study.sampler = make_sampler(sampler, seed)
        self.study.pruner = make_pruner(self.pruner, self.epochs, 0, sampler)
        self.recorder = recorder if recorder is not None else MemoryRecorder()
        self.stop = stop

    def run(self, on_progress: Callable[[int], None] | None = None) -> SimulationResult:
        """Run trials until the budget is spent or ``n_trials`` have started and ended; ``on_progress(epochs trained)`` as each ends."""
        running: list[_Running] = []
        finished: list[FinishedTrial] = []
        order = itertools.count()
        started, spent, clock = 0, 0, 0.0
        values: list[float] = []  # complete trials', in the order they ended, for the convergence stop

        def start() -> None:
            nonlocal started
            if self.n_trials is not None and started >= self.n_trials:
                return
            if self.stop is not None and self.stop.converged(values, self.direction):
                return
            if self.budget is not None and spent >= self.budget:
                return
            started += 1
            trial = self.study.ask()
            point = {p.name: p.suggest(trial) for p in self.params}
            curve = {name: values[0] for name, values in self.surrogate.curves([point]).items()}
            recording = TrialRecording(
                trial, self.recorder, self.metric, self.epochs, self.pruner, self.multi_objective, self.echo, self.pareto
            )
            heapq.heappush(running, _Running(clock + epoch_seconds(curve, 1), next(order), trial, recording, curve))

        def end(run: _Running, state: optuna.trial.TrialState, reason: tuple[str, str] | None) -> None:
            attrs = run.recording.finish({SIMULATED_SECONDS_ATTR: float(run.curve["time"][run.epoch - 1])}, reason)
            told: tuple[float, ...] = ()
            if state == optuna.trial.TrialState.COMPLETE:
                found = run.recording.values(self.goals, attrs)
                told = tuple(float(v) for v in found) if isinstance(found, list) else (float(found),)
                self.study.tell(run.trial, list(told) if self.multi_objective else told[0])
                values.append(told[0])
            else:
                self.study.tell(run.trial, state=state)
            value = told[0] if told else None
            finished.append(FinishedTrial(run.trial.number, len(run.recording.records), value, spent, clock, told))
            if on_progress is not None:
                on_progress(spent)

        for _ in range(self.workers):
            start()
        while running:
            run = heapq.heappop(running)
            clock = run.due
            spent += 1
            ended = True
            try:
                run.recording.epoch_ended(self._record(run))
            except optuna.TrialPruned as pruned:
                end(run, optuna.trial.TrialState.PRUNED, (PRUNE_REASON_ATTR, str(pruned)))
            else:
                if run.epoch == self.epochs:
                    end(run, optuna.trial.TrialState.COMPLETE, None)
                else:
                    ended = False
            if self.budget is not None and spent >= self.budget:
                # Every trial still running is cut where it stands: no epoch is left to train.
                reason = (PRUNE_REASON_ATTR, BUDGET_SPENT.format(budget=self.budget))
                for cut in sorted(running) if ended else [run, *sorted(running)]:
                    end(cut, optuna.trial.TrialState.PRUNED, reason)
                break
            if ended:
                start()
            else:
                run.epoch += 1
                run.due = clock + epoch_seconds(run.curve, run.epoch)
                heapq.heappush(running, run)
        converged = self.stop is not None and self.stop.converged(values, self.direction)
        if converged:
            self.stop.record(self.study)
        try:
            target_range = self.surrogate.target_range(self.metric)
        except ValueError:  # a target the benchmark keeps no statistics of
            target_range = None
        return SimulationResult(self.study, finished, spent, clock, self.recorder, converged, target_range, self.direction,
                                self.budget)

    def _record(self, run: _Running) -> EpochRecord:
        """The epoch's record as the trainer would emit it, read from the curve."""
        i, curve = run.epoch - 1, run.curve
        return EpochRecord(
            epoch=run.epoch,
            lr=float(run.trial.params["learning_rate"]),
            train_loss=float("nan"),  # lcbench gives no training loss
            val_loss=float(curve["val_cross_entropy"][i]),
            metrics={
                "val_accuracy": float(curve["val_accuracy"][i]),
                "val_balanced_accuracy": float(curve["val_balanced_accuracy"][i]),
            },
            epoch_seconds=epoch_seconds(curve, run.epoch),
        )


def epoch_seconds(curve: dict[str, np.ndarray], epoch: int) -> float:
    """The benchmark's time for one epoch: its ``time`` is cumulative, and the surrogate rarely dips."""
    times = curve["time"]
    previous = float(times[epoch - 2]) if epoch > 1 else 0.0
    return max(float(times[epoch - 1]) - previous, 0.0)


def optuna_loop(
    surrogate: Any,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    budget: int,
    report_at: tuple[int, ...] | None = None,
) -> list[FinishedTrial]:
    """The same search as a bare Optuna ask/tell loop on an in-memory study, one worker, nothing recorded.

    The reference that simulations are checked and timed against, and that runs published
    baselines: ``report_at`` limits the reports (and pruning decisions) to those epochs.
    """
    from hpsearch.trainers.lcbench import EPOCHS

    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    params = space_params(surrogate)
    finished: list[FinishedTrial] = []
    spent = 0
    while spent < budget:
        trial = study.ask()
        curve = surrogate.curves([{p.name: p.suggest(trial) for p in params}])["val_accuracy"][0]
        for epoch in range(1, EPOCHS + 1):
            spent += 1
            if report_at is None or epoch in report_at:
                trial.report(float(curve[epoch - 1]), epoch)
                if epoch < EPOCHS and trial.should_prune():
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    finished.append(FinishedTrial(trial.number, epoch, None, spent, 0.0))
                    break
            if epoch == EPOCHS:
                study.tell(trial, float(curve[epoch - 1]))
                finished.append(FinishedTrial(trial.number, epoch, float(curve[epoch - 1]), spent, 0.0))
            elif spent >= budget:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                finished.append(FinishedTrial(trial.number, epoch, None, spent, 0.0))
                break
    return finished


def simulate_search(
    instance: str = "167168",
    data: str | os.PathLike[str] | None = None,
    sampler: str = DEFAULT_SAMPLER,
    pruner: str = DEFAULT_PRUNER,
    *,
    seed: int = 0,
    workers: int = 1,
    budget: int | None = None,
    n_trials: int | None = None,
    stop_when_converged: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    benchmark: str = "lcbench",
    progress: bool | None = None,
) -> SimulationResult:
    """A search strategy run on a learning-curve benchmark instead of training, as ``hpsearch simulate`` runs it.

    ``data`` is YAHPO Gym's data folder (default: ``$HPSEARCH_YAHPO_DATA``). The budget is the
    YAHPO Gym paper's 6,544 epochs unless ``budget`` or ``n_trials`` is given. With ``storage`` the
    study is kept there under ``study_name`` (default ``sim-BENCHMARK-INSTANCE-SAMPLER-PRUNER-sSEED``,
    and ``-wN`` with N workers). The result has the ``study``, the trials in the order they ended
    (``finished``), the epochs ``spent``, the simulated ``clock`` in seconds, and ``best(spent)`` and
    ``regret(spent)``: the best ``val_accuracy`` and its normalized regret once ``spent`` epochs
    were trained (default: all). A progress bar counts the epochs where stderr is a terminal (``progress``
    says otherwise). Wrong input is a ``UsageError``.
    """
    if sampler == "grid":
        raise UsageError(f"--sampler grid takes value lists, and lcbench's space is continuous; choose from {', '.join(SAMPLERS[1:])}")
    if sampler not in SAMPLERS[1:]:
        raise UsageError(f"unknown sampler {sampler!r}{did_you_mean(sampler, SAMPLERS[1:])}; choose from {', '.join(SAMPLERS[1:])}")
    if pruner in NOT_SIMULATED:
        raise UsageError(f"--pruner {pruner} {NOT_SIMULATED[pruner]}; choose from {', '.join(SIMULATED_PRUNERS)}")
    if pruner not in SIMULATED_PRUNERS:
        raise UsageError(f"unknown pruner {pruner!r}{did_you_mean(pruner, SIMULATED_PRUNERS)}; choose from {', '.join(SIMULATED_PRUNERS)}")
    for flag, value in (("--budget", budget), ("--n-trials", n_trials), ("--workers", workers),
                        ("--stop-when-converged", stop_when_converged)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1 (got {value})")
    if data is None and not os.environ.get(DATA_ENV):
        raise UsageError(f"pass --data with YAHPO Gym's data folder (yahpo_data), or set ${DATA_ENV}")
    try:
        surrogate = load_benchmark(benchmark, instance, data if data is not None else os.environ[DATA_ENV])
    except UsageError as error:
        raise UsageError(f"{error} (the folder is ${DATA_ENV}'s)" if data is None else str(error)) from None
    name = study_name or (f"sim-{benchmark}-{instance}-{sampler}-{pruner_that_runs(pruner, sampler)}-s{seed}"
                          + (f"-w{workers}" if workers > 1 else ""))
    study, recorder, close = _simulated_study(storage, name, {"benchmark": benchmark, "instance": instance, "sampler": sampler,
                                                               "pruner": pruner, "seed": seed, "workers": workers})
    from tqdm.auto import tqdm

    budget = budget if budget is not None or n_trials is not None else LCBENCH_BUDGET
    show = sys.stderr.isatty() if progress is None else progress
    with quiet_optuna(), tqdm(total=budget, desc=name, unit="epoch", disable=not show) as bar:
        try:
            return CurveSimulation(
                surrogate, sampler, pruner, seed, workers, budget, n_trials, study=study, recorder=recorder,
                stop=ConvergenceStop(stop_when_converged) if stop_when_converged else None,
            ).run(on_progress=lambda spent: bar.update(spent - bar.n))
        finally:
            close()


def _simulated_study(url: str | None, name: str, settings: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The study, its recorder and what closes them: in memory, or a new study in the database at ``url``."""
    if url is None:
        return None, None, lambda: None
    from hpsearch.search.resolved import check_study_name
    from hpsearch.storage.recorder import DatabaseRecorder

    check_study_name(name)
    database = StudyDatabase.open_for_search(url)
    try:
        study = optuna.create_study(study_name=name, storage=database.storage, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        database.close()
        raise UsageError(f"study {name!r} already exists in {mask_password(url)}; choose another --study-name") from None
    study.set_user_attr(SIMULATED_ATTR, settings)
    study.set_user_attr(METRIC_ATTR, "val_accuracy")
    return study, DatabaseRecorder(database.storage, database.epoch_table), database.close
