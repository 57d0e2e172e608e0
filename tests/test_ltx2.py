"""LTX-2 image-to-video through diffusers: our sampler over LTX2Denoiser equals the pipeline's video (tiny models, offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import (  # noqa: E402
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    FlowMatchEulerDiscreteScheduler,
    LTX2ImageToVideoPipeline,
    LTX2VideoTransformer3DModel,
)
from diffusers.pipelines.ltx2 import LTX2TextConnectors  # noqa: E402
from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder  # noqa: E402
from PIL import Image  # noqa: E402

from steplens.models.ltx2 import LTX2Denoiser, _left_padded, load_ltx2  # noqa: E402
from steplens.sampling import sample  # noqa: E402

STEPS, FRAMES, SIDE = 3, 9, 32  # 9 frames of 32x32 -> latents (4, 5, 16, 16) with the tiny VAE (2x time, 2x space)
CAPTION, TEXT_LAYERS, TEXT_LEN = 32, 3, 8  # text-encoder states: (1, 8, 32 x 3)

pytestmark = pytest.mark.usefixtures("one_thread")


def ltx2_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """The scheduler LTX-2 folders ship: resolution-dependent exponential shift, stretched to end at 0.1."""
    return FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
                                           max_image_seq_len=4096, shift_terminal=0.1)


def build() -> LTX2ImageToVideoPipeline:
    """A tiny pipeline of the sizes diffusers' own LTX-2 tests use (2 layers, 2 heads), without a text encoder; its VAE
    compresses time 2x as well (frames 2k + 1), so task videos encode to the grid the pipeline denoises."""
    torch.manual_seed(0)
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2, audio_attention_head_dim=4, audio_cross_attention_dim=8,
        num_layers=2, caption_channels=CAPTION, rope_double_precision=False, rope_type="split").eval()
    torch.manual_seed(1)
    connectors = LTX2TextConnectors(
        caption_channels=CAPTION, text_proj_in_factor=TEXT_LAYERS, video_connector_num_attention_heads=4, video_connector_attention_head_dim=8,
        video_connector_num_layers=1, video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=4,
        audio_connector_attention_head_dim=8, audio_connector_num_layers=1, audio_connector_num_learnable_registers=None,
        connector_rope_base_seq_len=32, rope_double_precision=False, rope_type="split").eval()
    torch.manual_seed(2)
    vae = AutoencoderKLLTX2Video(
        latent_channels=4, block_out_channels=(8,), decoder_block_out_channels=(8,), layers_per_block=(1,), decoder_layers_per_block=(1, 1),
        spatio_temporal_scaling=(True,), decoder_spatio_temporal_scaling=(True,), decoder_inject_noise=(False, False),
        downsample_type=("spatiotemporal",), upsample_residual=(False,), upsample_factor=(1,), timestep_conditioning=False, patch_size=1,
        patch_size_t=1, encoder_causal=True, decoder_causal=False).eval()
    vae.use_framewise_encoding = vae.use_framewise_decoding = False
    torch.manual_seed(3)
    audio_vae = AutoencoderKLLTX2Audio(base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1, attn_resolutions=None, in_channels=2,
                                       resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height", dropout=0.0,
                                       mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True, mel_bins=8)
    vocoder = LTX2Vocoder(in_channels=16, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[4, 4], upsample_factors=[2, 2],
                          resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]], leaky_relu_negative_slope=0.1, output_sampling_rate=16000)
    pipe = LTX2ImageToVideoPipeline(scheduler=ltx2_scheduler(), vae=vae, audio_vae=audio_vae, text_encoder=None, tokenizer=None,
                                    connectors=connectors, transformer=transformer, vocoder=vocoder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def inputs(pipe, seed: int = 0) -> dict:
    """Text-encoder states, an image, and the video noise the pipeline draws first from `torch.Generator().manual_seed(noise_seed)`."""
    g = torch.Generator().manual_seed(seed)
    shape = LTX2Denoiser.from_pipeline(pipe).latent_shape(FRAMES, SIDE, SIDE)
    noise_seed = 100 + seed
    return {"prompt_embeds": torch.randn(1, TEXT_LEN, CAPTION * TEXT_LAYERS, generator=g),
            "negative_prompt_embeds": torch.randn(1, TEXT_LEN, CAPTION * TEXT_LAYERS, generator=g),
            "image": (torch.rand(SIDE, SIDE, 3, generator=g) * 255).to(torch.uint8).numpy(), "noise_seed": noise_seed,
            "latents": torch.randn(1, *shape, generator=torch.Generator().manual_seed(noise_seed))}


def pipeline_latents(pipe, inp: dict, guidance: float = 3.0, rescale: float = 0.7, image_crf: int = 0) -> torch.Tensor:
    """The pipeline's final video latents (normalised), video only: audio-video cross-attention off in every transformer call."""
    dtype = pipe.transformer.dtype
    mask = torch.ones(1, TEXT_LEN, dtype=torch.long)
    handle = pipe.transformer.register_forward_pre_hook(lambda m, a, kw: (a, {**kw, "isolate_modalities": True}), with_kwargs=True)
    try:
        out = pipe(image=Image.fromarray(inp["image"]), prompt_embeds=inp["prompt_embeds"].to(dtype), prompt_attention_mask=mask,
                   negative_prompt_embeds=inp["negative_prompt_embeds"].to(dtype), negative_prompt_attention_mask=mask, height=SIDE,
                   width=SIDE, num_frames=FRAMES, num_inference_steps=STEPS, guidance_scale=guidance, guidance_rescale=rescale,
                   stg_scale=0.0, audio_stg_scale=0.0, modality_scale=1.0, audio_modality_scale=1.0, audio_guidance_scale=guidance,
                   image_crf=image_crf, generator=torch.Generator().manual_seed(inp["noise_seed"]), output_type="latent")
    finally:
        handle.remove()
    vae = pipe.vae
    return pipe._normalize_latents(out.frames, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)


