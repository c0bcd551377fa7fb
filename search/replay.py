"""``hpsearch replay``: a study's stored learning curves searched again under other pruners, without training.

A pruner decides from the values reported, and a seeded trial reports the same values whether or
not it is later pruned. So a study whose trials all ran to the end (a grid, or ``--pruner none``)
holds everything needed to tell what another pruner would have spent and kept. Each replayed
trial goes through ``TrialRecording`` and ``make_pruner``, as a live trial does, on an in-memory
study; many random trial orders show whether a pruner's result is luck.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from hpsearch.search.errors import UsageError
from hpsearch.search.halving import promote_waiting
from hpsearch.search.queue import enqueued_point
from hpsearch.search.quiet import quiet_optuna
from hpsearch.search.recording import TrialRecording
from hpsearch.search.samplers import make_pruner, replayable_pruners
from hpsearch.storage.attributes import METRIC_ATTR, RETRY_OF_ATTR, SIMULATED_ATTR
from hpsearch.storage.recorder import MemoryRecorder
from hpsearch.trainers.records import EpochRecord

if TYPE_CHECKING:
    import pandas as pd

CURVE_PARAM = "curve"  # a replayed trial's one parameter: which stored curve it runs


@dataclass(frozen=True)
class StoredCurves:
    """The monitored metric of every trial of a study, epoch by epoch, in trial order."""

    metric: str
    direction: str
    epochs: int
    warmup_epochs: float
    curves: tuple[tuple[float, ...], ...]
    grid: bool = True  # the study ran a grid's points (each trial enqueued with them), not sampled ones

    @property
    def best(self) -> float:
        finals = [curve[-1] for curve in self.curves]
        return max(finals) if self.direction == "maximize" else min(finals)


@dataclass(frozen=True)
class Replay:
    """One replayed search: epochs spent, the best final value found, and trials pruned."""

    epochs: int
    best: float
    pruned: int


def stored_curves(study: optuna.Study) -> StoredCurves:
    """Every trial's curve; ``UsageError`` unless every trial ran to the end."""
    from hpsearch.search.study_claim import load_spec
    from hpsearch.trainers.config import TrainConfig

    if len(study.directions) > 1:
        raise UsageError(f"study {study.study_name!r} has several objectives; replay takes a single-objective study")
    simulated = SIMULATED_ATTR in study.user_attrs
    if simulated:  # hpsearch simulate's: the benchmark's epochs, no warmup
        from hpsearch.trainers.lcbench import EPOCHS

        config = TrainConfig(epochs=EPOCHS, warmup_epochs=0)
    else:
        config = TrainConfig().with_overrides(load_spec(study).train)
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    if not trials:
        raise UsageError(f"study {study.study_name!r} has no trials to replay")
    for trial in trials:
        steps = sorted(trial.intermediate_values)
        if trial.state == TrialState.COMPLETE and steps != list(range(1, config.epochs + 1)) and config.early_stopping_patience:
            raise UsageError(
                f"trial {trial.number} of study {study.study_name!r} stopped early after {len(steps)} of {config.epochs} "
                f"epochs (--early-stopping-patience {config.early_stopping_patience}); replay needs a study whose trials "
                "all ran to the end: run it without --early-stopping-patience, and with --pruner none"
            )
        if trial.state != TrialState.COMPLETE or steps != list(range(1, config.epochs + 1)):
            raise UsageError(
                f"trial {trial.number} of study {study.study_name!r} did not run all {config.epochs} epochs "
                f"({trial.state.name.lower()} after {len(steps)}); replay needs a study whose trials all ran to the "
                + (
                    "end: simulate it with --pruner none and --n-trials, not --budget (the trial running when the budget "
                    "is spent is pruned)" if simulated else "end: run it with --pruner none (a grid prunes too, by default)"
                )
            )
    direction = "maximize" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "minimize"
    curves = tuple(tuple(t.intermediate_values[e] for e in range(1, config.epochs + 1)) for t in trials)
    # A sampled study's trials are queued without parameters; only retries of them are queued with theirs.
    grid = all(t.params.keys() <= enqueued_point(t).keys() for t in trials)
    return StoredCurves(
        study.user_attrs.get(METRIC_ATTR, "val_loss"), direction, config.epochs, config.warmup_epochs, curves, grid
    )


def stored_curves_in(storage: str | None, study: str) -> StoredCurves:
    """``stored_curves`` of the study named ``study`` in ``storage`` (None: ``$HPSEARCH_STORAGE``, else the working directory's)."""
    from hpsearch.storage.database import StudyDatabase
    from hpsearch.storage.urls import resolve_storage_url

    with StudyDatabase.open_for_reading(resolve_storage_url(storage)) as database:
        return stored_curves(database.load_study(study))


