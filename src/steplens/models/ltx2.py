# long module: one backend adapter read top to bottom (as wan.py); its parts share the LTX-2 pipeline's conventions.
"""LTX-2 image-to-video through diffusers (`LTX2ImageToVideoPipeline`), adapted to the denoiser contract.

LTX-2 is an audio-video model; steplens studies the video. Every evaluation here reproduces the video half
of one iteration of `LTX2ImageToVideoPipeline`'s loop:
1. the latents (B, C, F, H, W) are packed into tokens (B, F*H*W, C) in (frame, row, col) order; latent
   frame 0 is the image's latent (re-imposed after every step, as the pipeline keeps it), and its tokens
   get timestep 0, every other token sigma * num_train_timesteps (the pipeline's conditioning mask);
2. the audio stream gets one zero latent token and the transformer runs with `isolate_modalities=True`
   (audio-to-video and video-to-audio cross-attention off: the switch the pipeline's own modality-isolation
   guidance pass uses), so the video does not depend on the audio at all. The pipeline has no video-only
   mode: an empty audio sequence fails in the audio RoPE, and with cross-attention on the video would read
   audio latents that the pipeline denoises jointly, which a video latent cannot carry;
3. text: the raw text-encoder states (Gemma, all layers stacked) go through the pipeline's `connectors`
   once, in `condition` (negative and positive in one batch, as the pipeline does);
4. guidance as the pipeline does it, in float32 on x0 = x - sigma v: x0_cond + (scale - 1)(x0_cond -
   x0_uncond), then `guidance_rescale` (std rescaling towards x0_cond), then back to a velocity; cond and
   uncond run as separate calls inside `steplens.context.branch`. STG and modality guidance are off (the
   first needs a third pass per step, the second the audio stream);
5. the Euler update is plain float32 `x + dt v` (the pipeline keeps float32 latents and float32 velocities).

Schedule: the pipeline passes sigmas linspace(1, 1/steps, steps) and a resolution-dependent mu (from the
token count, the scheduler config's base/max shift and sequence lengths) to the folder's
FlowMatchEulerDiscreteScheduler (dynamic exponential shifting, then the stretch to `shift_terminal`).
`schedule(steps, shift)` does exactly that for the token grid of the last `condition` / `latent_shape`;
steplens' `shift` multiplies the pipeline's exp(mu) (1, the default, is the pipeline's own grid).

Hook points: `blocks.{i}` is `transformer.transformer_blocks[i]`; `resid_pre` / `resid_post` are the video
stream (B, tokens, D) into and out of a block (a block returns (video, audio); hooks see the video),
`attn_out` is `attn1` (video self-attention), `cross_attn_out` `attn2` (video-text cross-attention),
`mlp_out` `ff`. Tokens are in (frame, h, w) row-major order of the patch grid (`token_grid`).
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import context
from ..precision import Precision
from .errors import check_frame_count, resolve_device
from .protocol import Cond, DenoiserBase, Prediction
from .wan import WanDenoiser, _batched, _version, frames_to_pixels, pipeline_class as wan_pipeline_class

PIPELINES = ("LTX2ImageToVideoPipeline", "LTX2Pipeline")  # a text-to-video folder holds the same components


@dataclass(frozen=True)
class LTX2Preset:
    """Sampling settings an `ltx2:DIR` model uses unless told otherwise: LTX2ImageToVideoPipeline's defaults."""

    steps: int
    guidance: float
    guidance_rescale: float
    frame_rate: float


# No paper ran LTX-2: every preset name means the pipeline's own defaults (its STG and modality guidance aside).
PRESETS = dict.fromkeys(("pipeline", "paper", "folder"), LTX2Preset(steps=30, guidance=3.0, guidance_rescale=0.7, frame_rate=24.0))


def _pipe_cls() -> Any:
    from diffusers import LTX2ImageToVideoPipeline

    return LTX2ImageToVideoPipeline


