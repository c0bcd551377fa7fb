import json

import pytest
import torch

from hpsearch.trainers import precision
from hpsearch.trainers.hardware import (
    choose_precision,
    cuda_index,
    device_label,
    physical_gpu,
    resolve_device,
    visible_gpus,
)

CPU = torch.device("cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HPSEARCH_CACHE_DIR", str(tmp_path))
    return tmp_path / "precision.json"


def test_auto_resolves_to_the_faster_precision_as_measured_and_caches_it(cache, monkeypatch):
    chosen = choose_precision("auto", CPU)
    (record,) = json.loads(cache.read_text()).values()
    rates = record["flops_per_second"]
    assert set(rates) == {"fp32", "bf16"} and all(rate > 0 for rate in rates.values())
    assert chosen == ("bf16" if rates["bf16"] >= 1.15 * rates["fp32"] else "fp32") == record["chosen"]

    def no_measuring(*args, **kwargs):
        raise AssertionError("the second call measured again instead of reading the cache")

    monkeypatch.setattr(precision, "measure", no_measuring)
    assert choose_precision("auto", CPU) == chosen


def test_bf16_needs_a_clear_margin_over_fp32():
    assert precision.choose({"fp32": 100.0, "bf16": 114.0}) == "fp32"
    assert precision.choose({"fp32": 100.0, "bf16": 116.0}) == "bf16"
    assert precision.choose({"fp32": 100.0, "bf16": 53.0}) == "fp32"
    assert precision.choose({"fp32": 100.0, "fp16": 300.0}) == "fp16"


def test_a_cache_from_another_version_is_measured_again(cache):
    cache.write_text(json.dumps({"anything": {"old": "format"}}))
    first = precision.precision_choice(CPU)
    key = next(k for k in json.loads(cache.read_text()) if k != "anything")
    cache.write_text(json.dumps({key: {"old": "format"}}))
    assert precision.precision_choice(CPU).flops_per_second.keys() == first.flops_per_second.keys()


def test_peaks_come_from_the_datasheet_on_known_gpus_and_from_the_measurement_on_cpus(cache):
    assert precision.DATASHEET_PEAKS["H100"]["bf16"] == 989e12
    assert precision.peak_flops(CPU, "fp32") == precision.precision_choice(CPU).flops_per_second["fp32"]
    # No fp16 rate is measured on a CPU: its MFU is of the fp32 peak, and says so (it said "of the fp16 peak").
    assert "fp16" not in precision.precision_choice(CPU).flops_per_second
    assert precision.peak_precision(CPU, "fp16") == "fp32" and precision.peak_precision(CPU, "fp32") == "fp32"
    assert precision.peak_flops(CPU, "fp16") == precision.peak_flops(CPU, "fp32")


def test_explicit_precisions_pass_through_and_unknown_ones_fail():
    assert [choose_precision(p, CPU) for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    with pytest.raises(ValueError, match="unknown precision"):
        choose_precision("int8", CPU)


def test_devices():
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_cuda_n_names_one_visible_gpu():
    assert [cuda_index(name) for name in ("cuda:0", "cuda:12", " cuda:1 ")] == [0, 12, 1]
    assert [cuda_index(name) for name in ("cuda", "cuda:", "cuda:x", "cuda:-1", "cpu", "gpu:0")] == [None] * 6
    count = visible_gpus()
    if count:
        assert resolve_device(f"cuda:{count - 1}") == torch.device("cuda", count - 1)
    with pytest.raises(ValueError, match=f"--device cuda:{count}: "):
        resolve_device(f"cuda:{count}")


def test_the_machine_names_a_gpu_through_cuda_visible_devices():
    assert physical_gpu(1, {}) == "1"
    assert physical_gpu(1, {"CUDA_VISIBLE_DEVICES": "4, 6"}) == "6"
    assert physical_gpu(0, {"CUDA_VISIBLE_DEVICES": "GPU-8f2a"}) == "GPU-8f2a"
    assert device_label(CPU) == "cpu"


def test_a_peak_measured_while_the_machine_was_busy_is_measured_again_once_training_outpaces_it(cache, monkeypatch):
    """A measurement cached while packages installed (54 GFLOP/s against 184 idle) gave every trial an MFU of 200%."""
    from hpsearch.models import build_model
    from hpsearch.trainers.config import TrainConfig
    from hpsearch.trainers.flops import FlopsMeter
    from hpsearch.trainers.tasks import build_task
    from hpsearch.trainers.trainer import Trainer

    honest = precision.precision_choice(CPU)
    busy = {p: 1e6 for p in honest.flops_per_second}  # far below anything a training step reaches
    key = precision.machine_key(CPU)
    cache.write_text(json.dumps({key: {**json.loads(cache.read_text())[key], "flops_per_second": busy}}))
    monkeypatch.setattr(precision, "_REMEASURED", set())
    measured: list[int] = []
    real_measure = precision.measure
    monkeypatch.setattr(precision, "measure", lambda *a, **k: measured.append(1) or real_measure(*a, **k))

    task = build_task("synthetic_tokens", {"dataset_size": 200, "seq_len": 8})
    model = build_model("tfn_classifier", {"embed_dim": 16}, task.data)
    meter = FlopsMeter(model)
    records = Trainer(model, task, TrainConfig(epochs=2, precision="fp32"), flops_meter=meter).fit().records
    assert all(0 < r.mfu <= 1 for r in records)
    assert 0 < meter.stats().mfu <= 1.0 + 1e-9
    assert measured == [1]  # once per process, not per epoch
    rates = json.loads(cache.read_text())[key]["flops_per_second"]
    assert all(rates[p] > 1e6 for p in busy)  # the busy measurement is replaced by the higher one
