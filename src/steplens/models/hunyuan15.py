# long module: one backend adapter read top to bottom, as wan.py is; its parts share the pipeline's conventions.
"""HunyuanVideo-1.5 image-to-video through diffusers, adapted to the denoiser contract.

Our samplers drive the transformer directly, so every evaluation reproduces one iteration of
`HunyuanVideo15ImageToVideoPipeline`'s loop:
1. timestep = sigma * num_train_timesteps, cast to the transformer's dtype as the pipeline casts it
   (a bf16 run sees bf16 timesteps);
2. the model input: latents ++ the image condition ++ a 1-channel mask, i.e. (C + C + 1) channels. The
   condition is the VAE latent of the first frame alone (encoded as a one-frame video, posterior mode,
   times scaling_factor) at latent frame 0 and zeros after it; the mask is 1 on frame 0. Frame 0 is
   denoised like the others (nothing is re-imposed); SigLIP's last hidden states of the first frame join
   the text tokens (`image_embeds`);
3. text: the Qwen2.5-VL prompt embeddings (`Cond.text`, mask `extra["text_mask"]`, default all valid)
   and the ByT5 glyph embeddings (`extra["text_2"]` / `extra["text_2_mask"]`); without them, the
   pipeline's value for a prompt with no quoted text: GLYPH_TOKENS zeros, all masked. Negatives carry
   a "negative_" prefix in `extra`;
4. classifier-free guidance as the pipeline's ClassifierFreeGuidance does it: on unless the scale is
   1, cond then uncond, each inside `steplens.context.branch`, combined as
   uncond + scale * (cond - uncond) in the transformer's dtype;
5. the Euler update as FlowMatchEulerDiscreteScheduler.step does it, on latents the pipeline keeps in
   the transformer's dtype from the start (`euler_step`).

Settings (`PRESETS`): the paper ran Wan only; for this family "paper" and "folder" both mean what the
checkpoint ships: 50 steps (the pipeline's default), the folder scheduler's shift (5 for the 480p and
7 for the 720p image-to-video checkpoints) and its guider's scale (6; 1 for the step-distilled ones).
The sigma grid is the pipeline's: linspace(1, 0, steps + 1)[:-1] through the folder's scheduler
with the chosen shift (`hunyuan_sigmas`).

Hook points: `hook_blocks()` are the dual-stream `transformer.transformer_blocks`; a block's output is
(video tokens, text tokens) and `blocks.{i}.resid_pre` / `resid_post` see the video tokens.
Sites: `attn_out` (the joint attention's video-token output, before its gate), `mlp_out` (the video
stream's feed-forward, before its gate). Tokens are in (frame, h, w) row-major order (`token_grid`).

Not supported: `use_meanflow` checkpoints (they need the next timestep, which the contract does not
pass), model offload, LoRA, the text-to-video pipeline, guider rescaling or a guidance window.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import context
from .errors import check_frame_count, resolve_device
from .protocol import Cond, DenoiserBase, Prediction
from .wan import WanDenoiser, _batched, _stack_padded, _version, frames_to_pixels

PIPELINES = ("HunyuanVideo15ImageToVideoPipeline",)
GLYPH_TOKENS = 256  # the pipeline's ByT5 length (tokenizer_2_max_length)
TEXT_KEYS = ("text_mask", "text_2", "text_2_mask")  # Cond.extra keys beside Cond.text; "negative_" + key for the negative
CONTEXT_TOKENS = 1000 + GLYPH_TOKENS + 729  # most text and image tokens a block sees: Qwen (the pipeline's length), ByT5, SigLIP


# preset -> sampling steps (the pipeline's default). The paper ran Wan only: for this family both presets take the shift of
# the folder's scheduler and the scale of its guider, what the checkpoint ships; "paper" is the name every backend accepts.
PRESETS = {"paper": 50, "folder": 50}


def hunyuan_sigmas(config: dict[str, Any] | None, steps: int, shift: float | None = None) -> Tensor:
    """(steps + 1,) sigmas ending in 0: the pipeline's linspace(1, 0, steps + 1)[:-1] through the folder's scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    config = dict(config or {"_class_name": "FlowMatchEulerDiscreteScheduler"})
    if config.get("_class_name", "FlowMatchEulerDiscreteScheduler") != "FlowMatchEulerDiscreteScheduler":
        raise ValueError(f"scheduler {config['_class_name']}: HunyuanVideo-1.5 runs on FlowMatchEulerDiscreteScheduler's grid")
    if shift is not None:
        if shift <= 0:
            raise ValueError(f"shift must be > 0, got {shift}")
        config["shift"] = float(shift)
    sched = FlowMatchEulerDiscreteScheduler.from_config(config)
    sched.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1])
    sigmas = sched.sigmas.detach().clone().to(torch.float32)
    if sigmas.shape != (steps + 1,) or float(sigmas[-1]) != 0.0:
        raise ValueError(f"the scheduler gave {tuple(sigmas.shape)} sigmas ending in {float(sigmas[-1])}; "
                         f"expected ({steps + 1},) ending in 0")
    return sigmas


