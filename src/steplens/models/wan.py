# long module: one backend adapter read top to bottom (as DiT keeps a model in one file); its parts share diffusers conventions.
"""Wan 2.1 / 2.2 through diffusers, adapted to the denoiser contract.

Our samplers drive the transformer directly (the pipelines do not hand the velocity to callbacks), so
every evaluation here reproduces one iteration of `WanPipeline` / `WanImageToVideoPipeline`'s loop:
1. timestep = sigma * num_train_timesteps (what FlowMatchEulerDiscreteScheduler sets as `timesteps`);
2. the expert: `transformer` while timestep >= boundary_ratio * num_train_timesteps, else
   `transformer_2` (Wan2.2 A14B's low-noise expert) with its own guidance scale;
3. the model input: latents as they are (text-to-video), concatenated with a 4-channel first-frame
   mask and the VAE latents of [image, zeros...] (Wan2.1 / 2.2-A14B image-to-video, "concat"), or
   with latent frame 0 replaced by the image's latent and timestep 0 on its tokens (Wan2.2 TI2V,
   `expand_timesteps`, "first_frame"; the sampler re-imposes that frame after every step);
4. classifier-free guidance: cond then uncond, each inside `steplens.context.branch`, combined as
   uncond + scale * (cond - uncond) in the transformer's dtype (bf16 on a GPU), as the pipelines do;
5. the Euler update as FlowMatchEulerDiscreteScheduler.step does it (`euler_step`): the latent upcast to
   float32, plus dt * velocity, cast back to the velocity's dtype. So a bf16 run carries bf16 latents
   after the first step, exactly like a plain diffusers run (tested on tiny configs in bf16 and fp32).

Settings (`PRESETS`): "paper" (the default) is what the paper ran: 50 steps, shift 5, CFG 5 and, for
two-expert models, the expert switch at timestep 875 (diffusers' Wan2.2-I2V-A14B folder says 900).
"folder" keeps the folder's own shift and boundary_ratio. Either way the sigma grid is computed by the
folder's scheduler class from its scheduler_config (`folder_sigmas`), with the preset's shift; our
samplers then step on it (flow-matching Euler by default: perturbation probes must use Euler, since a
multistep corrector such as UniPC's undoes most of a latent replaced between steps).

Memory (`offload="model"`): every large module waits on the CPU; an expert moves to the device when
its step range starts and back when the other expert's starts, the text and image encoders only while
they encode. The VAE stays on the device (decoding x0_hat at many steps); `vae_tiling=True` decodes
in tiles. `moves` logs every move, `placement` says where each component is.

Hook points with two experts (Wan2.2 A14B), `expert_layers`:
- "shared" (default): `hook_blocks()[i]` stands for layer i of whichever expert is active, so
  `blocks.{i}` means "layer i of 40" at every step, as in the paper. Each entry is an `ExpertBlocks`:
  hooks registered on it (or on its sites, e.g. `.attn1`) go on block i of every expert.
- "concat": `transformer.blocks` then `transformer_2.blocks`; `blocks.{n_layers + i}` is layer i of
  the low-noise expert (`expert_of_block`). Each block runs only at its expert's steps.
During a call `active_expert` is "high" / "low" (and `steplens.context.expert(name)` is entered if the
context module defines it), so a hook can tell the experts apart. Tokens are in (frame, h, w)
row-major order of the patch grid (`token_grid`).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
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

IMAGE_MODES = ("none", "concat", "first_frame")
EXPERT_LAYERS = ("shared", "concat")
PIPELINES = ("WanPipeline", "WanImageToVideoPipeline")
OFFLOAD = ("none", "model")


@dataclass(frozen=True)
class WanPreset:
    """Sampling settings a `wan:DIR` model uses unless told otherwise."""

    steps: int
    shift: float | None  # None: the folder scheduler's own shift
    guidance: float
    boundary_ratio: float | None  # two-expert models; None: model_index.json's


PRESETS = {
    "paper": WanPreset(steps=50, shift=5.0, guidance=5.0, boundary_ratio=0.875),  # PAPER.md "Setting"
    "folder": WanPreset(steps=50, shift=None, guidance=5.0, boundary_ratio=None),
}
# Task videos for the probes: (pixels per task block, video frames). "quick" is what the tests and CPU runs
# use; "paper" gives a 5x5 maze 480 px (Wan2.2's 480p) and the 49 frames of the authors' run script.
TASK_SIZES = {"quick": (16, 9), "paper": (96, 49)}
# schedulers whose grid is a flow-matching sigma grid, and the config key of their shift
FLOW_SCHEDULERS = {"FlowMatchEulerDiscreteScheduler": "shift", "UniPCMultistepScheduler": "flow_shift",
                   "DPMSolverMultistepScheduler": "flow_shift"}


def wan_sigmas(scheduler: Any, steps: int, device: torch.device | str | None = None) -> Tensor:
    """The scheduler's own `steps + 1` sigmas (ending in 0) for `steps` steps: exact pipeline equivalence."""
    scheduler.set_timesteps(steps, device=device)
    sigmas = scheduler.sigmas.detach().clone().to(torch.float32)
    if sigmas.shape != (steps + 1,) or float(sigmas[-1]) != 0.0:
        raise ValueError(f"{type(scheduler).__name__} gave sigmas of shape {tuple(sigmas.shape)} ending in "
                         f"{float(sigmas[-1])}; expected ({steps + 1},) ending in 0")
    return sigmas


