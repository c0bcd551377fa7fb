"""Reference values for ``hpsearch.trainers.lcbench``: yahpo-gym's own lcbench surrogate outputs on 120 configurations.

``tests/trainers/test_lcbench.py`` checks the reader against the JSON this writes, so the project's
tests need neither yahpo-gym nor its pins (numpy<2, ConfigSpace 0.6). Draws 120 configurations
with a fixed seed, 40 on each of the OpenML tasks 167168, 189873 and 189906, each at a random
epoch in 1..52, and records what ``BenchmarkSet("lcbench").objective_function`` returns for each
(all six targets, with yahpo's input checks on).

Each configuration's whole 52-epoch curve goes to ``objective_function`` in one call, as the
reader evaluates it, and the drawn epoch is kept. The float32 result of a row depends on how many
rows share its ONNX call: onnxruntime 1.32's Gemm rounds calls of 1 to 3 rows differently from
calls of 4 or more, so yahpo itself gives for one point alone values up to ~2e-4 relative away
from that point within its curve on these rows (~1e-3 seen on the smallest times, ~4e-6 on the
targets other than time). The script prints that figure; it writes the values of the curves, which
the reader matches bit for bit.

Run it with a venv of its own, and again whenever the YAHPO data or yahpo-gym's version changes::

    python3 -m venv /tmp/yahpo-venv
    /tmp/yahpo-venv/bin/pip install yahpo-gym==1.0.2 onnxruntime
    /tmp/yahpo-venv/bin/python benchmarks/yahpo_reference.py --data /work/shared/yahpo_data \\
        --out tests/trainers/lcbench_reference.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

INSTANCES = ("167168", "189873", "189906")
PER_INSTANCE = 40
SEED = 20240607


def draw_config(rng: np.random.Generator) -> dict[str, float | int]:
    """One configuration over lcbench's seven hyperparameters, log-uniform where param_set.R says log."""

    def log_int(low: int, high: int) -> int:
        return round(math.exp(rng.uniform(math.log(low), math.log(high))))

    def real(x: float) -> float:  # 6 digits keep the JSON short, and are what the surrogate is given
        return float(f"{x:.6g}")

    return {
        "batch_size": log_int(16, 512),
        "learning_rate": real(math.exp(rng.uniform(math.log(1e-4), math.log(1e-1)))),
        "momentum": real(rng.uniform(0.1, 0.99)),
        "weight_decay": real(rng.uniform(1e-5, 1e-1)),
        "num_layers": int(rng.integers(1, 6)),
        "max_units": log_int(64, 1024),
        "max_dropout": real(rng.uniform(0.0, 1.0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the YAHPO data folder (holds lcbench/ and global_statistics/)")
    parser.add_argument("--out", required=True, help="the JSON file to write")
    args = parser.parse_args()

    # yahpo-gym finds its data through a YAML file; point it at a private one, not ~/.config/yahpo_gym.
    settings = Path(tempfile.mkdtemp()) / "yahpo_gym"
    os.environ["YAHPO_LOCAL_CONFIG"] = str(settings)
    from yahpo_gym import local_config

    local_config.init_config(data_path=str(Path(args.data).resolve()))
    import onnxruntime
    import yahpo_gym
    from yahpo_gym import BenchmarkSet

    rng = np.random.default_rng(SEED)
    rows, single_rel = [], []
    for instance in INSTANCES:
        bench = BenchmarkSet("lcbench", instance=instance)
        for _ in range(PER_INSTANCE):
            config = draw_config(rng)
            epoch = int(rng.integers(1, 53))
            # yahpo checks a configuration before it adds the instance set above, so it must name it too.
            point = {**config, "OpenML_task_id": instance}
            curve = bench.objective_function([{**point, "epoch": e} for e in range(1, 53)])
            result = curve[epoch - 1]
            rows.append({"instance": instance, "epoch": epoch, "config": config,
                         "targets": {name: float(str(value)) for name, value in result.items()}})
            (alone,) = bench.objective_function({**point, "epoch": epoch})
            single_rel.append(max(abs(alone[k] / result[k] - 1) for k in result))

    # Not written: how far a call with that one point lands from the same point evaluated within its curve.
    print(f"one point per call vs its 52-epoch curve in one call: max relative difference {max(single_rel):.2e}")
    meta = {
        "yahpo_gym": yahpo_gym.__version__,
        "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
        "data_version": (Path(args.data) / "VERSION").read_text().strip().removeprefix("VERSION:"),
        "seed": SEED, "python": sys.version.split()[0],
    }
    # Targets come back as float32 and are written as the shortest decimal that reads back as that
    # float32 (str of a numpy.float32). One row a line: small, and a diff shows which rows moved.
    lines = [json.dumps(row, separators=(",", ":")) for row in rows]
    text = '{"meta":' + json.dumps(meta) + ',\n"rows":[\n' + ",\n".join(lines) + "\n]}\n"
    Path(args.out).write_text(text)
    print(f"wrote {len(rows)} rows to {args.out} ({len(text) / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
