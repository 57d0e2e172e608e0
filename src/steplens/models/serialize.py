"""The exported reference model, written and read in one place: `PREFIX.safetensors` + `PREFIX.json`.

Format `steplens-reference-v1`: the safetensors file holds the (EMA) weights; the JSON holds
    {"format", "model": DiTConfig, "data": {"n_frames", "sizes", "task_sizes"}, "train": the training config or null,
     "sha256": of the safetensors bytes, and optionally "trained_steps", "train_elapsed_s"}.
Shipped models live in `models/weights/` and load by name (`load("maze")`). Nothing here imports
training code: the trainer calls `export` with its config as a plain dict.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, InputError, atomic_write_bytes, from_dict, to_dict, write_json
from .dit import DiTConfig, ReferenceDenoiser, VideoDiT, random_tiny

FORMAT = "steplens-reference-v1"
WEIGHTS_DIR = Path(__file__).parent / "weights"


class ModelLoadError(InputError, RuntimeError):
    """A model could not be loaded: unknown name, missing file, checksum or config mismatch."""


def export(model: VideoDiT, prefix: str | Path, *, n_frames: int = 4, sizes: Sequence[int] = (3, 4, 5),
           task_sizes: dict[str, list[int]] | None = None, train: dict[str, Any] | None = None, **extra: Any) -> Path:
    """Write `prefix.safetensors` (the weights) and `prefix.json` (configs + sha256); returns the weights path.

    Args:
        n_frames, sizes, task_sizes: the data the model was trained on (sizes per task when they differ) (`load` sets `den.n_frames` from it).
        train: the training config as a dict (None for untrained models); extra: more JSON entries.
    """
    from safetensors.torch import save

    prefix = Path(prefix)
    blob = save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    weights = prefix.with_suffix(".safetensors")
    atomic_write_bytes(weights, blob)
    meta = {"format": FORMAT, "model": to_dict(model.cfg), "data": {"n_frames": n_frames, "sizes": list(sizes), **({"task_sizes": task_sizes} if task_sizes else {})},
            "train": train, "sha256": hashlib.sha256(blob).hexdigest(), **extra}
    write_json(prefix.with_suffix(".json"), meta)
    return weights


def export_random_tiny(prefix: str | Path, **kw: Any) -> str:
    """`random_tiny` exported as a loadable model at `prefix` (.safetensors + .json); returns the spec."""
    export(random_tiny(**kw), prefix)
    return str(prefix)


def shipped_models() -> list[str]:
    """Names of the reference models shipped inside the package."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.json") if p.with_suffix(".safetensors").exists())


def _resolve(spec: str) -> Path:
    """'maze' -> the shipped model; 'path/model' or 'path/model.json' or a run folder -> that export."""
    p = Path(spec)
    candidates = [WEIGHTS_DIR / f"{spec}.json"] if "/" not in spec and not p.suffix else []
    candidates += [p if p.suffix == ".json" else p.with_suffix(".json"), p / "model.json"]
    for c in candidates:
        if c.is_file():
            return c
    known = ", ".join(shipped_models()) or "none"
    raise ModelLoadError(f"no model {spec!r}: not a shipped name (shipped: {known}) nor a path to model.json/.safetensors")


def load_meta(spec: str) -> tuple[dict[str, Any], Path]:
    """An export's JSON and its path, from a shipped name or a path."""
    cfg_path = _resolve(spec)
    try:
        meta = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{cfg_path}: unreadable model config ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelLoadError(f"{cfg_path}: unknown model format {meta.get('format') if isinstance(meta, dict) else None!r}")
    return meta, cfg_path


def load_reference(spec: str, device: str | torch.device = "cpu") -> ReferenceDenoiser:
    """A reference denoiser from a shipped name or an exported path; verifies sha256 and config."""
    meta, cfg_path = load_meta(spec)
    weights = cfg_path.with_suffix(".safetensors")
    if not weights.is_file():
        raise ModelLoadError(f"{weights}: weights file missing (config is {cfg_path})")
    blob = weights.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != meta.get("sha256"):
        raise ModelLoadError(f"{weights}: checksum mismatch (sha256 {digest[:12]}..., config expects {str(meta.get('sha256'))[:12]}...): "
                             "the weights are corrupt or belong to another config")
    try:
        cfg = from_dict(DiTConfig, meta["model"])
    except (ConfigError, KeyError, TypeError) as e:
        raise ModelLoadError(f"{cfg_path}: invalid model config ({e})") from None
    from safetensors.torch import load as st_load

    model = VideoDiT(cfg)
    state = st_load(blob)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelLoadError(f"{weights}: weights do not match the config in {cfg_path.name}: {str(e).splitlines()[0]}") from None
    model.eval().requires_grad_(False).to(device)
    den = ReferenceDenoiser(model, name=spec)
    den.meta = meta
    den.n_frames = int(meta.get("data", {}).get("n_frames", 4))
    return den
