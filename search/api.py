"""The Python API: run a search from a script or a notebook, and load the model it trained.

The CLI is a thin layer over the same pieces (``StudySpec`` -> ``prepare`` -> ``Orchestrator``).
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from torch import nn

from hpsearch.models import ModelSpec, get_model
from hpsearch.search.checkpoint_owner import FolderOwner, archived_owner, check_checkpoint_owner
from hpsearch.search.errors import UsageError, did_you_mean
from hpsearch.search.keywords import split_search_keywords
from hpsearch.search.orchestrator import Heartbeat, Orchestrator, SearchOutcome, silent
from hpsearch.search.plugins import code_identity, load_plugins, plugin_key, plugin_origin, trial_code, user_origin
from hpsearch.search.quiet import quiet_optuna
from hpsearch.search.resolved import ResolvedSpec, prepare
from hpsearch.search.results import idle_pruning
from hpsearch.search.spec import STUDY_OPTIONS, StudySpec
from hpsearch.search.study_claim import load_spec
from hpsearch.search.study_file import sweep_items
from hpsearch.search.trial import TrialPlan, study_folder
from hpsearch.storage.attributes import CHECKPOINT_ATTR, FAIL_REASON_ATTR, RETRY_OF_ATTR, UID_ATTR
from hpsearch.storage.database import StudyDatabase
from hpsearch.storage.urls import mask_password, resolve_storage_url
from hpsearch.trainers.checkpoints import BEST, LAST, load_checkpoint
from hpsearch.trainers.config import TrainConfig
from hpsearch.trainers.tasks import Task, TaskSpec, register_task

# The registry origin of tasks given to search() as objects.
GIVEN_ORIGIN = "given to search()"


def search(
    models: str | ModelSpec | Sequence[str | ModelSpec],
    task: str | Task | TaskSpec = "synthetic_tokens",
    sweep: Sequence[str] | Mapping[str, Any] | str = (),
    *,
    task_options: Mapping[str, Any] | None = None,
    plugins: Sequence[str] = (),
    workers: int = 1,
    threads: int | None = None,
    devices: str | None = None,
    verbose: bool = False,
    progress: bool | None = None,
    **options: Any,
) -> optuna.Study:
    """Run a search and return its ``optuna.Study``; the arguments are the CLI's flags.

    ``models`` are registered names (or what ``register_model`` returned); ``task`` is a
    registered name, or a ``Task`` object, used as it is. ``sweep`` is a list of sweep items
    (``["embed_dim:16,32", "lr:1e-4..1e-2:log"]``) or a dict (``{"embed_dim": [16, 32], "lr":
    "1e-4..1e-2:log"}``). ``options`` are the study options, named as the CLI's study flags
    (``study_name=``, ``storage=``, ``output_dir=``, ``sampler=``, ``pruner=``, ``metric=``,
    ``direction=``, ``objectives=``, ``max_flops=``, ``max_params=``, ``n_trials=``,
    ``timeout=``, ``stop_when_converged=``, ``allow_changes=``, ``artifacts=``), and trainer settings
    (``epochs=3``, ``optimizer="sgd"``, ``lr="auto"``, ...). Quiet by default: ``verbose=True``
    prints each epoch and FLOPs block; a progress bar shows where stderr is a terminal. Wrong
    input raises ``UsageError`` before anything is written. ``workers > 1`` needs models and
    tasks that worker processes can import (plugins), not objects defined here. ``threads`` is
    ``--threads``: torch's threads for the search, split among the workers (this process's own
    setting comes back afterwards).
    """
    model_list = [models] if isinstance(models, (str, ModelSpec)) or not isinstance(models, Iterable) else list(models)
    for model in model_list:
        if not isinstance(model, (str, ModelSpec)):
            kind = type(model).__name__
            what = f"the class {model.__name__}" if isinstance(model, type) else f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
            raise UsageError(f"models are registered names (or what register_model returned), not {what}: "
                             f"register_model(\"name\", build, params) first, then search(\"name\", ...)")
    keywords = [p for p in inspect.signature(search).parameters if p != "options"]
    study_options, train = split_search_keywords(options, keywords, model_list, task)
    spec = StudySpec(
        models=tuple(m.name if isinstance(m, ModelSpec) else m for m in model_list),
        sweep=sweep_items(sweep, "sweep"),
        task=_task_name(task),
        task_options=dict(task_options or {}),
        train=train,
        plugins=tuple(plugin_key(p, Path.cwd()) for p in plugins),
        **study_options,
    )
    if workers < 1:
        raise UsageError(f"workers must be at least 1 (got {workers})")
    if threads is not None and threads < 1:
        raise UsageError(f"threads must be at least 1 (got {threads})")
    from hpsearch.search.workers import run_local_workers, use_device, worker_devices

    assigned = worker_devices(devices, workers, train.get("device", "auto"))
    # Restored afterwards: a notebook's torch keeps its own setting (run_local_workers sets this process's share).
    with quiet_optuna(), _torch_threads(threads):
        resolved = use_device(_prepare(spec), assigned[0])
        if workers > 1:
            _check_workers_can_import(spec)
        show = sys.stderr.isatty() if progress is None else progress
        orchestrator = Orchestrator(resolved, echo=_echo if verbose else silent, progress=show, heartbeat=Heartbeat(),
                                    warn=_echo if verbose else _warn)
        try:
            if workers > 1:
                outcome = run_local_workers(orchestrator, workers, assigned, quiet=not verbose, threads=threads)
            else:
                outcome = orchestrator.run()
            _warn_of_outcome(outcome, orchestrator, verbose)
        except KeyboardInterrupt as interrupt:  # a notebook's interrupt: say what it left, as the CLI does
            raise KeyboardInterrupt(_what_an_interrupt_left(orchestrator)) from interrupt
        finally:
            # The pool's connections closed: a notebook's search left them to be garbage-collected
            # open (psycopg's ResourceWarning). The returned study reconnects when it is used.
            if orchestrator.database is not None:
                orchestrator.database.close()
    return outcome.study


def _what_an_interrupt_left(orchestrator: Orchestrator) -> str:
    """What an interrupted ``search()`` kept and what running it again does."""
    try:
        trials = [] if orchestrator.database is None else orchestrator.database.load_study(orchestrator.spec.name).trials
    except Exception:  # noqa: BLE001  interrupted before the study was stored, or its database gone: the interrupt stays the news
        trials = []
    retried = {number for t in trials for number in t.user_attrs.get(RETRY_OF_ATTR, ())}  # an earlier interrupt's
    stopped = [t for t in trials if t.state == optuna.trial.TrialState.FAIL and t.number not in retried
               and t.user_attrs.get(FAIL_REASON_ATTR, "").startswith("interrupted by ")]
    if not stopped:
        return "search() interrupted; finished trials are kept in the study"
    trial = stopped[-1]
    return (f"search() interrupted: trial {trial.number} is recorded as failed ({trial.user_attrs[FAIL_REASON_ATTR]}), "
            "finished trials are kept; the same search() again resumes it from its last checkpoint")


def _warn_of_outcome(outcome: SearchOutcome, orchestrator: Orchestrator, verbose: bool) -> None:
    """What the CLI's last lines would say that a quiet notebook must not miss, as UserWarnings."""
    resolved, spec = orchestrator.resolved, orchestrator.spec
    if outcome.idle and not verbose:
        # Quiet, a rerun whose budget is spent would return at once with no word: n_trials is the
        # study's total, where Optuna's optimize(n_trials=) runs that many more.
        warnings.warn(orchestrator.nothing_to_do(outcome.study), UserWarning, stacklevel=3)
    idle = idle_pruning(outcome.study, resolved)
    if idle is not None and spec.pruner != "auto":
        # The CLI's last lines say this of any pruner; here only of one the user chose, who expects it to prune.
        warnings.warn(idle, UserWarning, stacklevel=3)
    if outcome.trials_failed:
        # The CLI exits 1 here; a notebook would otherwise see a study come back as if all went well.
        failed = outcome.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        latest = next((t for t in reversed(failed) if FAIL_REASON_ATTR in t.user_attrs), None)
        example = f" (trial {latest.number}: {latest.user_attrs[FAIL_REASON_ATTR]})" if latest is not None else ""
        warnings.warn(f"{outcome.trials_failed} trial(s) failed; their fail_reason attributes say why{example}",
                      UserWarning, stacklevel=3)


