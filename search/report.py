"""``hpsearch report``: one self-contained HTML file about a study, readable offline.

Sections (each a ``<section id=...>`` with a heading; a chart that cannot be drawn says why):

    optimization-history  objective value by trial, best so far (Optuna's plot)
    param-importances     PED-ANOVA importances (Optuna's default evaluator; needs no scikit-learn)
    parallel-coordinate   parameters against the monitored value (Optuna's plot)
    loss-curves           train and validation loss per epoch, per trial (hpsearch_epoch_metrics)
    lr-curves             learning rate per epoch, per trial
    flops-pareto          FLOPs against the monitored value, the Pareto front marked
    best-trials           a table of the best trials

plotly.js is inlined once in the page head; every figure refers to it. The command itself
(its flags, the output file) is ``search.report_cli``.
"""

from __future__ import annotations

import datetime
import html
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from optuna.visualization import plot_optimization_history, plot_parallel_coordinate, plot_param_importances
from plotly.offline import get_plotlyjs

from hpsearch.search.errors import UsageError
from hpsearch.storage.attributes import EPOCHS_RUN_ATTR, METRIC_ATTR, PARAMS_COUNT_ATTR
from hpsearch.storage.database import StudyDatabase
from hpsearch.storage.export import epochs_frame, trials_frame
from hpsearch.storage.urls import mask_password

# The FLOPs axis, first found wins: a FLOPs objective, else these user attributes.
FLOPS_ATTRS = ("flops.per_sample_forward", "flops.total")
MAX_CURVES = 30  # trials drawn in the per-epoch charts (the best ones); more is unreadable
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
TABLE_ATTRS = ("flops.per_sample_forward", "flops.total", PARAMS_COUNT_ATTR, EPOCHS_RUN_ATTR)


@dataclass
class Section:
    """One part of the report: an anchor id, a heading, its body (HTML) and notes for the reader."""

    id: str
    title: str
    body: str = ""
    notes: list[str] = field(default_factory=list)
    figure: go.Figure | None = None  # kept for tests and for callers that want the figure itself

    def html(self) -> str:
        notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in self.notes)
        return f'<section id="{self.id}">\n<h2>{html.escape(self.title)}</h2>\n{notes}{self.body}\n</section>'


@dataclass(frozen=True)
class Objectives:
    """The study's objectives, and which one is the monitored metric (the others may be FLOPs)."""

    names: tuple[str, ...]
    maximize: tuple[bool, ...]
    metric: int  # index of the monitored metric
    flops: int | None  # index of a FLOPs objective, if the study has one

    @classmethod
    def of(cls, study: optuna.Study, metric_name: str | None) -> Objectives:
        n = len(study.directions)
        names = list(study.metric_names or [])
        if not names or (metric_name and n == 1):
            names = [metric_name or study.user_attrs.get(METRIC_ATTR) or "value"] + [f"objective {i}" for i in range(1, n)]
        flops = next((i for i, name in enumerate(names) if name.lower().startswith("flops")), None) if n > 1 else None
        metric = next(i for i in range(n) if i != flops)
        return cls(tuple(names), tuple(d == StudyDirection.MAXIMIZE for d in study.directions), metric, flops)

    @property
    def metric_name(self) -> str:
        return self.names[self.metric]

    def columns(self, trials: pd.DataFrame) -> list[str]:
        """The value columns of ``trials_frame``, in objective order."""
        if len(self.names) == 1:
            return [c for c in trials.columns if c == "value" or c.startswith("value_")][:1]
        return [c for c in trials.columns if c.startswith("values_")]


def pareto_mask(x: np.ndarray, y: np.ndarray, maximize_y: bool) -> np.ndarray:
    """Which points no other point beats: lower or equal ``x`` and a better or equal ``y``, one strictly."""
    goodness = y if maximize_y else -y
    order = np.lexsort((-goodness, x))  # by x, then best y first
    mask = np.zeros(len(x), dtype=bool)
    best, last = -np.inf, None
    for i in order:
        if goodness[i] > best or (last is not None and x[i] == x[last] and goodness[i] == goodness[last]):
            mask[i] = True  # the second test keeps exact duplicates of a front point
            best, last = goodness[i], i
    return mask


