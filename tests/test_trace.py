
import pytest
import torch
from torch import nn

from steplens.config import ConfigError
from steplens.models.dit import PRESETS, ReferenceDenoiser, VideoDiT
from steplens.runner import SamplingConfig, generate, prepare
from steplens.tasks import get_task
from steplens.trace import CapturePlan, Trace, TraceError, estimate_bytes, record


@pytest.fixture
def setup():
    torch.manual_seed(0)
    m = VideoDiT(PRESETS["tiny"]())
    for p in m.parameters():
        nn.init.normal_(p, std=0.2)
    den = ReferenceDenoiser(m)
    task = get_task("maze")
    return den, prepare(den, task, [task.generate(s, 3, n_frames=4, cell_px=1) for s in (1, 2)])


def test_parse_plan():
    plan = CapturePlan.parse("blocks.*.resid_post:norm,proj16; blocks.1.attn_out:full@0-2,5")
    assert plan.captures[0].reducers == ("norm", "proj16") and plan.captures[1].steps == (0, 1, 2, 5)
    with pytest.raises(ConfigError, match="explicit steps"):
        CapturePlan.parse("blocks.0.attn_out:full")
    with pytest.raises(ConfigError, match="unknown reducer"):
        CapturePlan.parse("blocks.0.attn_out:median")


def test_trace_is_exact_and_round_trips(setup, tmp_path):
    den, batch = setup
    cfg = SamplingConfig(steps=4)
    plain = generate(den, batch, [3, 4], cfg)
    plan = CapturePlan.parse("blocks.*.resid_post:norm,mean,proj8,pca3;blocks.0.mlp_out:full@1")
    tr = record(den, batch, [3, 4], cfg, plan, fields=("x0_hat", "x_next"))
    assert torch.equal(tr.events["x_next"][-1], plain)  # recording changed nothing
    assert torch.allclose(tr.events["x0_hat"][-1], plain, atol=1e-6)  # the last clean estimate is the output
    n = 4 * 7 * 7
    assert tr.get(2, "blocks.1.resid_post", "norm").shape == (2, n)
    assert tr.get(2, "blocks.1.resid_post", "mean").shape == (2, 32)
    assert tr.get(2, "blocks.1.resid_post", "proj8").shape == (2, n, 8)
    assert tr.get(2, "blocks.1.resid_post", "pca3").shape == (2, n, 3)
    assert tr.stack("blocks.0.mlp_out", "full").shape == (1, 2, n, 32)
    stored = sum(t.numel() * 4 for slot in tr.captures.values() for t in slot.values())
    assert stored == estimate_bytes(plan, den, batch.latent_shape, 2, 4)  # the estimate is exact for float32
    tr.save(tmp_path / "t")
    back = Trace.load(tmp_path / "t")
    assert back.keys() == tr.keys()
    assert all(torch.equal(back.captures[k][r], v) for k, slot in tr.captures.items() for r, v in slot.items())
    assert torch.equal(back.events["x0_hat"], tr.events["x0_hat"])


def test_budget_and_corrupt_files(setup, tmp_path):
    den, batch = setup
    plan = CapturePlan.parse("blocks.*.resid_post:full@0-3", budget_mb=0.01)
    with pytest.raises(ConfigError, match="MB"):
        record(den, batch, [3, 4], SamplingConfig(steps=4), plan)
    tr = record(den, batch, [3, 4], SamplingConfig(steps=2), CapturePlan.parse("blocks.0.resid_post:norm"))
    tr.save(tmp_path / "t")
    (tmp_path / "t" / "manifest.json").write_text("{not json")
    with pytest.raises(TraceError, match="manifest"):
        Trace.load(tmp_path / "t")
    tr.save(tmp_path / "u")
    (tmp_path / "u" / "captures.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(TraceError, match="captures.safetensors"):
        Trace.load(tmp_path / "u")