def our_cond(den: LTX2Denoiser, inp: dict):
    dtype = den.transformer.dtype
    return den.condition(inp["image"][None], FRAMES, text=inp["prompt_embeds"].to(dtype), negative_text=inp["negative_prompt_embeds"].to(dtype))


@pytest.fixture(scope="module")
def pipe(one_thread):
    return build()


# -- equivalence with the pipeline ------------------------------------------------------------------
@pytest.mark.parametrize("guidance, rescale, dtype", [(3.0, 0.7, torch.float32), (1.0, 0.0, torch.float32), (3.0, 0.7, torch.bfloat16),
                                                      (1.0, 0.7, torch.bfloat16)])
def test_sampling_equals_pipeline_exactly(guidance, rescale, dtype):
    """Bit for bit, in float32 and in bfloat16 (every module in bf16, as `from_pretrained(..., dtype=bf16)` loads it)."""
    pipe = build().to(dtype)
    inp = inputs(pipe)
    want = pipeline_latents(pipe, inp, guidance, rescale)
    den = LTX2Denoiser.from_pipeline(pipe, guidance_scale=guidance, guidance_rescale=rescale, image_crf=0)
    cond = our_cond(den, inp)
    sigmas = den.schedule(STEPS)
    events = []
    got = sample(den, inp["latents"].clone(), sigmas, cond, callback=events.append)
    assert torch.equal(got, want) and got.dtype == torch.float32  # latents stay float32, as the pipeline keeps them
    torch.testing.assert_close(events[-1].x0_hat, got, rtol=0, atol=1e-6)  # the last clean estimate is the output
    assert all(torch.equal(e.x[:, :, 0], cond.image) for e in events)  # latent frame 0 is the image's, throughout
    assert all((e.branches is None) == (guidance <= 1) for e in events)
    # the default pipeline (audio denoised jointly, cross-attention on) makes a different video: the test can tell
    if dtype == torch.float32 and guidance > 1:
        mask = torch.ones(1, TEXT_LEN, dtype=torch.long)
        joint = pipe(image=Image.fromarray(inp["image"]), prompt_embeds=inp["prompt_embeds"], prompt_attention_mask=mask,
                     negative_prompt_embeds=inp["negative_prompt_embeds"], negative_prompt_attention_mask=mask, height=SIDE, width=SIDE,
                     num_frames=FRAMES, num_inference_steps=STEPS, stg_scale=0.0, audio_stg_scale=0.0, modality_scale=1.0,
                     audio_modality_scale=1.0, image_crf=0, generator=torch.Generator().manual_seed(inp["noise_seed"]), output_type="latent")
        assert not torch.allclose(joint.frames, want, atol=1e-3)


