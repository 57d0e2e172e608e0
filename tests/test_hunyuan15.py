"""HunyuanVideo-1.5 image-to-video through diffusers: our sampler over Hunyuan15Denoiser equals the pipeline's output
(tiny models built offline, fp32 and bf16, prompt embeddings or tiny text encoders), and every probe, ensemble and search
command runs on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import (  # noqa: E402
    AutoencoderKLHunyuanVideo15,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideo15ImageToVideoPipeline,
    HunyuanVideo15Transformer3DModel,
)
from diffusers.guiders import ClassifierFreeGuidance  # noqa: E402
from PIL import Image  # noqa: E402

from steplens.models.hunyuan15 import GLYPH_TOKENS, Hunyuan15Denoiser, hunyuan_sigmas, load_hunyuan15  # noqa: E402
from steplens.models.protocol import Cond  # noqa: E402
from steplens.sampling import sample  # noqa: E402

STEPS, SHIFT, FRAMES, SIDE = 4, 5.0, 9, 16  # 9 frames of 16x16 -> latents (4, 3, 4, 4); the VAE is 4x in time and space
TEXT_DIM, GLYPH_DIM = 16, 32

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_pipe(guidance: float = 6.0) -> HunyuanVideo15ImageToVideoPipeline:
    """Sizes near diffusers' own HunyuanVideo-1.5 tests: 2 layers, 2 heads, a 2-block VAE, a 1-layer SigLIP; no text encoders."""
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    transformer = HunyuanVideo15Transformer3DModel(in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=8,
                                                   num_layers=2, num_refiner_layers=1, mlp_ratio=2.0, text_embed_dim=TEXT_DIM,
                                                   text_embed_2_dim=GLYPH_DIM, image_embed_dim=12, rope_axes_dim=(2, 2, 4),
                                                   target_size=SIDE, task_type="i2v").eval()
    torch.manual_seed(0)
    vae = AutoencoderKLHunyuanVideo15(latent_channels=4, block_out_channels=(16, 16), layers_per_block=1, spatial_compression_ratio=4,
                                      temporal_compression_ratio=4, downsample_match_channel=False, upsample_match_channel=False).eval()
    torch.manual_seed(0)
    siglip = SiglipVisionModel(SiglipVisionConfig(hidden_size=12, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                  image_size=SIDE, patch_size=4)).eval()
    pipe = HunyuanVideo15ImageToVideoPipeline(text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                              transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=SHIFT),
                                              guider=ClassifierFreeGuidance(guidance_scale=guidance), image_encoder=siglip,
                                              feature_extractor=SiglipImageProcessor(size={"height": SIDE, "width": SIDE}))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def inputs(seed: int = 0) -> dict:
    """Prompt embeddings with padded (masked) tail tokens, glyph embeddings, an image and the initial noise."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[1.0] * 6 + [0.0] * 2])
    return {"text": torch.randn(1, 8, TEXT_DIM, generator=g), "text_mask": mask,
            "negative_text": torch.randn(1, 8, TEXT_DIM, generator=g), "negative_text_mask": torch.ones(1, 8),
            "text_2": torch.randn(1, 4, GLYPH_DIM, generator=g), "text_2_mask": torch.tensor([[1.0, 1.0, 1.0, 0.0]]),
            "negative_text_2": torch.zeros(1, 4, GLYPH_DIM), "negative_text_2_mask": torch.zeros(1, 4),
            "latents": torch.randn(1, 4, 3, 4, 4, generator=g),
            "image": (torch.rand(SIDE, SIDE, 3, generator=g) * 255).to(torch.uint8).numpy()}


def pipeline_latents(pipe, inp: dict, glyphs: bool = True) -> torch.Tensor:
    if glyphs:
        g = {k: inp[k] for k in ("text_2", "text_2_mask", "negative_text_2", "negative_text_2_mask")}
    else:  # what the pipeline encodes for a prompt without quoted text
        zeros = {"text_2": torch.zeros(1, GLYPH_TOKENS, GLYPH_DIM), "text_2_mask": torch.zeros(1, GLYPH_TOKENS)}
        g = {**zeros, **{"negative_" + k: v for k, v in zeros.items()}}
    return pipe(image=Image.fromarray(inp["image"]), prompt_embeds=inp["text"], prompt_embeds_mask=inp["text_mask"],
                negative_prompt_embeds=inp["negative_text"], negative_prompt_embeds_mask=inp["negative_text_mask"],
                prompt_embeds_2=g["text_2"], prompt_embeds_mask_2=g["text_2_mask"], negative_prompt_embeds_2=g["negative_text_2"],
                negative_prompt_embeds_mask_2=g["negative_text_2_mask"], num_frames=FRAMES, num_inference_steps=STEPS,
                latents=inp["latents"].clone(), output_type="latent").frames


def our_cond(den: Hunyuan15Denoiser, inp: dict, glyphs: bool = True) -> Cond:
    keys = ["text_mask", "negative_text_mask"] + (["text_2", "text_2_mask", "negative_text_2", "negative_text_2_mask"] if glyphs else [])
    return den.condition(inp["image"][None], FRAMES, text=inp["text"], negative_text=inp["negative_text"], extra={k: inp[k] for k in keys})


@pytest.fixture(scope="module")
def pipe(one_thread):
    return tiny_pipe()


# -- equivalence with the pipeline ----------------------------------------------------------------
def test_sampling_equals_pipeline(pipe):
    inp = inputs()
    want = pipeline_latents(pipe, inp)
    den = Hunyuan15Denoiser.from_pipeline(pipe)
    assert den.guidance_scale == 6.0 and den.do_cfg and den.latent_channels == 4 and den.hidden_dim == 16
    events = []
    got = sample(den, inp["latents"].clone(), den.schedule(STEPS), our_cond(den, inp), callback=events.append)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(events[-1].x0_hat, got, rtol=0, atol=1e-6)  # the trace's last clean estimate is the output
    assert len(events) == STEPS and all(set(e.branches) == {"cond", "uncond"} for e in events)
    assert not torch.equal(got[:, :, 0], our_cond(den, inp).extra["hunyuan_condition"][:, :4, 0])  # frame 0 is denoised, not held


def test_bf16_sampling_equals_pipeline_exactly():
    pipe = tiny_pipe()
    pipe.transformer.to(torch.bfloat16)
    inp = inputs(1)
    want = pipeline_latents(pipe, inp)
    den = Hunyuan15Denoiser.from_pipeline(pipe)
    events = []
    got = sample(den, inp["latents"].clone(), den.schedule(STEPS), our_cond(den, inp), callback=events.append)
    assert torch.equal(got.float(), want.float())  # bit for bit, bf16 latents and timesteps and all
    assert events[0].velocity.dtype == torch.bfloat16 and got.dtype == torch.bfloat16
    # stepping from the float32 noise (as Wan's pipelines do) is not this pipeline's arithmetic: the test tells them apart
    den.euler_step = lambda x, dt, v: (x.float() + dt * v).to(v.dtype)
    assert not torch.equal(sample(den, inp["latents"].clone(), den.schedule(STEPS), our_cond(den, inp)).float(), want.float())


def test_guidance_one_and_default_glyphs():
    pipe = tiny_pipe(guidance=1.0)  # the step-distilled checkpoints' guider
    inp = inputs(2)
    want = pipeline_latents(pipe, inp, glyphs=False)
    den = Hunyuan15Denoiser.from_pipeline(pipe)
    assert not den.do_cfg
    events = []
    cond = our_cond(den, inp, glyphs=False)  # no glyph embeddings: the pipeline's zeros for a prompt without quoted text
    got = sample(den, inp["latents"].clone(), den.schedule(STEPS), cond, callback=events.append)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert events[0].branches is None


def test_schedule_is_the_pipelines(pipe):
    den = Hunyuan15Denoiser.from_pipeline(pipe)
    s = den.schedule(STEPS)
    ref = FlowMatchEulerDiscreteScheduler(shift=SHIFT)
    ref.set_timesteps(sigmas=np.linspace(1.0, 0.0, STEPS + 1)[:-1])  # what the pipeline passes
    assert s.shape == (STEPS + 1,) and s[0] == 1 and s[-1] == 0
    torch.testing.assert_close(s, ref.sigmas, rtol=0, atol=0)
    torch.testing.assert_close(s[:-1] * 1000, ref.timesteps, rtol=0, atol=0)  # the timesteps __call__ computes
    seven = den.schedule(STEPS, 7.0)  # the 720p checkpoints' shift
    assert torch.all(seven[1:-1] > s[1:-1]) and torch.equal(seven, hunyuan_sigmas({"shift": 7.0}, STEPS))
    with pytest.raises(ValueError, match="FlowMatchEulerDiscreteScheduler"):
        hunyuan_sigmas({"_class_name": "UniPCMultistepScheduler"}, STEPS)


def test_errors_are_clear(pipe):
    den = Hunyuan15Denoiser.from_pipeline(pipe)
    x = torch.zeros(1, *den.latent_shape(FRAMES, SIDE, SIDE))
    with pytest.raises(ValueError, match="hunyuan_condition"):
        den(x, torch.ones(1), Cond(text=torch.zeros(1, 8, TEXT_DIM), negative_text=torch.zeros(1, 8, TEXT_DIM)))
    no_negative = den.condition(inputs()["image"][None], FRAMES, text=torch.zeros(1, 8, TEXT_DIM))
    with pytest.raises(ValueError, match="negative"):
        den(x, torch.ones(1), no_negative)
    with pytest.raises(ValueError, match="4k\\+1 frames, got 8: try 5 or 9"):
        den.latent_shape(8, SIDE, SIDE)
    with pytest.raises(ValueError, match="multiples of 4x4"):
        den.latent_shape(FRAMES, 18, SIDE)
    with pytest.raises(ValueError, match="without its text encoders"):
        den.encode_prompt(["a maze"])


def tiny_text_encoders():
    """Offline stand-ins for Qwen2.5-VL and ByT5: a byte-level tokenizer with a chat template, 3-layer Qwen, 1-layer T5."""
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, Qwen2Tokenizer, T5Config, T5EncoderModel
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    vocab.update({s: len(vocab) + i for i, s in enumerate(("<|endoftext|>", "<|im_start|>", "<|im_end|>"))})
    tok = Qwen2Tokenizer(vocab=vocab, merges=[])
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    torch.manual_seed(0)
    rope = {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}
    cfg = Qwen2_5_VLTextConfig(vocab_size=len(vocab), hidden_size=TEXT_DIM, intermediate_size=16, num_hidden_layers=3,
                               num_attention_heads=2, num_key_value_heads=2, rope_scaling=rope)
    qwen = Qwen2_5_VLTextModel(cfg).eval()
    byt5 = ByT5Tokenizer()
    t5 = T5EncoderModel(T5Config(vocab_size=len(byt5), d_model=GLYPH_DIM, d_kv=8, d_ff=16, num_layers=1, num_heads=2)).eval()
    return {"tokenizer": tok, "text_encoder": qwen, "tokenizer_2": byt5, "text_encoder_2": t5}


def test_text_encoder_path_equals_pipeline(pipe):
    """A prompt with quoted text: Qwen embeddings with the pipeline's padding masks and ByT5 glyph embeddings, as it encodes them."""
    for name, module in tiny_text_encoders().items():
        setattr(pipe, name, module)
    try:
        inp = inputs(3)
        prompt = 'draw the path from green to red, then write "done"'
        want = pipe(image=Image.fromarray(inp["image"]), prompt=prompt, num_frames=FRAMES, num_inference_steps=STEPS,
                    latents=inp["latents"].clone(), output_type="latent").frames
        den = Hunyuan15Denoiser.from_pipeline(pipe)
        text, negative = den.encode_prompt([prompt])
        extra = den.last_prompt_extra
        assert text.shape == (1, 1000, TEXT_DIM) and 0 < extra["text_mask"].sum() < 1000  # padded to the pipeline's length, masked
        assert extra["text_2_mask"].sum() > 0 and extra["negative_text_2_mask"].sum() == 0  # glyphs for "done"; none for ""
        cond = den.condition(inp["image"][None], FRAMES, text=text, negative_text=negative, extra=extra)
        got = sample(den, inp["latents"].clone(), den.schedule(STEPS), cond)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    finally:
        for name in ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2"):
            setattr(pipe, name, None)