class LTX2Denoiser(DenoiserBase):
    """An LTX-2 transformer (video stream), its text connectors and its video VAE behind the denoiser contract."""

    name = "ltx2"
    n_frames = 9  # task frames per instance (LTX-2 needs 8k + 1 pixel frames)
    pixels_per_block = 16  # task blocks are upsampled to this many pixels; videos are padded to multiples of 32

    def __init__(self, transformer: nn.Module, vae: nn.Module, connectors: nn.Module, *, guidance_scale: float | None = None,
                 guidance_rescale: float | None = None, frame_rate: float | None = None, image_crf: int | None = None,
                 num_train_timesteps: int = 1000, scheduler_config: dict[str, Any] | None = None, preset: str = "pipeline",
                 text_encoder: nn.Module | None = None, tokenizer: Any = None, max_sequence_length: int = 1024,
                 negative_prompt: str = "", name: str = "ltx2", vae_tiling: bool = False):
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        p = PRESETS[preset]
        self.default_steps, self.default_shift = p.steps, 1.0
        self.guidance_scale = float(p.guidance if guidance_scale is None else guidance_scale)
        self.guidance_rescale = float(p.guidance_rescale if guidance_rescale is None else guidance_rescale)
        self.frame_rate = float(p.frame_rate if frame_rate is None else frame_rate)
        self.transformer, self.vae, self.connectors = transformer, vae, connectors
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.max_sequence_length, self.negative_prompt, self.name = max_sequence_length, negative_prompt, name
        if image_crf is None:  # the pipeline's default: H.264 CRF 33 for Gemma 3 text encoders, 18 for LTX-2.5's Gemma 4
            from diffusers.pipelines.ltx2.utils import resolve_default_image_crf

            image_crf = resolve_default_image_crf(text_encoder)
        self.image_crf = int(image_crf)
        self.num_train_timesteps = int(num_train_timesteps)
        self.scheduler_config = None if scheduler_config is None else dict(scheduler_config)
        cfg = transformer.config
        self.patch_size = (int(cfg.patch_size_t), int(cfg.patch_size), int(cfg.patch_size))  # (pt, ph, pw)
        self.hidden_dim = int(cfg.num_attention_heads * cfg.attention_head_dim)
        self.latent_channels = int(vae.config.latent_channels)
        self.audio_channels = int(cfg.audio_in_channels)
        self.scale_temporal = int(vae.temporal_compression_ratio)
        self.scale_spatial = int(vae.spatial_compression_ratio)
        self.seq_len: int | None = None  # video tokens of the last grid conditioned on (the schedule depends on it)
        self.prompt_embeds: Tensor | None = None  # defaults for make_cond when there is no text encoder
        self.negative_prompt_embeds: Tensor | None = None
        self.prompt_lookup: Callable[[str], tuple[Tensor, Tensor | None]] | None = None  # prompt -> embeddings, per instance
        self._text_pipe: Any = None
        self._crops: dict[tuple[int, int], tuple[int, int]] = {}  # padded latent (h, w) -> task video (H, W) in pixels
        if vae_tiling:  # decode x0_hat in tiles
            vae.enable_tiling()

    precision = WanDenoiser.precision  # the transformer's weights' dtype, as Wan's

    def to_precision(self, precision: Precision | str) -> LTX2Denoiser:
        """Cast the transformer and the text connectors once (the pipeline runs both in its dtype); latents stay float32."""
        p = Precision.of(precision)
        for m in (self.transformer, self.connectors):
            if m.dtype != p.dtype:
                m.to(p.dtype)
        return self

    @classmethod
    def from_pipeline(cls, pipe: Any, **kw: Any) -> LTX2Denoiser:
        """Adapt an `LTX2ImageToVideoPipeline` (its scheduler config gives the grid; our samplers step)."""
        sched = getattr(pipe, "scheduler", None)
        args: dict[str, Any] = dict(text_encoder=getattr(pipe, "text_encoder", None), tokenizer=getattr(pipe, "tokenizer", None),
                                    num_train_timesteps=int(sched.config.num_train_timesteps) if sched is not None else 1000,
                                    scheduler_config=dict(sched.config) if sched is not None else None)
        args.update(kw)
        den = cls(pipe.transformer, pipe.vae, pipe.connectors, **args)
        den._text_pipe = pipe if args["text_encoder"] is not None else None
        return den

    # -- the contract ----------------------------------------------------------------------------
    def schedule(self, steps: int, shift: float | None = None, seq_len: int | None = None) -> Tensor:
        """(steps + 1,) sigmas as the pipeline sets them for `seq_len` video tokens (default: the last grid conditioned on).

        `shift` multiplies the pipeline's resolution-dependent shift exp(mu) (1: the pipeline's grid exactly);
        a folder scheduler without dynamic shifting has its static `shift` multiplied instead.
        """
        from diffusers import FlowMatchEulerDiscreteScheduler
        from diffusers.pipelines.ltx2.pipeline_ltx2_image2video import calculate_shift

        shift = 1.0 if shift is None else float(shift)
        if shift <= 0:
            raise ValueError(f"shift must be > 0, got {shift}")
        n = self.seq_len if seq_len is None else seq_len
        if n is None:
            raise ValueError("LTX-2's sigma grid depends on the video's token count: call latent_shape or condition first")
        config = dict(self.scheduler_config or {})
        sched = FlowMatchEulerDiscreteScheduler.from_config(config)
        c = sched.config
        mu = calculate_shift(n, c.get("base_image_seq_len", 1024), c.get("max_image_seq_len", 4096),
                             c.get("base_shift", 0.95), c.get("max_shift", 2.05))
        if shift != 1.0:
            if c.use_dynamic_shifting:
                mu = mu + math.log(shift)
            else:
                sched = FlowMatchEulerDiscreteScheduler.from_config({**config, "shift": c.shift * shift})
        sched.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps), mu=mu)
        return sched.sigmas.detach().clone().to(torch.float32)

    @property
    def do_cfg(self) -> bool:
        return self.guidance_scale > 1.0

    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond) -> Prediction:
        """Velocity at latents x (B, C, F, H, W) and noise levels sigma (B,), after CFG and guidance rescaling."""
        if cond.text is None or "text_mask" not in cond.extra:
            raise ValueError("LTX-2 needs connector text states and masks in the cond: build it with condition / make_cond")
        if cond.image is None:
            raise ValueError("LTX-2 image-to-video needs cond.image (the first frame's latent): build it with condition / make_cond")
        b, _, f, h, w = x.shape
        pt, ph, pw = self.patch_size
        model = self.transformer
        dtype = model.dtype
        s = sigma.to(x.device, torch.float32).reshape(-1).expand(b)  # (B,) == scheduler.sigmas[i]
        t = s * self.num_train_timesteps  # (B,) == scheduler.timesteps[i]
        x = self.reimpose(x.float(), cond)
        packed = self._pack(x)  # (B, N, C): float32, as the pipeline's latents
        keep = 1.0 - self._cond_mask(f, h, w, x.device)  # (N,): 0 on the image's tokens
        hidden = packed.to(dtype)  # (B, N, C) as a strided view: the memory layout changes bf16 results on some kernels,
        hidden = hidden.contiguous() if self.do_cfg else hidden  # so copy exactly when the pipeline does (it batches the branches)
        kw = dict(hidden_states=hidden, audio_hidden_states=x.new_zeros(b, 1, self.audio_channels, dtype=dtype),
                  timestep=t[:, None] * keep[None], audio_timestep=t, sigma=t, num_frames=f // pt, height=h // ph, width=w // pw,
                  fps=self.frame_rate, audio_num_frames=1, isolate_modalities=True, use_cross_timestep=True, return_dict=False)

        def run(prefix: str) -> Tensor:
            ctx = _batched(cond.text if prefix == "" else cond.negative_text, b).to(x.device, dtype)
            mask = _batched(cond.extra[f"{prefix}text_mask"], b).to(x.device)
            audio = _batched(cond.extra[f"{prefix}audio_text"], b).to(x.device, dtype)
            out = model(encoder_hidden_states=ctx, audio_encoder_hidden_states=audio, encoder_attention_mask=mask,
                        audio_encoder_attention_mask=mask, **kw)[0]
            return out.float()  # (B, N, C), upcast as the pipeline does

        sig = s[:, None, None]
        if self.do_cfg:
            if cond.negative_text is None:
                raise ValueError(f"guidance_scale={self.guidance_scale} > 1 needs negative prompt embeddings")
            with context.branch("cond"):
                v_cond = run("")
            with context.branch("uncond"):
                v_uncond = run("negative_")
            x0_cond = packed - v_cond * sig
            x0 = x0_cond + (self.guidance_scale - 1) * (x0_cond - (packed - v_uncond * sig))
        else:
            v_cond, v_uncond = run(""), None
            x0 = x0_cond = packed - v_cond * sig
        if self.guidance_rescale > 0:
            from diffusers.pipelines.ltx2.pipeline_ltx2_image2video import rescale_noise_cfg

            x0 = rescale_noise_cfg(x0, x0_cond, guidance_rescale=self.guidance_rescale)
        v = (x - self._unpack(x0, f, h, w)) / s[:, None, None, None, None]  # (B, C, F, H, W), as the pipeline's step sees it
        if v_uncond is None:
            return Prediction(v)
        return Prediction(v, {"cond": self._unpack(v_cond, f, h, w), "uncond": self._unpack(v_uncond, f, h, w)})

    def _pack(self, x: Tensor) -> Tensor:
        return _pipe_cls()._pack_latents(x, self.patch_size[1], self.patch_size[0])

    def _unpack(self, tokens: Tensor, f: int, h: int, w: int) -> Tensor:
        pt, ph, pw = self.patch_size
        return _pipe_cls()._unpack_latents(tokens, f // pt, h // ph, w // pw, ph, pt)

    def _cond_mask(self, f: int, h: int, w: int, device: torch.device) -> Tensor:
        """(N,) 1 on the tokens of latent frame 0 (the image), 0 elsewhere: the pipeline's packed conditioning mask."""
        mask = torch.zeros(1, 1, f, h, w, device=device)
        mask[:, :, 0] = 1.0
        return self._pack(mask)[0, :, 0]

    def hook_blocks(self) -> Sequence[nn.Module]:
        return list(self.transformer.transformer_blocks)

    def hook_sites(self) -> dict[str, str]:
        return {"attn_out": "attn1", "cross_attn_out": "attn2", "mlp_out": "ff"}

    token_grid = WanDenoiser.token_grid  # (F / pt, H / ph, W / pw) of `patch_size`, as Wan's

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def memory_estimate(self, latent_shape: Sequence[int], batch: int) -> dict[str, int]:
        """Rough bytes a batch needs on the device: loaded weights + one block's activations per branch + latents."""
        def size(m: nn.Module | None) -> int:
            return 0 if m is None else sum(p.numel() * p.element_size() for p in m.parameters())

        weights = sum(size(m) for m in (self.transformer, self.vae, self.connectors, self.text_encoder))
        shape = tuple(latent_shape)[-4:]
        tokens = int(np.prod(self.token_grid((batch, *shape))))
        item = next(self.transformer.parameters()).element_size()
        act = batch * (2 if self.do_cfg else 1) * tokens * 10 * self.hidden_dim * item  # 6 x width + a 4 x width ffn
        latents = 8 * batch * int(np.prod(shape)) * 4  # x, velocity, branches, x0_hat, x_next in float32
        return {"weights": weights, "activations": act, "latents": latents, "total": weights + act + latents}

    # -- VAE -------------------------------------------------------------------------------------
    def _vae_device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def _latent_stats(self, device: torch.device) -> tuple[Tensor, Tensor, float]:
        view = (1, -1, 1, 1, 1)
        return (self.vae.latents_mean.view(view).to(device, torch.float32), self.vae.latents_std.view(view).to(device, torch.float32),
                float(self.vae.config.scaling_factor))

    @torch.no_grad()
    def encode_pixels(self, video: Tensor) -> Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> normalised latents (B, C, F, H/s, W/s) float32 (posterior mode, as the pipeline)."""
        lat = self.vae.encode(video.to(self._vae_device(), self.vae.dtype)).latent_dist.mode().to(torch.float32)
        mean, std, scale = self._latent_stats(lat.device)
        return (lat - mean) * scale / std

    def encode(self, frames: np.ndarray) -> Tensor:
        """(B, T, H, W, 3) uint8 frames -> normalised latents (B, C, (T-1)/8+1, H/32, W/32) on the model's device."""
        frames = np.asarray(frames)
        if frames.ndim != 5 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"encode takes (B, T, H, W, 3) uint8 frames, got {frames.dtype} {frames.shape}")
        self.check_size(*frames.shape[1:4])
        return torch.cat([self.encode_pixels(frames_to_pixels(f[None])) for f in frames]).to(self.device)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> np.ndarray:
        """Normalised latents (B, C, F, H, W) -> (B, T, H, W, 3) uint8, one sample at a time (decode timestep 0, as the pipeline)."""
        vdev = self._vae_device()
        mean, std, scale = self._latent_stats(vdev)
        out = []
        for lat in latents:
            z = lat[None].to(vdev, torch.float32) * std / scale + mean
            t = torch.zeros(1, device=vdev, dtype=self.vae.dtype) if self.vae.config.timestep_conditioning else None
            video = self.vae.decode(z.to(self.vae.dtype), t, return_dict=False)[0].float()  # (1, 3, T, H, W) in [-1, 1]
            video = ((video / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
            out.append(video[0].permute(1, 2, 3, 0).cpu().numpy())
        crop = self._crops.get(tuple(int(v) for v in latents.shape[-2:]))
        video = np.stack(out)
        return video if crop is None else video[:, :, : crop[0], : crop[1]]

    def _side(self) -> int:
        """Pixel sides must be multiples of this: the pipeline's 32, and VAE stride x patch size."""
        return math.lcm(32, self.scale_spatial * self.patch_size[1])

    def check_size(self, num_frames: int, height: int, width: int) -> None:
        k, side = self.scale_temporal, self._side()
        if (num_frames - 1) % k or height % side or width % side:
            raise ValueError(f"LTX-2 needs {k}k+1 frames and sides that are multiples of {side}; got {num_frames} frames of {height}x{width}")

    def check_frames(self, num_frames: int) -> None:
        """A task video length LTX-2 accepts: scale_temporalk + 1 frames."""
        check_frame_count("LTX-2", self.scale_temporal, num_frames)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, F, H, W) of the latents of a video of this size (and the grid `schedule` uses from now on)."""
        self.check_size(num_frames, height, width)
        shape = (self.latent_channels, (num_frames - 1) // self.scale_temporal + 1, height // self.scale_spatial, width // self.scale_spatial)
        self.seq_len = int(np.prod(self.token_grid(shape)))
        return shape

    # -- conditioning ----------------------------------------------------------------------------
    def encode_prompt(self, prompts: Sequence[str], negative: str | Sequence[str] | None = None) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Text-encoder states (B, L, D x layers) and masks (B, L), and the negative ones (None without CFG)."""
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError("this LTX-2 model was loaded without a text encoder: pass prompt embeddings (--prompt-embeds)")
        if self._text_pipe is None:
            self._text_pipe = _pipe_cls()(scheduler=None, vae=None, audio_vae=None, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
                                          connectors=None, transformer=None, vocoder=None)
        neg = self.negative_prompt if negative is None else negative
        with torch.no_grad():
            pos, pos_mask, negs, neg_mask = self._text_pipe.encode_prompt(
                prompt=list(prompts), negative_prompt=neg, do_classifier_free_guidance=self.do_cfg,
                max_sequence_length=self.max_sequence_length, device=self.device)
        return pos, pos_mask, negs, neg_mask

    @torch.no_grad()
    def _connect(self, text: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(video context (B, L, D), audio context, binary mask (B, L)) from text-encoder states, through the connectors."""
        dev = next(self.connectors.parameters()).device
        dtype = next(self.connectors.parameters()).dtype
        side = getattr(self.tokenizer, "padding_side", "left") if self.tokenizer is not None else "left"
        return self.connectors(text.to(dev, dtype), mask.to(dev), padding_side=side)

    def condition(self, images: np.ndarray, num_frames: int, *, text: Tensor, negative_text: Tensor | None = None,
                  text_mask: Tensor | None = None, negative_text_mask: Tensor | None = None) -> Cond:
        """The conditioning of B videos of `num_frames` frames from first frames (B, H, W, 3) uint8 and text-encoder states.

        Masks default to all ones (embeddings without padding). The image is re-compressed at `image_crf` first, as the
        pipeline does (0: not at all); its latent is `Cond.image`; the connectors' outputs are `Cond.text` / `negative_text`
        and `extra` ("text_mask", "audio_text", and their "negative_" twins).
        """
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        b, h, w, _ = images.shape
        self.latent_shape(num_frames, h, w)
        if self.image_crf:
            from diffusers.pipelines.ltx2.utils import apply_image_conditioning_crf

            images = np.stack([apply_image_conditioning_crf(np.ascontiguousarray(i), self.image_crf) for i in images])
        image = torch.cat([self.encode_pixels(frames_to_pixels(i[None, None])) for i in images])[:, :, 0]  # (B, C, h, w)
        text = _batched(text, b)
        mask = torch.ones(text.shape[:2], dtype=torch.long) if text_mask is None else _batched(text_mask, b)
        extra: dict[str, Tensor] = {}
        if negative_text is None:
            ctx, audio, m = self._connect(text, mask)
            neg = None
        else:  # negative and positive in one batch, as the pipeline runs them
            negative_text = _batched(negative_text, b)
            nmask = torch.ones(negative_text.shape[:2], dtype=torch.long) if negative_text_mask is None else _batched(negative_text_mask, b)
            if negative_text.shape != text.shape:
                raise ValueError(f"prompt and negative prompt embeddings need one shape, got {tuple(text.shape)} and {tuple(negative_text.shape)}")
            both, audio_both, m_both = self._connect(torch.cat([negative_text, text]), torch.cat([nmask.to(mask.device), mask]))
            neg, ctx = both.chunk(2)
            (audio_neg, audio), (m_neg, m) = audio_both.chunk(2), m_both.chunk(2)
            extra.update(negative_text_mask=m_neg, negative_audio_text=audio_neg)
        extra.update(text_mask=m, audio_text=audio)
        dev = self.device
        return Cond(image=image.to(dev), text=ctx.to(dev), negative_text=None if neg is None else neg.to(dev),
                    extra={k: v.to(dev) for k, v in extra.items()})

    def task_video(self, task: Any, inst: Any) -> np.ndarray:
        """A task instance's ground truth, blocks upsampled by `pixels_per_block`, padded at the bottom and right to
        multiples of 32 px by repeating its edge (`decode` cuts the padding off again), (T, H, W, 3)."""
        k = self.pixels_per_block
        video, size = _pad_edges(task.blocks(inst).repeat(k, axis=1).repeat(k, axis=2), self._side())
        if video.shape[1:3] != size:
            self._crops[(video.shape[1] // self.scale_spatial, video.shape[2] // self.scale_spatial)] = size
        self.check_size(*video.shape[:3])
        return video

    def make_cond(self, first: Tensor | None, task: Any, instances: Sequence[Any], *, text: Tensor | None = None,
                  negative_text: Tensor | None = None) -> Cond:
        """Task instances' conditioning: their `task_video`'s first frames, their task's prompts.

        Text: `text`/`negative_text` if given, else `self.prompt_lookup` on each instance's prompt (left-padded to one
        length, masked), else `self.prompt_embeds`, else the text encoder. `first` is not needed: LTX-2 conditions on pixels.
        """
        videos = [self.task_video(task, i) for i in instances]
        masks: tuple[Tensor | None, Tensor | None] = (None, None)
        if text is None and self.prompt_lookup is not None:
            pairs = [self.prompt_lookup(task.prompt(i)) for i in instances]
            n = max(max(p[0].shape[-2] for p in pairs), max((p[1].shape[-2] for p in pairs if p[1] is not None), default=0))
            text, text_mask = _left_padded([p[0] for p in pairs], n)
            negative_text, neg_mask = (None, None) if any(p[1] is None for p in pairs) else _left_padded([p[1] for p in pairs], n)
            masks = (text_mask, neg_mask)
        if text is None and self.prompt_embeds is not None:
            text, negative_text = self.prompt_embeds, self.negative_prompt_embeds
        if text is None:
            text, text_mask, negative_text, neg_mask = self.encode_prompt([task.prompt(i) for i in instances])
            masks = (text_mask, neg_mask)
        return self.condition(np.stack([v[0] for v in videos]), len(videos[0]), text=text, negative_text=negative_text,
                              text_mask=masks[0], negative_text_mask=masks[1])


def _pad_edges(video: np.ndarray, side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(T, H, W, 3) grown at the bottom and right to multiples of `side` by repeating its edge, and its own (H, W)."""
    h, w = video.shape[1:3]
    grow = ((0, 0), (0, -h % side), (0, -w % side), (0, 0))
    return np.pad(video, grow, mode="edge"), (h, w)


def _left_padded(ts: Sequence[Tensor], n: int) -> tuple[Tensor, Tensor]:
    """(1, L_i, D) or (L_i, D) states -> (B, n, D) zero-padded on the left (Gemma's padding side) and the (B, n) mask."""
    ts = [t[None] if t.ndim == 2 else t for t in ts]
    pad = [n - t.shape[1] for t in ts]
    states = torch.cat([torch.nn.functional.pad(t, (0, 0, k, 0)) for t, k in zip(ts, pad)])
    mask = torch.stack([torch.cat([torch.zeros(k, dtype=torch.long), torch.ones(n - k, dtype=torch.long)]) for k in pad])
    return states, mask


def pipeline_class(path: str | Path) -> str:
    """The pipeline class named by a diffusers folder's model_index.json (an LTX-2 one)."""
    return wan_pipeline_class(path, "LTX-2", tuple(PIPELINES))


def sampling_defaults(path: str | Path, preset: str = "pipeline") -> tuple[int, float]:
    """(steps, shift) of a preset: the pipeline's 30 steps, and shift 1 (the pipeline's resolution-dependent grid)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    return PRESETS[preset].steps, 1.0


def load_ltx2(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, *, text_encoder: bool = True,
              lora: str | None = None, lora_scale: float = 1.0, offload: str = "none", **kw: Any) -> LTX2Denoiser:
    """An LTX2Denoiser from a local diffusers folder (offline); the audio VAE and vocoder are not loaded.

    Args:
        path: folder with model_index.json (LTX2ImageToVideoPipeline, or LTX2Pipeline: the same components).
        device: where the model runs ("auto": cuda if there is one).
        dtype: every loaded module's dtype (the pipeline runs all in one); default bfloat16 on CUDA, float32 elsewhere.
        text_encoder: False skips loading the (large) text encoder; then pass prompt embeddings.
        lora: a LoRA for the transformer, at `lora_scale`.
        **kw: overrides for LTX2Denoiser (preset, guidance_scale, guidance_rescale, frame_rate, image_crf, vae_tiling, ...).
    """
    import diffusers

    if offload != "none":
        raise ValueError(f"offload={offload!r}: LTX-2 models load whole onto the device (offload=model is Wan's)")
    for k in ("lora_high", "lora_low", "lora_scale_low", "guidance_scale_2", "boundary_ratio", "expert_layers"):
        if kw.pop(k, None) is not None:
            raise ValueError(f"{k} applies to Wan2.2's two experts; LTX-2 has one transformer")
    path, device = Path(path), resolve_device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    pipeline_class(path)
    index = json.loads((path / "model_index.json").read_text())
    saved = {k for k, v in index.items() if isinstance(v, list) and v and v[0] is not None}
    params = inspect.signature(_pipe_cls().__init__).parameters
    skip = {"audio_vae", "vocoder", "processor", "prompt_enhancer", "duration_head"}  # video only; no prompt enhancement
    if not text_encoder:
        skip |= {"text_encoder", "tokenizer"}
    extra: dict[str, Any] = {k: None for k in params if k in skip or (k in index and k not in saved)}  # saved as None stay None
    dtype_kw = "dtype" if _version(diffusers.__version__) >= (0, 42) else "torch_dtype"  # renamed in diffusers 0.42
    pipe = _pipe_cls().from_pretrained(path, local_files_only=True, **{dtype_kw: dtype}, **extra)
    if lora:
        pipe.load_lora_weights(lora, adapter_name="steplens")
        pipe.transformer.set_adapters(["steplens"], weights=[float(lora_scale)])
    pipe.to(device)
    for m in (pipe.transformer, pipe.vae, pipe.connectors):
        m.eval().requires_grad_(False)
    kw.setdefault("name", f"ltx2:{path}")
    return LTX2Denoiser.from_pipeline(pipe, **kw)