def test_image_crf_and_video_independent_of_audio(pipe):
    """The default image_crf (33, the pipeline's for Gemma-3 models) re-compresses the image as the pipeline does."""
    inp = inputs(pipe, 1)
    den = LTX2Denoiser.from_pipeline(pipe)
    assert den.image_crf == 33 and den.guidance_scale == 3.0 and den.guidance_rescale == 0.7 and den.default_steps == 30
    cond = our_cond(den, inp)
    got = sample(den, inp["latents"].clone(), den.schedule(STEPS), cond)
    assert torch.equal(got, pipeline_latents(pipe, inp, image_crf=33))
    assert not torch.equal(cond.image, our_cond(LTX2Denoiser.from_pipeline(pipe, image_crf=0), inp).image)
    # the video stream never reads the audio tokens: any audio input gives the same velocity
    x, s = inp["latents"], torch.full((1,), 0.6)
    v = den(x, s, cond).velocity
    orig = pipe.transformer.forward
    pipe.transformer.forward = lambda **kw: orig(**{**kw, "audio_hidden_states": torch.randn_like(kw["audio_hidden_states"])})
    try:
        assert torch.equal(den(x, s, cond).velocity, v)
    finally:
        del pipe.transformer.forward


def test_schedule_is_the_pipelines(pipe):
    den = LTX2Denoiser.from_pipeline(pipe)
    with pytest.raises(ValueError, match="token count"):
        den.schedule(STEPS)
    den.latent_shape(FRAMES, SIDE, SIDE)
    assert den.seq_len == 5 * 16 * 16
    s = den.schedule(8)
    ref = ltx2_scheduler()
    from diffusers.pipelines.ltx2.pipeline_ltx2_image2video import calculate_shift

    ref.set_timesteps(sigmas=np.linspace(1.0, 1 / 8, 8), mu=calculate_shift(1280, 1024, 4096, 0.95, 2.05))
    assert torch.equal(s, ref.sigmas) and s[0] == 1 and s[-2] == pytest.approx(0.1) and s[-1] == 0
    torch.testing.assert_close(s[:-1] * 1000, ref.timesteps, rtol=0, atol=0)
    bigger = den.schedule(8, seq_len=4096)
    assert (bigger[1:-1] > s[1:-1]).all()  # more tokens: a larger shift
    shifted = den.schedule(8, 3.0)
    assert (shifted[1:-2] > s[1:-2]).all() and shifted[-2] == pytest.approx(0.1)  # --shift multiplies exp(mu)


# -- hooks ----------------------------------------------------------------------------------------
def test_hooks_see_the_video_stream_and_noop_hooks_are_identical(pipe):
    from steplens.context import current_call
    from steplens.hooks import hook_points, hooks

    inp = inputs(pipe)
    den = LTX2Denoiser.from_pipeline(pipe, image_crf=0)
    cond = our_cond(den, inp)
    sig = den.schedule(2)
    plain = sample(den, inp["latents"].clone(), sig, cond)
    assert den.hidden_dim == 16 and den.latent_channels == 4 and len(den.hook_blocks()) == 2
    assert den.token_grid(inp["latents"].shape) == (5, 16, 16)
    assert set(hook_points(den)) == {f"blocks.{i}.{p}" for i in (0, 1) for p in ("resid_pre", "attn_out", "cross_attn_out", "mlp_out", "resid_post")}
    seen = []

    def fn(t, *, point):
        seen.append((point.site, tuple(t.shape), current_call().branch))

    with hooks(den, {"blocks.*": fn}):
        hooked = sample(den, inp["latents"].clone(), sig, cond)
    assert torch.equal(plain, hooked)
    assert len(seen) == 2 * 2 * 2 * 5  # steps x branches x layers x points
    assert {s[1] for s in seen} == {(1, 1280, 16)} and {s[2] for s in seen} == {"cond", "uncond"}
    zero = lambda t, *, point: torch.zeros_like(t)  # noqa: E731
    with hooks(den, {"blocks.1.resid_post": zero}):  # a replacement changes the output
        assert not torch.equal(sample(den, inp["latents"].clone(), sig, cond), plain)


