"""Load models by name (`steplens.load("maze")`), by exported path, or `wan:DIR` through diffusers."""

from __future__ import annotations

from typing import Any

import torch

from .serialize import ModelLoadError, load_reference

__all__ = ["ModelLoadError", "load"]


def load(spec: str = "maze", *, device: str | torch.device = "cpu", **backend: Any) -> Any:
    """A denoiser from a shipped name or an exported path (sha256 and config checked), or `wan:DIR`.

    `backend` keywords go to `steplens.models.wan.load_wan` and apply to wan: models only.
    """
    if spec.startswith("wan:"):
        from .wan import load_wan  # optional backend (diffusers)

        return load_wan(spec[4:], device=device, **backend)
    if backend:
        raise TypeError(f"options {sorted(backend)} apply to wan: models only")
    return load_reference(spec, device)
