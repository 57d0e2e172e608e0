"""Load models by name (`steplens.load("maze")`) or by path, with checksum and config checks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, from_dict
from .dit import DiTConfig, ReferenceDenoiser, VideoDiT

WEIGHTS_DIR = Path(__file__).parent / "weights"


class ModelLoadError(RuntimeError):
    """A model could not be loaded: unknown name, missing file, checksum or config mismatch."""


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
    cfg_path = _resolve(spec)
    try:
        meta = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{cfg_path}: unreadable model config ({e})") from None
    if meta.get("format") != "steplens-reference-v1":
        raise ModelLoadError(f"{cfg_path}: unknown model format {meta.get('format')!r}")
    return meta, cfg_path


def load(spec: str = "maze", *, device: str | torch.device = "cpu", **backend: Any) -> ReferenceDenoiser:
    """A reference denoiser from a shipped name or an exported path; verifies sha256 and config.

    `wan:DIR` loads Wan through diffusers; `backend` keywords go to `steplens.models.wan.load_wan`.
    """
    if spec.startswith("wan:"):
        from .wan import load_wan  # optional backend

        return load_wan(spec[4:], device=device, **backend)
    if backend:
        raise TypeError(f"options {sorted(backend)} apply to wan: models only")
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