def _quietly(plot: Callable[..., go.Figure], study: optuna.Study, **kwargs: Any) -> go.Figure:
    # Optuna warns about experimental arguments and tiny studies; the report says what matters.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return plot(study, **kwargs)


def _target(index: int, sign: float = 1.0) -> Callable[[FrozenTrial], float]:
    """Objective ``index`` of a trial, times ``sign``."""
    return lambda trial: sign * trial.values[index]


def _figure(section: Section, figure: go.Figure, height: int = 480) -> Section:
    figure.update_layout(height=height, template="plotly_white")
    section.figure = figure
    section.body = figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"{section.id}-plot", config=PLOT_CONFIG)
    return section


def history_section(study: optuna.Study, objectives: Objectives, complete: list[FrozenTrial]) -> Section:
    section = Section("optimization-history", "Optimization history")
    if not complete:
        section.notes.append("No complete trial yet.")
        return section
    # A single objective goes without a target, so that Optuna draws the best-so-far line.
    target = None if len(objectives.names) == 1 else _target(objectives.metric)
    return _figure(section, _quietly(plot_optimization_history, study, target=target, target_name=objectives.metric_name))


def importance_section(study: optuna.Study, objectives: Objectives, complete: list[FrozenTrial]) -> Section:
    section = Section("param-importances", "Parameter importances")
    varied = {name for name in {n for t in complete for n in t.params} if len({repr(t.params.get(name)) for t in complete}) > 1}
    if len(complete) < 2 or not varied:
        section.notes.append(f"Needs at least 2 complete trials that differ in a parameter (this study has {len(complete)} complete).")
        return section
    # One bar series per objective. PED-ANOVA takes low target values as good, so maximized
    # objectives are negated.
    figure, *others = [
        _quietly(plot_param_importances, study, params=sorted(varied), target=_target(i, -1.0 if up else 1.0), target_name=name)
        for i, (name, up) in enumerate(zip(objectives.names, objectives.maximize))
    ]
    for other in others:
        figure.add_traces(list(other.data))
    if others:
        figure.update_layout(barmode="group", showlegend=True)
    if len(complete) < 10:
        section.notes.append(f"Only {len(complete)} complete trials: importances are rough.")
    return _figure(section, figure)


def parallel_section(study: optuna.Study, objectives: Objectives, complete: list[FrozenTrial]) -> Section:
    section = Section("parallel-coordinate", "Parallel coordinates")
    if not complete:
        section.notes.append("No complete trial yet.")
        return section
    target = None if len(objectives.names) == 1 else _target(objectives.metric)
    return _figure(section, _quietly(plot_parallel_coordinate, study, target=target, target_name=objectives.metric_name))


def _curve_trials(epochs: pd.DataFrame, ranked: Sequence[int]) -> list[int]:
    """The trials drawn in the per-epoch charts: the best ``MAX_CURVES`` that have epochs."""
    with_epochs = set(epochs["number"].tolist())
    order = [n for n in ranked if n in with_epochs] + sorted(with_epochs - set(ranked))
    return order[:MAX_CURVES]


def curves_sections(epochs: pd.DataFrame, ranked: Sequence[int], metric_name: str) -> tuple[Section, Section]:
    """Loss per epoch (train dashed, validation solid) and LR per epoch, one colour per trial."""
    loss = Section("loss-curves", "Loss per epoch")
    lr = Section("lr-curves", "Learning rate per epoch")
    numbers = _curve_trials(epochs, ranked)
    if not numbers:
        for section in (loss, lr):
            section.notes.append("No trial has reported an epoch yet.")
        return loss, lr
    has = {c: c in epochs.columns and epochs[c].notna().any() for c in ("train_loss", "val_loss", "lr")}
    # A study run outside hpsearch has no per-epoch table: its reported values stand in.
    loss_columns = [(c, dash) for c, dash in (("train_loss", "dash"), ("val_loss", "solid")) if has[c]]
    if not loss_columns:
        loss_columns = [("intermediate_value", "solid")]
        loss.notes.append(f"No per-epoch losses in hpsearch_epoch_metrics; showing the reported {metric_name} instead.")
    palette = go.Figure().layout.template.layout.colorway or ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a"]
    loss_figure, lr_figure = go.Figure(), go.Figure()
    for k, number in enumerate(numbers):
        rows = epochs[epochs["number"] == number]
        color = palette[k % len(palette)]
        for column, dash in loss_columns:
            loss_figure.add_scatter(
                x=rows["epoch"], y=rows[column], mode="lines+markers", name=f"trial {number} {column}",
                legendgroup=str(number), line={"color": color, "dash": dash},
            )
        if has["lr"]:
            lr_figure.add_scatter(x=rows["epoch"], y=rows["lr"], mode="lines+markers", name=f"trial {number}", line={"color": color})
    if len(set(epochs["number"])) > len(numbers):
        for section in (loss, lr):
            section.notes.append(f"The {len(numbers)} best of {len(set(epochs['number']))} trials with epochs.")
    loss_figure.update_layout(xaxis_title="epoch", yaxis_title="loss", legend_title_text="dashed: train, solid: validation")
    _figure(loss, loss_figure)
    if has["lr"]:
        lr_figure.update_layout(xaxis_title="epoch", yaxis_title="learning rate", yaxis_type="log")
        _figure(lr, lr_figure)
    else:
        lr.notes.append("No per-epoch learning rate in hpsearch_epoch_metrics.")
    return loss, lr


