"""Wan through diffusers: our sampler over WanDenoiser equals the pipelines' own output (tiny models, offline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import (  # noqa: E402
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from PIL import Image  # noqa: E402

from steplens.models.protocol import Cond  # noqa: E402
from steplens.models.wan import WanDenoiser, euler_sigmas, load_wan, wan_sigmas  # noqa: E402
from steplens.sampling import sample  # noqa: E402

STEPS, SHIFT, FRAMES, SIDE = 4, 5.0, 9, 32  # 9 frames of 32x32 -> latents (16, 3, 4, 4); timesteps 1000, 909, 714, 5


def tiny_transformer(seed: int, in_channels: int = 16, out_channels: int = 16, image_dim: int | None = None) -> WanTransformer3DModel:
    """The sizes diffusers' own Wan pipeline tests use."""
    torch.manual_seed(seed)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=in_channels,
                                 out_channels=out_channels, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
                                 qk_norm="rms_norm_across_heads", rope_max_seq_len=32, image_dim=image_dim).eval()


def tiny_vae(ti2v: bool = False) -> AutoencoderKLWan:
    torch.manual_seed(0)
    if ti2v:  # Wan2.2 TI2V-5B's VAE layout: 48 latent channels, 16x spatial
        return AutoencoderKLWan(base_dim=3, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
                                latents_mean=[0.0] * 48, latents_std=[1.0] * 48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                scale_factor_spatial=16, scale_factor_temporal=4, temperal_downsample=[False, True, True]).eval()
    return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]).eval()


def build(kind: str):
    """A tiny pipeline: t2v, t2v_moe (two experts), i2v_moe (Wan2.2 A14B), i2v_21 (CLIP embeds), ti2v, ti2v_t2v."""
    sched = FlowMatchEulerDiscreteScheduler(shift=SHIFT)
    common = dict(tokenizer=None, text_encoder=None, scheduler=sched)
    if kind in ("t2v", "t2v_moe"):
        moe = kind == "t2v_moe"
        return WanPipeline(vae=tiny_vae(), transformer=tiny_transformer(0), transformer_2=tiny_transformer(1) if moe else None,
                           boundary_ratio=0.875 if moe else None, **common)
    if kind == "i2v_moe":
        return WanImageToVideoPipeline(vae=tiny_vae(), transformer=tiny_transformer(0, 36), transformer_2=tiny_transformer(1, 36),
                                       boundary_ratio=0.875, image_encoder=None, image_processor=None, **common)
    if kind == "i2v_21":  # Wan2.1 I2V: CLIP image embeddings join the text in cross-attention
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

        torch.manual_seed(0)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2,
                                                              image_size=32, intermediate_size=16, patch_size=4)).eval()
        return WanImageToVideoPipeline(vae=tiny_vae(), transformer=tiny_transformer(0, 36, image_dim=4), image_encoder=clip,
                                       image_processor=CLIPImageProcessor(crop_size=32, size=32), **common)
    if kind == "ti2v_t2v":  # Wan2.2 TI2V-5B as text-to-video: per-token timesteps, no image
        return WanPipeline(vae=tiny_vae(ti2v=True), transformer=tiny_transformer(0, 48, 48), expand_timesteps=True, **common)
    if kind == "ti2v":
        return WanImageToVideoPipeline(vae=tiny_vae(ti2v=True), transformer=tiny_transformer(0, 48, 48), image_encoder=None,
                                       image_processor=None, expand_timesteps=True, **common)
    raise ValueError(kind)