def folder_sigmas(config: dict[str, Any] | None, steps: int, shift: float | None = None) -> Tensor:
    """The sigma grid of a folder's scheduler (class and scheduler_config), with `shift` if given.

    Raises ValueError for a scheduler that has no flow-matching grid (our samplers need one).
    """
    import diffusers

    config = dict(config or {"_class_name": "FlowMatchEulerDiscreteScheduler"})
    name = config.get("_class_name", "FlowMatchEulerDiscreteScheduler")
    key = FLOW_SCHEDULERS.get(name)
    if key is None or (key == "flow_shift" and not config.get("use_flow_sigmas")):
        raise ValueError(f"scheduler {name} has no flow-matching sigma grid (supported: {', '.join(FLOW_SCHEDULERS)}"
                         " with use_flow_sigmas)")
    if shift is not None:
        if shift <= 0:
            raise ValueError(f"shift must be > 0, got {shift}")
        config[key] = float(shift)
    return wan_sigmas(getattr(diffusers, name).from_config(config), steps)


def euler_sigmas(steps: int, shift: float = 5.0, num_train_timesteps: int = 1000) -> Tensor:
    """Sigmas of diffusers' FlowMatchEulerDiscreteScheduler(shift=shift) for `steps` steps (Wan's default grid)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return wan_sigmas(FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=shift), steps)


def frames_to_pixels(frames: np.ndarray) -> Tensor:
    """(B, T, H, W, 3) uint8 -> (B, 3, T, H, W) float32 in [-1, 1], with the pipelines' exact arithmetic."""
    x = torch.tensor(np.asarray(frames)).to(torch.float32) / 255.0  # a copy: frames may be read-only
    return (2.0 * x - 1.0).permute(0, 4, 1, 2, 3)


class _Handles:
    """Several hook handles removed as one."""

    def __init__(self, handles: Sequence[Any]):
        self.handles = list(handles)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def __enter__(self) -> _Handles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class ExpertBlocks(nn.Module):
    """The same layer (or sub-module) of every expert as one hook target; never called itself.

    `register_forward_hook` / `register_forward_pre_hook` register on each expert's module and return one
    handle; attribute access to a sub-module (`.attn1`, `.ffn`) gives the ExpertBlocks of those sub-modules.
    """

    def __init__(self, modules: dict[str, nn.Module]):
        super().__init__()
        self.experts = nn.ModuleDict(modules)

    def register_forward_hook(self, hook: Any, *args: Any, **kw: Any) -> _Handles:  # type: ignore[override]
        return _Handles([m.register_forward_hook(hook, *args, **kw) for m in self.experts.values()])

    def register_forward_pre_hook(self, hook: Any, *args: Any, **kw: Any) -> _Handles:  # type: ignore[override]
        return _Handles([m.register_forward_pre_hook(hook, *args, **kw) for m in self.experts.values()])

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            subs = {k: getattr(m, name, None) for k, m in self.experts.items()}
            if all(isinstance(v, nn.Module) for v in subs.values()):
                return ExpertBlocks(subs)
            raise

    def forward(self, *args: Any, **kw: Any) -> Any:
        raise RuntimeError("ExpertBlocks is a hook target standing for one layer of each expert; it is never called")


