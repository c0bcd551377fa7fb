"""The trainer's settings, each declared once: type, default, bounds, help, and whether it is sweepable.

``TrainConfig``'s fields are the declaration. The command-line flags, the study file's
``[train]`` keys and their checks, and the sweep schema (``TRAINER_PARAMS``) are generated from
it, so a setting added here appears everywhere at once.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields, replace
from typing import Any, Mapping

from hpsearch.models.schema import HyperParam
from hpsearch.trainers.schedule import SCHEDULERS

# The choices of --precision and --device, declared with the settings (trainers.hardware says
# what each means): the CLI builds its flags from this module without importing torch.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")
# Which checkpoints a trial keeps (trainers/checkpoints.py: CheckpointStore).
CHECKPOINT_KEEPS = ("all", "last", "best", "none")


def setting(
    default: Any,
    help: str,
    *,
    kind: str | None = None,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[Any, ...] | None = None,
    sweepable: bool = False,
    flag: bool = True,
) -> Any:
    """A ``TrainConfig`` field with its schema in the field's metadata."""
    inferred = kind or ("choice" if choices else {bool: "bool", int: "int", float: "float", str: "str"}.get(type(default), "str"))
    schema = {"kind": inferred, "help": help, "low": low, "high": high, "choices": choices, "sweepable": sweepable, "flag": flag}
    return field(default=default, metadata={"hpsearch": schema})


@dataclass(frozen=True)
class TrainConfig:
    """Everything the trainer needs besides the model and the task (see each field's help)."""

    epochs: int = setting(5, "epochs per trial", low=1)
    batch_size: int = setting(64, "examples per micro-batch", low=1, sweepable=True)
    optimizer: str = setting("adamw", "a torch.optim optimizer by name (adamw, adam, sgd, rmsprop, nadam, radam, adamax, adagrad) or one a plugin registers", sweepable=True)
    lr: float = setting(1e-3, "peak learning rate, or 'auto' to run the LR range test per trial", low=0.0, sweepable=True)
    weight_decay: float = setting(0.01, "weight decay of weight matrices (biases and norm weights get none)", low=0.0, sweepable=True)
    momentum: float = setting(0.9, "SGD / RMSprop momentum, Adam-family beta1", low=0.0, high=1.0, sweepable=True)
    beta2: float = setting(0.999, "Adam-family beta2", low=0.0, high=1.0, sweepable=True)
    eps: float = setting(1e-8, "the optimizer's epsilon", low=0.0, sweepable=True)
    scheduler: str = setting("cosine", "LR schedule after the warmup", choices=SCHEDULERS, sweepable=True)
    warmup_epochs: float = setting(1.0, "linear warmup, in epochs", low=0.0, sweepable=True)
    min_lr: float = setting(0.0, "LR at the end of a cosine or linear decay", low=0.0, sweepable=True)
    step_every_epochs: float = setting(1.0, "the step schedule multiplies the LR by step_gamma this often", low=0.0)
    step_gamma: float = setting(0.1, "the step schedule's factor", low=0.0, sweepable=True)
    grad_clip: float = setting(1.0, "max gradient norm, 0 for none", low=0.0, sweepable=True)
    label_smoothing: float = setting(0.0, "cross-entropy label smoothing, passed to the task's loss", low=0.0, high=1.0, sweepable=True)
    grad_accum_steps: int = setting(1, "micro-batches per optimizer step", low=1, sweepable=True)
    early_stopping_patience: int = setting(0, "stop a trial after this many epochs without improvement of --metric, 0 for never", low=0)
    num_workers: int = setting(0, "DataLoader worker processes for Dataset splits", low=0)
    precision: str = setting("auto", "auto: bf16 where the model's own training steps run at least 1.15x faster than fp32's on this device (a search times them once per model and hyperparameters), else fp32", choices=PRECISIONS)
    device: str = setting("auto", "auto: CUDA, then MPS, then the CPU", choices=DEVICES)
    on_divergence: str = setting("prune", "prune the trial, or restore the last good epoch and halve the LR", choices=("prune", "reduce-lr"))
    divergence_factor: float = setting(10.0, "a batch loss and running loss both above this multiple of the best running loss is divergence, 0 for off", low=0.0)
    max_lr_reductions: int = setting(3, "how often reduce-lr may halve the LR in one trial", low=0)
    compile: bool = setting(False, "torch.compile the model")
    deterministic: bool = setting(False, "torch.use_deterministic_algorithms(True): repeatable values on CUDA (an op "
                                         "with no deterministic kernel then fails the trial); the CPU repeats without it")
    seed: int = setting(0, "seed for model init, data order and samplers")
    monitor: str = setting("val_loss", "the value early stopping and best.pt follow (the search sets it from --metric)", flag=False)
    checkpoints: str = setting("all", "checkpoints a trial keeps: all (last.pt and prev.pt, which resume needs, and best.pt, "
                               "which load_model loads), last, best or none", choices=CHECKPOINT_KEEPS)
    checkpoint_dir: str | None = setting(None, "where last.pt and best.pt go", kind="str", flag=False)

    def with_overrides(self, overrides: Mapping[str, Any]) -> "TrainConfig":
        """A copy with ``overrides`` applied; unknown names are an error."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"the trainer has no setting {', '.join(unknown)}")
        return replace(self, **dict(overrides))

    def sweepable_values(self) -> dict[str, Any]:
        """The sweepable settings by name, as a step's ``hparams`` carries them."""
        return {p.name: getattr(self, p.name) for p in TRAINER_PARAMS}

    def check(self) -> None:
        """``ValueError`` naming the first setting whose value its declaration does not allow."""
        for param in SETTINGS:
            value = getattr(self, param.name)
            if value is not None:
                param.validate(value)


def _schema(f: Field[Any]) -> dict[str, Any]:
    return f.metadata["hpsearch"]


def _as_param(f: Field[Any]) -> HyperParam:
    s = _schema(f)
    return HyperParam(f.name, s["kind"], f.default, s["help"], choices=s["choices"], low=s["low"], high=s["high"])


#: Every trainer setting as a ``HyperParam`` (type, default, bounds, help), in declaration order.
SETTINGS: tuple[HyperParam, ...] = tuple(_as_param(f) for f in fields(TrainConfig) if f.default is not None)
#: The settings a sweep may search over.
TRAINER_PARAMS: tuple[HyperParam, ...] = tuple(_as_param(f) for f in fields(TrainConfig) if _schema(f)["sweepable"])
#: The settings that have a command-line flag and a study-file ``[train]`` key.
FLAG_SETTINGS: tuple[HyperParam, ...] = tuple(_as_param(f) for f in fields(TrainConfig) if _schema(f)["flag"])


def trainer_param(name: str) -> HyperParam | None:
    """The sweepable trainer setting called ``name``, if there is one."""
    return next((p for p in TRAINER_PARAMS if p.name == name), None)