def guider_scale(guider: Any) -> float:
    """The guidance scale of a pipeline's guider (1: no CFG); settings our CFG cannot reproduce are refused."""
    if guider is None:
        return 1.0
    c = guider.config
    if c.get("guidance_rescale", 0.0) or c.get("use_original_formulation", False) or c.get("start", 0.0) != 0.0 \
            or c.get("stop", 1.0) != 1.0:
        raise ValueError(f"guider {dict(c)}: only plain CFG (no rescale, original formulation or step window) is supported")
    return float(c.get("guidance_scale", 1.0)) if c.get("enabled", True) else 1.0


class Hunyuan15Denoiser(DenoiserBase):
    """A HunyuanVideo-1.5 image-to-video transformer and its VAE behind the denoiser contract."""

    name = "hunyuan15"
    n_frames = 9  # task frames per instance for the generic runner (4k + 1 pixel frames)
    pixels_per_block = 16  # task blocks are upsampled to this many pixels (a multiple of the VAE's stride)
    image_mode = "concat"  # what the VBVR runners ask: the first frame joins the input channels
    transformer_2 = None  # one transformer; Wan-aware code asks for a second expert

    # Wan's, unchanged: they read only attributes set in __init__ (patch_size, scale_*, _crops, transformer, transformer_2)
    # and the methods below (check_size, _latent_stats, _vae_device)
    task_video = WanDenoiser.task_video  # task blocks upsampled by pixels_per_block, padded to the stride (decode crops)
    token_grid = WanDenoiser.token_grid  # latent (F, H, W) // patch size
    latent_shape = WanDenoiser.latent_shape  # (C, F, H, W) of a video of (frames, height, width), checked by check_size
    precision = WanDenoiser.precision
    to_precision = WanDenoiser.to_precision

    def __init__(self, transformer: nn.Module, vae: nn.Module, *, guidance_scale: float = 6.0, image_encoder: nn.Module | None = None,
                 feature_extractor: Any = None, text_encoder: nn.Module | None = None, tokenizer: Any = None,
                 text_encoder_2: nn.Module | None = None, tokenizer_2: Any = None, scheduler_config: dict[str, Any] | None = None,
                 num_train_timesteps: int = 1000, preset: str = "paper", name: str = "hunyuan15", vae_tiling: bool = False):
        cfg = transformer.config
        if cfg.get("use_meanflow", False):
            raise ValueError("use_meanflow checkpoints (step-distilled) condition on the next timestep too, which the denoiser "
                             "contract does not pass; not supported")
        z = int(vae.config.latent_channels)
        if int(cfg.in_channels) != 2 * z + 1:
            raise ValueError(f"an image-to-video transformer takes {2 * z + 1} channels (latents, image condition, mask), "
                             f"got {cfg.in_channels}")
        self.default_steps, self.default_shift = _preset_steps(preset), None  # None: the folder scheduler's shift
        self.transformer, self.vae = transformer, vae
        self.image_encoder, self.feature_extractor = image_encoder, feature_extractor
        self.text_encoder, self.tokenizer, self.text_encoder_2, self.tokenizer_2 = text_encoder, tokenizer, text_encoder_2, tokenizer_2
        self.guidance_scale = float(guidance_scale)
        self.scheduler_config = None if scheduler_config is None else dict(scheduler_config)
        self.num_train_timesteps, self.name = int(num_train_timesteps), name
        self.patch_size = (int(cfg.patch_size_t), int(cfg.patch_size), int(cfg.patch_size))  # (pt, ph, pw)
        self.hidden_dim = int(cfg.num_attention_heads * cfg.attention_head_dim)
        self.latent_channels = z
        self.text_2_dim = int(cfg.text_embed_2_dim)
        self.scale_temporal = int(vae.config.temporal_compression_ratio)
        self.scale_spatial = int(vae.config.spatial_compression_ratio)
        self.prompt_embeds: Tensor | None = None  # defaults for make_cond when there is no text encoder
        self.negative_prompt_embeds: Tensor | None = None
        self.prompt_lookup: Any = None  # prompt -> (embeddings, negative or None), per instance
        self._text_pipe: Any = None
        self._crops: dict[tuple[int, int], tuple[int, int]] = {}  # padded latent (h, w) -> task video (H, W) in pixels
        if vae_tiling:
            vae.enable_tiling()

    @classmethod
    def from_pipeline(cls, pipe: Any, **kw: Any) -> Hunyuan15Denoiser:
        """Adapt a `HunyuanVideo15ImageToVideoPipeline` (its scheduler and guider are read, not run)."""
        sched = getattr(pipe, "scheduler", None)
        comps = {k: getattr(pipe, k, None) for k in ("image_encoder", "feature_extractor", "text_encoder", "tokenizer",
                                                     "text_encoder_2", "tokenizer_2")}
        args: dict[str, Any] = dict(guidance_scale=guider_scale(getattr(pipe, "guider", None)),
                                    scheduler_config=None if sched is None else dict(sched.config),
                                    num_train_timesteps=1000 if sched is None else int(sched.config.num_train_timesteps), **comps)
        den = cls(pipe.transformer, pipe.vae, **{**args, **kw})
        den._text_pipe = pipe if comps["text_encoder"] is not None else None
        return den

    # -- the contract ----------------------------------------------------------------------------
    def schedule(self, steps: int, shift: float | None = None) -> Tensor:
        """(steps + 1,) sigmas of the folder's scheduler with `shift` (None: the folder's own)."""
        return hunyuan_sigmas(self.scheduler_config, steps, self.default_shift if shift is None else shift)

    def euler_step(self, x: Tensor, dt: Tensor | float, v: Tensor) -> Tensor:
        """FlowMatchEulerDiscreteScheduler.step on latents the pipeline holds in the model's dtype from the start.

        The first step's latent is the noise rounded to that dtype (prepare_latents casts it); later ones already are.
        """
        return (x.to(v.dtype).float() + dt * v).to(v.dtype)

    @property
    def do_cfg(self) -> bool:
        """CFG runs unless the scale is 1, as ClassifierFreeGuidance decides."""
        return not math.isclose(self.guidance_scale, 1.0)

    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond) -> Prediction:
        """Velocity at latents x (B, C, F, H, W) and noise levels sigma (B,), after CFG."""
        if cond.text is None:
            raise ValueError("HunyuanVideo-1.5 needs cond.text (prompt embeddings); see make_cond / condition")
        image = cond.extra.get("hunyuan_condition")
        embeds = cond.extra.get("image_embeds")
        if image is None or embeds is None:
            raise ValueError("HunyuanVideo-1.5 image-to-video needs cond.extra['hunyuan_condition'] and ['image_embeds'] "
                             "(use make_cond / condition)")
        b, dev, dtype = x.shape[0], x.device, self.transformer.dtype
        t = sigma.to(dev, torch.float32).reshape(-1).expand(b) * self.num_train_timesteps  # (B,) == scheduler.timesteps[i]
        inp = torch.cat([x.to(dtype), _batched(image, b).to(dev, dtype)], dim=1)  # (B, 2C + 1, F, H, W)
        kw = dict(hidden_states=inp, timestep=t.to(dtype), image_embeds=_batched(embeds, b).to(dev, dtype), return_dict=False)
        if not self.do_cfg:
            return Prediction(self.transformer(**kw, **self._text(cond, "", b, dtype))[0])
        if cond.negative_text is None:
            raise ValueError(f"guidance_scale={self.guidance_scale} needs cond.negative_text (negative prompt embeddings)")
        with context.branch("cond"):
            v_cond = self.transformer(**kw, **self._text(cond, "", b, dtype))[0]  # (B, C, F, H, W) in the model's dtype
        with context.branch("uncond"):
            v_uncond = self.transformer(**kw, **self._text(cond, "negative_", b, dtype))[0]
        v = v_uncond + self.guidance_scale * (v_cond - v_uncond)  # in the model's dtype, as the guider combines it
        return Prediction(v, {"cond": v_cond, "uncond": v_uncond})

    def _text(self, cond: Cond, prefix: str, b: int, dtype: torch.dtype) -> dict[str, Tensor]:
        """The transformer's four text inputs for one CFG branch, masks in the model's dtype as the pipeline passes them."""
        text = _batched(cond.negative_text if prefix else cond.text, b)  # (B, L, D)
        mask = cond.extra.get(prefix + "text_mask")
        text_2 = cond.extra.get(prefix + "text_2")
        mask_2 = cond.extra.get(prefix + "text_2_mask")
        if text_2 is None:  # a prompt without quoted text: the pipeline's zero glyph embeddings, all masked
            text_2, mask_2 = text.new_zeros(1, GLYPH_TOKENS, self.text_2_dim), text.new_zeros(1, GLYPH_TOKENS)
        dev = self.device
        mask = text.new_ones(text.shape[:2]) if mask is None else _batched(mask, b)  # (B, L): all valid by default
        mask_2 = text_2.new_ones(text_2.shape[:2]) if mask_2 is None else _batched(mask_2, b)
        return {"encoder_hidden_states": text.to(dev, dtype), "encoder_attention_mask": mask.to(dev, dtype),
                "encoder_hidden_states_2": _batched(text_2, b).to(dev, dtype), "encoder_attention_mask_2": mask_2.to(dev, dtype)}

    def hook_blocks(self) -> Sequence[nn.Module]:
        return list(self.transformer.transformer_blocks)

    def hook_sites(self) -> dict[str, str]:
        return {"attn_out": "attn", "mlp_out": "ff"}

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def memory_estimate(self, latent_shape: Sequence[int], batch: int) -> dict[str, int]:
        """Rough bytes a batch needs on the device: every loaded module's weights + one block's activations + latents.

        Activations: per sample and CFG branch, (video + context) tokens x (6 + 2 x mlp_ratio) x width values of the model dtype.
        """
        mods = (self.transformer, self.vae, self.image_encoder, self.text_encoder, self.text_encoder_2)
        weights = sum(p.numel() * p.element_size() for m in mods if m is not None for p in m.parameters())
        shape = tuple(latent_shape)[-4:]
        tokens = int(np.prod(self.token_grid((batch, *shape)))) + CONTEXT_TOKENS
        width = (6 + 2 * float(self.transformer.config.mlp_ratio)) * self.hidden_dim
        item = next(self.transformer.parameters()).element_size()
        act = int(batch * (2 if self.do_cfg else 1) * tokens * width * item)
        latents = 8 * batch * int(np.prod(shape)) * 4  # x, velocity, branches, x0_hat, x_next in float32
        return {"weights": weights, "activations": act, "latents": latents, "total": weights + act + latents}

    # -- VAE: Wan's encode / decode, with this family's latent scaling as their (mean, 1/std) ----------------
    encode_pixels = WanDenoiser.encode_pixels  # (B, 3, T, H, W) in [-1, 1] -> latent mode x scaling_factor, float32
    encode = WanDenoiser.encode  # (B, T, H, W, 3) uint8 -> latents on the model's device, one sample at a time
    decode = WanDenoiser.decode  # latents -> (B, T, sH, sW, 3) uint8, one sample at a time (the VAE fails on batches > 1)

    def _latent_stats(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """(mean, 1/std) of the latents: (0, scaling_factor), so (x - 0) * s encodes and x / s + 0 decodes, as the pipeline."""
        return (torch.zeros((), device=device),
                torch.tensor(self.vae.config.scaling_factor, dtype=torch.float32, device=device))

    def _vae_device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def check_size(self, num_frames: int, height: int, width: int) -> None:
        """4k + 1 frames and sides that are multiples of VAE stride x patch size."""
        self.check_frames(num_frames)
        sh, sw = self.scale_spatial * self.patch_size[1], self.scale_spatial * self.patch_size[2]
        if height % sh or width % sw:
            raise ValueError(f"HunyuanVideo-1.5 needs sides that are multiples of {sh}x{sw}; got {height}x{width}")

    def check_frames(self, num_frames: int) -> None:
        """A task video length HunyuanVideo-1.5 accepts: scale_temporalk + 1 frames."""
        check_frame_count("HunyuanVideo-1.5", self.scale_temporal, num_frames)

    # -- conditioning ----------------------------------------------------------------------------
    def encode_prompt(self, prompts: Sequence[str], negative: str | None = "") -> tuple[Tensor, Tensor | None]:
        """Qwen prompt embeddings (B, L, D) and negative ones (None without CFG) through the checkpoint's text encoders.

        The pipeline's masks and ByT5 glyph embeddings are kept in `last_prompt_extra` for `condition`.
        """
        if self._text_pipe is None or self.text_encoder_2 is None:
            raise ValueError("this HunyuanVideo-1.5 model was loaded without its text encoders: pass prompt embeddings "
                             "(Cond.text / --prompt-embeds)")
        dev = self.device
        with torch.no_grad():
            pos = self._text_pipe.encode_prompt(prompt=list(prompts), device=dev, dtype=torch.float32, batch_size=len(prompts))
            neg = self._text_pipe.encode_prompt(prompt=[negative or ""] * len(prompts), device=dev, dtype=torch.float32,
                                                batch_size=len(prompts)) if self.do_cfg else None
        self.last_prompt_extra = {k: v for k, v in zip(TEXT_KEYS, pos[1:])}
        if neg is not None:
            self.last_prompt_extra.update({"negative_" + k: v for k, v in zip(TEXT_KEYS, neg[1:])})
        return pos[0], None if neg is None else neg[0]

    def encode_image_embeds(self, images: np.ndarray) -> Tensor:
        """SigLIP's last hidden states of the first frames (B, tokens, D), one image at a time as the pipeline encodes one."""
        if self.image_encoder is None or self.feature_extractor is None:
            raise ValueError("HunyuanVideo-1.5 image-to-video needs its image encoder (SigLIP), or cond.extra['image_embeds']")
        from PIL import Image

        dev = next(self.image_encoder.parameters()).device
        out = []
        with torch.no_grad():
            for img in images:
                inputs = self.feature_extractor.preprocess(images=Image.fromarray(img), do_resize=True, return_tensors="pt",
                                                           do_convert_rgb=True).to(dev, self.image_encoder.dtype)
                out.append(self.image_encoder(**inputs).last_hidden_state.float())
        return torch.cat(out)

    def condition(self, images: np.ndarray, num_frames: int, *, text: Tensor, negative_text: Tensor | None = None,
                  image_embeds: Tensor | None = None, extra: dict[str, Tensor] | None = None) -> Cond:
        """The conditioning of B videos of `num_frames` frames from their first frames (B, H, W, 3) uint8.

        `extra`: text masks and glyph embeddings (TEXT_KEYS, "negative_" + key); missing ones take the defaults above.
        """
        if images is None:
            raise ValueError("this HunyuanVideo-1.5 model is image-to-video: pass the first frames")
        images = np.asarray(images)
        images = images[None] if images.ndim == 3 else images
        b, h, w, _ = images.shape
        c, f, lh, lw = self.latent_shape(num_frames, h, w)
        # (B, C, 1, h, w): each first frame as a one-frame video, one at a time (the VAE's attention fails on batches > 1)
        first = torch.cat([self.encode_pixels(frames_to_pixels(i[None, None])) for i in images])
        image = first.new_zeros(b, c + 1, f, lh, lw)
        image[:, :c, :1] = first
        image[:, c, 0] = 1.0  # the pipeline's mask channel: 1 on latent frame 0
        dev = self.device
        embeds = image_embeds if image_embeds is not None else self.encode_image_embeds(images)
        rest = {k: v.to(dev) for k, v in (extra or {}).items()}
        return Cond(text=text.to(dev), negative_text=None if negative_text is None else negative_text.to(dev),
                    extra={"hunyuan_condition": image.to(dev), "image_embeds": embeds.to(dev), **rest})

    def make_cond(self, first: Tensor | None, task: Any, instances: Sequence[Any], *, text: Tensor | None = None,
                  negative_text: Tensor | None = None) -> Cond:
        """Conditioning for task instances: first frames from `task_video`, prompts from the task.

        Text: `text`/`negative_text` if given, else `self.prompt_lookup` on each instance's prompt (embeddings of the valid
        tokens; shorter ones are zero-padded and masked), else `self.prompt_embeds`, else the text encoders.
        `first` (the first latent frame from the runner) is not needed: the condition is encoded from pixels.
        """
        videos = [self.task_video(task, i) for i in instances]
        b, extra = len(videos), {}
        if text is None and self.prompt_lookup is not None:
            pairs = [self.prompt_lookup(task.prompt(i)) for i in instances]
            text, extra["text_mask"] = _stack_padded([p[0] for p in pairs]), _valid([p[0] for p in pairs])
            if all(p[1] is not None for p in pairs):
                negative_text, extra["negative_text_mask"] = _stack_padded([p[1] for p in pairs]), _valid([p[1] for p in pairs])
        if text is None and self.prompt_embeds is None:  # the text encoders, with the pipeline's masks and glyph embeddings
            text, negative_text = self.encode_prompt([task.prompt(i) for i in instances])
            extra = dict(self.last_prompt_extra)
        elif text is None:
            text, negative_text = self.prompt_embeds, self.negative_prompt_embeds
        return self.condition(np.stack([v[0] for v in videos]), len(videos[0]), text=_batched(text, b),
                              negative_text=None if negative_text is None else _batched(negative_text, b),
                              extra={k: _batched(v, b) for k, v in extra.items()})


def _valid(ts: Sequence[Tensor]) -> Tensor:
    """(B, max L) masks of embeddings (1, L_i, D) or (L_i, D) zero-padded at the end by `_stack_padded`."""
    lengths = [t.shape[-2] for t in ts]
    return (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).float()


def _preset_steps(preset: str) -> int:
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    return PRESETS[preset]


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FileNotFoundError(f"{path}: {what} ({e})") from None


def folder_index(path: str | Path) -> dict[str, Any]:
    """model_index.json of a diffusers HunyuanVideo-1.5 image-to-video folder (ValueError for another pipeline)."""
    index = _read_json(Path(path) / "model_index.json", "not a diffusers HunyuanVideo-1.5 folder")
    if index.get("_class_name") not in PIPELINES:
        raise ValueError(f"{path}: pipeline {index.get('_class_name')!r} is not supported (supported: {', '.join(PIPELINES)})")
    return index


def sampling_defaults(path: str | Path, preset: str = "paper") -> tuple[int, float]:
    """(steps, shift) for the folder at `path`: the preset's steps and the shift of the folder's scheduler."""
    steps = _preset_steps(preset)
    cfg = _read_json(Path(path) / "scheduler" / "scheduler_config.json", "the folder's scheduler config is needed for its shift")
    return steps, float(cfg.get("shift", 1.0))


def load_hunyuan15(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, *,
                   text_encoder: bool = True, offload: str = "none", **kw: Any) -> Hunyuan15Denoiser:
    """A Hunyuan15Denoiser from a local diffusers folder (offline).

    Args:
        path: folder with model_index.json (HunyuanVideo15ImageToVideoPipeline).
        device: where the model runs ("auto": cuda if there is one).
        dtype: transformer, text and image encoder dtype; default bfloat16 on CUDA, float32 elsewhere. The VAE stays float32.
        text_encoder: False skips loading the (large) Qwen2.5-VL and ByT5 encoders; then pass prompt embeddings.
        offload: "none" only (the 8.3B transformer fits next to its encoders on one large GPU).
        **kw: overrides for Hunyuan15Denoiser (preset, guidance_scale, vae_tiling, name).
    """
    import inspect

    import diffusers

    bad = sorted(set(kw) - set(inspect.signature(Hunyuan15Denoiser.__init__).parameters))
    if offload != "none" or bad:
        raise ValueError(f"{path}: option(s) {', '.join(bad + (['offload'] if offload != 'none' else []))} do not apply to "
                         "HunyuanVideo-1.5 (no offload, LoRA or second expert here)")
    index, path, device = folder_index(path), Path(path), resolve_device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    saved = {k for k, v in index.items() if isinstance(v, list) and v and v[0] is not None}
    optional = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "image_encoder", "feature_extractor", "guider")
    extra: dict[str, Any] = {k: None for k in optional if k not in saved}  # components saved as None stay None
    if not text_encoder:
        extra.update(text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    dtype_kw = "dtype" if _version(diffusers.__version__) >= (0, 42) else "torch_dtype"  # renamed in diffusers 0.42
    if "vae" in saved:  # float32 VAE, as for Wan: x0_hat is decoded at many steps
        extra["vae"] = diffusers.AutoencoderKLHunyuanVideo15.from_pretrained(path, subfolder="vae", local_files_only=True,
                                                                            **{dtype_kw: torch.float32})
    pipe = getattr(diffusers, index["_class_name"]).from_pretrained(path, local_files_only=True, **{dtype_kw: dtype}, **extra)
    pipe.to(device)
    for m in (pipe.transformer, pipe.vae, pipe.image_encoder):
        if m is not None:
            m.eval().requires_grad_(False)
    kw.setdefault("name", f"hunyuan15:{path}")
    return Hunyuan15Denoiser.from_pipeline(pipe, **kw)