# -- VAE, task videos, loading --------------------------------------------------------------------
def test_encode_decode_and_task_videos(pipe):
    from steplens.tasks import get_task

    den = LTX2Denoiser.from_pipeline(pipe)
    den.pixels_per_block = 4
    task = get_task("maze")
    inst = task.generate(1, 3, n_frames=5, cell_px=1)
    video = den.task_video(task, inst)
    assert video.shape == (5, 32, 32, 3)  # a 7-block maze is 28 px: padded to 32
    lat = den.encode(video[None])
    assert lat.shape == (1, *den.latent_shape(5, 32, 32)) == (1, 4, 3, 16, 16)
    frames = den.decode(lat)
    assert frames.shape == (1, 5, 28, 28, 3) and frames.dtype == np.uint8  # the padding cut off again
    with pytest.raises(ValueError, match="2k\\+1 frames"):
        den.check_frames(4)
    with pytest.raises(ValueError, match="multiples of 32"):
        den.latent_shape(5, 16, 16)
    den.prompt_lookup = lambda p: (torch.ones(1, 5, CAPTION * TEXT_LAYERS), torch.zeros(1, 3, CAPTION * TEXT_LAYERS))
    cond = den.make_cond(lat[:, :, 0], task, [inst, task.generate(2, 3, n_frames=5, cell_px=1)])
    assert cond.text.shape == cond.negative_text.shape == (2, 5, CAPTION)  # the negative prompt left-padded to the prompt's length
    states, mask = _left_padded([torch.ones(3, 2), torch.ones(1, 5, 2)], 5)
    assert mask.tolist() == [[0, 0, 1, 1, 1], [1] * 5] and states[0, :2].abs().sum() == 0 and states[0, 2:].min() == 1
    assert cond.image.shape == (2, 4, 16, 16)
    assert den(torch.randn(2, 4, 3, 16, 16), torch.full((2,), 0.5), cond).velocity.shape == (2, 4, 3, 16, 16)


def test_save_and_load_through_the_registry(pipe, tmp_path):
    from steplens.models.registry import load, parse_spec, sampling_defaults

    pipe.save_pretrained(tmp_path / "m")
    den = load(f"ltx2:{tmp_path / 'm'}?guidance=4&frames=5&px=8")
    assert isinstance(den, LTX2Denoiser) and den.guidance_scale == 4.0 and den.n_frames == 5 and den.pixels_per_block == 8
    assert den.text_encoder is None and parse_spec(den.name)[0] == "ltx2"
    assert sampling_defaults(f"ltx2:{tmp_path / 'm'}") == (30, 1.0)
    with pytest.raises(ValueError, match="2k\\+1 frames"):
        load(f"ltx2:{tmp_path / 'm'}?frames=4")
    with pytest.raises(ValueError, match="one transformer"):
        load_ltx2(tmp_path / "m", lora_low="x")
    inp = inputs(pipe)
    ref = LTX2Denoiser.from_pipeline(pipe, image_crf=0)
    den.guidance_scale, den.image_crf = 3.0, 0
    a, b = our_cond(den, inp), our_cond(ref, inp)
    assert torch.equal(sample(den, inp["latents"].clone(), den.schedule(2), a), sample(ref, inp["latents"].clone(), ref.schedule(2), b))


