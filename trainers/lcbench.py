"""YAHPO Gym's lcbench surrogate (data v1.0.2) read directly with onnxruntime, without yahpo-gym.

The surrogate is an ONNX network that maps (OpenML task, epoch, 7 hyperparameters) to six targets
of LCBench's MLPs. The log transforms and scaling of inputs and the back-transforms of outputs are
inside the ONNX graph, so reading it takes only yahpo-gym's column orders and its task encoding.
It matches ``yahpo_gym.BenchmarkSet("lcbench").objective_function`` to float32 rounding
(tests/trainers/test_lcbench.py against benchmarks/yahpo_reference.py's output).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

EPOCHS = 52
# yahpo_gym/benchmarks/lcbench.py: cont_names (the ONNX input's columns) and y_names (its output's).
INPUTS = ("epoch", "batch_size", "learning_rate", "momentum", "weight_decay", "num_layers", "max_units", "max_dropout")
PARAMS = INPUTS[1:]
TARGETS = ("time", "val_accuracy", "val_cross_entropy", "val_balanced_accuracy", "test_cross_entropy",
           "test_balanced_accuracy")
_FILES = ("lcbench/model.onnx", "lcbench/config_space.json", "lcbench/encoding.json",
          "global_statistics/instance_target_statistics.csv")


@dataclass(frozen=True)
class ParamRange:
    """A hyperparameter's range ``[low, high]``: sampled on a log scale if ``log``, whole numbers if ``integer``."""

    low: float
    high: float
    log: bool
    integer: bool


