"""One warning line when bf16/fp16 would be emulated on this CPU (capabilities monkeypatched)."""

from __future__ import annotations

import logging

import pytest
import torch

from cropformer.utils import hardware


def _cpu(
    monkeypatch,
    *,
    machine="x86_64",
    amx=False,
    avx512_bf16=False,
    amx_fp16=False,
    capability="AVX2",
    flags="",
):
    monkeypatch.setattr(hardware.platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: amx_fp16, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(hardware, "_cpuinfo_flags", lambda: set(flags.split()))


@pytest.mark.parametrize("precision", ["bf16", "bf16-mixed", "bf16-true"])
def test_bf16_without_units_warns_in_one_line_naming_capability_slowdown_and_fix(
    monkeypatch, precision
):
    _cpu(monkeypatch, capability="AVX2")
    msg = hardware.cpu_precision_warning(precision)
    assert msg is not None and "\n" not in msg
    assert f"precision={precision}" in msg
    assert "torch CPU capability AVX2" in msg and "AVX512_BF16 or AMX" in msg
    assert hardware.EMULATED_SLOWDOWN in msg and "slower than fp32" in msg
    assert "use precision=fp32" in msg


@pytest.mark.parametrize(
    ("kw", "units"),
    [({"amx": True}, ("AMX",)), ({"avx512_bf16": True, "capability": "AVX512"}, ("AVX512_BF16",))],
)
def test_bf16_units_present_no_warning(monkeypatch, kw, units):
    _cpu(monkeypatch, **kw)
    assert hardware.cpu_reduced_precision_units("bf16") == units
    assert hardware.cpu_precision_warning("bf16") is None


def test_fp16_units_and_warning(monkeypatch):
    _cpu(monkeypatch, amx=True)  # AMX-BF16 only: fp16 still emulated
    msg = hardware.cpu_precision_warning("16-mixed")
    assert msg is not None and "AVX512_FP16 or AMX-FP16" in msg
    _cpu(monkeypatch, flags="avx2 avx512_fp16")
    assert hardware.cpu_precision_warning("fp16") is None


def test_fp32_never_warns(monkeypatch):
    _cpu(monkeypatch)
    for precision in ("32", "fp32", "32-true", "64"):
        assert hardware.cpu_precision_warning(precision) is None


def test_arm_reads_cpuinfo_and_unknown_architectures_stay_silent(monkeypatch):
    _cpu(monkeypatch, machine="aarch64", flags="fp asimd bf16", capability="SVE256")
    assert hardware.cpu_reduced_precision_units("bf16") == ("BF16",)
    assert hardware.cpu_precision_warning("bf16") is None
    _cpu(monkeypatch, machine="aarch64", flags="fp asimd", capability="DEFAULT")
    assert "torch CPU capability DEFAULT" in (hardware.cpu_precision_warning("bf16") or "")
    _cpu(monkeypatch, machine="riscv64")
    assert hardware.cpu_reduced_precision_units("bf16") is None
    assert hardware.cpu_precision_warning("bf16") is None


def test_predictor_warns_once_on_cpu_and_names_its_parts(monkeypatch, caplog):
    from cropformer.inference.fusion import MultiViewFusion
    from cropformer.inference.predictor import EntityPredictor

    _cpu(monkeypatch)
    net = torch.nn.Conv2d(3, 3, 1)
    with caplog.at_level(logging.WARNING, logger="cropformer.inference.predictor"):
        fp32 = EntityPredictor(net, MultiViewFusion(), precision="32")
        bf16 = EntityPredictor(net, MultiViewFusion(), precision="bf16")
    lines = [r.getMessage() for r in caplog.records]
    assert fp32.precision_warning is None
    assert bf16.precision_warning is not None and lines == [bf16.precision_warning]
    assert fp32.precision_parts() == "fp32: all"
    assert bf16.precision_parts().startswith("bf16: backbone")
    assert "fp32: " in bf16.precision_parts() and "fusion" in bf16.precision_parts()
