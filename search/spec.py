"""``StudySpec``: everything that defines a search as the user gave it, each study option declared once.

``search/resolved.py`` checks a spec and builds its parts.
"""

from __future__ import annotations

import json
import os
from dataclasses import Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hpsearch.search.samplers import DEFAULT_PRUNER, DEFAULT_SAMPLER, PRUNERS, SAMPLERS
from hpsearch.trainers.config import TrainConfig

DEFAULT_N_TRIALS = 20
#: Task options that name files or folders: a study stores them absolute (a study file's relative to
#: its folder, others to the working directory), so that workers started elsewhere read the same data.
PATH_TASK_OPTIONS = ("data",)


def with_absolute_paths(task_options: dict[str, Any], base: Path) -> dict[str, Any]:
    """``task_options`` with each non-empty ``PATH_TASK_OPTIONS`` text made absolute against ``base``.

    Normalized but not resolved: a link stays the path the user named.
    """
    return {name: os.path.normpath(base / Path(value).expanduser())
            if name in PATH_TASK_OPTIONS and isinstance(value, str) and value else value
            for name, value in task_options.items()}


def study_option(default: Any, help: str, *, aliases: tuple[str, ...] = (), choices: tuple[str, ...] | None = None,
                 metavar: str | None = None) -> Any:
    """A ``StudySpec`` field that users set: its flag (``--dashed-name`` and ``aliases``), study-file key and
    ``search()`` keyword come from this one declaration (type from the field's annotation)."""
    return field(default=default, metadata={"option": {"help": help, "aliases": aliases, "choices": choices, "metavar": metavar}})


