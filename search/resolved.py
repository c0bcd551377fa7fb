"""``ResolvedSpec`` and ``resolve``: a ``StudySpec`` checked, every part of it built, before anything is written.

The checks that need torch or the storage layer import them where they run: the CLI imports
this module to build its parsers, and ``hpsearch --help`` must not wait for either.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, NoReturn

from hpsearch.models import ModelSpec, ValueRefused, get_model
from hpsearch.search.errors import UsageError, did_you_mean
from hpsearch.search.goals import COST_OBJECTIVES, TIME_OBJECTIVE, Goal
from hpsearch.search.plugins import code_identity, load_plugins, user_origin
from hpsearch.search.samplers import DEFAULT_SAMPLER, PRUNERS, SAMPLERS, auto_pruner, check_sampler_installed
from hpsearch.search.spec import DEFAULT_N_TRIALS, StudySpec, with_absolute_paths
from hpsearch.search.sweep import Sweep, SweepError, parse_sweep
from hpsearch.trainers.config import SETTINGS, TrainConfig
from hpsearch.trainers.task_registry import build_task, get_task

if TYPE_CHECKING:
    from hpsearch.trainers.tasks import Task

@dataclass(frozen=True)
class ResolvedSpec:
    """A checked ``StudySpec`` with its parts built: models, sweep, task and trainer config."""

    spec: StudySpec
    model_specs: tuple[ModelSpec, ...]
    sweep: Sweep
    task: Task
    train_config: TrainConfig
    sampler: str
    goals: tuple[Goal, ...]
    n_trials: int | None
    pruner: str = "percentile"  # the spec's, with auto resolved for the sampler
    code: dict[str, str] = field(default_factory=dict)  # plugins.code_identity: the user code's hashes

    @property
    def directions(self) -> list[str]:
        return [goal.direction for goal in self.goals]

    @property
    def multi_objective(self) -> bool:
        return len(self.goals) > 1

    @property
    def grid_points(self) -> int | None:
        """The points of a grid that runs whole (no ``--n-trials`` below its size); None otherwise."""
        return _grid_points(self.sampler, self.sweep, self.n_trials)


# A step schedule's LR under this share of its peak before the last epoch has all but stopped training.
STEEP_STEP_FACTOR = 1e-3


def steep_step_note(resolved: ResolvedSpec) -> str | None:
    """A note where ``--scheduler step`` (set or swept) brings the LR under a thousandth of its peak before the last epoch.

    The defaults (a factor of 0.1 every epoch) suit a few epochs; over 8, the last trains at 1e-6 of ``--lr``.
    """
    config, params = resolved.train_config, {p.name: p for p in resolved.sweep.params}
    schedulers = params["scheduler"].values or () if "scheduler" in params else (config.scheduler,)
    if "step" not in schedulers or {"step_gamma", "step_every_epochs"} & params.keys() or config.step_every_epochs <= 0:
        return None
    decays = math.floor(max(config.epochs - 1 - config.warmup_epochs, 0) / config.step_every_epochs)
    factor = config.step_gamma**decays
    if factor >= STEEP_STEP_FACTOR:
        return None
    return (f"--scheduler step multiplies the LR by {config.step_gamma:g} every {config.step_every_epochs:g} epoch(s) after "
            f"the warmup: in the last of {config.epochs} epochs it is {factor:.0e} of --lr; for a gentler decay pass "
            f"--step-every-epochs {max(1, round(config.epochs / 3))} or a --step-gamma nearer 1")


def resolve(spec: StudySpec) -> ResolvedSpec:
    """Check every part of ``spec`` and build what the search needs; ``UsageError`` if wrong."""
    if not spec.models:
        raise UsageError("name at least one model with --models")
    try:
        model_specs = tuple(get_model(m) for m in dict.fromkeys(spec.models))
    except KeyError as error:
        raise UsageError(str(error.args[0])) from None
    # Checks that need no task first: building one imports torch, and these answer at once.
    check_study_options(spec)
    check_study_name(spec.name)
    try:
        train_config = TrainConfig().with_overrides({**spec.fixed_train(), "monitor": spec.metric})
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
    _check_settings(train_config)
    _check_storage(spec)
    _check_output_dir(Path(spec.output_dir))
    _check_artifacts(spec)
    try:
        task_spec = get_task(spec.task)
        if user_origin("task", spec.task) is None:
            # A built-in task has no step, so no step hyperparameters: its sweep (and the sampler
            # that fits it) is checked before the task is built, which imports torch.
            _sampler(spec, parse_sweep(spec.sweep, model_specs))
        task = build_task(spec.task, spec.task_options)
        task.check()
    except (KeyError, ValueError, OSError) as error:
        origin = user_origin("task", spec.task)
        raise UsageError(f"{_task_error(spec.task, error)}{f' ({origin})' if origin else ''}") from None
    for model in model_specs:
        if not model.accepts(task.data):
            raise UsageError(f"model {model.name} takes {model.input_kind} input, but task {task_spec.name} gives "
                             f"{task.data.kind}; pass a task that gives {model.input_kind} (--task, or task= in Python; hpsearch tasks "
                             "lists them)")
    sweep = parse_sweep(spec.sweep, model_specs, task.step_params)

    for name in spec.train:
        if any(p.name == name for p in sweep.params):
            raise UsageError(f"{name} is both fixed by --{name.replace('_', '-')} and swept; drop one of them")
    from hpsearch.trainers.hardware import choose_precision, resolve_device

    try:
        device = resolve_device(train_config.device)
        choose_precision(train_config.precision, device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    _check_optimizers(train_config, sweep)
    _check_label_smoothing(train_config, sweep, task)

    sampler = _sampler(spec, sweep)
    n_trials = spec.n_trials
    if sampler != "grid" and n_trials is None:
        n_trials = DEFAULT_N_TRIALS

    metrics = {"val_loss": "minimize", "train_loss": "minimize", **task.directions()}
    if spec.metric not in metrics:
        raise UsageError(f"unknown metric {spec.metric!r} for task {spec.task}{did_you_mean(spec.metric, metrics)}; "
                         f"choose from {', '.join(metrics)}")
    goals = _goals(spec, metrics, task.undirected())
    from hpsearch.search.pareto import ParetoPruner  # here: it imports optuna, which --help does without

    if spec.pruner != "auto":  # a pruner that cannot judge these objectives says so before what else it needs
        ParetoPruner.for_study(spec.pruner, goals, train_config.epochs, train_config.warmup_epochs)
    pruner = _pruner(spec, sampler, len(goals) > 1, _grid_points(sampler, sweep, n_trials), train_config.checkpoints)
    code = code_identity([m.name for m in model_specs], task)
    resolved = ResolvedSpec(spec, model_specs, sweep, task, train_config, sampler, goals, n_trials, pruner, code)
    _check_models_build(resolved)
    return resolved


# Optuna's studies table holds a name in a VARCHAR(512).
MAX_STUDY_NAME = 512


def check_study_name(name: str) -> None:
    """``UsageError`` for a study name the database cannot store."""
    if len(name) > MAX_STUDY_NAME:
        raise UsageError(f"the study name is {len(name):,} characters; the study database stores at most {MAX_STUDY_NAME}")


def _grid_points(sampler: str, sweep: Sweep, n_trials: int | None) -> int | None:
    if sampler != "grid" or (n_trials is not None and n_trials < sweep.grid_size):
        return None
    return sweep.grid_size


def named(where: Mapping[str, str], key: str) -> str:
    """How the user gave ``key`` (a study option's name, or ``[task] NAME``): ``where``'s text, else its flag."""
    return where.get(key) or f"--{key.removeprefix('[task] ').replace('_', '-')}"


def check_study_options(spec: StudySpec, where: Mapping[str, str] = MappingProxyType({})) -> None:
    """Each study option's value is one it allows; ``UsageError`` naming the option as ``where`` says the user gave it."""

    def refuse(name: str, reason: str) -> NoReturn:
        raise UsageError(f"{named(where, name)} {reason}")

    if spec.n_trials is not None and spec.n_trials < 1:
        refuse("n_trials", f"must be at least 1 (got {spec.n_trials})")
    if spec.timeout is not None and spec.timeout <= 0:
        refuse("timeout", f"must be positive (got {spec.timeout:g})")
    if spec.stop_when_converged is not None and spec.stop_when_converged < 1:
        refuse("stop_when_converged", f"must be at least 1 trial (got {spec.stop_when_converged})")
    if spec.stop_when_converged is not None and len(spec.objectives) > 1:
        refuse("stop_when_converged", "takes a single objective; a Pareto front has no one best to stop on")
    if spec.direction not in (None, "minimize", "maximize"):
        refuse("direction", f"must be minimize or maximize (got {spec.direction!r})")
    if spec.direction is not None and spec.objectives:
        refuse("direction", f"sets the direction of one objective; give each of --objectives its own, as "
                            f"NAME:{spec.direction} (e.g. {spec.objectives[0].partition(':')[0]}:{spec.direction})")
    for name, limit in (("max_flops", spec.max_flops), ("max_params", spec.max_params)):
        if limit is not None and limit <= 0:
            refuse(name, f"must be positive (got {limit:g})")
    for name, value, known in (("pruner", spec.pruner, PRUNERS), ("sampler", spec.sampler, SAMPLERS)):
        if value is not None and value not in known:
            # "--pruner" would read oddly before "unknown pruner"; a file's key or a keyword reads well.
            given = f"{where[name]}: " if name in where else ""
            raise UsageError(f"{given}unknown {name} {value!r}{did_you_mean(value, known)}; choose from {', '.join(known)}")


def _pruner(spec: StudySpec, sampler: str, multi_objective: bool, grid_points: int | None, checkpoints: str) -> str:
    """The pruner the search uses: ``--pruner``, or ``auto``'s choice; ``UsageError`` for halving where it cannot run."""
    # A point waiting at a rung resumes from its last.pt: without one it would train its epochs again.
    resumable = checkpoints in ("all", "last")
    if spec.pruner == "auto":
        return auto_pruner(sampler, multi_objective, grid_points if resumable else None)
    if spec.pruner == "halving":
        if sampler != "grid":
            raise UsageError(f"--pruner halving runs a grid's points in rounds; this search samples (--sampler {sampler}): "
                             "sweep value lists for a grid, or choose another pruner")
        if grid_points is None:
            raise UsageError(f"--pruner halving compares every point of the grid at each rung; --n-trials {spec.n_trials} "
                             "would leave some out: drop --n-trials or choose another pruner")
        if not resumable:
            raise UsageError(f"--pruner halving resumes waiting points from last.pt; --checkpoints {checkpoints} keeps no "
                             "last.pt: use --checkpoints all or last")
    return spec.pruner


def _sampler(spec: StudySpec, sweep: Sweep) -> str:
    """The sampler the search uses: ``--sampler``, else grid for value lists and ``DEFAULT_SAMPLER`` for ranges."""
    sampler = spec.sampler or ("grid" if sweep.is_grid else DEFAULT_SAMPLER)
    if sampler == "grid" and not sweep.is_grid:
        ranges = [p.name for p in sweep.params if p.is_range]
        raise UsageError(f"the grid sampler needs value lists, but {', '.join(ranges)} "
                         f"{'is a range' if len(ranges) == 1 else 'are ranges'}; use --sampler tpe")
    check_sampler_installed(sampler)
    return sampler


def _goals(spec: StudySpec, metrics: dict[str, str], undirected: list[str]) -> tuple[Goal, ...]:
    """The study's objectives: ``--objectives`` items (``name`` or ``name:direction``), else ``--metric``.

    A metric whose direction nothing declares is refused rather than minimized unasked: an AUROC
    minimized sorts the worst trials first.
    """
    unknown = "does not say whether higher is better (no higher_is_better, and the task's metric_directions does not name it)"
    if not spec.objectives:
        if spec.direction is None and spec.metric in undirected:
            raise UsageError(f"metric {spec.metric} {unknown}; pass --direction maximize or --direction minimize")
        return (Goal(spec.metric, spec.direction or metrics[spec.metric]),)
    known = {**metrics, **{name: "minimize" for name in (*COST_OBJECTIVES, TIME_OBJECTIVE)}}
    goals = []
    for item in spec.objectives:
        name, _, direction = item.partition(":")
        if name not in known:
            raise UsageError(f"unknown objective {name!r}{did_you_mean(name, known)}; choose from {', '.join(known)}")
        if direction not in ("", "minimize", "maximize"):
            raise UsageError(f"objective {item!r}: the direction must be minimize or maximize")
        if not direction and name in undirected:
            raise UsageError(f"objective {name} {unknown}; write {name}:maximize or {name}:minimize")
        goals.append(Goal(name, direction or known[name]))
    if len({g.name for g in goals}) < len(goals):
        raise UsageError(f"--objectives names an objective twice: {','.join(spec.objectives)}")
    if all(g.is_cost for g in goals):
        raise UsageError("--objectives needs a training metric besides flops, params and time, e.g. val_loss,flops")
    return tuple(goals)


def _check_settings(config: TrainConfig) -> None:
    for param in SETTINGS:
        try:
            param.validate(getattr(config, param.name))
        except ValueRefused as error:
            raise UsageError(f"--{param.name.replace('_', '-')}: {error.reason}") from None


def _check_optimizers(config: TrainConfig, sweep: Sweep) -> None:
    from hpsearch.trainers.optim import optimizer_names

    swept = next((p.values or () for p in sweep.params if p.name == "optimizer"), ())
    for name in (config.optimizer, *swept):
        if name not in optimizer_names():
            raise UsageError(f"unknown optimizer {name!r}; choose from {', '.join(optimizer_names())} (or register_optimizer your own)")


def _check_label_smoothing(config: TrainConfig, sweep: Sweep, task: Task) -> None:
    """Label smoothing reaches a task's loss as a keyword; a loss without one cannot take it."""
    from hpsearch.trainers.step import takes_label_smoothing

    smoothed = config.label_smoothing > 0 or any(p.name == "label_smoothing" for p in sweep.params)
    if smoothed and task.step is None and not takes_label_smoothing(task.loss):
        raise UsageError(f"task {task.name}'s loss takes no label_smoothing; drop --label-smoothing for this task")


def _check_storage(spec: StudySpec) -> None:
    """``StorageURLError`` (a ``StorageError``, as an unreachable database's) for a URL that cannot be used."""
    if spec.storage is None:
        return
    from hpsearch.storage.urls import is_proxy_url, parse_proxy_url, parse_storage_url

    parse_proxy_url(spec.storage) if is_proxy_url(spec.storage) else parse_storage_url(spec.storage)


def _check_artifacts(spec: StudySpec) -> None:
    """The artifact store must be usable now: its URL parsed, and a probe object written and removed."""
    if spec.artifacts is None:
        return
    from hpsearch.storage.artifacts import ArtifactStoreError, CheckpointArchive

    try:
        CheckpointArchive.open(spec.artifacts).check()
    except ArtifactStoreError as error:
        raise UsageError(str(error)) from None


def _check_output_dir(path: Path) -> None:
    """The output directory must exist and be writable, or be creatable.

    Writability is probed with a temporary file, because ``os.access`` answers yes to root
    even where the filesystem refuses (``/proc``, read-only mounts).
    """
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"output directory {path}: {existing} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError:
        raise UsageError(f"output directory {path} is not writable; choose another with --output-dir") from None


# Grid points built on the meta device before anything is written (about 3 ms each): the first of
# each model and a spread of the rest. Each trial builds and budgets its own point when it runs.
BUILD_CHECK_SAMPLE = 64


def _check_models_build(resolved: ResolvedSpec) -> None:
    """Build a sample of the grid's points (or each model's defaults) on the meta device: no memory, little time.

    A large grid is not built whole here (10^6 points would take an hour); a point outside the
    sample that cannot be built fails its own trial, with the reason, when it runs.
    """
    from hpsearch.search.trial import TrialPlan

    sweep, task = resolved.sweep, resolved.task
    if sweep.is_grid:
        size = sweep.grid_size
        spread = {i * size // BUILD_CHECK_SAMPLE for i in range(min(size, BUILD_CHECK_SAMPLE))}
        points = [sweep.first_point(m) for m in sweep.models]
        points += [sweep.grid_point(i) for i in sorted(spread) if sweep.grid_point(i) not in points]
    else:
        points = [{"model": m} for m in sweep.models]
    for point in points:
        plan = TrialPlan.from_point(point, resolved.train_config, (p.name for p in task.step_params))
        try:
            plan.build_model(task, meta=True)
        except Exception as error:  # noqa: BLE001  torch's size checks raise RuntimeError; a user's builder anything
            shown = ", ".join(f"{k}={v}" for k, v in point.items())
            origin = user_origin("model", plan.model_name)
            no_data = getattr(task.data, "kind", "any") == "any" and isinstance(error, (AttributeError, TypeError))
            hint = " (the task gives no DataSpec: pass data=DataSpec(...) to its Task)" if no_data else ""
            raise UsageError(f"{shown} cannot be built{f' ({origin})' if origin else ''}: "
                             f"{type(error).__name__}: {error}{hint}") from None


def prepare(spec: StudySpec, where: Mapping[str, str] = MappingProxyType({})) -> ResolvedSpec:
    """Load the spec's plugins, check and resolve it, and probe its models; ``UsageError`` if anything is wrong.

    ``where`` says how the user gave a value where that is not its flag, so that an error names it
    as given: a study option by its name (``n_trials``, ``sweep``), a task option as ``[task] NAME``;
    e.g. ``{"n_trials": "s.toml: n_trials"}``. The CLI and the Python API both start a search here.
    """
    load_plugins(spec.plugins)
    check_task_options(spec, where)
    check_study_options(spec, where)
    # Absolute, as the study stores them: a worker started in another folder (or on another machine
    # with the same mount) reads the same data and resumes from the same checkpoints, where "." meant
    # each worker's own.
    spec = dataclasses.replace(spec, output_dir=str(Path(spec.output_dir).resolve()),
                               task_options=with_absolute_paths(spec.task_options, Path.cwd()))
    try:
        resolved = resolve(spec)
    except SweepError as error:
        if "sweep" not in where:
            raise
        raise SweepError(f"{where['sweep']}: {error}") from None
    from hpsearch.search.probe import probe_models  # torch, which resolve's first checks do without

    probe_models(resolved, user_origin)
    return resolved


def _task_error(task: str, error: KeyError | ValueError | OSError) -> str:
    """One line for what finding or building ``task`` raised: hpsearch's and a task's own messages as they
    are, a missing file or a bare key (``df["prcie"]`` in a task's builder) named for what it is."""
    if isinstance(error, OSError):
        return f"task {task}: {error.strerror or type(error).__name__}: {error.filename}" if error.filename else f"task {task}: {error}"
    message = str(error.args[0]) if error.args else ""
    if isinstance(error, KeyError) and " " not in message:
        return f"task {task}: KeyError {error.args[0]!r} while building it" if error.args else f"task {task}: KeyError"
    return message or f"task {task}: {type(error).__name__}"


def check_task_options(spec: StudySpec, where: Mapping[str, str]) -> None:
    """Every task option given must be one of the chosen task's, with a value it allows (``prepare``'s ``where``)."""
    try:
        task = get_task(spec.task)
    except KeyError:
        return  # resolve names the unknown task and the known ones
    options = {option.name: option for option in task.options}
    for name, value in spec.task_options.items():
        given = named(where, f"[task] {name}")
        if name not in options:
            raise UsageError(f"{given}: task {task.name} has no option {name}{did_you_mean(name, options)}; "
                             f"its options: {', '.join(options) or 'none'}")
        try:
            # Flags arrive as text; a study file's values are typed already.
            spec.task_options[name] = options[name].parse(value) if isinstance(value, str) else options[name].validate(value)
        except ValueRefused as error:
            raise UsageError(f"{given}: {error.reason}") from None
