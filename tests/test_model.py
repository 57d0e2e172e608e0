import json

import numpy as np
import pytest
import torch

from steplens.models.dit import PRESETS, BlockCodec, DiTConfig, ReferenceDenoiser, VideoDiT
from steplens.models.registry import ModelLoadError, load
from steplens.runner import SamplingConfig, generate, prepare
from steplens.tasks import get_task
from steplens.config import ConfigError
from steplens.models.serialize import export


def tiny():
    torch.manual_seed(0)
    return VideoDiT(PRESETS["tiny"]())


def test_codec_is_exact_on_block_videos():
    task = get_task("maze")
    inst = task.generate(3, 4, n_frames=4, cell_px=6)
    frames = task.render(inst)[None]
    lat = BlockCodec.encode(frames, cell_px=6)
    assert lat.shape == (1, 3, 4, 9, 9)
    assert np.array_equal(BlockCodec.decode(lat, cell_px=6), frames)


def test_adaln_zero_starts_at_zero_and_any_grid_size_runs():
    m = tiny()
    for hw in (7, 9, 13):
        out = m(torch.randn(2, 3, 4, hw, hw), torch.rand(2), torch.randn(2, 3, hw, hw), torch.zeros(2, dtype=torch.long))
        assert out.shape == (2, 3, 4, hw, hw)
        assert torch.count_nonzero(out) == 0  # adaLN-Zero: the final layer is zero at init


def test_config_validation():
    with pytest.raises(ConfigError):
        DiTConfig(dim=30, heads=4)
    with pytest.raises(ValueError):
        VideoDiT(DiTConfig(dim=32, heads=2, depth=1, max_hw=8))(torch.randn(1, 3, 2, 9, 9), torch.rand(1), torch.randn(1, 3, 9, 9), torch.zeros(1, dtype=torch.long))


def test_attention_is_bidirectional_over_frames():
    """A change in the last frame reaches the first frame's output (no causal mask)."""
    m = tiny()
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(1, 3, 4, 5, 5)
    args = (torch.rand(1), torch.randn(1, 3, 5, 5), torch.zeros(1, dtype=torch.long))
    y = x.clone()
    y[:, :, -1] += 1.0
    assert not torch.allclose(m(x, *args)[:, :, 0], m(y, *args)[:, :, 0])


def test_export_and_load_checks(tmp_path):
    m = tiny()
    export(m, tmp_path / "model")
    den = load(str(tmp_path / "model"))
    assert isinstance(den, ReferenceDenoiser)
    assert all(torch.equal(a, b) for a, b in zip(den.model.state_dict().values(), m.state_dict().values()))
    # corrupt weights: checksum error names the file
    w = tmp_path / "model.safetensors"
    blob = bytearray(w.read_bytes())
    blob[-1] ^= 0xFF
    w.write_bytes(bytes(blob))
    with pytest.raises(ModelLoadError, match="checksum"):
        load(str(tmp_path / "model"))
    # config that does not match the weights
    w.write_bytes(bytes(blob[:-1]) + bytes([blob[-1] ^ 0xFF]))
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["model"]["depth"] = 3
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="do not match"):
        load(str(tmp_path / "model"))
    with pytest.raises(ModelLoadError, match="no model"):
        load("no-such-model")


def test_reference_denoiser_end_to_end_shapes():
    den = ReferenceDenoiser(tiny())
    task = get_task("maze")
    insts = [task.generate(s, 3, n_frames=4, cell_px=1) for s in (1, 2)]
    batch = prepare(den, task, insts)
    out = generate(den, batch, [11, 12], SamplingConfig(steps=3))
    assert out.shape == (2, 3, 4, 7, 7)
    assert torch.equal(out[:, :, 0], batch.truth[:, :, 0])  # first frame re-imposed
    assert den.decode(out).shape == (2, 4, 7, 7, 3)
    with pytest.raises(ValueError, match="not trained on task"):
        den.task_index("tictactoe")


def _paired_samples(den, fast: bool, n: int = 8):
    """Final latents of n 4x4 mazes, 4 Euler steps, on the fast or the reference inference path."""
    den.model.fast = fast
    task = get_task("maze")
    batch = prepare(den, task, [task.generate(s, 4, n_frames=4, cell_px=1) for s in range(n)])
    return generate(den, batch, list(range(n)), SamplingConfig(steps=4))


def test_fast_path_equals_reference_forward_to_float_tolerance():
    from steplens.models.dit import random_tiny

    den = ReferenceDenoiser(random_tiny(preset="small"))
    fast, ref = _paired_samples(den, True), _paired_samples(den, False)
    assert fast.abs().max() > 0.1  # the noise-filled model does real work
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)


def test_fast_path_fires_every_hook_point_like_the_reference():
    from steplens.hooks import hooks
    from steplens.models.dit import random_tiny

    den = ReferenceDenoiser(random_tiny())
    seen = {}
    for fast in (True, False):
        got = []
        with hooks(den, {"blocks.*": lambda t, *, point: got.append((point.name, t.clone())) or None}):
            _paired_samples(den, fast, n=2)
        seen[fast] = got
    assert [n for n, _ in seen[True]] == [n for n, _ in seen[False]] and len(seen[True]) == 4 * 2 * 4
    for (_, a), (_, b) in zip(seen[True], seen[False]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    zero = {"blocks.1.mlp_out": lambda t, *, point: torch.zeros_like(t)}  # a replacement acts on the fast path too
    with hooks(den, zero):
        a = _paired_samples(den, True, n=2)
    with hooks(den, zero):
        b = _paired_samples(den, False, n=2)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(a, _paired_samples(den, True, n=2))


def test_fast_path_sees_weight_updates_and_training_runs_the_reference_forward():
    from steplens.models.dit import random_tiny

    m = random_tiny()
    args = (torch.randn(2, 3, 4, 5, 5), torch.rand(2), torch.randn(2, 3, 5, 5), torch.zeros(2, dtype=torch.long))
    with torch.no_grad():
        before = m(*args)
        m.blocks[0].ada[-1].weight.mul_(2.0)  # in place, as an optimizer step is: the cached concatenation must follow
        after = m(*args)
        m.fast = False
        ref = m(*args)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, ref, rtol=1e-4, atol=1e-4)
    m.fast = True
    m(*args).square().mean().backward()  # with gradients on the reference forward runs; every adaLN weight gets a gradient
    assert all(blk.ada[-1].weight.grad is not None for blk in m.blocks)