def _check_workers_can_import(spec: StudySpec) -> None:
    """Worker processes load only the study's plugins: a model or task this script registered is unknown there.

    Unchecked, every worker process but this one stopped at its first trial, and this one ran
    the whole search alone.
    """
    for kind, names in (("model", spec.models), ("task", (spec.task,))):
        for name in names:
            origin = user_origin(kind, name)
            if origin is not None and plugin_origin(kind, name) is None:
                raise UsageError(f"{kind} {name!r} is {origin}, which worker processes cannot import: they load only "
                                 "plugins; pass the file that registers it as plugins=[...], or use workers=1")


def load_model(
    storage: str,
    study: str,
    trial: int | None = None,
    checkpoint: str = BEST,
    allow_changed_code: bool = False,
    task: Task | None = None,
) -> nn.Module:
    """The model a trial trained, built and loaded from its checkpoint, in eval mode on the CPU.

    ``trial`` is a trial number (default: the study's best trial); ``checkpoint`` is ``best.pt``
    (the epoch with the best monitored value) or ``last.pt``. Loads with ``weights_only=True``.
    Weights trained under other code of a user's model or task than this process has (edited
    since) are refused unless ``allow_changed_code``. ``task`` is the ``Task`` object a study was
    searched with (``search(model, task, ...)``), for a process that has not registered it.
    """
    if checkpoint not in (BEST, LAST):
        raise UsageError(f"checkpoint={checkpoint!r}{did_you_mean(checkpoint, (BEST, LAST))}: a trial keeps {BEST} "
                         f"(its best epoch) and {LAST}")
    if task is not None:
        _task_name(task)
    with quiet_optuna():
        loaded, spec = _stored_search(storage, study)
        if trial is None:
            if len(loaded.directions) > 1:
                front = ", ".join(str(t.number) for t in loaded.best_trials) or "none yet"
                raise UsageError(f"study {study!r} has several objectives; pick one of its best trials by number "
                                 f"(its Pareto front: {front})")
            try:
                chosen = loaded.best_trial
            except ValueError:
                raise UsageError(f"study {study!r} has no completed trial yet") from None
        else:
            chosen = next((t for t in loaded.get_trials(deepcopy=False) if t.number == trial), None)
            if chosen is None:
                raise UsageError(f"study {study!r} has no trial {trial}")
    saved = chosen.user_attrs.get(CHECKPOINT_ATTR)
    if saved is None and not chosen.state.is_finished():
        # Its checkpoint is recorded as it ends; until then the files are being rewritten each epoch.
        raise UsageError(f"trial {chosen.number} of study {study!r} is {chosen.state.name}: its model can be loaded "
                         "once it has ended")
    if saved is None:
        raise UsageError(f"trial {chosen.number} of study {study!r} ({chosen.state.name}) saved no checkpoint")
    uid = loaded.user_attrs.get(UID_ATTR)
    folder = Path(saved).parent.parent
    check_checkpoint_owner(FolderOwner.read(folder), str(folder), study, uid)
    scratch = tempfile.TemporaryDirectory(prefix="hpsearch-load-")
    with scratch:
        return _load_trained(spec, study, chosen, Path(saved).with_name(checkpoint), Path(scratch.name), allow_changed_code,
                             uid)


