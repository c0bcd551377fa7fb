"""The results table printed at the end of a search and by ``hpsearch trials``, and the lines that close a search."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch.search.queue import StudyQueue, trial_point
from hpsearch.search.samplers import idle_pruner_note
from hpsearch.storage.attributes import EPOCHS_RUN_ATTR, SIMULATED_SECONDS_ATTR
from hpsearch.storage.optuna_seam import stand_in_values
from hpsearch.storage.urls import is_proxy_url, mask_password

if TYPE_CHECKING:
    from hpsearch.search.orchestrator import SearchOutcome
    from hpsearch.search.resolved import ResolvedSpec

MISSING = "-"
# Under the table when a pruned trial of several objectives shows the values it stopped at.
STAND_IN_NOTE = (
    "(values): a pruned trial's pruned_values, its objectives where it stopped (a time objective carried on "
    "at its pace to the last epoch), which the sampler learns from"
)


def _format(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _objective_names(study: optuna.Study, metric_name: str | None) -> list[str]:
    """Column names of the objectives: ``metric_name``, else Optuna's metric names, else value(s)."""
    n_objectives = len(study.directions)
    if n_objectives == 1:
        return [metric_name or (study.metric_names or ["value"])[0]]
    names = study.metric_names
    if metric_name and not names:
        names = [metric_name] + [f"value_{i}" for i in range(1, n_objectives)]
    return names or [f"value_{i}" for i in range(n_objectives)]


def _values(trial: FrozenTrial) -> tuple[list[float] | None, bool]:
    """The trial's values, and whether they are a pruned trial's ``pruned_values`` (Optuna stores none for a
    pruned trial of several objectives; a pruned trial of one keeps its last report as its value)."""
    if trial.values is None and trial.state == TrialState.PRUNED:
        stand_in = stand_in_values(trial, several_objectives=True)
        if stand_in is not None:
            return stand_in, True
    return trial.values, False