# -- hooks ----------------------------------------------------------------------------------------
def test_hooks_see_video_tokens_and_noop_hooks_change_nothing(pipe):
    from steplens.hooks import hook_points, hooks

    den = Hunyuan15Denoiser.from_pipeline(pipe)
    inp = inputs()
    cond, sig = our_cond(den, inp), den.schedule(3)
    plain = sample(den, inp["latents"].clone(), sig, cond)
    assert set(hook_points(den)) == {f"blocks.{i}.{s}" for i in range(2) for s in ("resid_pre", "attn_out", "mlp_out", "resid_post")}
    tokens = int(np.prod(den.token_grid(inp["latents"].shape)))
    assert den.token_grid(inp["latents"].shape) == (3, 4, 4)
    seen = []

    def fn(t, *, point):
        assert t.shape == (1, tokens, den.hidden_dim)  # the video stream only (the text stream is the block's second output)
        seen.append((point.name, point.branch))

    with hooks(den, {"blocks.*.resid_post": fn, "blocks.*.attn_out": fn, "blocks.*.mlp_out": fn, "blocks.0.resid_pre": fn}):
        hooked = sample(den, inp["latents"].clone(), sig, cond)
    assert torch.equal(plain, hooked)
    assert len(seen) == 3 * 2 * 7 and {b for _, b in seen} == {"cond", "uncond"}  # steps x branches x points


