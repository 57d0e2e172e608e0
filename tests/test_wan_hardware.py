"""Wan with the settings that matter on real hardware, on tiny configs on the CPU: bf16, offload, the folder's
scheduler and the paper's presets, LoRA on both experts, per-instance prompts, padding, device errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanPipeline  # noqa: E402
from test_wan import STEPS, build, inputs, our_cond, pipeline_latents, tiny_transformer  # noqa: E402

from steplens.models.errors import DeviceError, error_kind  # noqa: E402
from steplens.models.registry import ModelLoadError, load, parse_spec, sampling_defaults, with_options  # noqa: E402
from steplens.models.wan import WanDenoiser, folder_sigmas, load_wan, wan_sigmas  # noqa: E402
from steplens.sampling import sample  # noqa: E402
from steplens.tasks import get_task  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


def bf16(pipe):
    for m in (pipe.transformer, getattr(pipe, "transformer_2", None)):
        if m is not None:
            m.to(torch.bfloat16)
    return pipe


# -- guidance and the Euler update in the pipeline's dtype ----------------------------------------
@pytest.mark.parametrize("kind", ["i2v_moe", "ti2v", "t2v"])
def test_bf16_sampling_equals_pipeline_exactly(kind):
    pipe = bf16(build(kind))
    inp = inputs(pipe)
    g2 = 3.0 if "moe" in kind else None
    want = pipeline_latents(pipe, inp, 5.0, g2)
    den = WanDenoiser.from_pipeline(pipe, guidance_scale=5.0, guidance_scale_2=g2)
    events = []
    got = sample(den, inp["latents"].clone(), wan_sigmas(pipe.scheduler, STEPS), our_cond(den, pipe, inp), callback=events.append)
    assert torch.equal(got.float(), want.float())  # bit for bit, bf16 latents and all
    assert events[1].velocity.dtype == torch.bfloat16  # guidance combined in bf16, as the pipeline does
    # combining in float32 (the old behaviour) does not give the pipeline's video: the test can tell the two apart
    den.euler_step = lambda x, dt, v: x.float() + dt * v.float()
    assert not torch.equal(sample(den, inp["latents"].clone(), wan_sigmas(pipe.scheduler, STEPS), our_cond(den, pipe, inp)).float(),
                           want.float())


# -- offload: one expert on the device at a time --------------------------------------------------
def test_offload_moves_each_expert_for_its_step_range():
    pipe = build("i2v_moe")
    inp = inputs(pipe)
    sig = wan_sigmas(pipe.scheduler, STEPS)
    plain = WanDenoiser.from_pipeline(pipe)
    want = sample(plain, inp["latents"].clone(), sig, our_cond(plain, pipe, inp))
    den = WanDenoiser.from_pipeline(pipe, offload="model", device="cpu")
    assert den.placement == {"transformer": "offload", "transformer_2": "offload", "vae": "device"}
    seen = []

    def where(name):
        def hook(module, args):
            seen.append((name, den.placement["transformer"], den.placement["transformer_2"]))
        return hook

    handles = [pipe.transformer.register_forward_pre_hook(where("high")), pipe.transformer_2.register_forward_pre_hook(where("low"))]
    try:
        got = sample(den, inp["latents"].clone(), sig, our_cond(den, pipe, inp))
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # whenever an expert runs it is on the device and the other one is not
    assert {(n, hi, lo) for n, hi, lo in seen} == {("high", "device", "offload"), ("low", "offload", "device")}
    experts = [n for n, *_ in seen]
    assert experts == sorted(experts, key=lambda n: n == "low")  # the high-noise range, then the low-noise range
    assert den.moves[3:] == [("transformer", "device"), ("transformer", "offload"), ("transformer_2", "device")]  # one switch
    need = den.memory_estimate(inp["latents"].shape, 1)
    all_on = plain.memory_estimate(inp["latents"].shape, 1)
    expert_bytes = sum(p.numel() * p.element_size() for p in pipe.transformer.parameters())
    assert all_on["weights"] - need["weights"] == expert_bytes  # one expert fewer resident


# -- the folder's scheduler and the presets -------------------------------------------------------
def _save(pipe, path, **index):
    pipe.save_pretrained(path)
    if index:
        f = path / "model_index.json"
        f.write_text(json.dumps({**json.loads(f.read_text()), **index}))
    return path


def test_folder_scheduler_grid_and_presets(tmp_path):
    pipe = build("i2v_moe")
    pipe.scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    root = _save(pipe, tmp_path / "m", boundary_ratio=0.9)  # diffusers' Wan2.2-I2V-A14B folder switches at 900
    assert sampling_defaults(f"wan:{root}") == (50, 5.0)  # the paper's
    assert sampling_defaults(f"wan:{root}?preset=folder") == (50, 3.0)  # the folder's flow_shift
    paper, folder = load(f"wan:{root}"), load(f"wan:{root}?preset=folder")
    assert paper.boundary_ratio == 0.875 and folder.boundary_ratio == 0.9
    for den, shift in ((paper, 5.0), (folder, 3.0)):
        ref = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
        ref.set_timesteps(7)
        torch.testing.assert_close(den.schedule(7, shift), ref.sigmas.float(), rtol=0, atol=0)
    assert not torch.equal(paper.schedule(7, 5.0), folder_sigmas(None, 7, 5.0))  # UniPC's grid is not FlowMatchEuler's
    with pytest.raises(ValueError, match="no flow-matching sigma grid"):
        folder_sigmas({"_class_name": "DDIMScheduler"}, 7)


def test_wan_probe_uses_the_paper_shift_and_per_instance_prompts(tmp_path):
    from typer.testing import CliRunner

    from steplens.cli import app

    root = _save(build("i2v_moe"), tmp_path / "m")
    g = torch.Generator().manual_seed(0)
    torch.save({"prompt_embeds": torch.randn(1, 8, 32, generator=g), "negative_prompt_embeds": torch.randn(1, 8, 32, generator=g)},
               root / "emb.pt")
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["probe", "cos", "--model", f"wan:{root}", "--prompt-embeds", str(root / "emb.pt"), "--size", "3",
                                   "--n", "1", "--batch", "1", "--steps", "3", "--px", "8", "--frames", "5", "--device", "cpu",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "manifest.json").read_text())["config"]
    assert cfg["sampling"]["shift"] == 5.0 and cfg["sampling"]["steps"] == 3 and cfg["device"] == "cpu"
    assert parse_spec(cfg["model"])[2] == {"px": 8, "frames": 5}  # what a Ray worker loads
    res = CliRunner().invoke(app, ["probe", "cos", "--model", f"wan:{root}", "--prompt-embeds", str(root / "emb.pt"), "--size", "3",
                                   "--n", "1", "--frames", "8", "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "4k+1 frames, got 8" in res.output


# -- LoRA on both experts, with a scale -----------------------------------------------------------
def test_lora_on_both_experts_and_its_scale(tmp_path):
    pytest.importorskip("peft")
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = build("t2v_moe")
    root = _save(pipe, tmp_path / "m")
    t = tiny_transformer(0)
    torch.manual_seed(3)
    t.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False))
    WanPipeline.save_lora_weights(tmp_path / "lora", transformer_lora_layers=get_peft_model_state_dict(t))
    lora_sd = get_peft_model_state_dict(t)
    x = inputs(pipe)["latents"]
    kw = dict(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=inputs(pipe)["prompt_embeds"], return_dict=False)

    def out(model):
        with torch.no_grad():
            return model(**kw)[0]

    def adapted(seed_model):  # the same LoRA on a given expert, through peft directly
        from peft import set_peft_model_state_dict

        seed_model.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        set_peft_model_state_dict(seed_model, lora_sd)
        return seed_model

    both = load_wan(root, lora=str(tmp_path / "lora"))
    torch.testing.assert_close(out(both.transformer), out(adapted(tiny_transformer(0))), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out(both.transformer_2), out(adapted(tiny_transformer(1))), rtol=1e-5, atol=1e-5)
    off = load_wan(root, lora=str(tmp_path / "lora"), lora_scale=1.0, lora_scale_low=0.0)  # each expert's scale on its own
    torch.testing.assert_close(out(off.transformer_2), out(pipe.transformer_2), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(out(off.transformer), out(pipe.transformer))
    half = load(f"wan:{root}?lora={tmp_path / 'lora'}&lora_scale=0.5")  # the spec form Ray workers load
    mid, full, base = out(half.transformer), out(both.transformer), out(pipe.transformer)
    assert (mid - base).abs().mean() < (full - base).abs().mean() and not torch.allclose(mid, base)


# -- per-instance prompts and padded task videos --------------------------------------------------
def test_each_instance_gets_its_own_prompt():
    pipe = build("i2v_moe")
    den = WanDenoiser.from_pipeline(pipe)
    task = get_task("occlusion")
    insts = [task.generate(s, task.default_size, n_frames=5, cell_px=1) for s in range(40)]
    by_prompt = {}
    for i in insts:
        by_prompt.setdefault(task.prompt(i), i)
    assert len(by_prompt) >= 2, "occlusion prompts vary with direction and speed"
    (p1, i1), (p2, i2) = list(by_prompt.items())[:2]
    emb = {p1: torch.full((1, 8, 32), 1.0), p2: torch.full((1, 6, 32), 2.0)}  # different lengths: zero-padded
    den.prompt_lookup = lambda p: (emb[p], torch.zeros(1, 4, 32))
    den.pixels_per_block = 4
    truth = den.encode(np.stack([den.task_video(task, i) for i in (i1, i2)]))
    cond = den.make_cond(truth[:, :, 0], task, [i1, i2])
    assert cond.text.shape == (2, 8, 32) and bool((cond.text[0] == 1).all()) and bool((cond.text[1, :6] == 2).all())
    assert bool((cond.text[1, 6:] == 0).all()) and cond.negative_text.shape == (2, 4, 32)


def test_odd_grids_are_padded_and_cropped_back():
    pipe = build("ti2v")  # Wan2.2 TI2V-5B: 16x VAE, patch 2 -> sides must be multiples of 32
    den = WanDenoiser.from_pipeline(pipe)
    task = get_task("maze")
    inst = task.generate(5, 5, n_frames=9, cell_px=1)
    blocks = task.blocks(inst)
    assert blocks.shape[1:3] == (11, 11)  # a 5x5 maze is 11 blocks a side: 176 px, not a multiple of 32
    video = den.task_video(task, inst)
    assert video.shape == (9, 192, 192, 3)  # padded to 192
    assert np.array_equal(video[:, :176, :176], np.repeat(np.repeat(blocks, 16, 1), 16, 2))
    assert np.array_equal(video[:, 176:, :176], np.repeat(video[:, 175:176, :176], 16, axis=1))  # edge repeated
    frames = den.decode(den.encode(video[None]))
    assert frames.shape == (1, 9, 176, 176, 3)  # the scorer sees the task's own frames
    with pytest.raises(ValueError, match="4k\\+1 frames, got 8: try 5 or 9"):
        den.check_frames(8)


# -- errors: bad input per sample, a failing device stops the run ---------------------------------
def test_device_failure_stops_a_probe_and_bad_input_is_recorded():
    from steplens.models.dit import ReferenceDenoiser, random_tiny
    from steplens.probes.common import ProbeConfig, ProbeShard, probe_shard

    den = ReferenceDenoiser(random_tiny(seed=0).eval())
    cfg = ProbeConfig(task="maze", size=3, n=2, batch=2)

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    def bad(*a, **k):
        raise KeyError("no embeddings for prompt 'A 3x3 maze'")

    with pytest.raises(DeviceError, match="out of memory"):
        probe_shard(ProbeShard(cfg, (20_000, 20_001)), oom, denoiser=den)
    recs = probe_shard(ProbeShard(cfg, (20_000, 20_001)), bad, denoiser=den)
    assert [r["error_kind"] for r in recs] == ["input", "input"]
    assert error_kind(RuntimeError("CUDA error: an illegal memory access")) == "device"
    assert error_kind(FloatingPointError("non-finite final latents")) == "model"


def test_oom_message_carries_the_estimate():
    from steplens.models.errors import device_error

    den = WanDenoiser.from_pipeline(build("i2v_moe"))
    shape = den.latent_shape(9, 32, 32)
    e = device_error(torch.OutOfMemoryError("CUDA out of memory"), den, shape, 4)
    need = den.memory_estimate(shape, 4)["total"] / 2**30
    assert f"needs about {need:.1f} GiB" in str(e) and "offload=model" in str(e)


# -- capture budget: only the expert that runs at a step ------------------------------------------
def test_capture_budget_counts_the_active_expert_only():
    from steplens.runner import SamplingConfig, prepare
    from steplens.trace import CapturePlan, estimate_bytes, record

    pipe = build("i2v_moe")
    den = WanDenoiser.from_pipeline(pipe, expert_layers="concat")  # blocks 0-1 high expert, 2-3 low expert
    den.prompt_embeds, den.negative_prompt_embeds = torch.zeros(1, 8, 32), torch.zeros(1, 8, 32)
    task = get_task("maze")
    batch = prepare(den, task, [task.generate(1, 3, n_frames=9, cell_px=1)])
    sampling = SamplingConfig(steps=4, shift=5.0)
    plan = CapturePlan.parse("blocks.*.resid_post:norm", 64)
    tr = record(den, batch, [7], sampling, plan)
    naive = estimate_bytes(plan, den, batch.latent_shape, 1, 4, branches=2)
    assert tr.captures.nbytes() == tr.config["capture_estimate_bytes"] < naive
    assert tr.captures.nbytes() * 2 == naive  # each step runs 2 of the 4 blocks


# -- spec options and --device ---------------------------------------------------------------------
def test_spec_options_round_trip_and_refuse_unknown():
    spec = with_options("wan:/m", offload="model", px=32, frames=13)
    assert parse_spec(spec) == ("wan", "/m", {"offload": "model", "px": 32, "frames": 13})
    assert with_options("maze") == "maze"
    with pytest.raises(ModelLoadError, match="unknown model option"):
        parse_spec("wan:/m?offlaod=model")
    with pytest.raises(ModelLoadError, match="apply to diffusers models"):
        with_options("maze", px=32)


def test_every_command_takes_device(tmp_path):
    from typer.testing import CliRunner

    from steplens.cli import app

    r = CliRunner()
    res = r.invoke(app, ["evaluate", "--model", "maze", "--size", "6", "--n", "2", "--batch", "2", "--steps", "2", "--device", "cpu",
                         "--out", str(tmp_path / "e")])  # 6x6: unseen in training (3x3 has only 84 mazes, all seen)
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["trace", "--model", "maze", "--size", "6", "--n", "1", "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "t")])
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["probe", "cos", "--size", "6", "--n", "1", "--batch", "1", "--steps", "2", "--device", "nonsense",
                         "--out", str(tmp_path / "p")])
    assert res.exit_code == 2 and "unknown device 'nonsense'" in res.output
    res = r.invoke(app, ["ensemble", "--k", "2", "--window", "0:1", "--size", "6", "--n", "1", "--steps", "2", "--no-baselines",
                         "--device", "cpu", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["probe", "cos", "--size", "6", "--n", "1", "--px", "32", "--out", str(tmp_path / "q")])
    assert res.exit_code == 2 and "diffusers models" in res.output