def _flops_column(trials: pd.DataFrame, objectives: Objectives, value_columns: list[str]) -> tuple[str, str] | None:
    """(column, axis title) of the FLOPs axis: a FLOPs objective, else the first FLOPs attribute."""
    if objectives.flops is not None:
        return value_columns[objectives.flops], objectives.names[objectives.flops]
    for attr in FLOPS_ATTRS:
        column = f"user_attrs_{attr}"
        if column in trials.columns and pd.to_numeric(trials[column], errors="coerce").notna().any():
            return column, attr
    return None


def flops_section(trials: pd.DataFrame, objectives: Objectives, best_numbers: set[int]) -> Section:
    """FLOPs against the metric; the front is the study's best_trials when it has several objectives."""
    section = Section("flops-pareto", f"FLOPs against {objectives.metric_name}")
    value_columns = objectives.columns(trials)
    axis = _flops_column(trials, objectives, value_columns)
    if axis is None:
        section.notes.append("No trial has FLOPs (objective or flops.* user attribute) to plot.")
        return section
    x_column, x_title = axis
    complete = trials[trials["state"] == "COMPLETE"]
    x = pd.to_numeric(complete[x_column], errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(complete[value_columns[objectives.metric]], errors="coerce").to_numpy(dtype=float)
    finite = np.isfinite(x) & np.isfinite(y)
    numbers = complete["number"].to_numpy()[finite]
    x, y = x[finite], y[finite]
    if not len(x):
        section.notes.append("No complete trial has both FLOPs and a finite value.")
        return section
    if len(objectives.names) > 1:
        front = np.isin(numbers, list(best_numbers))
        front_name = "Pareto front (the study's best trials)"
    else:
        front = pareto_mask(x, y, objectives.maximize[objectives.metric])
        front_name = f"Pareto front ({x_title}, {objectives.metric_name})"
    hover = "trial %{text}<br>" + x_title + " %{x:.4g}<br>" + objectives.metric_name + " %{y:.4g}<extra></extra>"
    figure = go.Figure()
    figure.add_scatter(x=x[~front], y=y[~front], text=[str(n) for n in numbers[~front]], mode="markers", name="other trials",
                       marker={"color": "#9aa5b1", "size": 8}, hovertemplate=hover)
    order = np.argsort(x[front], kind="stable")
    figure.add_scatter(x=x[front][order], y=y[front][order], text=[str(n) for n in numbers[front][order]], mode="lines+markers",
                       name=front_name, line={"shape": "hv", "color": "#d62728"}, marker={"size": 11, "symbol": "diamond"},
                       hovertemplate=hover)
    figure.update_layout(xaxis_title=x_title, yaxis_title=objectives.metric_name, xaxis_type="log" if (x > 0).all() else "linear")
    section.notes.append(f"{int(front.sum())} of {len(x)} complete trials on the front.")
    return _figure(section, figure)


def _number(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return "-" if math.isnan(value) else f"{value:.6g}"
    return "-" if value is None else str(value)


def best_trials_section(trials: pd.DataFrame, objectives: Objectives, ranked: Sequence[int], best_numbers: set[int], top: int) -> Section:
    section = Section("best-trials", "Best trials")
    chosen = [n for n in ranked if len(objectives.names) == 1 or n in best_numbers][:top]
    if not chosen:
        section.notes.append("No complete trial yet.")
        return section
    if len(objectives.names) > 1:
        section.notes.append(f"The Pareto-optimal trials, by {objectives.metric_name}.")
    rows = trials.set_index("number").loc[chosen]
    table = pd.DataFrame({"trial": chosen})
    for name, column in zip(objectives.names, objectives.columns(trials)):
        table[name] = rows[column].to_numpy()
    for column in (c for c in trials.columns if c.startswith("params_")):
        table[column.removeprefix("params_")] = rows[column].to_numpy()
    for attr in TABLE_ATTRS:
        if f"user_attrs_{attr}" in rows.columns:
            table[attr] = rows[f"user_attrs_{attr}"].to_numpy()
    table = table.map(_number)
    table["seconds"] = [f"{d.total_seconds():.1f}" if isinstance(d, pd.Timedelta) else "-" for d in rows["duration"]]
    section.body = table.to_html(index=False, table_id="best-trials-table", border=0, classes="trials")
    return section


def _ranked(complete: list[FrozenTrial], objectives: Objectives) -> list[int]:
    """Complete trial numbers, best monitored value first."""
    m, sign = objectives.metric, -1.0 if objectives.maximize[objectives.metric] else 1.0
    usable = [t for t in complete if t.values and not math.isnan(t.values[m])]
    return [t.number for t in sorted(usable, key=lambda t: (sign * t.values[m], t.number))]


def _summary(study: optuna.Study, url: str, objectives: Objectives, trials: pd.DataFrame) -> str:
    counts = trials["state"].value_counts()
    states = ", ".join(f"{counts[s]} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING") if s in counts)
    goals = ", ".join(f"{'maximize' if up else 'minimize'} {name}" for name, up in zip(objectives.names, objectives.maximize))
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"<p>Storage <code>{html.escape(mask_password(url))}</code> &middot; {html.escape(goals)} &middot; "
            f"{len(trials)} trials ({html.escape(states)}) &middot; written {html.escape(when)}</p>")