class LCBenchSurrogate:
    """YAHPO Gym's lcbench surrogate: 52-epoch learning curves of a 7-parameter MLP on one OpenML task.

    Targets, in yahpo's order: ``time`` (cumulative training time in seconds up to the end of that
    epoch, not the epoch's own time; it rises along a curve, though the surrogate does not enforce
    that and a rare step dips), ``val_accuracy`` (percent, 0..100),
    ``val_cross_entropy``, ``val_balanced_accuracy`` (0..1), ``test_cross_entropy`` and
    ``test_balanced_accuracy`` (0..1). A configuration maps each name in ``space`` to a value in
    its range (integers may be given as whole floats).

    Each curve is one batch of 52 rows through onnxruntime, and ``evaluate`` reads its point from
    that curve: onnxruntime rounds calls of fewer than 4 rows differently (up to ~1e-4 relative,
    ~1e-3 on the smallest times), so a point alone would not equal the same point within a curve.
    """

    def __init__(self, instance: str, data_dir: str | os.PathLike[str]) -> None:
        """Load the surrogate for OpenML task ``instance`` from the YAHPO data folder ``data_dir``.

        Raises FileNotFoundError if the folder or one of its lcbench files is missing, ValueError if
        ``instance`` is not one of lcbench's tasks, ImportError if onnxruntime is not installed.
        """
        root = Path(data_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"the YAHPO data folder {root} does not exist")
        for name in _FILES:
            if not (root / name).is_file():
                raise FileNotFoundError(f"the YAHPO data folder {root} has no {name}")
        hyperparameters = {hp["name"]: hp for hp in json.loads((root / _FILES[1]).read_text())["hyperparameters"]}
        instances = [str(choice) for choice in hyperparameters["OpenML_task_id"]["choices"]]
        instance = str(instance)
        if instance not in instances:
            raise ValueError(f"unknown lcbench instance {instance!r}; the valid instances are {', '.join(instances)}")
        try:
            import onnxruntime
        except ImportError as error:
            raise ImportError("LCBenchSurrogate needs onnxruntime: pip install onnxruntime "
                              "(or pip install 'hpsearch[bench]').") from error

        self.instance = instance
        self.space = {name: _param_range(hyperparameters[name]) for name in PARAMS}
        self._root = root
        self._low = np.array([self.space[name].low for name in PARAMS])
        self._high = np.array([self.space[name].high for name in PARAMS])
        self._integer = np.array([self.space[name].integer for name in PARAMS])
        # encoding.json also codes "#na#" and 167083, which config_space.json does not offer.
        self._code = int(json.loads((root / _FILES[2]).read_text())["OpenML_task_id"][instance])
        self._ranges: dict[str, tuple[float, float]] | None = None

        options = onnxruntime.SessionOptions()
        # One thread: 52 rows take ~0.3 ms on one, and search workers run side by side, where
        # onnxruntime's default (a spinning thread per core) would take cores from each other.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(root / _FILES[0]), options,
                                                     providers=["CPUExecutionProvider"])
        # yahpo feeds the inputs by position: the categorical one, then the continuous one.
        self._x_cat, self._x_cont = (node.name for node in self._session.get_inputs())
        self._epochs = np.arange(1, EPOCHS + 1, dtype=np.float32)

    def curves(self, configs: Sequence[Mapping[str, float]]) -> dict[str, np.ndarray]:
        """Every target at epochs 1..52 of each configuration: arrays of shape ``(len(configs), 52)``, float64.

        Raises ValueError for a configuration that lacks a parameter, names an unknown one, or has
        a value outside its range (or a fraction on an integer parameter).
        """
        x = self._matrix(configs)
        n = len(x)
        if n == 0:
            return {target: np.empty((0, EPOCHS)) for target in TARGETS}
        cont = np.empty((n, EPOCHS, len(INPUTS)), dtype=np.float32)
        cont[:, :, 0] = self._epochs
        cont[:, :, 1:] = x[:, None, :]  # float64 to float32 rounds as yahpo's astype(np.float32) does
        cat = np.full((n * EPOCHS, 1), self._code, dtype=np.int32)
        (out,) = self._session.run(None, {self._x_cat: cat, self._x_cont: cont.reshape(n * EPOCHS, len(INPUTS))})
        by_target = np.array(out.reshape(n, EPOCHS, len(TARGETS)).transpose(2, 0, 1), dtype=np.float64, order="C")
        return dict(zip(TARGETS, by_target))

    def evaluate(self, config: Mapping[str, float], epoch: int) -> dict[str, float]:
        """Every target of ``config`` at ``epoch`` (1..52), as yahpo's ``objective_function`` gives it."""
        if isinstance(epoch, bool) or not float(epoch).is_integer() or not 1 <= epoch <= EPOCHS:
            raise ValueError(f"epoch must be a whole number from 1 to {EPOCHS}, not {epoch!r}.")
        return {target: float(values[0, int(epoch) - 1]) for target, values in self.curves([config]).items()}

    def target_range(self, target: str = "val_accuracy") -> tuple[float, float]:
        """The (min, max) of ``target`` on this instance that YAHPO found by random search (its global statistics)."""
        if target not in TARGETS:
            raise ValueError(f"Unknown lcbench target {target!r}; the targets are {', '.join(TARGETS)}.")
        if self._ranges is None:
            found: dict[tuple[str, str], float] = {}
            with open(self._root / _FILES[3], newline="") as file:
                for row in csv.DictReader(file):
                    if row["scenario"] == "lcbench" and row["instance"] == self.instance:
                        found[row["metric"], row["statistic"]] = float(row["value"])
            self._ranges = {name: (found[name, "min"], found[name, "max"]) for name in TARGETS
                            if (name, "min") in found and (name, "max") in found}
        if target not in self._ranges:
            raise ValueError(f"{_FILES[3]} has no min and max of {target} for lcbench instance {self.instance}.")
        return self._ranges[target]

    def _matrix(self, configs: Sequence[Mapping[str, float]]) -> np.ndarray:
        """The configurations as a checked ``(n, 7)`` float64 array, columns in PARAMS order."""
        rows = []
        for i, config in enumerate(configs):
            try:
                rows.append([float(config[name]) for name in PARAMS])
            except KeyError as error:
                message = f"Configuration {i} lacks {error.args[0]!r}; lcbench needs {', '.join(PARAMS)}."
                raise ValueError(message) from None
            if len(config) != len(PARAMS):
                extra = sorted(set(config) - set(PARAMS))
                raise ValueError(f"Configuration {i} has unknown parameters {extra}; lcbench takes only {PARAMS}.")
        x = np.array(rows, dtype=np.float64).reshape(-1, len(PARAMS))
        bad = ~((x >= self._low) & (x <= self._high)) | (self._integer & (x != np.round(x)))  # NaN fails too
        if bad.any():
            i, j = (int(k) for k in np.argwhere(bad)[0])
            space = self.space[PARAMS[j]]
            kind = "a whole number" if space.integer else "a number"
            raise ValueError(f"Configuration {i}: {PARAMS[j]}={x[i, j]!r} is not {kind} in [{space.low}, {space.high}]")
        return x


def _param_range(hp: Mapping[str, Any]) -> ParamRange:
    """A ConfigSpace JSON hyperparameter's range."""

    # config_space.json stores e.g. 1e-4 as 0.00010000000000000009 (exp(log(1e-4))); param_set.R's bounds are round.
    def clean(bound: float) -> float:
        return float(f"{bound:.12g}")

    return ParamRange(clean(hp["lower"]), clean(hp["upper"]), bool(hp["log"]), hp["type"] == "uniform_int")