def _ranked(study: optuna.Study, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Complete trials best first (by the first objective); then pruned ones, those that got furthest first and
    best among equals; then every other trial by number."""
    sign = -1.0 if study.directions[0] == StudyDirection.MAXIMIZE else 1.0

    def key(trial: FrozenTrial) -> tuple[int, int, float, int]:
        values = _values(trial)[0]
        value = values[0] if values and not math.isnan(values[0]) else None
        if trial.state == TrialState.COMPLETE and value is not None:
            return (0, 0, sign * value, trial.number)
        if trial.state == TrialState.PRUNED:
            epochs = trial.user_attrs.get(EPOCHS_RUN_ATTR, trial.last_step) or 0
            return (1, -epochs, math.inf if value is None else sign * value, trial.number)
        return (2, 0, 0.0, trial.number)

    return sorted(trials, key=key)


def format_results_table(study: optuna.Study, metric_name: str | None = None) -> str:
    """One line per trial, best first: trial, state, parameters, the monitored value, epochs, seconds.

    ``metric_name`` titles the value column (default: the study's metric names, else "value").
    Complete trials are ranked by the study direction (the first objective of a multi-objective
    study); pruned trials follow, those that ran the most epochs first and the better value first
    among equals (a pruned trial keeps its last reported value; one of several objectives shows its
    ``pruned_values`` in parentheses, with a note under the table); failed, running and waiting
    trials come last, in trial order. ``epochs`` is the
    ``epochs_run`` user attribute; ``seconds`` the trial's wall time, or for a simulated trial its
    training time by the benchmark's clock.
    """
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return f"study {study.study_name!r} has no trials yet"
    # A queued grid point shows its parameters before a worker has taken it.
    points = {trial.number: trial_point(trial) for trial in trials}
    params: list[str] = []
    for trial in trials:  # in order of first appearance, which for a grid is the sweep's order
        params += [name for name in points[trial.number] if name not in params]
    taken = {"trial", "state", "epochs", "seconds", *params}
    objectives = [f"{name} (value)" if name in taken else name for name in _objective_names(study, metric_name)]

    # Optuna's own Pareto front, marked for multi-objective studies.
    front = {t.number for t in study.best_trials} if len(study.directions) > 1 else set()
    rows, stand_ins = [], False
    for trial in sorted(_ranked(study, trials), key=lambda t: t.number not in front):
        row = {"trial": str(trial.number), "state": trial.state.name}
        row |= {name: _format(points[trial.number].get(name), 4) for name in params}
        values, stand_in = _values(trial)
        shown = [_format(value, 6) for value in values or [None] * len(objectives)]
        row |= dict(zip(objectives, [f"({cell})" for cell in shown] if stand_in else shown))
        stand_ins |= stand_in
        row["epochs"] = _format(trial.user_attrs.get(EPOCHS_RUN_ATTR), 6)
        simulated, duration = trial.user_attrs.get(SIMULATED_SECONDS_ATTR), trial.duration
        seconds = simulated if simulated is not None else duration.total_seconds() if duration is not None else None
        row["seconds"] = MISSING if seconds is None else f"{seconds:.1f}"
        row["pareto"] = "*" if trial.number in front else ""
        rows.append(row)
    columns = ["trial", "state", *params, *objectives, "epochs", "seconds", *(["pareto"] if front else [])]
    table = aligned_table(columns, [[row[name] for name in columns] for row in rows])
    return f"{table}\n{STAND_IN_NOTE}" if stand_ins else table


def aligned_table(columns: list[str], rows: list[list[str]]) -> str:
    """Text cells right-aligned under their headers, one space apart: pandas' ``to_string(index=False)``.

    Without pandas, whose import ``hpsearch trials`` would otherwise wait a fifth of a second for.
    """
    widths = [max(len(name), *(len(row[i]) for row in rows)) for i, name in enumerate(columns)]
    lines = [columns, *rows]
    return "\n".join(" ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in lines)


def strategy_line(resolved: ResolvedSpec) -> str:
    """The sampler and pruner a search runs (the ones ``auto`` chose, so said), as flags."""
    auto = " (--pruner auto)" if resolved.spec.pruner == "auto" else ""
    # With no pruner a trial still stops early on divergence or a budget; "stopped" alone read as a pruner at work.
    why = "a trial that diverged or went over a budget" if resolved.pruner == "none" else "a trial"
    return f"Strategy:   --sampler {resolved.sampler} --pruner {resolved.pruner}{auto}; prune_reason says why {why} stopped"


def idle_pruning(study: optuna.Study, resolved: ResolvedSpec) -> str | None:
    """Why the search's pruner could stop no trial of ``study`` (``idle_pruner_note``); else None.

    Its trials are counted as a budget counts them: a failed trial a retry took over is one, not two.
    """
    config = resolved.train_config
    trials = StudyQueue.budget_spent(study.get_trials(deepcopy=False))
    return idle_pruner_note(resolved.pruner, config.epochs, config.warmup_epochs, trials)


def run_summary(outcome: SearchOutcome, resolved: ResolvedSpec) -> list[str]:
    """The lines that close a search's output: where the study is, how to browse it, what ran and what did not."""
    from hpsearch.search.trial import checkpoint_dir

    study, spec, url = outcome.study, resolved.spec, mask_password(outcome.storage_url)
    lines = [f"Study {study.study_name!r} in {url}: {outcome.trials_run} trial{'' if outcome.trials_run == 1 else 's'} run now, {len(study.trials)} in all."]
    lines.append(strategy_line(resolved))
    idle = idle_pruning(study, resolved)
    if idle is not None:
        lines.append(f"Pruning:    {idle}")
    if is_proxy_url(outcome.storage_url):
        # The dashboard and hpsearch's readers open the database itself; the proxy serves workers only.
        lines.append("Browse it:  optuna-dashboard DATABASE_URL, or hpsearch dashboard --storage DATABASE_URL, with the "
                     "database URL the proxy serves (its --storage)")
    else:
        lines += [f"Browse it:  optuna-dashboard {url}", f"       or:  hpsearch dashboard --storage {url}"]
    if resolved.train_config.checkpoints != "none":
        stored = f", and in {mask_password(spec.artifacts)}" if spec.artifacts else ""
        lines.append(f"Checkpoints: {checkpoint_dir(spec.output_dir, study.study_name, 0).parent}{stored}")
    if outcome.trials_run == 0 and resolved.sampler == "grid" and spec.allow_changes:
        lines.append("Every grid point had run already, so nothing trained with the changed settings: --allow-changes adds "
                     "trials only for points not yet run; pass --study-name NEW to run the changed grid.")
    if outcome.converged:
        started = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
        unrun = StudyQueue.budget_left(started, resolved.n_trials or 0)
        lines.append(f"Converged (--stop-when-converged {spec.stop_when_converged}): {unrun} trials of the budget were not run.")
    return lines
