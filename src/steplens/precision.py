"""Which numeric precision the network runs in: what the hardware offers, what was asked, what a run gets.

One place decides. `choose("auto" | "fp32" | "bf16", device)` reads the hardware's bf16 support
(`detect`: CPU flags from /proc/cpuinfo, or CUDA) and returns a frozen `PrecisionChoice` that the
CLI prints and every run records. Denoisers apply it (`den.to_precision(choice.precision)`): the
network's weights are cast once and its inputs per call; the sampler state (latents, sigmas, x0_hat)
stays float32 and the network's output is upcast, so only the transformer runs in bf16.

`auto` picks bf16 on CUDA and on CPUs with bf16 *matrix units* (AMX, `amx_bf16`). A CPU with only
AVX512-BF16 (`avx512_bf16`, dot-product instructions on the vector units) is recorded but stays
fp32 under `auto`: on the machine this was written on (2 vCPUs, no AMX) bf16 matmuls ran at 0.6x the
fp32 rate and the reference model sampled slower in bf16 (benchmarks/bench_sampling.py prints both).
`--precision bf16` still forces it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError

CHOICES = ("auto", "fp32", "bf16")
CPU_MATRIX_FLAGS = ("amx_bf16",)  # bf16 matrix units: `auto` picks bf16
CPU_VECTOR_FLAGS = ("avx512_bf16",)  # bf16 dot products on the vector units: recorded, `auto` stays fp32
PROC_CPUINFO = Path("/proc/cpuinfo")


class Precision(StrEnum):
    """The network's compute precision."""

    FP32 = "fp32"
    BF16 = "bf16"

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self is Precision.BF16 else torch.float32

    @staticmethod
    def of(value: str | Precision) -> Precision:
        try:
            return Precision(value)
        except ValueError:
            raise ConfigError(f"precision must be one of fp32, bf16, got {value!r}") from None


@dataclass(frozen=True)
class Capability:
    """What the device offers for bf16: the CPU's bf16 flags, or CUDA's bf16 support."""

    device: str  # "cpu" or "cuda"
    cpu_flags: tuple[str, ...] = ()  # the bf16 flags the CPU reports (of CPU_MATRIX_FLAGS + CPU_VECTOR_FLAGS)
    cuda_bf16: bool = False

    @property
    def bf16_matrix_units(self) -> bool:
        """Whether bf16 matmuls run on dedicated units (AMX, CUDA tensor cores): what `auto` asks for."""
        if self.device == "cuda":
            return self.cuda_bf16
        return any(f in self.cpu_flags for f in CPU_MATRIX_FLAGS)

    def describe(self) -> str:
        if self.device == "cuda":
            return f"cuda bf16 {'supported' if self.cuda_bf16 else 'not supported'}"
        flags = ", ".join(self.cpu_flags) or "none"
        return f"cpu bf16 flags: {flags} ({'matrix units' if self.bf16_matrix_units else 'no bf16 matrix units'})"

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "cpu_flags": list(self.cpu_flags), "cuda_bf16": self.cuda_bf16,
                "bf16_matrix_units": self.bf16_matrix_units}


def cpu_flags(cpuinfo: str | Path | None = None) -> frozenset[str]:
    """The CPU's feature flags from a /proc/cpuinfo-format file (default PROC_CPUINFO; empty if unreadable)."""
    try:
        text = Path(cpuinfo or PROC_CPUINFO).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def detect(device: str | torch.device = "cpu", *, cpuinfo: str | Path | None = None) -> Capability:
    """bf16 capability of `device`: CPU flags (from `cpuinfo`), or CUDA's bf16 support."""
    kind = torch.device(device).type
    if kind == "cuda":
        return Capability("cuda", cuda_bf16=bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()))
    flags = cpu_flags(cpuinfo)
    return Capability(kind, tuple(f for f in CPU_MATRIX_FLAGS + CPU_VECTOR_FLAGS if f in flags))


@dataclass(frozen=True)
class PrecisionChoice:
    """What a run asked for, what it got, and the hardware that decided it."""

    requested: str
    precision: Precision
    capability: Capability

    def describe(self) -> str:
        return f"precision {self.precision.value} (asked {self.requested}; {self.capability.describe()})"

    def to_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "precision": self.precision.value, "capability": self.capability.to_dict()}


def choose(requested: str = "auto", device: str | torch.device = "cpu", *, cpuinfo: str | Path | None = None) -> PrecisionChoice:
    """Resolve `auto`/`fp32`/`bf16` for `device`; `auto` is bf16 where bf16 matrix units exist, else fp32."""
    if requested not in CHOICES:
        raise ConfigError(f"--precision must be one of {', '.join(CHOICES)}, got {requested!r}")
    cap = detect(device, cpuinfo=cpuinfo)
    if requested == "auto":
        return PrecisionChoice(requested, Precision.BF16 if cap.bf16_matrix_units else Precision.FP32, cap)
    return PrecisionChoice(requested, Precision(requested), cap)


def precision_of(denoiser: Any) -> str:
    """The precision a denoiser's network runs in ("fp32" for one without `to_precision`): what workers and run configs record."""
    return str(getattr(denoiser, "precision", Precision.FP32))
