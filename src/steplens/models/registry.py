"""Load models by name (`steplens.load("maze")`) or by path, with checksum and config checks."""

from __future__ import annotations

import hashlib
import importlib
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


# Backends through diffusers: `PREFIX:DIR[?key=value&...]`, PREFIX -> "module:loader" under steplens.models.
BACKENDS = {"wan": "wan:load_wan"}
# spec options every backend takes: name -> (type, loader keyword or "attr:NAME" for a denoiser attribute)
SPEC_OPTIONS: dict[str, tuple[type, str]] = {
    "preset": (str, "preset"), "offload": (str, "offload"), "vae_tiling": (bool, "vae_tiling"),
    "lora": (str, "lora"), "lora_high": (str, "lora_high"), "lora_low": (str, "lora_low"),
    "lora_scale": (float, "lora_scale"), "lora_scale_low": (float, "lora_scale_low"),
    "guidance": (float, "guidance_scale"), "guidance_2": (float, "guidance_scale_2"), "boundary": (float, "boundary_ratio"),
    "expert_layers": (str, "expert_layers"), "text_encoder": (bool, "text_encoder"),
    "px": (int, "attr:pixels_per_block"), "frames": (int, "attr:n_frames"),
}


def parse_spec(spec: str) -> tuple[str | None, str, dict[str, Any]]:
    """'wan:DIR?offload=model&lora_scale=0.8' -> ("wan", "DIR", {"offload": "model", "lora_scale": 0.8}); (None, spec, {}) otherwise."""
    prefix, sep, rest = spec.partition(":")
    if not sep or prefix not in BACKENDS:
        return None, spec, {}
    path, _, query = rest.partition("?")
    opts: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        key, eq, val = part.partition("=")
        if key not in SPEC_OPTIONS or not eq:
            raise ModelLoadError(f"{spec}: unknown model option {part!r}; options are key=value among {', '.join(SPEC_OPTIONS)}")
        typ = SPEC_OPTIONS[key][0]
        try:
            opts[key] = val.lower() in ("1", "true", "yes") if typ is bool else typ(val)
        except ValueError:
            raise ModelLoadError(f"{spec}: option {key} needs a {typ.__name__}, got {val!r}") from None
    return prefix, path, opts


def with_options(spec: str, **options: Any) -> str:
    """`spec` with these options added (None values skipped); a reference model takes none."""
    options = {k: v for k, v in options.items() if v is not None}
    if not options:
        return spec
    prefix, _, old = parse_spec(spec)
    if prefix is None:
        raise ModelLoadError(f"options {sorted(options)} apply to diffusers models ({', '.join(p + ':DIR' for p in BACKENDS)}) only")
    merged = {**old, **options}
    base = spec.partition("?")[0]
    return base + "?" + "&".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in merged.items())


def sampling_defaults(spec: str) -> tuple[int, float]:
    """(steps, shift) a model runs with unless told otherwise: the reference model's 20 / 1.0; a backend's preset."""
    prefix, path, opts = parse_spec(spec)
    if prefix is None:
        return 20, 1.0
    module = importlib.import_module(f"steplens.models.{BACKENDS[prefix].split(':')[0]}")
    return module.sampling_defaults(path, opts.get("preset", "paper"))


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' (or None): cuda when there is one, else cpu."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ModelLoadError(f"unknown device {device!r} ({e})") from None


def load(spec: str = "maze", *, device: str | torch.device = "cpu", **backend: Any) -> ReferenceDenoiser:
    """A reference denoiser from a shipped name or an exported path; verifies sha256 and config.

    `wan:DIR[?options]` loads Wan through diffusers (`SPEC_OPTIONS`); `backend` keywords go to its loader
    (`steplens.models.wan.load_wan`). `device` may be "auto" (cuda if there is one).
    """
    device = resolve_device(device)
    prefix, path, opts = parse_spec(spec)
    if prefix is not None:
        mod_name, fn_name = BACKENDS[prefix].split(":")
        loader = getattr(importlib.import_module(f"steplens.models.{mod_name}"), fn_name)  # optional backend
        kw = {SPEC_OPTIONS[k][1]: v for k, v in opts.items() if not SPEC_OPTIONS[k][1].startswith("attr:")}
        den = loader(path, device=device, **{**kw, **backend})
        for k, v in opts.items():
            if SPEC_OPTIONS[k][1].startswith("attr:"):
                setattr(den, SPEC_OPTIONS[k][1][5:], v)
        if "frames" in opts and hasattr(den, "check_frames"):
            den.check_frames(opts["frames"])
        den.name = spec
        return den
    if backend:
        raise TypeError(f"options {sorted(backend)} apply to {', '.join(p + ':' for p in BACKENDS)} models only")
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