class WanDenoiser(DenoiserBase):
    """A Wan transformer (or Wan2.2's pair of experts) and its VAE behind the denoiser contract."""

    name = "wan"
    n_frames = 9  # task frames per instance for the generic runner (Wan needs 4k + 1 pixel frames)
    pixels_per_block = 16  # task blocks are upsampled to this many pixels (a multiple of VAE x patch stride)

    def __init__(self, transformer: nn.Module, vae: nn.Module, *, transformer_2: nn.Module | None = None,
                 boundary_ratio: float | None = None, guidance_scale: float = 5.0, guidance_scale_2: float | None = None,
                 image_conditioning: str = "auto", expand_timesteps: bool = False, num_train_timesteps: int = 1000,
                 text_encoder: nn.Module | None = None, tokenizer: Any = None, image_encoder: nn.Module | None = None,
                 image_processor: Any = None, max_sequence_length: int = 512, negative_prompt: str = "",
                 expert_layers: str = "shared", name: str = "wan", preset: str = "paper",
                 scheduler_config: dict[str, Any] | None = None, offload: str = "none",
                 device: str | torch.device | None = None, vae_tiling: bool = False):
        if transformer is None:
            raise ValueError("WanDenoiser needs `transformer` (Wan2.2 pipelines with only transformer_2 are not supported)")
        if transformer_2 is not None and boundary_ratio is None:
            raise ValueError("two experts need boundary_ratio (the low-noise expert runs below boundary_ratio * 1000)")
        if expert_layers not in EXPERT_LAYERS:
            raise ValueError(f"expert_layers must be one of {EXPERT_LAYERS}, got {expert_layers!r}")
        if transformer_2 is not None and len(transformer_2.blocks) != len(transformer.blocks) and expert_layers == "shared":
            raise ValueError("expert_layers='shared' needs experts of equal depth; use 'concat'")
        if boundary_ratio is not None and not 0.0 <= boundary_ratio <= 1.0:
            raise ValueError(f"boundary_ratio must be in [0, 1], got {boundary_ratio}")
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        if offload not in OFFLOAD:
            raise ValueError(f"offload must be one of {OFFLOAD}, got {offload!r}")
        self.preset = PRESETS[preset]
        self.default_steps, self.default_shift = self.preset.steps, self.preset.shift
        self.scheduler_config = None if scheduler_config is None else dict(scheduler_config)
        self.transformer, self.transformer_2, self.vae = transformer, transformer_2, vae
        self.boundary_ratio = boundary_ratio
        self.guidance_scale = float(guidance_scale)
        self.guidance_scale_2 = float(guidance_scale if guidance_scale_2 is None else guidance_scale_2)
        self.expand_timesteps = bool(expand_timesteps)
        self.num_train_timesteps = int(num_train_timesteps)
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.image_encoder, self.image_processor = image_encoder, image_processor
        self.max_sequence_length, self.negative_prompt = max_sequence_length, negative_prompt
        self.expert_layers, self.name = expert_layers, name
        cfg = transformer.config
        self.patch_size = tuple(int(p) for p in cfg.patch_size)  # (pt, ph, pw)
        self.hidden_dim = int(cfg.num_attention_heads * cfg.attention_head_dim)
        self.latent_channels = int(cfg.out_channels or cfg.in_channels)
        self.z_dim = int(vae.config.z_dim)
        self.scale_temporal = int(getattr(vae.config, "scale_factor_temporal", 4))
        self.scale_spatial = int(getattr(vae.config, "scale_factor_spatial", 8))
        self.image_mode = self._image_mode(image_conditioning, int(cfg.in_channels))
        self.needs_image_embeds = getattr(cfg, "image_dim", None) is not None
        self.prompt_embeds: Tensor | None = None  # defaults for make_cond when there is no text encoder
        self.negative_prompt_embeds: Tensor | None = None
        self.prompt_lookup: Callable[[str], tuple[Tensor, Tensor | None]] | None = None  # prompt -> embeddings, per instance
        self.active_expert: str | None = None  # set during a call; hooks may read it
        self._text_pipe: Any = None
        self._crops: dict[tuple[int, int], tuple[int, int]] = {}  # padded latent (h, w) -> task video (H, W) in pixels
        # placement: with offload="model" the large modules wait on `offload_device` until they run
        self.offload = offload
        self.exec_device = torch.device(device) if device is not None else next(transformer.parameters()).device
        self.offload_device = torch.device("cpu")
        self.placement: dict[str, str] = {}  # component -> "device" | "offload"
        self.moves: list[tuple[str, str]] = []  # (component, "device" | "offload") in the order they happened
        if offload == "model":
            for comp in ("transformer", "transformer_2", "text_encoder", "image_encoder"):
                self._place(comp, "offload")
            self._place("vae", "device")
        if vae_tiling:
            vae.enable_tiling()

    @property
    def precision(self) -> Precision:  # type: ignore[override]
        """The transformer's compute precision (its weights' dtype; the VAE stays float32)."""
        return Precision.BF16 if self.transformer.dtype == torch.bfloat16 else Precision.FP32

    def to_precision(self, precision: Precision | str) -> WanDenoiser:
        """Cast the transformer(s) once; latents stay float32 and are cast per call (see `__call__`)."""
        p = Precision.of(precision)
        for m in (self.transformer, self.transformer_2):
            if m is not None:
                m.to(p.dtype)
        return self

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_components(cls, transformer: nn.Module, vae: nn.Module, transformer_2: nn.Module | None = None,
                        boundary_ratio: float | None = None, guidance_scale: float = 5.0,
                        guidance_scale_2: float | None = None, image_conditioning: str = "auto", **kw: Any) -> WanDenoiser:
        """Adapt loose diffusers components (e.g. tiny ones built from configs)."""
        return cls(transformer, vae, transformer_2=transformer_2, boundary_ratio=boundary_ratio, guidance_scale=guidance_scale,
                   guidance_scale_2=guidance_scale_2, image_conditioning=image_conditioning, **kw)

    @classmethod
    def from_pipeline(cls, pipe: Any, **kw: Any) -> WanDenoiser:
        """Adapt a `WanPipeline` / `WanImageToVideoPipeline` (its scheduler is not used: our samplers step)."""
        comps = {k: getattr(pipe, k, None) for k in ("text_encoder", "tokenizer", "image_encoder", "image_processor")}
        sched = getattr(pipe, "scheduler", None)
        two = getattr(pipe, "transformer_2", None) is not None
        preset = PRESETS.get(kw.get("preset", "paper"))
        boundary = pipe.config.get("boundary_ratio")
        if two and preset is not None and preset.boundary_ratio is not None:
            boundary = preset.boundary_ratio  # the paper's switch, not the folder's
        args: dict[str, Any] = dict(transformer_2=getattr(pipe, "transformer_2", None), boundary_ratio=boundary,
                                    expand_timesteps=bool(pipe.config.get("expand_timesteps", False)),
                                    num_train_timesteps=int(sched.config.num_train_timesteps) if sched is not None else 1000,
                                    scheduler_config=dict(sched.config) if sched is not None else None, **comps)
        args.update(kw)
        den = cls(pipe.transformer, pipe.vae, **args)
        den._text_pipe = pipe if comps["text_encoder"] is not None else None
        return den

    def _image_mode(self, requested: str, in_channels: int) -> str:
        if requested == "auto":
            if in_channels == 2 * self.z_dim + self.scale_temporal:
                return "concat"
            return "first_frame" if self.expand_timesteps else "none"
        if requested not in IMAGE_MODES:
            raise ValueError(f"image_conditioning must be 'auto' or one of {IMAGE_MODES}, got {requested!r}")
        want = 2 * self.z_dim + self.scale_temporal if requested == "concat" else self.z_dim
        if in_channels != want:
            raise ValueError(f"image_conditioning={requested!r} needs a transformer with {want} input channels, got {in_channels}")
        return requested

    # -- the contract ----------------------------------------------------------------------------
    def schedule(self, steps: int, shift: float | None = None) -> Tensor:
        """(steps + 1,) sigmas of the folder's scheduler with `shift` (None: the preset's, else the folder's).

        Without a folder scheduler: diffusers' FlowMatchEulerDiscreteScheduler(shift), what the pipelines default to.
        """
        shift = self.default_shift if shift is None else shift
        if self.scheduler_config is None:
            return euler_sigmas(steps, 5.0 if shift is None else shift, self.num_train_timesteps)
        return folder_sigmas(self.scheduler_config, steps, shift)

    def euler_step(self, x: Tensor, dt: Tensor | float, v: Tensor) -> Tensor:
        """FlowMatchEulerDiscreteScheduler.step: float32 latent + dt * v, cast back to v's dtype (bf16 in bf16 runs)."""
        return (x.float() + dt * v).to(v.dtype)

    @property
    def do_cfg(self) -> bool:
        """CFG runs when the first guidance scale exceeds 1 (as in the pipelines, for both experts)."""
        return self.guidance_scale > 1.0

    def expert_for(self, timestep: float) -> str:
        """'high' (transformer) or 'low' (transformer_2) for a timestep on the 0..num_train_timesteps scale."""
        if self.transformer_2 is None or self.boundary_ratio is None:
            return "high"
        t = torch.tensor(timestep, dtype=torch.float32)
        return "high" if bool(t >= self.boundary_ratio * self.num_train_timesteps) else "low"

    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond) -> Prediction:
        """Velocity at latents x (B, C, F, H, W) and noise levels sigma (B,), after CFG."""
        if cond.text is None:
            raise ValueError("Wan needs cond.text (prompt embeddings); see make_cond / condition")
        b = x.shape[0]
        t = sigma.to(x.device, torch.float32).reshape(-1).expand(b) * self.num_train_timesteps  # (B,) == scheduler.timesteps[i]
        experts = {self.expert_for(float(v)) for v in t.unique()}
        if len(experts) != 1:
            raise ValueError("all samples of a batch must be at the same expert (sigmas straddle the boundary)")
        expert = experts.pop()
        model = self._activate(expert)
        scale = self.guidance_scale if expert == "high" else self.guidance_scale_2
        dtype = model.dtype  # what the pipelines cast inputs to
        inp = self._model_input(x, cond).to(dtype)  # (B, Cin, F, H, W)
        kw = dict(hidden_states=inp, timestep=self._timestep(t, x.shape, cond),
                  encoder_hidden_states_image=self._image_embeds(cond, b, dtype), return_dict=False)
        text = _batched(cond.text, b).to(x.device, dtype)
        two = self.transformer_2 is not None
        with self._expert_context(expert if two else None):
            if not self.do_cfg:
                v = model(encoder_hidden_states=text, **kw)[0]
                return Prediction(v, None, expert if two else None)
            if cond.negative_text is None:
                raise ValueError(f"guidance_scale={self.guidance_scale} > 1 needs cond.negative_text (negative prompt embeddings)")
            neg = _batched(cond.negative_text, b).to(x.device, dtype)
            with context.branch("cond"):
                v_cond = model(encoder_hidden_states=text, **kw)[0]  # (B, C, F, H, W) in the model's dtype
            with context.branch("uncond"):
                v_uncond = model(encoder_hidden_states=neg, **kw)[0]
        v = v_uncond + scale * (v_cond - v_uncond)  # in the model's dtype, as the pipelines combine it
        return Prediction(v, {"cond": v_cond, "uncond": v_uncond}, expert if two else None)

    def _model_input(self, x: Tensor, cond: Cond) -> Tensor:
        if self.image_mode == "concat":
            c = cond.extra.get("wan_condition")
            if c is None:
                raise ValueError("this Wan model is image-to-video: cond.extra['wan_condition'] is missing (use make_cond / condition)")
            return torch.cat([x, _batched(c, x.shape[0]).to(x.device, x.dtype)], dim=1)  # (B, C + 4 + z, F, H, W)
        return self.reimpose(x, cond)

    def _timestep(self, t: Tensor, shape: Sequence[int], cond: Cond) -> Tensor:
        if not self.expand_timesteps:
            return t  # (B,)
        _, _, f, h, w = shape
        pt, ph, pw = self.patch_size
        mask = torch.ones(f // pt, h // ph, w // pw, dtype=torch.float32, device=t.device)
        if self.image_mode == "first_frame" and cond.image is not None:
            mask[0] = 0  # the clean first frame is at timestep 0
        return mask.flatten()[None] * t[:, None]  # (B, tokens): per-token timesteps (Wan2.2 TI2V)

    def _image_embeds(self, cond: Cond, b: int, dtype: torch.dtype) -> Tensor | None:
        if not self.needs_image_embeds:
            return None
        e = cond.extra.get("image_embeds")
        if e is None:
            raise ValueError("this Wan2.1 image-to-video model needs cond.extra['image_embeds'] (CLIP image embeddings)")
        return _batched(e, b).to(dtype)

    @contextmanager
    def _expert_context(self, expert: str | None) -> Iterator[None]:
        self.active_expert = expert
        try:
            with context.expert(expert) if expert is not None else nullcontext():
                yield
        finally:
            self.active_expert = None

    def reimpose(self, x: Tensor, cond: Cond) -> Tensor:
        """Only Wan2.2 TI2V ("first_frame") holds latent frame 0 fixed; "concat" models denoise it like the rest.

        The frame is written in float32 (a bf16 latent is promoted), as the pipeline mixes it into its output.
        """
        if self.image_mode != "first_frame" or cond.image is None:
            return x
        x = x.to(torch.promote_types(x.dtype, cond.image.dtype), copy=True)
        x[:, :, 0] = cond.image
        return x

    def hook_blocks(self) -> Sequence[nn.Module]:
        """The transformer's blocks; with two experts see `expert_layers` (module docstring)."""
        high = list(self.transformer.blocks)
        if self.transformer_2 is None:
            return high
        low = list(self.transformer_2.blocks)
        if self.expert_layers == "concat":
            return high + low
        return [ExpertBlocks({"high": h, "low": lo}) for h, lo in zip(high, low)]

    def hook_experts(self) -> dict[str, Sequence[nn.Module]]:
        """Each expert's blocks: {"high": transformer.blocks} plus {"low": transformer_2.blocks} for Wan2.2 A14B."""
        out = {"high": list(self.transformer.blocks)}
        if self.transformer_2 is not None:
            out["low"] = list(self.transformer_2.blocks)
        return out

    def expert_of_block(self, i: int) -> tuple[str | None, int]:
        """hook_blocks() index -> (expert, layer within it); expert None when the index means the active expert."""
        n, depth = len(self.transformer.blocks), len(self.hook_blocks())
        if not 0 <= i < depth:
            raise IndexError(f"block {i} out of range (0..{depth - 1})")
        if self.transformer_2 is None:
            return "high", i
        if self.expert_layers == "shared":
            return None, i
        return ("high", i) if i < n else ("low", i - n)

    def hook_sites(self) -> dict[str, str]:
        return {"attn_out": "attn1", "cross_attn_out": "attn2", "mlp_out": "ffn"}

    def token_grid(self, latent_shape: Sequence[int]) -> tuple[int, int, int]:
        *_, f, h, w = latent_shape
        pt, ph, pw = self.patch_size
        return int(f) // pt, int(h) // ph, int(w) // pw

    @property
    def device(self) -> torch.device:
        """Where the model runs (with offload, where each module goes when it is needed)."""
        return self.exec_device if self.offload != "none" else next(self.transformer.parameters()).device

    # -- placement (offload="model") -------------------------------------------------------------
    def _place(self, component: str, where: str) -> None:
        module = getattr(self, component, None)
        if module is None or self.placement.get(component) == where:
            return
        module.to(self.exec_device if where == "device" else self.offload_device)
        self.placement[component] = where
        self.moves.append((component, where))

    def _activate(self, expert: str) -> nn.Module:
        """The expert's transformer, on the device; with offload the other expert goes back first (its range is over)."""
        comp = "transformer" if expert == "high" else "transformer_2"
        if self.offload == "model":
            self._place("transformer_2" if comp == "transformer" else "transformer", "offload")
            self._place(comp, "device")
        return getattr(self, comp)

    @contextmanager
    def _on_device(self, component: str) -> Iterator[None]:
        """With offload, `component` sits on the device for the enclosed block only."""
        if self.offload != "model":
            yield
            return
        self._place(component, "device")
        try:
            yield
        finally:
            self._place(component, "offload")

    def memory_estimate(self, latent_shape: Sequence[int], batch: int) -> dict[str, int]:
        """Rough bytes a batch needs on the device: resident weights + one block's activations + latents.

        With offload only the largest expert (and the VAE) is resident; without, every loaded module is.
        Activations: per sample and CFG branch, tokens x (6 x width + ffn width) values of the model dtype.
        """
        def size(m: nn.Module | None) -> int:
            return 0 if m is None else sum(p.numel() * p.element_size() for p in m.parameters())

        experts = [size(self.transformer), size(self.transformer_2)]
        if self.offload == "model":
            weights = max(experts) + size(self.vae)
        else:
            weights = sum(experts) + size(self.vae) + size(self.text_encoder) + size(self.image_encoder)
        shape = tuple(latent_shape)[-4:]
        tokens = int(np.prod(self.token_grid((batch, *shape))))
        ffn = int(getattr(self.transformer.config, "ffn_dim", 4 * self.hidden_dim))
        item = next(self.transformer.parameters()).element_size()
        act = batch * (2 if self.do_cfg else 1) * tokens * (6 * self.hidden_dim + ffn) * item
        latents = 8 * batch * int(np.prod(shape)) * 4  # x, velocity, branches, x0_hat, x_next in float32
        return {"weights": weights, "activations": act, "latents": latents, "total": weights + act + latents}

    # -- VAE -------------------------------------------------------------------------------------
    def _latent_stats(self, device: torch.device) -> tuple[Tensor, Tensor]:
        c = self.vae.config
        mean = torch.tensor(c.latents_mean).view(1, c.z_dim, 1, 1, 1).to(device, torch.float32)
        inv_std = 1.0 / torch.tensor(c.latents_std).view(1, c.z_dim, 1, 1, 1).to(device, torch.float32)
        return mean, inv_std

    def _vae_device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @torch.no_grad()
    def encode_pixels(self, video: Tensor) -> Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> normalised latents (B, z, F, H/s, W/s) float32 (posterior mode, as the pipelines)."""
        vdev = self._vae_device()
        lat = self.vae.encode(video.to(vdev, self.vae.dtype)).latent_dist.mode().to(torch.float32)
        mean, inv_std = self._latent_stats(lat.device)
        return (lat - mean) * inv_std

    def encode(self, frames: np.ndarray) -> Tensor:
        """(B, T, H, W, 3) uint8 frames -> normalised latents (B, z, (T-1)/4+1, H/8, W/8) on the model's device."""
        frames = np.asarray(frames)
        if frames.ndim != 5 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"encode takes (B, T, H, W, 3) uint8 frames, got {frames.dtype} {frames.shape}")
        self.check_size(frames.shape[1], frames.shape[2], frames.shape[3])
        return torch.cat([self.encode_pixels(frames_to_pixels(f[None])) for f in frames]).to(self.device)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> np.ndarray:
        """Normalised latents (B, z, F, H, W) -> (B, T, 8H, 8W, 3) uint8, one sample at a time (VAE memory)."""
        vdev = self._vae_device()
        mean, inv_std = self._latent_stats(vdev)
        out = []
        for lat in latents:
            z = lat[None].to(vdev, torch.float32) / inv_std + mean  # the pipelines' de-normalisation
            video = self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0].float()  # (1, 3, T, H, W) in [-1, 1]
            video = ((video / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
            out.append(video[0].permute(1, 2, 3, 0).cpu().numpy())  # (T, H, W, 3)
        crop = self._crops.get(tuple(int(v) for v in latents.shape[-2:]))  # a padded task video: cut the padding off
        video = np.stack(out)
        return video if crop is None else video[:, :, : crop[0], : crop[1]]

    def check_size(self, num_frames: int, height: int, width: int) -> None:
        """Wan needs 4k + 1 frames and sides that are multiples of VAE stride x patch size."""
        sh, sw = self.scale_spatial * self.patch_size[1], self.scale_spatial * self.patch_size[2]
        if (num_frames - 1) % self.scale_temporal or height % sh or width % sw:
            raise ValueError(f"Wan needs {self.scale_temporal}k+1 frames and a size that is a multiple of {sh}x{sw}; "
                             f"got {num_frames} frames of {height}x{width}")

    def check_frames(self, num_frames: int) -> None:
        """A task video length Wan accepts: scale_temporalk + 1 frames."""
        check_frame_count("Wan", self.scale_temporal, num_frames)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, F, H, W) of the latents of a video of this size."""
        self.check_size(num_frames, height, width)
        return (self.latent_channels, (num_frames - 1) // self.scale_temporal + 1, height // self.scale_spatial, width // self.scale_spatial)

    # -- conditioning ----------------------------------------------------------------------------
    def encode_prompt(self, prompts: Sequence[str], negative: str | Sequence[str] | None = None) -> tuple[Tensor, Tensor | None]:
        """Prompt embeddings (B, L, D) and negative ones (None without CFG) through the checkpoint's text encoder."""
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError("this Wan model was loaded without a text encoder: pass prompt embeddings (Cond.text / --prompt-embeds)")
        if self._text_pipe is None:
            from diffusers import WanPipeline

            self._text_pipe = WanPipeline(tokenizer=self.tokenizer, text_encoder=self.text_encoder, vae=None, scheduler=None)
        neg = self.negative_prompt if negative is None else negative
        with torch.no_grad(), self._on_device("text_encoder"):
            pos, negs = self._text_pipe.encode_prompt(prompt=list(prompts), negative_prompt=neg, do_classifier_free_guidance=self.do_cfg,
                                                      max_sequence_length=self.max_sequence_length, device=self.device)
        return pos.float(), None if negs is None else negs.float()

    def encode_image_embeds(self, images: np.ndarray) -> Tensor:
        """Wan2.1 image-to-video: CLIP penultimate hidden states of the first frames (B, 257, 1280)."""
        if self.image_encoder is None or self.image_processor is None:
            raise ValueError("this Wan2.1 image-to-video model needs an image encoder, or cond.extra['image_embeds']")
        from PIL import Image

        with torch.no_grad(), self._on_device("image_encoder"):
            dev = next(self.image_encoder.parameters()).device
            inputs = self.image_processor(images=[Image.fromarray(i) for i in images], return_tensors="pt").to(dev)
            return self.image_encoder(**inputs, output_hidden_states=True).hidden_states[-2].float()

    def condition(self, images: np.ndarray | None, num_frames: int, *, text: Tensor, negative_text: Tensor | None = None,
                  image_embeds: Tensor | None = None) -> Cond:
        """The conditioning of B videos of `num_frames` frames: first frames (B, H, W, 3) uint8 (None: text-to-video)."""
        dev = self.device
        extra: dict[str, Tensor] = {}
        image = None
        if images is not None:
            images = np.asarray(images)
            if images.ndim == 3:
                images = images[None]
            _, h, w, _ = images.shape
            self.check_size(num_frames, h, w)
            pix = frames_to_pixels(images[:, None])  # (B, 3, 1, H, W)
            if self.image_mode == "concat":
                extra["wan_condition"] = self._concat_condition(pix, num_frames).to(dev)
            elif self.image_mode == "first_frame":
                image = torch.cat([self.encode_pixels(p[None]) for p in pix])[:, :, 0].to(dev)  # (B, z, H/s, W/s)
            else:
                raise ValueError("this Wan model is text-to-video only: it cannot condition on a first frame")
            if self.needs_image_embeds:
                extra["image_embeds"] = (image_embeds if image_embeds is not None else self.encode_image_embeds(images)).to(dev)
        elif self.image_mode == "concat":
            raise ValueError("this Wan model is image-to-video: pass the first frames")
        neg = None if negative_text is None else negative_text.to(dev)
        return Cond(image=image, text=text.to(dev), negative_text=neg, extra=extra)

    def _concat_condition(self, pix: Tensor, num_frames: int) -> Tensor:
        """WanImageToVideoPipeline.prepare_latents: mask (B, 4, F, h, w) ++ latents of [image, zeros...] (B, z, F, h, w)."""
        b, _, _, h, w = pix.shape
        video = torch.cat([pix, pix.new_zeros(b, 3, num_frames - 1, h, w)], dim=2)  # (B, 3, T, H, W)
        lat = torch.cat([self.encode_pixels(v[None]) for v in video])  # (B, z, F, h, w)
        mask = torch.zeros(b, self.scale_temporal, *lat.shape[2:], dtype=lat.dtype, device=lat.device)
        mask[:, :, 0] = 1.0  # the pipeline's first-frame mask, repeated over the 4 frames of latent frame 0
        return torch.cat([mask, lat], dim=1)

    def task_video(self, task: Any, inst: Any) -> np.ndarray:
        """A task instance's ground truth at Wan's resolution: blocks upsampled by `pixels_per_block`, (T, H, W, 3).

        A grid whose pixel size is not a multiple of what the model accepts (16 px, 32 for TI2V-5B) is padded
        at the bottom and right by repeating its edge; `decode` cuts the padding off again, so scorers see
        the task's own frames.
        """
        blocks = task.blocks(inst)
        k = self.pixels_per_block
        video = np.repeat(np.repeat(blocks, k, axis=1), k, axis=2)
        t, h, w = video.shape[:3]
        sh, sw = self.scale_spatial * self.patch_size[1], self.scale_spatial * self.patch_size[2]
        hp, wp = -(-h // sh) * sh, -(-w // sw) * sw
        if (hp, wp) != (h, w):
            video = np.pad(video, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)), mode="edge")
            self._crops[(hp // self.scale_spatial, wp // self.scale_spatial)] = (h, w)
        self.check_size(t, hp, wp)
        return video

    def make_cond(self, first: Tensor | None, task: Any, instances: Sequence[Any], *, text: Tensor | None = None,
                  negative_text: Tensor | None = None) -> Cond:
        """Conditioning for task instances: first frames from `task_video`, prompts from the task.

        Text: `text`/`negative_text` if given, else `self.prompt_lookup` on each instance's `task.prompt`, else
        `self.prompt_embeds` (one for all), else the text encoder on each instance's prompt.
        `first` (the first latent frame from the runner) is not needed: Wan conditions on pixels.
        """
        videos = [self.task_video(task, i) for i in instances]
        if text is None and self.prompt_lookup is not None:  # each instance's own prompt
            pairs = [self.prompt_lookup(task.prompt(i)) for i in instances]
            text = _stack_padded([p[0] for p in pairs])
            negative_text = None if any(p[1] is None for p in pairs) else _stack_padded([p[1] for p in pairs])
        if text is None and self.prompt_embeds is not None:
            text, negative_text = self.prompt_embeds, self.negative_prompt_embeds
        if text is None:
            text, negative_text = self.encode_prompt([task.prompt(i) for i in instances])
        images = None if self.image_mode == "none" else np.stack([v[0] for v in videos])
        return self.condition(images, len(videos[0]), text=_batched(text, len(videos)),
                              negative_text=None if negative_text is None else _batched(negative_text, len(videos)))


def _batched(t: Tensor, b: int) -> Tensor:
    """A conditioning tensor with batch b (a batch of one is expanded)."""
    if t.shape[0] == b:
        return t
    if t.shape[0] == 1:
        return t.expand(b, *t.shape[1:])
    raise ValueError(f"conditioning has batch {t.shape[0]}, latents have {b}")


def _stack_padded(ts: Sequence[Tensor]) -> Tensor:
    """(1, L_i, D) or (L_i, D) embeddings -> (B, max L, D), zero-padded at the end (Wan pads prompts with zeros)."""
    ts = [t[None] if t.ndim == 2 else t for t in ts]
    n = max(t.shape[1] for t in ts)
    return torch.cat([torch.nn.functional.pad(t, (0, 0, 0, n - t.shape[1])) for t in ts])


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".")[:2] if p.isdigit())


