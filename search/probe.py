"""The probe: a model and the task's step run once on two examples, before anything is written.

Zoo models are tested against the zoo's tasks; a model or a task of the user's is not, and
without the probe a mismatch (wrong input, wrong output shape, a step that returns no loss,
a metric that cannot read the outputs) would surface only as every trial failing.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset, default_collate

from hpsearch.models.registry import ModelSpec
from hpsearch.search.errors import UsageError
from hpsearch.search.resolved import ResolvedSpec
from hpsearch.search.trial import TrialPlan
from hpsearch.trainers.data import DataError, move_to_device
from hpsearch.trainers.metrics import MetricSet
from hpsearch.trainers.step import as_step_output, split_batch
from hpsearch.trainers.tasks import Task

EXAMPLES = 2


def example_batch(task: Task, split: Any = None) -> Any:
    """A batch of the first two examples of ``split`` (default: the training split), built as the trainer would build one."""
    split = task.train if split is None else split
    if isinstance(split, (tuple, list)):
        return tuple(t[:EXAMPLES].contiguous() for t in split)
    if isinstance(split, IterableDataset):
        items = []
        for item in split:
            items.append(item)
            if len(items) == EXAMPLES:
                break
        return default_collate(items)
    if isinstance(split, Dataset):
        return default_collate([split[i] for i in range(min(EXAMPLES, len(split)))])  # type: ignore[arg-type]
    with torch.random.fork_rng(devices=[]):
        return next(iter(split(EXAMPLES)))


def example_inputs(task: Task, device: str | torch.device = "cpu") -> Any:
    """The model inputs of ``example_batch`` (as zeros of the same shapes on ``device``, for meta)."""
    try:
        inputs, _ = split_batch(example_batch(task))
    except DataError as error:
        raise UsageError(f"task {task.name}: {error}") from None
    if str(device) == "meta":
        return _like(inputs)
    return move_to_device(inputs, torch.device(device))


def _like(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return torch.zeros_like(value, device="meta")
    if isinstance(value, dict):
        return {k: _like(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_like(v) for v in value)
    return value


def probe_models(resolved: ResolvedSpec, origin_of: Any) -> None:
    """Run the step once per model on two examples; ``UsageError`` naming the model if anything fails.

    Only pairs where the model or the task is the user's are probed (``origin_of(kind, name)``
    says where one came from, None for built-ins). The model is built from its first grid
    point, else its defaults, on the CPU: two examples cost milliseconds.
    """
    task = resolved.task
    task_origin = origin_of("task", task.name)
    for model_spec in resolved.model_specs:
        model_origin = origin_of("model", model_spec.name)
        if model_origin is None and task_origin is None:
            continue
        where = f"model {model_spec.name}{f' ({model_origin})' if model_origin else ''} on task {task.name}{f' ({task_origin})' if task_origin else ''}"
        point = resolved.sweep.first_point(model_spec.name) if resolved.sweep.is_grid else {}
        _probe(resolved, model_spec, point, where)


def _probe(resolved: ResolvedSpec, model_spec: ModelSpec, point: dict[str, Any], where: str) -> None:
    task = resolved.task
    plan = TrialPlan.from_point({"model": model_spec.name, **point}, resolved.train_config, (p.name for p in task.step_params))
    hparams = {p.name: p.default for p in task.step_params} | plan.hparams
    if task.step is not None:  # what the probe finds wrong is the step's as much as the model's
        where = f"the step of {where}"
    batch: Any = None
    model: torch.nn.Module | None = None
    # The error is the one line; torch's warnings on the way there (a loss broadcasting a wrong shape) are not.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = "training"
        try:
            model = plan.build_model(task).eval()
            # Both splits: a validation set of another shape would otherwise fail every trial after its first epoch.
            for split, examples in (("training", task.train), ("validation", task.val)):
                batch = example_batch(task, examples)
                with torch.no_grad():
                    out = as_step_output(task.step_fn()(model, batch, {**plan.config.sweepable_values(), **hparams}))
                if out.loss.numel() != 1:
                    raise UsageError(f"{where}: the loss has shape {list(out.loss.shape)}; a step returns one scalar loss")
                if out.outputs is None and task.metrics:
                    raise UsageError(f"{where} returns no outputs, so the task's metrics ({', '.join(task.metrics)}) would "
                                     "never be computed: return StepOutput(loss, outputs, targets)")
                if out.outputs is not None:
                    problem = _shape_problem(task, where, batch, split, out.outputs, out.targets)
                    if problem:
                        raise UsageError(problem)
                    metrics = MetricSet(task.metrics, torch.device("cpu"))
                    metrics.update(out.outputs, out.targets)
                    metrics.compute()
        except UsageError:
            raise
        except Exception as error:  # noqa: BLE001  whatever the user's code raises is reported, not traced
            # The default step's loss may fail on outputs of the wrong shape before they are checked.
            alone = model is not None and task.step is None and batch is not None
            problem = _model_alone_problem(task, where, batch, split, model) if alone else None
            if problem:
                raise UsageError(problem) from None
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise UsageError(f"{where} fails on {_input_shape(batch, split)}: {type(error).__name__}: {message}".rstrip(": ")) from None


def _shape_problem(task: Task, where: str, batch: Any, split: str, outputs: Any, targets: Any) -> str | None:
    """What is wrong with the outputs' shape, where the task says what it needs; else None."""
    shape = _wrong_shape(task, outputs, targets)
    if not shape:
        return None
    # One output per example against targets of one number each: the targets often lack the last axis.
    column = isinstance(targets, torch.Tensor) and targets.dim() == 1 and targets.is_floating_point() and shape == [len(targets), 1]
    hint = f" (or give the task targets of shape {shape}: targets.unsqueeze(-1))" if column else ""
    return f"{where} returns outputs of shape {shape} for {_input_shape(batch, split)}; the task needs {_needed(task, targets)}{hint}"


def _model_alone_problem(task: Task, where: str, batch: Any, split: str, model: torch.nn.Module) -> str | None:
    """``_shape_problem`` of ``model`` called on the batch's inputs alone, or None if that call fails too."""
    try:
        inputs, targets = split_batch(batch)
        with torch.no_grad():
            outputs = model(inputs)
    except Exception:  # noqa: BLE001  the step's own error is the one to report
        return None
    return _shape_problem(task, where, batch, split, outputs, targets)


def _input_shape(batch: Any, split: str = "training") -> str:
    """``input of shape [2, 32]`` where the inputs are one tensor (``validation input ...`` for that split), else ``two training examples``."""
    try:
        inputs, _ = split_batch(batch)
    except DataError:
        inputs = None
    if isinstance(inputs, torch.Tensor):
        return f"{'' if split == 'training' else f'{split} '}input of shape {list(inputs.shape)}"
    return f"two {split} examples"


def _needed(task: Task, targets: torch.Tensor) -> list[int]:
    # Class indices need a score per class; regression targets are predicted as they are.
    return list(targets.shape) if targets.is_floating_point() else [*targets.shape, task.data.num_outputs]


def _wrong_shape(task: Task, outputs: Any, targets: Any) -> list[int] | None:
    """The outputs' shape, where the task says how many outputs it needs and they don't match."""
    if task.data.num_outputs is None or not isinstance(outputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        return None
    # One output per example may come squeezed, as binary classifiers return their logit.
    if list(outputs.shape) == _needed(task, targets) or (task.data.num_outputs == 1 and outputs.shape == targets.shape):
        return None
    return list(outputs.shape)
