"""Load models by name (`steplens.load("maze")`), by exported path, `wan:DIR[?options]` (any `BACKENDS` prefix) through diffusers,
or a null / positive-control denoiser (`null:shrink`, `control:candidates`: steplens.models.controls)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import torch

from .errors import resolve_device
from .serialize import ModelLoadError, load_reference

__all__ = ["BACKENDS", "SPEC_OPTIONS", "ModelLoadError", "load", "parse_spec", "resolve_device", "sampling_defaults", "with_options"]

# Backends through diffusers: `PREFIX:DIR[?key=value&...]`, PREFIX -> "module:loader" under steplens.models.
BACKENDS = {"wan": "wan:load_wan", "hunyuan15": "hunyuan15:load_hunyuan15", "ltx2": "ltx2:load_ltx2"}
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


def _backend(prefix: str) -> tuple[ModuleType, str]:
    """The backend's module (imported on first use: diffusers is optional) and its loader's name."""
    mod_name, fn_name = BACKENDS[prefix].split(":")
    return importlib.import_module(f"steplens.models.{mod_name}"), fn_name


def sampling_defaults(spec: str) -> tuple[int, float]:
    """(steps, shift) a model runs with unless told otherwise: the reference model's 20 / 1.0; a backend's preset."""
    prefix, path, opts = parse_spec(spec)
    if prefix is None:
        return 20, 1.0
    return _backend(prefix)[0].sampling_defaults(path, opts.get("preset", "paper"))


def load(spec: str = "maze", *, device: str | torch.device = "cpu", **backend: Any) -> Any:
    """A denoiser from a shipped name or an exported path (sha256 and config checked), or `wan:DIR[?options]`.

    `null:NAME` / `control:NAME[?options]` load the oracle controls of `steplens.models.controls`.
    `wan:DIR[?options]` loads Wan through diffusers (`SPEC_OPTIONS`); `backend` keywords go to its loader
    (`steplens.models.wan.load_wan`) and apply to such models only. `device` may be "auto" (cuda if there is one).
    """
    device = resolve_device(device)
    from .controls import is_control, load_control

    if is_control(spec):
        if backend:
            raise TypeError(f"options {sorted(backend)} apply to {', '.join(p + ':' for p in BACKENDS)} models only")
        return load_control(spec, device)
    prefix, path, opts = parse_spec(spec)
    if prefix is not None:
        module, fn_name = _backend(prefix)
        kw = {SPEC_OPTIONS[k][1]: v for k, v in opts.items() if not SPEC_OPTIONS[k][1].startswith("attr:")}
        den = getattr(module, fn_name)(path, device=device, **{**kw, **backend})
        for k, v in opts.items():
            if SPEC_OPTIONS[k][1].startswith("attr:"):
                setattr(den, SPEC_OPTIONS[k][1][5:], v)
        if "frames" in opts and hasattr(den, "check_frames"):
            den.check_frames(opts["frames"])
        den.name = spec
        return den
    if backend:
        raise TypeError(f"options {sorted(backend)} apply to {', '.join(p + ':' for p in BACKENDS)} models only")
    return load_reference(spec, device)
