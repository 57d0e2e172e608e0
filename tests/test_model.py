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