@dataclass(frozen=True)
class StudySpec:
    """A search as the user described it.

    ``train`` holds fixed ``TrainConfig`` settings (``lr`` may be ``"auto"``: the LR range test
    per trial) and ``task_options`` the task's options; ``sweep`` keeps the sweep items as
    written, so the spec stores and reloads as JSON. The fields declared with ``study_option``
    are the study options; the others have flags of their own shape (``--models``,
    ``--param-sweep``, ``--plugin``, ``--task`` and its options, the trainer's settings).
    """

    models: tuple[str, ...]
    sweep: tuple[str, ...] = ()
    task: str = "synthetic_tokens"
    task_options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    plugins: tuple[str, ...] = ()
    study_name: str | None = study_option(None, "default: MODELS-TASK, e.g. tfn_classifier-synthetic_tokens", aliases=("--study",))
    storage: str | None = study_option(None, "study database URL (default: $HPSEARCH_STORAGE, else sqlite:///OUTPUT_DIR/hpsearch.db)")
    output_dir: str = study_option(".", "where the default database and the checkpoints go (default: the working directory)")
    artifacts: str | None = study_option(
        None, "also keep checkpoints in an artifact store, for workers that share no filesystem: file:///path or "
        "s3://bucket/prefix (S3 credentials, region and endpoint from the AWS_* variables; needs hpsearch[s3])",
        metavar="URL")
    sampler: str | None = study_option(None, f"default: grid when every sweep item is a list, else {DEFAULT_SAMPLER}", choices=SAMPLERS)
    pruner: str = study_option(
        DEFAULT_PRUNER, f"performance pruner (default: {DEFAULT_PRUNER}: rung for the gp sampler: at a third of the epochs, stop a trial "
        "below the median of every trial that got there; halving for a grid of 9 points or more: every point waits at "
        "each rung (the first epoch after the LR warmup, then 3x the epochs) until all have reached it, and the best "
        "third go on, each resuming from its checkpoint; otherwise percentile: from the first epoch after the LR warmup, "
        "keep only trials among the best quarter of completed trials at that epoch; and none for several --objectives). "
        "pareto is for several objectives: at doubling rungs, stop a trial when a complete trial dominates even an "
        "optimistic guess of where it will end. The divergence guard is always on", choices=PRUNERS)
    metric: str = study_option("val_loss", "the monitored value, reported every epoch (default: val_loss)")
    direction: str | None = study_option(None, "default: minimize for losses, maximize for accuracy", choices=("minimize", "maximize"))
    objectives: tuple[str, ...] = study_option(
        (), "several objectives, e.g. val_loss,flops or val_acc:maximize,params: a multi-objective study (Pareto front); "
        "it takes --pruner pareto or none (the default), the divergence guard stays", metavar="NAME[:DIRECTION],...")
    max_flops: float | None = study_option(None, "reject configurations above this many forward FLOPs per sample, before training")
    max_params: int | None = study_option(None, "reject configurations above this many parameters, before training")
    n_trials: int | None = study_option(
        None, f"trials to run: of a grid, this many of its points; of another sampler, the study's budget, which a re-run "
        f"with the same number has spent already (default: the whole grid, or {DEFAULT_N_TRIALS} for other samplers)")
    timeout: float | None = study_option(None, "stop starting trials after this many seconds")
    stop_when_converged: int | None = study_option(
        None, "end the study once N complete trials in a row have not improved the best by 1% of the values' "
        "interquartile range (on lcbench, 20 ended at about half the budget; README: Stopping a study that has converged)",
        metavar="N")
    allow_changes: bool = study_option(
        False, "re-run a study although settings that make its trials comparable (epochs, task, trainer settings, ...) changed")

    @property
    def lr_finder(self) -> bool:
        """Whether each trial's LR comes from the LR range test (``lr = "auto"``)."""
        return self.train.get("lr") == "auto"

    def fixed_train(self) -> dict[str, Any]:
        """The trainer settings as ``TrainConfig`` takes them: an ``"auto"`` LR is left to each trial's range test."""
        return {name: value for name, value in self.train.items() if not (name == "lr" and value == "auto")}

    @property
    def name(self) -> str:
        """The study name: ``--study-name``, else derived from the models and the task."""
        return self.study_name or f"{'+'.join(self.models)}-{self.task}"

    def identity(self) -> dict[str, Any]:
        """What must match for a re-run to resume a study rather than start another."""
        return {
            "models": list(self.models),
            "sweep": list(self.sweep),
            "task": self.task,
            "task_options": self.task_options,
            "objectives": list(self.objectives),
            "metric": self.metric,
        }

    def changes_from(self, previous: StudySpec) -> list[str]:
        """What differs from ``previous`` in the settings that make trials comparable, as ``name old -> new``.

        That is the search itself (models, sweep, task and its options, objectives, metric) and
        every trainer setting but those that change only speed (device, loader workers, compile).
        """
        changes = []
        mine, theirs = self.identity(), previous.identity()
        # Studies begun before paths were stored absolute hold them as typed: read from here, as then.
        theirs["task_options"] = with_absolute_paths(previous.task_options, Path.cwd())
        if self.task == previous.task:
            # An option given at its default is the option left out: the same task is built.
            ours, stored = (_with_defaults(self.task, options) for options in (mine.pop("task_options"), theirs.pop("task_options")))
            changes += [f"task_options {name} {_shown(stored.get(name))} -> {_shown(ours.get(name))}"
                        for name in sorted(set(ours) | set(stored)) if ours.get(name) != stored.get(name)]
        for name in mine:
            if mine[name] != theirs.get(name):
                separator = " " if name == "sweep" else ","  # as each is written on the command line
                changes.append(f"{name} {_shown(theirs.get(name), separator)} -> {_shown(mine[name], separator)}")
        for name in sorted(set(self.train) | set(previous.train)):
            if name in SPEED_ONLY_SETTINGS:
                continue
            old, new = previous.train.get(name, _default(name)), self.train.get(name, _default(name))
            if old != new:
                changes.append(f"{name} {_shown(old)} -> {_shown(new)}")
        return changes

    def store_refusal(self, previous: StudySpec) -> str | None:
        """Why this spec may not run more of ``previous``'s study, because it names another artifact store; else None.

        The store is the study's: retries, workers and ``load_model`` read ``previous``'s, so new
        checkpoints kept elsewhere would not be found. ``--allow-changes`` does not lift this.
        """
        from hpsearch.storage.urls import mask_password

        def shown(url: str | None) -> str | None:
            return None if url is None else mask_password(url).rstrip("/")

        stored, given = shown(previous.artifacts), shown(self.artifacts)
        if stored == given:
            return None
        if stored is None:
            return (f"study {self.name!r} was run without an artifact store (its checkpoints are in its output folder), "
                    f"so it cannot keep new ones in {given}: drop --artifacts, or pass --study-name NEW for a new study")
        return (f"study {self.name!r} keeps its checkpoints in {stored}, where retries, workers and load_model look for them; "
                f"pass --artifacts {stored} (artifacts= in Python){'' if given is None else f', not {given},'} "
                "or --study-name NEW for a new study")

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("storage")  # a URL may carry a password; the study never stores it
        if data["artifacts"] is not None:
            from hpsearch.storage.urls import mask_password

            data["artifacts"] = mask_password(data["artifacts"])  # open() refuses credentials in it; this is a second guard
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StudySpec:
        data = json.loads(text)
        for key in ("models", "sweep", "objectives", "plugins"):
            data[key] = tuple(data.get(key, ()))
        if data.pop("lr_finder", False):  # how studies begun before lr = "auto" was a setting stored it
            data["train"] = {**data.get("train", {}), "lr": "auto"}
        return cls(**data)


#: The study options (``study_option`` fields), in declaration order.
STUDY_OPTIONS: tuple[Field[Any], ...] = tuple(f for f in fields(StudySpec) if "option" in f.metadata)


# Trainer settings that change how fast a trial runs, or what files it keeps, not what it computes.
SPEED_ONLY_SETTINGS = frozenset({"device", "num_workers", "compile", "checkpoints"})


def _default(name: str) -> Any:
    return getattr(TrainConfig, name, None)


def _with_defaults(task: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the registered ``task``'s defaults for those not given (as given, if the task is unknown here)."""
    from hpsearch.trainers.task_registry import get_task

    try:
        return get_task(task).resolve(options)
    except (KeyError, ValueError):  # a task not registered here, or options it no longer takes
        return options


def _shown(value: Any, separator: str = ",") -> str:
    if isinstance(value, (list, tuple)):
        return separator.join(map(str, value)) or "none"
    return str(value)
