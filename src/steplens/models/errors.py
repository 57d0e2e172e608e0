"""Telling a bad sample from a failing device or model, for per-sample error handling; naming the device.

A run records bad *input* (a missing file, a prompt with no embeddings, a size the model refuses) per
sample and goes on. A failing *device* (CUDA out of memory, a CUDA error) would fail every sample the
same way, so it stops the run with one clear error instead of writing "bad data" records, and says
how much memory the batch needs. Anything else is the *model* failing (e.g. NaN latents, a shape
mismatch inside the network): recorded per sample with `error_kind: "model"`.

Bad input is `config.INPUT_ERRORS` (InputError and its kin), which the CLI's one error path prints as a
plain line; a DeviceError is not bad input: the error path prints it with its type name (exit 2).
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import INPUT_ERRORS, ConfigError

_DEVICE_MARKS = ("CUDA error", "CUDA out of memory", "out of memory", "CUBLAS_STATUS", "cuDNN error", "device-side assert", "HIP error")


def check_frame_count(family: str, k: int, num_frames: int) -> None:
    """A video VAE with temporal stride k takes k*j + 1 frames; the error names the two nearest counts."""
    if num_frames < 1 or (num_frames - 1) % k:
        lo = max(1, (num_frames - 1) // k * k + 1)
        raise ValueError(f"{family} needs {k}k+1 frames, got {num_frames}: try {lo} or {lo + k}")


class DeviceError(RuntimeError):
    """The device failed (out of memory, a CUDA error): the run stops, no per-sample record is written."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' (or None): cuda when there is one, else cpu; an unknown name is a ConfigError."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {device!r} ({e})") from None


def error_kind(e: BaseException) -> str:
    """'device', 'input' or 'model'."""
    if isinstance(e, (DeviceError, torch.OutOfMemoryError)) or (isinstance(e, RuntimeError) and any(m in str(e) for m in _DEVICE_MARKS)):
        return "device"
    if isinstance(e, INPUT_ERRORS):
        return "input"
    return "model"


def device_error(e: BaseException, denoiser: Any = None, latent_shape: Any = None, batch: int = 1) -> DeviceError:
    """A DeviceError for `e`, with the batch's estimated need when the denoiser can estimate it."""
    if isinstance(e, DeviceError):
        return e
    msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else repr(e)}"
    estimate = getattr(denoiser, "memory_estimate", None)
    if estimate is not None and latent_shape is not None:
        need = estimate(latent_shape, batch)
        msg += (f"; this batch of {batch} needs about {need['total'] / 2**30:.1f} GiB (weights {need['weights'] / 2**30:.1f}"
                f" + activations {need['activations'] / 2**30:.1f} + latents {need['latents'] / 2**30:.2f} GiB)")
    dev = getattr(denoiser, "device", None)
    if dev is not None and getattr(dev, "type", "") == "cuda" and torch.cuda.is_available():
        msg += f" on {torch.cuda.get_device_name(dev)} with {torch.cuda.get_device_properties(dev).total_memory / 2**30:.0f} GiB"
    return DeviceError(msg + ": use a smaller --batch, fewer --frames / --px, or offload=model (wan:DIR?offload=model)")


def raise_if_device(e: BaseException, denoiser: Any = None, latent_shape: Any = None, batch: int = 1) -> None:
    """Re-raise `e` as a DeviceError (stopping the run) when the device failed; return otherwise."""
    if error_kind(e) == "device":
        raise device_error(e, denoiser, latent_shape, batch) from e