def load_task(storage: str | None, study: str) -> Task:
    """The task ``study`` searched, built with the options it stored (its ``test`` split included), for predictions.

    ``storage`` as ``load_model`` takes it (None: ``$HPSEARCH_STORAGE``, else ``sqlite:///hpsearch.db``).
    A ``data`` path is stored absolute (a study begun before that kept it as typed: relative to this process's folder).
    """
    from hpsearch.trainers.tasks import build_task

    with quiet_optuna():
        _, spec = _stored_search(storage, study)
    try:
        return build_task(spec.task, spec.task_options)
    except KeyError as error:
        raise UsageError(f"{error.args[0]}: import or register it in this process before load_task (studies run with "
                         "plugins=[...] load it by themselves)") from None
    except (ValueError, OSError) as error:
        raise UsageError(f"study {study!r}'s task {spec.task}: {error}") from None


def _stored_search(storage: str | None, study: str) -> tuple[optuna.Study, StudySpec]:
    """``study`` loaded from ``storage`` and the search it stored, its plugins loaded."""
    with StudyDatabase.open_for_reading(resolve_storage_url(storage)) as database:
        loaded = database.load_study(study)
    spec = load_spec(loaded)
    load_plugins(spec.plugins)
    return loaded, spec


def _load_trained(spec: StudySpec, study: str, chosen: optuna.trial.FrozenTrial, path: Path, scratch: Path,
                  allow_changed_code: bool, uid: str | None) -> nn.Module:
    """``chosen``'s model with the weights of ``path``, fetched into ``scratch`` from the study's artifact store if absent."""
    checkpoint = path.name
    if not path.exists() and spec.artifacts is not None:
        from hpsearch.search.checkpoint_sync import artifact_key
        from hpsearch.storage.artifacts import READ_WAIT_S, ArtifactStoreError, CheckpointArchive

        try:
            archive = CheckpointArchive.open(spec.artifacts, timeout=READ_WAIT_S)
            check_checkpoint_owner(archived_owner(archive, study), archive.uri(study_folder(study)), study, uid)
            key = artifact_key(study, chosen.number, checkpoint)
            if archive.fetch(key, scratch / checkpoint):
                path = scratch / checkpoint
        except ArtifactStoreError as error:
            raise UsageError(str(error)) from None
    if not path.exists():
        kept = spec.train.get("checkpoints", "all")
        hint = {"last": ' (the study keeps --checkpoints last: pass checkpoint="last.pt")',
                "best": " (the study keeps --checkpoints best)", "none": " (the study keeps --checkpoints none)"}
        stored = f" here or in {mask_password(spec.artifacts)}" if spec.artifacts else ""
        raise UsageError(f"trial {chosen.number}'s checkpoint {path} is missing{stored}{hint.get(kept, '')}")
    model_name = chosen.params.get("model", spec.models[0])
    from hpsearch.trainers.tasks import build_task

    # Plugins the study names are loaded above; a model or task the search's script registered is not.
    # An unknown model is named before an unknown task, as the search names them.
    try:
        get_model(model_name)
    except KeyError as error:
        raise UsageError(f"{error.args[0]}: import or register it in this process before load_model (studies run with "
                         "plugins=[...] load it by themselves)") from None
    try:
        built = build_task(spec.task, spec.task_options)
        plan = TrialPlan.from_point({**chosen.params, "model": model_name}, TrainConfig(), (p.name for p in built.step_params))
    except KeyError as error:
        raise UsageError(f"{error.args[0]}: import or register it in this process before load_model, or pass the Task "
                         "object the study searched as load_model(..., task=task) (studies run with plugins=[...] load "
                         "them by themselves)") from None
    code = chosen.user_attrs.get("code")
    if code is not None and not allow_changed_code and code != trial_code(code_identity([model_name], built), model_name, built.name):
        raise UsageError(f"trial {chosen.number} of study {study!r} was trained with other code for model {model_name} or task "
                         f"{built.name} than this process has; pass allow_changed_code=True to load its weights anyway")
    model = plan.build_model(built)
    try:
        model.load_state_dict(load_checkpoint(path)["model"])
    except RuntimeError as error:  # allow_changed_code, and the edit changed the weights' shapes
        first = str(error).strip().splitlines()
        raise UsageError(f"trial {chosen.number}'s weights do not fit model {model_name} as this process builds it "
                         f"({first[1].strip() if len(first) > 1 else first[0]}); restore the code it was trained with") from None
    return model.eval()