def replay(stored: StoredCurves, pruner: str, order: Sequence[int] | None = None) -> Replay:
    """The stored trials run again, in ``order`` (default: as stored), under the pruner called ``pruner``.

    Each stored trial is a point of its own (parameter ``curve``), so that ``halving`` can tell
    them apart; the points it lets go on past a rung run next, each from where it waited.
    """
    n = len(stored.curves)
    study = optuna.create_study(
        direction=stored.direction, pruner=make_pruner(pruner, stored.epochs, stored.warmup_epochs, grid_points=n)
    )
    recorder = MemoryRecorder()
    spent, complete, best = 0, 0, None
    for index in order if order is not None else range(n):
        study.enqueue_trial({CURVE_PARAM: index})
    while True:
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not waiting:
            if not promote_waiting(study):
                break
            continue
        trial = study.ask()
        index = trial.suggest_categorical(CURVE_PARAM, list(range(n)))
        curve = stored.curves[index]
        recording = TrialRecording(trial, recorder, stored.metric, stored.epochs, pruner, echo=lambda line: None)
        # A point going on past a rung: the epochs before it were spent by the trial it resumes.
        trials = study.get_trials(deepcopy=False)
        resumed = max((len(trials[number].intermediate_values) for number in trial.user_attrs.get(RETRY_OF_ATTR, [])), default=0)
        recording.restore([_record(stored.metric, epoch, value) for epoch, value in enumerate(curve[:resumed], start=1)])
        try:
            for epoch, value in enumerate(curve[resumed:], start=resumed + 1):
                spent += 1
                recording.epoch_ended(_record(stored.metric, epoch, value))
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            continue
        value = curve[-1]
        study.tell(trial, value)
        complete += 1
        best = value if best is None or (value > best if stored.direction == "maximize" else value < best) else best
    # Pruned: the stored trials that did not run to the end (under halving a point that waited and
    # went on is one of them at most, not a pruned trial per rung).
    return Replay(spent, math.nan if best is None else best, n - complete)


def _record(metric: str, epoch: int, value: float) -> EpochRecord:
    """An epoch record that carries ``value`` as ``metric``, all the pruner reads."""
    nan = float("nan")
    if metric in ("val_loss", "train_loss"):
        return EpochRecord(epoch, nan, value if metric == "train_loss" else nan, value if metric == "val_loss" else nan)
    return EpochRecord(epoch, nan, nan, nan, metrics={metric: value})


@dataclass(frozen=True)
class PrunerSummary:
    """A pruner over many replayed orders: median share of the full epochs, how often it kept the best, and what it found."""

    pruner: str
    epoch_share: float
    kept_best: float
    pruned: float
    best_median: float  # the best final value a search ended with: its median over the orders
    best_worst: float  # and the worst of them


def compare(stored: StoredCurves, pruners: Sequence[str], orders: int, seed: int = 0) -> list[PrunerSummary]:
    """Each pruner replayed over the same ``orders`` random trial orders (the stored order first)."""
    if orders < 1:
        raise UsageError(f"--orders must be at least 1 (got {orders})")
    rng = random.Random(seed)
    n = len(stored.curves)
    permutations = [list(range(n))] + [rng.sample(range(n), n) for _ in range(orders - 1)]
    full = n * stored.epochs
    summaries = []
    for pruner in pruners:
        runs = [replay(stored, pruner, order) for order in permutations]
        found = sorted((r.best for r in runs), key=lambda value: _worse_first(value, stored.direction))
        summaries.append(
            PrunerSummary(
                pruner,
                statistics.median(r.epochs / full for r in runs),
                sum(value == stored.best for value in found) / len(runs),
                statistics.fmean(r.pruned for r in runs),
                found[(len(found) - 1) // 2],  # of an even number, the worse of the middle two
                found[0],
            )
        )
    return summaries


def _worse_first(value: float, direction: str) -> float:
    """A sort key that puts the worse of two final values first (no value, every trial pruned, is worst)."""
    if math.isnan(value):
        return -math.inf
    return value if direction == "maximize" else -value


def replay_study(
    study: optuna.Study | str,
    pruners: str | Sequence[str] | None = None,
    orders: int = 100,
    seed: int = 0,
    *,
    storage: str | None = None,
) -> pd.DataFrame:
    """What each pruner would have spent and found on ``study``, whose trials all ran to the end, as ``hpsearch replay`` prints it.

    ``study`` is an Optuna study, or a study's name in ``storage`` (default: ``$HPSEARCH_STORAGE``,
    else ``sqlite:///hpsearch.db`` in the working directory).

    One row per pruner (``pruners``: a list of names, or one name; default: every pruner that can
    be replayed but ``wilcoxon``): ``epoch_share``
    (the median share of the full study's epochs over the ``orders`` random trial orders, the
    stored one first), ``kept_best`` (the share of orders in which a trial with the study's best
    value ran to the end), ``best_median`` and ``best_worst`` (the best final value the search
    ended with: median and worst over the orders) and ``pruned`` (the mean number of trials that did
    not run to the end). ``UsageError`` for a study that cannot be replayed, an unknown pruner or
    ``orders`` under 1.
    """
    import pandas as pd

    checked = replayable_pruners(pruners)
    with quiet_optuna():  # a study in memory per replayed order, each announced at INFO
        if isinstance(study, str):
            stored = stored_curves_in(storage, study)
        elif isinstance(study, optuna.Study):
            stored = stored_curves(study)
        else:
            raise TypeError(f"replay_study takes an optuna.Study or a study's name, not {type(study).__name__}")
        summaries = compare(stored, checked, orders, seed)
    return pd.DataFrame([asdict(s) for s in summaries]).set_index("pruner")
