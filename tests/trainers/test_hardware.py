import pytest
import torch

from hpsearch.trainers.hardware import choose_precision, cpu_flags, resolve_device

CPU = torch.device("cpu")


def test_auto_picks_bf16_on_cpus_with_avx512_bf16_or_amx():
    assert choose_precision("auto", CPU, frozenset({"avx2", "avx512f", "avx512_bf16"})) == "bf16"
    assert choose_precision("auto", CPU, frozenset({"avx2", "amx_bf16", "amx_tile"})) == "bf16"


def test_auto_picks_fp32_on_cpus_without_either():
    assert choose_precision("auto", CPU, frozenset({"avx2", "avx512f", "fma"})) == "fp32"
    assert choose_precision("auto", CPU, frozenset()) == "fp32"


def test_auto_on_this_machine_follows_its_cpu_flags():
    expected = "bf16" if {"avx512_bf16", "amx_bf16"} & cpu_flags() else "fp32"
    assert choose_precision("auto", CPU) == expected


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
