"""Run a Wan model on VBVR-format samples end to end and score the videos.

Each sample folder gives the first frame (first_frame.png), the frame count (ground_truth.mp4), the
prompt (prompt.txt) and what the scorer needs (meta.json). The model samples with flow-matching Euler
on the sigma grid of the folder's own scheduler class with the run's shift (`WanDenoiser.schedule`),
one noise seed for every sample, as in the paper (seed 1). Results go to a resumable
run folder; videos to RUN/videos/<sample>.mp4, so `steplens score DATA --videos RUN/videos` re-scores them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError
from ..precision import Precision


@dataclass(frozen=True)
class VbvrRunConfig:
    """One evaluate-vbvr run: the model, the data and how to sample."""

    model: str
    data: str
    steps: int = 50
    shift: float = 5.0
    guidance: float = 5.0
    guidance_2: float | None = None  # low-noise expert (Wan2.2 A14B); None: same as guidance
    seed: int = 1
    prompt_embeds: str | None = None
    height: int = 0  # 0: the sample's own size, rounded down to a multiple of 16
    width: int = 0
    lora: str | None = None
    lora_high: str | None = None
    lora_low: str | None = None
    lora_scale: float = 1.0
    lora_scale_low: float | None = None  # None: lora_scale
    preset: str = "paper"  # models.wan.PRESETS: the expert switch (steps and shift are resolved above)
    offload: str = "none"
    sampler: str = "euler"  # on the grid of the folder's scheduler with `shift` (models.wan.folder_sigmas)
    precision: str = "fp32"  # the transformer's precision as resolved (steplens.precision.choose), not "auto"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.shift <= 0:
            raise ConfigError(f"shift must be > 0, got {self.shift}")
        if self.height < 0 or self.width < 0:
            raise ConfigError("height and width must be >= 0 (0: from the sample)")
        Precision.of(self.precision)


PromptLookup = Callable[[str], tuple[Any, Any]]


def load_prompt_embeds(path: str | Path) -> PromptLookup:
    """prompt -> (embeddings (1, L, D), negative or None) from a .pt file.

    The file holds a tensor (used for every prompt), or a dict with "prompt_embeds" (tensor, or a dict
    from prompt text to tensor) and optionally "negative_prompt_embeds".
    """
    import torch

    blob = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(blob, torch.Tensor):
        blob = {"prompt_embeds": blob}
    if not isinstance(blob, dict) or "prompt_embeds" not in blob:
        raise ValueError(f"{path}: expected a tensor or a dict with 'prompt_embeds'")
    pos, neg = blob["prompt_embeds"], blob.get("negative_prompt_embeds")

    def as_batch(t: Any) -> Any:
        return None if t is None else (t[None] if t.ndim == 2 else t).float()

    def lookup(prompt: str) -> tuple[Any, Any]:
        if isinstance(pos, dict):
            if prompt not in pos:
                raise KeyError(f"{path}: no embeddings for prompt {prompt[:60]!r}...")
            return as_batch(pos[prompt]), as_batch(neg)
        return as_batch(pos), as_batch(neg)

    return lookup


def video_size(den: Any, first: np.ndarray, n_truth_frames: int, height: int = 0, width: int = 0) -> tuple[int, int, int]:
    """(frames, height, width) to generate: 4k+1 frames as the pipelines round, sides multiples of VAE x patch stride."""
    k = den.scale_temporal
    frames = max(n_truth_frames // k * k + 1, 1)
    sh, sw = den.scale_spatial * den.patch_size[1], den.scale_spatial * den.patch_size[2]
    h = (height or first.shape[0]) // sh * sh
    w = (width or first.shape[1]) // sw * sw
    if h < sh or w < sw:
        raise ValueError(f"frame {first.shape[1]}x{first.shape[0]} is smaller than Wan's {sw}x{sh} minimum")
    return frames, h, w


def fit_image(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (H, W, 3) uint8 to height x width as the pipelines' image processor does (Lanczos); same size: unchanged."""
    if img.shape[:2] == (height, width):
        return img
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((width, height), Image.Resampling.LANCZOS), dtype=np.uint8)


