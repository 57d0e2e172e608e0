"""Precision: detection from (faked) CPU flags, the choice, the bf16 reference model, and the CLI option."""

import json

import pytest
import torch
from conftest import tiny_reference
from typer.testing import CliRunner

from steplens import precision as P
from steplens.cli import app
from steplens.config import ConfigError
from steplens.models.serialize import export_random_tiny
from steplens.models.protocol import DenoiserBase
from steplens.runner import SamplingConfig, generate

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = "fpu vme de pse tsc msr pae mce cx8 apic sep avx2 avx512f avx512bw avx512vl"


def cpuinfo(tmp_path, extra: str = "", key: str = "flags"):
    """A /proc/cpuinfo with two processors and the given extra flags."""
    p = tmp_path / "cpuinfo"
    block = f"processor\t: {{i}}\nvendor_id\t: GenuineIntel\nmodel name\t: Fake\n{key}\t\t: {BASE} {extra}\n\n"
    p.write_text(block.format(i=0) + block.format(i=1))
    return p


def test_auto_follows_the_bf16_matrix_units(tmp_path):
    amx = P.choose("auto", cpuinfo=cpuinfo(tmp_path, "amx_tile amx_bf16 avx512_bf16"))
    assert amx.precision is P.Precision.BF16 and amx.capability.cpu_flags == ("amx_bf16", "avx512_bf16")
    avx = P.choose("auto", cpuinfo=cpuinfo(tmp_path, "avx512_bf16 avx512_fp16"))  # dot products only: not a matrix unit
    assert avx.precision is P.Precision.FP32 and avx.capability.cpu_flags == ("avx512_bf16",)
    assert not avx.capability.bf16_matrix_units and "avx512_bf16" in avx.describe()
    plain = P.choose("auto", cpuinfo=cpuinfo(tmp_path))
    assert plain.precision is P.Precision.FP32 and plain.capability.cpu_flags == ()
    missing = P.choose("auto", cpuinfo=tmp_path / "nope")  # unreadable: no flags, fp32
    assert missing.precision is P.Precision.FP32 and missing.capability.cpu_flags == ()
    forced = P.choose("bf16", cpuinfo=cpuinfo(tmp_path))  # asking for bf16 gets it anywhere
    assert forced.precision is P.Precision.BF16 and forced.requested == "bf16"
    assert forced.to_dict() == {"requested": "bf16", "precision": "bf16",
                                "capability": {"device": "cpu", "cpu_flags": [], "cuda_bf16": False, "bf16_matrix_units": False}}
    with pytest.raises(ConfigError, match="auto, fp32, bf16"):
        P.choose("fp16")


def test_detection_reads_the_module_default_path(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "PROC_CPUINFO", cpuinfo(tmp_path, "amx_bf16"))
    assert P.detect().cpu_flags == ("amx_bf16",) and P.choose().precision is P.Precision.BF16
    monkeypatch.setattr(P, "PROC_CPUINFO", cpuinfo(tmp_path, "bf16", key="Features"))  # aarch64 spelling of the line
    assert P.cpu_flags() >= {"bf16", "avx2"} and P.choose().precision is P.Precision.FP32


def test_bf16_reference_model_keeps_the_sampler_in_float32():
    fp32, batch = tiny_reference()
    bf16, _ = tiny_reference(precision="bf16")
    assert bf16.precision is P.Precision.BF16 and fp32.precision is P.Precision.FP32
    assert all(p.dtype == torch.bfloat16 for p in bf16.model.parameters())
    cfg = SamplingConfig(steps=4)
    a, b = generate(fp32, batch, [3, 4], cfg), generate(bf16, batch, [3, 4], cfg)
    assert a.dtype == b.dtype == torch.float32
    rel = ((a - b).norm() / a.norm()).item()
    assert 0 < rel < 0.05  # bf16 really ran, and stays close to fp32
    assert torch.equal(generate(bf16, batch, [3, 4], cfg), b)  # deterministic


def test_a_backend_without_a_bf16_path_refuses_it():
    den = DenoiserBase()
    assert den.to_precision("fp32").precision is P.Precision.FP32
    with pytest.raises(ValueError, match="no bf16 path"):
        den.to_precision("bf16")
    with pytest.raises(ConfigError, match="precision"):
        den.to_precision("fp16")


def test_cli_precision_is_printed_recorded_and_part_of_the_run(tmp_path):
    model = export_random_tiny(tmp_path / "m")
    runner = CliRunner()
    args = ["evaluate", "--model", model, "--size", "3", "--n", "2", "--steps", "2", "--batch", "2"]
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "e"), "--precision", "bf16"])
    assert r.exit_code in (0, 1), r.output  # 1: a random model may leave errors; the run itself worked
    assert "precision bf16 (asked bf16" in r.output
    assert json.loads((tmp_path / "e" / "manifest.json").read_text())["config"]["precision"] == "bf16"
    rec = json.loads((tmp_path / "e" / "precision.json").read_text())
    assert rec["precision"] == "bf16" and rec["capability"]["device"] == "cpu"
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "e"), "--precision", "fp32"])  # another precision: refused
    assert r.exit_code == 2 and "differs in: precision" in r.output
    assert json.loads((tmp_path / "e" / "precision.json").read_text())["precision"] == "bf16"  # the record stays
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "f"), "--precision", "fp16"])
    assert r.exit_code == 2 and r.output.count("error:") == 1 and "Traceback" not in r.output
    r = runner.invoke(app, ["trace", "--model", model, "--size", "3", "--n", "2", "--steps", "2", "--out", str(tmp_path / "t"),
                            "--capture", "blocks.*.resid_post:norm", "--precision", "bf16"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "t" / "manifest.json").read_text())["config"]
    assert cfg["precision"]["precision"] == "bf16" and "cpu_flags" in cfg["precision"]["capability"]
    assert all(v["dtype"] == "float32" for v in json.loads((tmp_path / "t" / "manifest.json").read_text())["captures"].values())