def inputs(pipe, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    den = WanDenoiser.from_pipeline(pipe)
    shape = den.latent_shape(FRAMES, SIDE, SIDE)
    return {"prompt_embeds": torch.randn(1, 8, 32, generator=g), "negative_prompt_embeds": torch.randn(1, 8, 32, generator=g),
            "latents": torch.randn(1, *shape, generator=g),
            "image": (torch.rand(SIDE, SIDE, 3, generator=g) * 255).to(torch.uint8).numpy()}


def pipeline_latents(pipe, inp: dict, guidance: float = 5.0, guidance_2: float | None = None) -> torch.Tensor:
    kw = dict(prompt_embeds=inp["prompt_embeds"], negative_prompt_embeds=inp["negative_prompt_embeds"], latents=inp["latents"].clone(),
              height=SIDE, width=SIDE, num_frames=FRAMES, num_inference_steps=STEPS, guidance_scale=guidance,
              guidance_scale_2=guidance_2, output_type="latent")
    pipe.set_progress_bar_config(disable=True)
    if isinstance(pipe, WanImageToVideoPipeline):
        kw["image"] = Image.fromarray(inp["image"])
    return pipe(**kw).frames


def our_cond(den: WanDenoiser, pipe, inp: dict) -> Cond:
    image = inp["image"][None] if isinstance(pipe, WanImageToVideoPipeline) else None
    return den.condition(image, FRAMES, text=inp["prompt_embeds"], negative_text=inp["negative_prompt_embeds"])


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipes(one_thread) -> dict:
    return {k: build(k) for k in ("t2v", "t2v_moe", "i2v_moe", "i2v_21", "ti2v", "ti2v_t2v")}


# -- (a) equivalence with the pipelines -----------------------------------------------------------
@pytest.mark.parametrize("kind, image_mode", [("t2v", "none"), ("t2v_moe", "none"), ("i2v_moe", "concat"),
                                              ("i2v_21", "concat"), ("ti2v", "first_frame"), ("ti2v_t2v", "first_frame")])
def test_sampling_equals_pipeline(pipes, kind, image_mode):
    pipe = pipes[kind]
    inp = inputs(pipe)
    guidance_2 = 3.0 if "moe" in kind else None
    want = pipeline_latents(pipe, inp, 5.0, guidance_2)
    den = WanDenoiser.from_pipeline(pipe, guidance_scale=5.0, guidance_scale_2=guidance_2)
    assert den.image_mode == image_mode
    sigmas = wan_sigmas(pipe.scheduler, STEPS)
    events = []
    got = sample(den, inp["latents"].clone(), sigmas, our_cond(den, pipe, inp), callback=events.append)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # (b) the trace's final clean estimate is the output latent
    torch.testing.assert_close(events[-1].x0_hat, got, rtol=0, atol=1e-6)
    assert all(set(e.branches) == {"cond", "uncond"} for e in events)
    experts = [e.expert for e in events]
    if "moe" in kind:  # high-noise expert first, low-noise expert once timestep < 875
        t = [1000 * e.sigma for e in events]
        assert experts == ["high" if ti >= 875 else "low" for ti in t] and {"high", "low"} <= set(experts)
    else:
        assert experts == [None] * STEPS


def test_schedule_is_the_schedulers():
    sched = FlowMatchEulerDiscreteScheduler(shift=SHIFT)
    s = wan_sigmas(sched, STEPS)
    assert s.shape == (STEPS + 1,) and s[-1] == 0 and s[0] == 1
    torch.testing.assert_close(s[:-1] * 1000, sched.timesteps, rtol=0, atol=0)
    torch.testing.assert_close(euler_sigmas(STEPS, SHIFT), s, rtol=0, atol=0)
    den = WanDenoiser.from_components(tiny_transformer(0), tiny_vae())
    torch.testing.assert_close(den.schedule(STEPS, SHIFT), s, rtol=0, atol=0)


def test_ti2v_first_frame_held(pipes):
    pipe = pipes["ti2v"]
    inp = inputs(pipe)
    den = WanDenoiser.from_pipeline(pipe)
    cond = our_cond(den, pipe, inp)
    events = []
    sample(den, inp["latents"].clone(), wan_sigmas(pipe.scheduler, 3), cond, callback=events.append)
    for e in events:
        assert torch.equal(e.x[:, :, 0], cond.image) and torch.equal(e.x0_hat[:, :, 0], cond.image)


def test_guidance_one_has_no_branches(pipes):
    pipe = pipes["t2v"]
    inp = inputs(pipe)
    want = pipeline_latents(pipe, inp, guidance=1.0)
    den = WanDenoiser.from_pipeline(pipe, guidance_scale=1.0)
    events = []
    got = sample(den, inp["latents"].clone(), wan_sigmas(pipe.scheduler, STEPS), Cond(text=inp["prompt_embeds"]), callback=events.append)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert events[0].branches is None


def test_batch_of_two_equals_one_at_a_time(pipes):
    pipe = pipes["i2v_moe"]
    den = WanDenoiser.from_pipeline(pipe)
    a, b = inputs(pipe, 0), inputs(pipe, 1)
    sig = wan_sigmas(pipe.scheduler, 3)
    one = [sample(den, i["latents"], sig, our_cond(den, pipe, i)) for i in (a, b)]
    ca, cb = our_cond(den, pipe, a), our_cond(den, pipe, b)
    both = Cond(text=torch.cat([ca.text, cb.text]), negative_text=torch.cat([ca.negative_text, cb.negative_text]),
                extra={"wan_condition": torch.cat([ca.extra["wan_condition"], cb.extra["wan_condition"]])})
    got = sample(den, torch.cat([a["latents"], b["latents"]]), sig, both)
    torch.testing.assert_close(got, torch.cat(one), rtol=1e-4, atol=1e-5)


def test_missing_conditioning_is_a_clear_error(pipes):
    den = WanDenoiser.from_pipeline(pipes["i2v_moe"])
    x = torch.zeros(1, *den.latent_shape(FRAMES, SIDE, SIDE))
    with pytest.raises(ValueError, match="image-to-video"):
        den(x, torch.ones(1), Cond(text=torch.zeros(1, 8, 32), negative_text=torch.zeros(1, 8, 32)))
    no_negative = den.condition(np.zeros((1, SIDE, SIDE, 3), np.uint8), FRAMES, text=torch.zeros(1, 8, 32))
    with pytest.raises(ValueError, match="negative"):
        den(x, torch.ones(1), no_negative)
    with pytest.raises(ValueError, match="4k\\+1 frames"):
        den.latent_shape(8, SIDE, SIDE)


def tiny_text_encoder():
    """A word-level tokenizer and a 1-layer UMT5 encoder, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    words = ["<pad>", "</s>", "<unk>", *"a maze draw the path from green to red in blue".split()]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    return tok, UMT5EncoderModel(UMT5Config(vocab_size=32, d_model=32, d_kv=8, d_ff=16, num_layers=1, num_heads=2)).eval()


def test_text_encoder_path(tmp_path):
    tok, te = tiny_text_encoder()
    pipe = WanPipeline(tokenizer=tok, text_encoder=te, vae=tiny_vae(), scheduler=FlowMatchEulerDiscreteScheduler(shift=SHIFT),
                       transformer=tiny_transformer(0))
    pipe.set_progress_bar_config(disable=True)
    lat = inputs(pipe)["latents"]
    want = pipe(prompt="draw the path", negative_prompt="", latents=lat.clone(), height=SIDE, width=SIDE, num_frames=FRAMES,
                num_inference_steps=STEPS, max_sequence_length=16, output_type="latent").frames
    den = WanDenoiser.from_pipeline(pipe, max_sequence_length=16)
    text, neg = den.encode_prompt(["draw the path"])
    got = sample(den, lat.clone(), wan_sigmas(pipe.scheduler, STEPS), den.condition(None, FRAMES, text=text, negative_text=neg))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    pipe.save_pretrained(tmp_path / "m")  # with its tokenizer and text encoder, loaded back offline
    loaded = load_wan(tmp_path / "m", max_sequence_length=16)
    assert torch.equal(loaded.encode_prompt(["draw the path"])[0], text)
    assert load_wan(tmp_path / "m", text_encoder=False).text_encoder is None


# -- (c) hooks ------------------------------------------------------------------------------------
def test_hook_contract(pipes):
    pipe = pipes["i2v_moe"]
    den = WanDenoiser.from_pipeline(pipe)
    assert len(den.hook_blocks()) == 2 and den.expert_of_block(1) == (None, 1)  # layer i of the active expert
    concat = WanDenoiser.from_pipeline(pipe, expert_layers="concat")
    assert len(concat.hook_blocks()) == 4 and concat.expert_of_block(2) == ("low", 0)
    assert concat.hook_blocks()[2] is pipe.transformer_2.blocks[0]
    assert den.hidden_dim == 24 and den.latent_channels == 16
    assert all(isinstance(getattr(b, site), torch.nn.Module) for b in den.hook_blocks() for site in den.hook_sites().values())
    shape = (1, *den.latent_shape(FRAMES, SIDE, SIDE))
    assert den.token_grid(shape) == (3, 2, 2)


@pytest.mark.parametrize("expert_layers", ["shared", "concat"])
def test_observing_hooks_leave_output_identical(pipes, expert_layers):
    pipe = pipes["i2v_moe"]
    inp = inputs(pipe)
    den = WanDenoiser.from_pipeline(pipe, expert_layers=expert_layers)
    sig = wan_sigmas(pipe.scheduler, 4)
    plain = sample(den, inp["latents"].clone(), sig, our_cond(den, pipe, inp))
    seen: list[tuple[str | None, str]] = []
    grid = den.token_grid(inp["latents"].shape)

    def observe(module, args, out):
        from steplens.context import current_call

        assert out.shape[1] == grid[0] * grid[1] * grid[2] and out.shape[2] == den.hidden_dim  # (B, tokens, D)
        seen.append((den.active_expert, current_call().branch))

    mlp_calls = []
    handles = [b.register_forward_hook(observe) for b in den.hook_blocks()]
    handles += [b.ffn.register_forward_hook(lambda m, a, o: mlp_calls.append(o.shape)) for b in den.hook_blocks()]
    try:
        hooked = sample(den, inp["latents"].clone(), sig, our_cond(den, pipe, inp))
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(plain, hooked)
    assert len(seen) == len(mlp_calls) == 4 * 2 * 2  # steps x branches x layers of the active expert
    assert {s[1] for s in seen} == {"cond", "uncond"} and {s[0] for s in seen} == {"high", "low"}
    sample(den, inp["latents"].clone(), sig, our_cond(den, pipe, inp))
    assert len(seen) == 16  # removed from both experts


def test_steplens_hooks_noop_identical(pipes):
    from steplens.hooks import hooks

    pipe = pipes["t2v_moe"]
    inp = inputs(pipe)
    den = WanDenoiser.from_pipeline(pipe)
    sig = wan_sigmas(pipe.scheduler, 3)
    cond = our_cond(den, pipe, inp)
    plain = sample(den, inp["latents"].clone(), sig, cond)
    counts = []

    def fn(t, *, point):
        counts.append(t.shape[1])

    with hooks(den, {f"blocks.{i}.resid_post": fn for i in range(len(den.hook_blocks()))}):
        hooked = sample(den, inp["latents"].clone(), sig, cond)
    assert torch.equal(plain, hooked)
    assert len(counts) == 3 * 2 * len(den.hook_blocks())  # steps x CFG branches x layers (of the active expert)
    assert set(counts) == {int(np.prod(den.token_grid(inp["latents"].shape)))}


# -- (d) save / load offline, LoRA -----------------------------------------------------------------
def test_save_and_load_wan(pipes, tmp_path):
    pipe = pipes["i2v_moe"]
    pipe.save_pretrained(tmp_path / "m")
    from steplens.models.registry import load

    assert isinstance(load(f"wan:{tmp_path / 'm'}"), WanDenoiser)  # the registry's spelling
    den = load_wan(tmp_path / "m", guidance_scale_2=3.0)
    assert den.transformer_2 is not None and den.boundary_ratio == 0.875 and den.image_mode == "concat"
    inp = inputs(pipe)
    sig = euler_sigmas(3, SHIFT)
    ref = WanDenoiser.from_pipeline(pipe, guidance_scale_2=3.0)
    torch.testing.assert_close(sample(den, inp["latents"].clone(), sig, our_cond(den, pipe, inp)),
                               sample(ref, inp["latents"].clone(), sig, our_cond(ref, pipe, inp)), rtol=1e-5, atol=1e-5)


def test_lora_high_and_low(pipes, tmp_path):
    pytest.importorskip("peft")
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = pipes["t2v_moe"]
    pipe.save_pretrained(tmp_path / "m")
    adapted = {}
    for name, seed in (("high", 1), ("low", 2)):
        t = tiny_transformer(0 if name == "high" else 1)
        torch.manual_seed(seed)
        t.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False))
        WanPipeline.save_lora_weights(tmp_path / name, transformer_lora_layers=get_peft_model_state_dict(t))
        adapted[name] = t
    den = load_wan(tmp_path / "m", lora_high=str(tmp_path / "high"), lora_low=str(tmp_path / "low"))
    inp = inputs(pipe)
    x = inp["latents"]
    for name, model in (("high", den.transformer), ("low", den.transformer_2)):
        kw = dict(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=inp["prompt_embeds"], return_dict=False)
        with torch.no_grad():
            torch.testing.assert_close(model(**kw)[0], adapted[name](**kw)[0], rtol=1e-5, atol=1e-5)
            plain = pipe.transformer if name == "high" else pipe.transformer_2
            assert not torch.allclose(plain(**kw)[0], adapted[name](**kw)[0])


# -- (e) VAE --------------------------------------------------------------------------------------
def test_encode_decode_shapes(pipes):
    den = WanDenoiser.from_pipeline(pipes["t2v"])
    frames = np.random.default_rng(0).integers(0, 256, (2, FRAMES, SIDE, SIDE, 3), dtype=np.uint8)
    lat = den.encode(frames)
    assert lat.shape == (2, *den.latent_shape(FRAMES, SIDE, SIDE)) and lat.dtype == torch.float32
    video = den.decode(lat)
    assert video.shape == frames.shape and video.dtype == np.uint8
    with pytest.raises(ValueError):
        den.encode(frames[:, :8])


def test_make_cond_from_task(pipes):
    from steplens.tasks import get_task

    pipe = pipes["i2v_moe"]
    den = WanDenoiser.from_pipeline(pipe)
    den.pixels_per_block = 16
    task = get_task("maze")
    insts = [task.generate(s, 3, n_frames=5, cell_px=1) for s in (1, 2)]
    den.prompt_embeds, den.negative_prompt_embeds = torch.zeros(1, 8, 32), torch.zeros(1, 8, 32)
    truth = den.encode(np.stack([den.task_video(task, i) for i in insts]))
    cond = den.make_cond(truth[:, :, 0], task, insts)
    assert cond.text.shape[0] == 2 and cond.extra["wan_condition"].shape == (2, 20, *truth.shape[2:])
    v = den(torch.randn_like(truth), torch.full((2,), 0.5), cond).velocity
    assert v.shape == truth.shape


# -- the evaluate-vbvr command -------------------------------------------------------------------
def test_evaluate_vbvr_cli(pipes, tmp_path):
    import json

    from typer.testing import CliRunner

    from steplens.cli import app
    from steplens.tasks.vbvr import generate_set

    pipes["i2v_moe"].save_pretrained(tmp_path / "m")
    data = tmp_path / "data"
    generate_set("maze", 3, 7, data, size=3, progress=False)
    (data / "maze_00002" / "meta.json").unlink()  # one broken sample: recorded as an error, the rest still run
    g = torch.Generator().manual_seed(0)
    torch.save({"prompt_embeds": torch.randn(1, 8, 32, generator=g), "negative_prompt_embeds": torch.randn(1, 8, 32, generator=g)},
               tmp_path / "emb.pt")
    run = tmp_path / "run"
    args = ["evaluate-vbvr", "--model", f"wan:{tmp_path / 'm'}", "--data", str(data), "--out", str(run),
            "--steps", "2", "--prompt-embeds", str(tmp_path / "emb.pt"), "--device", "cpu"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.output  # exit 1: ran to the end, a sample could not be run
    results = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    ok = [x for x in results if "error" not in x]
    assert len(results) == 3 and len(ok) == 2 and all(0.0 <= x["score"] <= 1.0 and x["task"] == "maze" for x in ok)
    assert "meta.json" in results[2]["error"]
    assert sorted(p.name for p in (run / "videos").glob("*.mp4")) == ["maze_00000.mp4", "maze_00001.mp4"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n"] == 3 and summary["n_errors"] == 1
    # the videos re-score with `steplens score --videos` (mp4 round trip: same samples, valid scores)
    from steplens.scoring import score_folder

    rescored = {x.sample: x.score for x in score_folder(data, run / "videos").results if x.error is None}
    assert set(rescored) == {x["sample"] for x in ok} and all(0.0 <= v <= 1.0 for v in rescored.values())
    r2 = CliRunner().invoke(app, args)  # resumable: only the broken sample is tried again
    assert r2.exit_code == 1 and "2 done, 1 to run" in r2.output


# -- every probe command on the tiny Wan model ----------------------------------------------------
@pytest.mark.parametrize("probe", ["cos", "perturb", "cka", "layers", "layers-writes", "behaviour", "splice"])
def test_every_probe_command_runs_on_wan(pipes, tmp_path_factory, probe):
    import json

    from typer.testing import CliRunner

    from steplens.cli import app

    root = tmp_path_factory.getbasetemp() / "wan_probe_model"
    if not (root / "model_index.json").exists():
        pipes["i2v_moe"].save_pretrained(root)
        g = torch.Generator().manual_seed(0)
        torch.save({"prompt_embeds": torch.randn(1, 8, 32, generator=g), "negative_prompt_embeds": torch.randn(1, 8, 32, generator=g)},
                   root / "emb.pt")
    out = tmp_path_factory.mktemp(probe)
    extra = {"perturb": ["--every", "2", "--frame-window", "1:3"], "cka": ["--every", "2"], "layers": ["--patch-window", "0:4"],
             "layers-writes": ["--patch", "writes"], "splice": ["--k", "4", "--every", "2", "--self-check"]}
    args = ["probe", probe.split("-")[0], "--model", f"wan:{root}", "--prompt-embeds", str(root / "emb.pt"), "--size", "3", "--n", "2",
            "--batch", "2", "--steps", "4", "--out", str(out)]
    res = CliRunner().invoke(app, args + extra.get(probe, []))
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    figures = json.loads((out / "figures.json").read_text())
    if probe == "splice":  # the tiny VAE decodes every seed to the same blocks: the pair search says so, nothing to splice
        assert summary["verdict"] == "not measurable: the seeds agree" and summary["pairs_agree_skipped"] == 12 and not figures
        return
    assert figures and all((out / f["path"]).stat().st_size > 0 for f in figures)
    if probe == "cos":  # Wan decodes to pixels (16 per block here): metrics see them mapped onto the maze grid
        assert summary["n"] == 2 and len(summary["per_step"]["all"]["off_solution_mass"]) == 4
    if probe == "perturb":  # 9 video frames are 3 latent frames: the sweep covers latent frames 1 and 2
        assert summary["modes"] == ["replace", "renoise"]  # the paper's wording and the level-matched control
        for r in summary["by_mode"].values():
            assert [p["index"] for p in r["noise_at_frame"]] == [1, 2] and r["answer_frame"] == 2
            assert [p["sigma"] for p in r["noise_at_step"]] == [summary["step_sigmas"][1], summary["step_sigmas"][3]]
            assert [p["frame"] for p in r["frame_window"]["recovery"]] == [1, 2]
        assert (out / "frame_recovery.png").stat().st_size > 0
    if probe == "cka":
        flow = json.loads((out / "cka_flow.json").read_text())
        m = flow["modes"]["renoise"]["blocks.1.resid_post"]["mean"]  # injections at 0 and 2 of 4 steps, then the output
        assert len(m) == 2 and m[0][0] is None and m[0][1] is not None and m[1][:3] == [None] * 3 and m[1][4] is None
    if probe.startswith("layers"):  # 2 blocks per expert, patched per layer; token maps on the 7x7 maze grid's tokens
        p = summary["patching"]
        assert p["variant"] == ("writes" if probe == "layers-writes" else "resid") and set(p["per_layer"]) == {"0", "1"}
        assert all(abs(sum(r[k]["rate"] for k in ("flip", "keep", "break")) - 1) < 1e-9 for r in p["per_layer"].values())
        tm = json.loads((out / "token_maps.json").read_text())
        assert tm["layers"] == ["input", "0", "1"] and (out / "token_maps.png").stat().st_size > 0
    if probe == "behaviour":
        assert "in the conditioning" in summary["memory"]["verdict"] and summary["pruning"]["n"] == 2


def test_prompt_embeds_are_for_wan_only(tmp_path):
    from typer.testing import CliRunner

    from steplens.cli import app

    res = CliRunner().invoke(app, ["probe", "cos", "--prompt-embeds", str(tmp_path / "e.pt"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "wan: models only" in res.output