# -- loading a saved folder -----------------------------------------------------------------------
def test_save_load_registry_and_defaults(pipe, tmp_path):
    from steplens.models.registry import load, parse_spec, sampling_defaults

    pipe.save_pretrained(tmp_path / "m")
    spec = f"hunyuan15:{tmp_path / 'm'}"
    assert parse_spec(spec + "?px=4")[:2] == ("hunyuan15", str(tmp_path / "m"))
    assert sampling_defaults(spec) == (50, SHIFT) == sampling_defaults(spec + "?preset=folder")  # steps 50, the folder's shift
    den = load(spec + "?px=4")
    assert isinstance(den, Hunyuan15Denoiser) and den.guidance_scale == 6.0 and den.pixels_per_block == 4 and den.name == spec + "?px=4"
    assert load(spec + "?guidance=3.5").guidance_scale == 3.5
    inp = inputs()
    ref = Hunyuan15Denoiser.from_pipeline(pipe)
    torch.testing.assert_close(sample(den, inp["latents"].clone(), den.schedule(3), our_cond(den, inp)),
                               sample(ref, inp["latents"].clone(), ref.schedule(3), our_cond(ref, inp)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="lora_scale do not apply"):
        load_hunyuan15(tmp_path / "m", lora_scale=0.5)


# -- VAE and task conditioning --------------------------------------------------------------------
def test_encode_decode_and_make_cond_from_task(pipe):
    from steplens.runner import prepare
    from steplens.tasks import get_task

    den = Hunyuan15Denoiser.from_pipeline(pipe)
    frames = np.random.default_rng(0).integers(0, 256, (2, FRAMES, SIDE, SIDE, 3), dtype=np.uint8)
    lat = den.encode(frames)
    assert lat.shape == (2, 4, 3, 4, 4) and lat.dtype == torch.float32
    assert den.decode(lat).shape == frames.shape and den.decode(lat).dtype == np.uint8
    task = get_task("maze")
    insts = [task.generate(s, 3, n_frames=FRAMES, cell_px=1) for s in (1, 2)]
    emb = {0: torch.ones(1, 5, TEXT_DIM), 1: torch.ones(1, 3, TEXT_DIM)}  # per-instance prompts of different lengths
    order = iter([0, 1])
    den.prompt_lookup = lambda p: (emb[next(order)], torch.zeros(1, 2, TEXT_DIM))
    den.pixels_per_block = 4  # a 3x3 maze is 7 blocks a side: 28 px, 7x7 latents
    batch = prepare(den, task, insts)
    assert batch.latent_shape == (4, 3, 7, 7) and batch.cond.text.shape == (2, 5, TEXT_DIM)
    assert batch.cond.extra["text_mask"].tolist() == [[1.0] * 5, [1.0] * 3 + [0.0] * 2]  # zero padding is masked
    assert batch.cond.extra["hunyuan_condition"].shape == (2, 5, 3, 7, 7) and batch.cond.extra["image_embeds"].shape == (2, 16, 12)
    torch.testing.assert_close(batch.cond.extra["hunyuan_condition"][:, :4, 0], batch.truth[:, :, 0], rtol=1e-5, atol=1e-5)
    assert not batch.cond.extra["hunyuan_condition"][:, :, 1:].any()  # zeros after frame 0, mask 1 on frame 0 only
    v = den(torch.randn(2, *batch.latent_shape), torch.full((2,), 0.5), batch.cond).velocity
    assert v.shape == (2, *batch.latent_shape)
    assert den.memory_estimate(batch.latent_shape, 2)["total"] > sum(p.numel() * 4 for p in pipe.transformer.parameters())


# -- every probe, ensemble and search command on the tiny model -----------------------------------
@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    root = tmp_path_factory.mktemp("hunyuan15") / "m"
    pipe.save_pretrained(root)
    g = torch.Generator().manual_seed(0)
    emb = {"prompt_embeds": torch.randn(1, 6, TEXT_DIM, generator=g), "negative_prompt_embeds": torch.randn(1, 6, TEXT_DIM, generator=g)}
    torch.save(emb, root / "emb.pt")
    return root


@pytest.mark.parametrize("command", ["probe cos", "probe perturb", "probe cka", "probe layers", "ensemble run", "search run"])
def test_every_command_runs_on_hunyuan15(saved, tmp_path, command):
    from typer.testing import CliRunner

    from steplens.cli import app

    out = tmp_path / "o"
    common = ["--model", f"hunyuan15:{saved}?px=4&frames=9", "--prompt-embeds", str(saved / "emb.pt"), "--size", "3", "--n", "2",
              "--steps", "4", "--device", "cpu", "--precision", "fp32", "--out", str(out)]
    extra = {"probe perturb": ["--every", "2", "--batch", "2"], "probe cka": ["--every", "2", "--batch", "2"],
             "probe layers": ["--patch-window", "0:4", "--batch", "2"], "probe cos": ["--batch", "2"],
             "ensemble run": ["--k", "2", "--window", "0:1", "--no-baselines"],
             "search run": ["--budget", "2", "--k", "2", "--screen-step", "1"]}
    res = CliRunner().invoke(app, command.split() + common + extra[command])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert json.loads((out / "precision.json").read_text())["precision"] == "fp32"
    if command.startswith("probe"):
        summary = json.loads((out / "summary.json").read_text())
        figures = json.loads((out / "figures.json").read_text())
        assert figures and all((out / f["path"]).stat().st_size > 0 for f in figures)
    if command == "probe cos":  # decoded to pixels (4 per block) and mapped onto the 7x7 maze grid
        assert manifest["config"]["sampling"]["steps"] == 4 and manifest["config"]["sampling"]["shift"] == SHIFT  # the folder's shift
        assert summary["n"] == 2 and len(summary["per_step"]["all"]["off_solution_mass"]) == 4
    if command == "probe perturb":  # 9 video frames are 3 latent frames: the sweep covers latent frames 1 and 2
        for r in summary["by_mode"].values():
            assert [p["index"] for p in r["noise_at_frame"]] == [1, 2]
    if command == "probe cka":
        flow = json.loads((out / "cka_flow.json").read_text())
        assert "blocks.1.resid_post" in flow["modes"]["renoise"]
    if command == "probe layers":  # 2 blocks, each patched; token maps on the maze grid's tokens
        assert set(summary["patching"]["per_layer"]) == {"0", "1"}
        assert json.loads((out / "token_maps.json").read_text())["layers"] == ["input", "0", "1"]
    if command == "ensemble run":
        summary = json.loads(res.stdout[res.stdout.index("{"):])
        nfe = {name: row["nfe"] for name, row in summary["methods"].items()}
        assert nfe["single"] == 4 and nfe["ensemble"] > 4 and set(nfe) == {"single", "ensemble"}  # K seeds during the window
    if command == "search run":
        rows = json.loads((out / "summary.json").read_text())["methods"]
        assert "single" in rows and all(0.0 <= r["solve_rate"] <= 1.0 for r in rows.values())