def run_sample(den: Any, ref: Any, cfg: VbvrRunConfig, prompts: PromptLookup | None) -> tuple[np.ndarray, Any, float]:
    """Generate one sample's video and score it: (frames (T, H, W, 3) uint8, SampleResult, seconds)."""
    import torch

    from ..io import read_png, read_video
    from ..sampling import sample, seeded_noise
    from ..scoring import SampleResult
    from ..tasks.vbvr import FIRST_FRAME, VIDEO, read_sample

    t0 = time.time()
    s = read_sample(ref)
    first = read_png(ref.path / FIRST_FRAME)
    n_truth = len(read_video(ref.path / VIDEO))
    frames, h, w = video_size(den, first, n_truth, cfg.height, cfg.width)
    if prompts is not None:
        text, neg = prompts(s.prompt)
    else:
        text, neg = den.encode_prompt([s.prompt])
    cond = den.condition(fit_image(first, h, w)[None], frames, text=text, negative_text=neg)
    dev = den.device
    x = seeded_noise(den.latent_shape(frames, h, w), [cfg.seed], device=dev)
    sigmas = den.schedule(cfg.steps, cfg.shift).to(dev)
    with torch.no_grad():
        latents = sample(den, x, sigmas, cond, sampler=cfg.sampler)
    video = den.decode(latents)[0]
    verdict = s.task.score(s.inst, video)
    return video, SampleResult(ref.rel, s.task.name, verdict.success, verdict.score, verdict.details), time.time() - t0


def result_key(rel: str) -> str:
    """The run folder's key for the sample at `rel` under the data folder (a flat file name)."""
    return "root" if rel == "." else rel.replace("/", "__")


def evaluate_vbvr(den: Any, cfg: VbvrRunConfig, out: str | Path, *, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run and score every sample under cfg.data into run folder `out` (resumable); returns the summary."""
    from ..config import to_dict, write_json
    from ..io import write_video
    from ..models.errors import error_kind, raise_if_device
    from ..runs import RunFolder
    from ..scoring import SampleResult, summarize
    from ..tasks.vbvr import SampleError, iter_samples

    if den.image_mode == "none":
        raise ValueError(f"{cfg.model} is a text-to-video model; VBVR samples need image-to-video")
    run = RunFolder(out, "evaluate-vbvr", to_dict(cfg))
    refs = list(iter_samples(cfg.data))
    if not refs:
        raise SampleError(f"{cfg.data}: no sample folders found")
    prompts = load_prompt_embeds(cfg.prompt_embeds) if cfg.prompt_embeds else None
    todo = [r for r in refs if not run.finished(result_key(r.rel))]  # errored samples are retried on resume
    echo(f"{len(refs)} samples, {len(refs) - len(todo)} done, {len(todo)} to run")
    t0 = time.time()
    for ref in todo:
        sid = result_key(ref.rel)
        try:
            video, res, secs = run_sample(den, ref, cfg, prompts)
        except Exception as e:  # noqa: BLE001 - one broken sample must not stop the run; a failing device does
            raise_if_device(e, den)
            msg = str(e) if isinstance(e, SampleError) else f"{ref.path}: {type(e).__name__}: {e}"
            run.write(sid, {**SampleResult(ref.rel, None, error=msg).to_dict(), "error_kind": error_kind(e)})
            echo(f"error: {msg}")
            continue
        vpath = run.root / "videos" / f"{ref.rel if ref.rel != '.' else ref.name}.mp4"
        write_video(vpath, video)
        run.write(sid, {**res.to_dict(), "seconds": round(secs, 2), "video": vpath.relative_to(run.root).as_posix()})
        echo(f"{ref.rel}: score {res.score:.3f} ({secs:.1f}s)")
    rows = run.results([result_key(r.rel) for r in refs])
    run.write_jsonl("results.jsonl", rows)
    tally = summarize([SampleResult.from_dict(r) for r in rows])
    summary = {"config": to_dict(cfg), **tally.to_dict(), "wall_s_this_call": round(time.time() - t0, 2)}
    write_json(run.root / "summary.json", summary)
    return summary