STYLE = """body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;color:#222}
section{margin:2.5rem 0}h2{border-bottom:1px solid #ddd;padding-bottom:.3rem}.note{color:#666;font-style:italic}
table.trials{border-collapse:collapse;font-size:.9rem}table.trials th,table.trials td{padding:.3rem .7rem;text-align:right;border-bottom:1px solid #eee}
nav a{margin-right:1rem}"""


def report_sections(url: str, study_name: str, metric_name: str | None = None, top: int = 10) -> tuple[str, list[Section]]:
    """The summary line (HTML) and the sections of the report on study ``study_name`` at ``url``."""
    with StudyDatabase.open_for_reading(url) as database:
        trials = trials_frame(database, study_name)  # also checks that the study exists
        epochs = epochs_frame(database, study_name)
        if trials.empty:
            raise UsageError(f"study {study_name!r} has no trials yet; run the search first")
        study = database.load_study(study_name)
        objectives = Objectives.of(study, metric_name)
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ranked = _ranked(complete, objectives)
        best = {t.number for t in study.best_trials} if len(objectives.names) > 1 else set()
        return _summary(study, url, objectives, trials), [
            history_section(study, objectives, complete),
            importance_section(study, objectives, complete),
            parallel_section(study, objectives, complete),
            *curves_sections(epochs, ranked, objectives.metric_name),
            flops_section(trials, objectives, best),
            best_trials_section(trials, objectives, ranked, best, top),
        ]


def build_report(url: str, study_name: str, metric_name: str | None = None, top: int = 10) -> str:
    """The report on study ``study_name`` at ``url`` as one HTML document."""
    summary, sections = report_sections(url, study_name, metric_name, top)
    nav = "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    title = html.escape(f"hpsearch report: {study_name}")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{title}</title>",
        f"<style>{STYLE}</style>", f'<script type="text/javascript">{get_plotlyjs()}</script>', "</head><body>",
        f"<h1>{title}</h1>", summary, f"<nav>{nav}</nav>",
        *(s.html() for s in sections), "</body></html>",
    ])