# -- every probe, ensemble and search command on the tiny model ------------------------------------
def tiny_text_encoder():
    """A word-level tokenizer and a 2-layer Gemma 3 text model (3 hidden states of 32 = the connectors' input), built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Gemma3TextConfig, Gemma3TextModel, PreTrainedTokenizerFast

    words = ["<pad>", "<eos>", "<unk>", *"a maze draw the path from green to red in blue".split()]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>", model_max_length=16)
    torch.manual_seed(4)
    cfg = Gemma3TextConfig(vocab_size=32, hidden_size=CAPTION, intermediate_size=16, num_hidden_layers=TEXT_LAYERS - 1, num_attention_heads=2,
                           num_key_value_heads=1, head_dim=16, max_position_embeddings=64, sliding_window=8)
    return tok, Gemma3TextModel(cfg).eval()


@pytest.fixture(scope="module")
def model_dir(pipe, tmp_path_factory):
    """The tiny model saved with a text encoder, and prompt embeddings for --prompt-embeds."""
    root = tmp_path_factory.mktemp("ltx2_model")
    tok, te = tiny_text_encoder()
    pipe.register_modules(tokenizer=tok, text_encoder=te)
    try:
        pipe.save_pretrained(root)
    finally:
        pipe.register_modules(tokenizer=None, text_encoder=None)
    g = torch.Generator().manual_seed(0)
    torch.save({"prompt_embeds": torch.randn(1, TEXT_LEN, CAPTION * TEXT_LAYERS, generator=g),
                "negative_prompt_embeds": torch.randn(1, TEXT_LEN, CAPTION * TEXT_LAYERS, generator=g)}, root / "emb.pt")
    return root


def test_text_encoder_path(model_dir):
    den = load_ltx2(model_dir, max_sequence_length=16)
    text, mask, neg, neg_mask = den.encode_prompt(["draw the path"])
    assert text.shape == (1, 16, CAPTION * TEXT_LAYERS) and mask.sum() == 3 and mask[0, -1] == 1  # Gemma pads on the left
    assert neg.shape == text.shape and neg_mask.sum() == 0  # the empty negative prompt: all padding
    assert load_ltx2(model_dir, text_encoder=False).text_encoder is None


COMMANDS = {  # 3x3 mazes (7 blocks) at 4 px per block -> 32 px, 5 frames -> latents (4, 3, 16, 16): 768 tokens
    "probe-cos": ["probe", "cos", "--n", "2", "--batch", "2"],
    "probe-perturb": ["probe", "perturb", "--n", "2", "--batch", "2", "--every", "2", "--frame-window", "1:3"],
    "probe-cka": ["probe", "cka", "--n", "2", "--batch", "2", "--every", "2"],
    "probe-layers": ["probe", "layers", "--n", "2", "--batch", "2", "--patch-window", "0:4"],
    "ensemble-run": ["ensemble", "run", "--n", "1", "--k", "2", "--window", "0:2", "--no-baselines"],
    "search-run": ["search", "run", "--n", "1", "--k", "2", "--screen-step", "1", "--budget", "2"],
}


def _find(d: dict, key: str) -> dict:
    """The (possibly nested) dict of a run config that holds `key`."""
    if key in d:
        return d
    return next(_find(v, key) for v in d.values() if isinstance(v, dict) and json.dumps(v).count(f'"{key}"'))


@pytest.mark.parametrize("command", list(COMMANDS))
def test_commands_run_on_ltx2(model_dir, tmp_path, command):
    from typer.testing import CliRunner

    from steplens.cli import app

    out = tmp_path / command
    text = ["--prompt-embeds", str(model_dir / "emb.pt")] if command.startswith("probe") else []  # else the text encoder
    args = [*COMMANDS[command], "--model", f"ltx2:{model_dir}?px=4&frames=5", *text, "--size", "3", "--steps", "4", "--device", "cpu",
            "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "precision.json").is_file() and json.loads((out / "summary.json").read_text())
    if command.startswith("probe"):
        summary = json.loads((out / "summary.json").read_text())
        figures = json.loads((out / "figures.json").read_text())
        assert figures and all((out / f["path"]).stat().st_size > 0 for f in figures)
        cfg = _find(json.loads((out / "manifest.json").read_text())["config"], "sampling")
        assert cfg["sampling"]["steps"] == 4 and cfg["sampling"]["shift"] == 1.0 and cfg["model"].startswith("ltx2:")
    if command == "probe-cos":
        assert summary["n"] == 2 and len(summary["per_step"]["all"]["off_solution_mass"]) == 4
    if command == "probe-perturb":  # 5 video frames are 3 latent frames: the sweep covers latent frames 1 and 2
        for r in summary["by_mode"].values():
            assert [p["index"] for p in r["noise_at_frame"]] == [1, 2]
    if command == "probe-layers":
        assert set(summary["patching"]["per_layer"]) == {"0", "1"}
    if command == "search-run":
        rows = json.loads((out / "summary.json").read_text())["methods"]
        assert "single" in rows and all(0.0 <= r["solve_rate"] <= 1.0 for r in rows.values())


def test_official_layout_runs_on_ltx2(model_dir, tmp_path):
    """--data runs take any diffusers family: search run on an official-layout root writes the kit's layout with ltx2:."""
    from test_bench import official_sample
    from typer.testing import CliRunner

    from steplens.cli import app
    from steplens.tasks.vbvr import iter_bench

    gt = tmp_path / "GT"
    official_sample(gt / "In-Domain_50" / "G-45_key_door_matching_data-generator" / "00000", np.random.default_rng(0), "Open the door.")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["search", "run", "--model", f"ltx2:{model_dir}", "--data", str(gt), "--prompt-embeds",
                                   str(model_dir / "emb.pt"), "--steps", "3", "--frames", "9", "--height", "32", "--width", "32",
                                   "--budget", "2", "--k", "2", "--screen-step", "1", "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    ref = iter_bench(gt)[0]
    for method in ("single", "ensemble", "best_of_2_agreement", "early_screen_agreement_k2_s1_m2_agreement"):
        assert (out / method / ref.video_rel).is_file(), method
    bad = CliRunner().invoke(app, ["search", "run", "--model", f"ltx2:{model_dir}", "--data", str(gt), "--lora-high", "x.safetensors",
                                   "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "--lora-high apply to wan: models only" in bad.output
