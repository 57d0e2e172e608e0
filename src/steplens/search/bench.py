"""Early screening on VBVR-Bench folders: `search run --data` (one output root per method, official layout).

There is no block grid and no task rule on an official sample, so only the model-intrinsic early
scores that read pixels apply: `agreement` (how close a seed's decoded x0_hat after s steps is to
the other seeds') and `stability` (how little it moved over the last step). Each screen runs k seeds
for s steps as one batch, keeps the m best and finishes only those (`run.screen_latents`, the
method as deployed); `final` picks one survivor: `early` (best early score) or `agreement` (the
finished video closest to the other survivors'). Its NFE is k * nfe(steps < s) + m * nfe(steps >= s),
the same accounting as `search run` on steplens' tasks, so at one budget every method spends about
the same compute; classifier-free guidance multiplies every method's NFE by the same factor.

Every screen also runs over the same seeds cold-started (their noise times COLD.noise_scale, the start
of the single_cold control): `early_screen_cold_*`. The baselines beside the screens are
`ensemble.Method`s: single (seed 1), the paper's ensemble and its cold-start control, and best-of-B
by agreement at the same budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import ConfigError
from ..ensemble import EnsembleConfig, Method, cold_single
from ..runner import SamplingConfig
from .methods import COLD, PAPER_ENSEMBLE, check_budget, fit_m, screen_name, screen_nfe
from .scores import get_score

PIXEL_SCORES = ("agreement", "stability")  # the early scores that need neither a palette nor task rules
BENCH_FINALS = ("early", "agreement")
MAX_SIDE = 64  # early plans are compared on frames mean-pooled to at most this many pixels a side


@dataclass(frozen=True)
class BenchScreen:
    """Early screening of k seeds after s steps, m survivors finished, one picked by `final` (see module doc)."""

    name: str
    k: int
    s: int
    m: int
    score: str
    final: str = "early"
    noise_scale: float = 1.0  # < 1: the seeds cold-started (COLD.noise_scale: the single_cold control's start)

    def __post_init__(self) -> None:
        if self.score not in PIXEL_SCORES:
            raise ConfigError(f"on VBVR-Bench folders the early score must be one of {', '.join(PIXEL_SCORES)}, got {self.score!r} "
                              "(the others read the reference model's palette or a task's rules)")
        if self.final not in BENCH_FINALS:
            raise ConfigError(f"final must be one of {', '.join(BENCH_FINALS)}, got {self.final!r}")
        if self.s < 1 or not 1 <= self.m <= self.k:
            raise ConfigError(f"need s >= 1 and 1 <= m <= k, got k={self.k}, s={self.s}, m={self.m}")

    def nfe(self, sampling: SamplingConfig) -> int:
        return screen_nfe(self.k, self.s, self.m, sampling)

    def generator(self, sampling: SamplingConfig) -> Any:
        """A vbvr.run.SampleGenerator: seeds seed..seed+k-1, screened, finished, one video kept."""
        import torch

        from ..ensemble import agreement_distances
        from ..sampling import seeded_noise
        from .run import screen_latents

        if self.s >= sampling.steps:
            raise ConfigError(f"method {self.name} screens after {self.s} steps, the schedule has {sampling.steps}")
        early = get_score(self.score)
        nfe = self.nfe(sampling)

        def generate(den: Any, inp: Any) -> tuple[np.ndarray, dict[str, Any]]:
            seeds = [inp.seed + j for j in range(self.k)]
            x = seeded_noise(inp.latent_shape, seeds, device=den.device) * self.noise_scale
            with torch.no_grad():
                lat, kept = screen_latents(den, x, sampling.sigmas(den).to(den.device), inp.cond.repeat(self.k), self.k, self.s, self.m,
                                           early, lambda z: pooled(den.decode(z.float())), sampler=sampling.sampler)
            kept = kept[0]  # one instance: the survivors' seed indices, best early score first
            if self.final == "early" or len(kept) == 1:
                j, video = 0, den.decode(lat[:1].float())[0]
            else:
                videos = den.decode(lat.float())
                j = int(np.argmin(agreement_distances(pooled(videos))))
                video = videos[j]
            return video, {"seeds": seeds, "kept": [seeds[i] for i in kept], "chosen": seeds[kept[j]], "nfe": nfe,
                           "steps": sampling.steps}

        return generate


def pooled(videos: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """(B, T, H, W, 3) uint8 -> the same mean-pooled by an integer factor to at most max_side pixels a side (uint8)."""
    b, t, h, w, c = videos.shape
    f = max(1, -(-max(h, w) // max_side))
    hh, ww = h // f * f, w // f * f
    v = videos[:, :, :hh, :ww].reshape(b, t, hh // f, f, ww // f, f, c).astype(np.float32).mean(axis=(3, 5))
    return v.round().astype(np.uint8)


def bench_search_methods(budget: float, k: int, screen_step: int, sampling: SamplingConfig) -> list[Any]:
    """single, the paper's ensemble and its cold start, best-of-B by agreement, and the pixel early screens at `budget`.

    B = the budget in single runs (rounded down); each screen keeps as many survivors as the budget leaves room for.
    """
    check_budget(budget, screen_step, sampling)
    ens = PAPER_ENSEMBLE
    ens.check(sampling.steps)
    methods: list[Any] = [Method("single"), cold_single(ens.k), Method("ensemble", ens)]
    b = int(budget)
    if b > 1:
        methods.append(Method(f"best_of_{b}_agreement", EnsembleConfig(k=b, window=(0, 0), after="all", select="agreement")))
    m = fit_m(k, screen_step, budget * screen_nfe(1, 0, 1, sampling), sampling)
    if m < 1:
        raise ConfigError(f"screening {k} seeds for {screen_step} steps does not fit a budget of {budget:g} single runs; "
                          "lower --k or --screen-step, or raise --budget")
    for cold in (False, True):
        for score in PIXEL_SCORES:
            for final in BENCH_FINALS if m > 1 else ("early",):
                methods.append(BenchScreen(screen_name(score, k, screen_step, m, final, cold), k, screen_step, m, score, final,
                                           COLD.noise_scale if cold else 1.0))
    return methods


__all__ = ["BENCH_FINALS", "PIXEL_SCORES", "BenchScreen", "bench_search_methods", "pooled"]