def pipeline_class(path: str | Path, family: str = "Wan", supported: Sequence[str] = ()) -> str:
    """The pipeline class named by a diffusers folder's model_index.json, one of `supported` (default: Wan's PIPELINES)."""
    supported = tuple(supported) or tuple(PIPELINES)
    index = Path(path) / "model_index.json"
    try:
        name = json.loads(index.read_text())["_class_name"]
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise FileNotFoundError(f"{index}: not a diffusers {family} folder ({e})") from None
    if name not in supported:
        raise ValueError(f"{index}: pipeline {name!r} is not supported (supported: {', '.join(supported)})")
    return name


def sampling_defaults(path: str | Path, preset: str = "paper") -> tuple[int, float]:
    """(steps, shift) of a preset for the folder at `path`: "folder" reads the shift from its scheduler_config."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    p = PRESETS[preset]
    if p.shift is not None:
        return p.steps, p.shift
    cfg_path = Path(path) / "scheduler" / "scheduler_config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FileNotFoundError(f"{cfg_path}: preset 'folder' needs the folder's scheduler config ({e})") from None
    key = FLOW_SCHEDULERS.get(cfg.get("_class_name", ""), "shift")
    return p.steps, float(cfg.get(key, 1.0))


def load_wan(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, *,
             lora: str | None = None, lora_high: str | None = None, lora_low: str | None = None,
             lora_scale: float = 1.0, lora_scale_low: float | None = None, text_encoder: bool = True,
             offload: str = "none", **kw: Any) -> WanDenoiser:
    """A WanDenoiser from a local diffusers folder (offline), optionally with LoRAs.

    Args:
        path: folder with model_index.json (WanPipeline or WanImageToVideoPipeline).
        device: where the model runs ("auto": cuda if there is one).
        dtype: transformer (and text encoder) dtype; default bfloat16 on CUDA, float32 elsewhere. The VAE stays float32.
        lora: a LoRA for every transformer (both experts of Wan2.2 A14B); `lora_high`/`lora_low` for one expert each
            (the VBVR LoRAs ship one per expert).
        lora_scale: the adapters' scale; `lora_scale_low` the low-noise expert's (default: lora_scale).
        text_encoder: False skips loading the (large) text encoder; then pass prompt embeddings.
        offload: "model" keeps every large module on the CPU until it runs (`WanDenoiser` docstring).
        **kw: overrides for WanDenoiser (preset, guidance_scale, guidance_scale_2, image_conditioning, vae_tiling, ...).
    """
    import diffusers

    path = Path(path)
    device = resolve_device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if lora and (lora_high or lora_low):
        raise ValueError("pass either lora (every expert) or lora_high/lora_low (one expert each), not both")
    if offload not in OFFLOAD:
        raise ValueError(f"offload must be one of {OFFLOAD}, got {offload!r}")
    cls = getattr(diffusers, pipeline_class(path))
    index = json.loads((path / "model_index.json").read_text())
    saved = {k for k, v in index.items() if isinstance(v, list) and v and v[0] is not None}
    params = inspect.signature(cls.__init__).parameters
    optional = [k for k in ("text_encoder", "tokenizer", "image_encoder", "image_processor", "transformer_2") if k in params]
    extra: dict[str, Any] = {k: None for k in optional if k not in saved}  # components saved as None stay None
    dtype_kw = "dtype" if _version(diffusers.__version__) >= (0, 42) else "torch_dtype"  # renamed in diffusers 0.42
    if "vae" in saved:  # the VAE stays in float32, as diffusers recommends for Wan
        extra["vae"] = diffusers.AutoencoderKLWan.from_pretrained(path, subfolder="vae", local_files_only=True, **{dtype_kw: torch.float32})
    if not text_encoder:
        extra.update(text_encoder=None, tokenizer=None)
    pipe = cls.from_pretrained(path, local_files_only=True, **{dtype_kw: dtype}, **extra)
    load_loras(pipe, high=lora_high or lora, low=lora_low or (lora if getattr(pipe, "transformer_2", None) is not None else None),
               scale=lora_scale, scale_low=lora_scale_low, where=str(path))
    if offload == "none":
        pipe.to(device)
    for m in (pipe.transformer, getattr(pipe, "transformer_2", None), pipe.vae):
        if m is not None:
            m.eval().requires_grad_(False)
    kw.setdefault("name", f"wan:{path}")
    return WanDenoiser.from_pipeline(pipe, offload=offload, device=device, **kw)


def load_loras(pipe: Any, *, high: str | None, low: str | None, scale: float = 1.0, scale_low: float | None = None,
               where: str = "") -> None:
    """Load a LoRA into the (high-noise) transformer and one into transformer_2, each at its adapter scale."""
    if low and getattr(pipe, "transformer_2", None) is None:
        raise ValueError(f"{where}: a low-noise LoRA needs a two-expert (Wan2.2 A14B) model")
    for path, name, model, s, into_2 in ((high, "steplens_high", "transformer", scale, False),
                                         (low, "steplens_low", "transformer_2", scale if scale_low is None else scale_low, True)):
        if not path:
            continue
        pipe.load_lora_weights(path, adapter_name=name, **({"load_into_transformer_2": True} if into_2 else {}))
        getattr(pipe, model).set_adapters([name], weights=[float(s)])