def _prepare(spec: StudySpec) -> ResolvedSpec:
    # Keywords, not flags: "n_trials must be at least 1", "task_options['window']: ...".
    where = {option.name: option.name for option in STUDY_OPTIONS}
    return prepare(spec, where | {f"[task] {name}": f"task_options[{name!r}]" for name in spec.task_options})


def _task_name(task: str | Task | TaskSpec) -> str:
    """The registry name of ``task``; a ``Task`` object is registered as it is (replacing an earlier one)."""
    if isinstance(task, str):
        return task
    if isinstance(task, TaskSpec):
        return task.name
    if isinstance(task, Task):
        try:
            register_task(task.name, _Given(task), (), "given as an object to search()")
        except ValueError:
            raise UsageError(
                f"a task named {task.name!r} is already registered ({user_origin('task', task.name) or 'built in'}); "
                f"pass task={task.name!r} to use that one, "
                "or give this Task another name: dataclasses.replace(task, name=...)"
            ) from None
        return task.name
    raise UsageError(f"task must be a registered task's name or a Task (got {type(task).__name__})")


class _Given:
    """A task builder that returns a ``Task`` made elsewhere (its registry origin: one per task name)."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.hpsearch_origin = f"{GIVEN_ORIGIN}: {task.name}"

    def __call__(self) -> Task:
        return self.task


def _echo(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` (None: left as they are), and restored."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _warn(line: str) -> None:
    # A notebook shows a UserWarning where a quiet search's note would be lost.
    warnings.warn(line, UserWarning, stacklevel=2)


__all__ = ["load_model", "load_task", "search"]
