"""`steplens demo`: every analysis of the paper on the shipped reference model, in a few minutes on a CPU.

Stages write ordinary run folders under DIR (cos, behaviour, perturb, cka, layers, ensemble); the
demo adds DIR/summary.json (every headline number), DIR/figures.json and DIR/report.html.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError, atomic_write_text, write_json
from .runner import SamplingConfig


@dataclass(frozen=True)
class DemoConfig:
    model: str = "maze"
    size: int = 5
    n: int = 12
    steps: int = 20
    seed: int = 40_000
    ensemble_n: int = 24
    quick: bool = False
    precision: str = "fp32"  # resolved (steplens.precision.choose), not "auto"

    def __post_init__(self) -> None:
        if self.n < 2 or self.steps < 4:
            raise ConfigError("the demo needs n >= 2 and steps >= 4")

    @staticmethod
    def make(model: str = "maze", quick: bool = False, **kw: Any) -> DemoConfig:
        """The default sizes, or the sub-minute `--quick` ones."""
        if quick:
            return DemoConfig(model=model, size=4, n=4, steps=8, ensemble_n=8, quick=True, **kw)
        return DemoConfig(model=model, **kw)


def run_demo(out: str | Path, cfg: DemoConfig, *, progress: bool = True, report: bool = True) -> dict[str, Any]:
    """Run every stage into `out`; returns the headline summary (also DIR/summary.json)."""
    from .ensemble import EnsembleConfig, Method, cold_single, compare
    from .models.registry import load
    from .probes.behaviour import run_behaviour
    from .probes.common import ProbeConfig, ProbeRun
    from .probes.cos import run_cos, trace_x0

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    den = load(cfg.model).to_precision(cfg.precision)
    sampling = SamplingConfig(steps=cfg.steps)
    probe = ProbeConfig(model=cfg.model, size=cfg.size, n=cfg.n, seed=cfg.seed, sampling=sampling, batch=cfg.n, precision=cfg.precision)
    timings: dict[str, float] = {}
    headline: dict[str, Any] = {"config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}}

    def stage(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        t = time.perf_counter()
        if progress:
            print(f"[demo] {name} ...", flush=True)
        res = fn()
        timings[name] = round(time.perf_counter() - t, 2)
        return res

    # sampled once into the cos folder (resumable), shared by the Chain-of-Steps and behaviour stages
    traced = stage("sample", lambda: {"t": trace_x0(den, probe, progress, folder=ProbeRun(out / "cos", "probe-cos", probe).folder)})["t"]
    cos = stage("cos", lambda: run_cos(den, probe, str(out / "cos"), n_views=min(4, cfg.n), progress=progress, traced=traced))
    beh = stage("behaviour", lambda: run_behaviour(den, probe, str(out / "behaviour"), progress=progress, traced=traced))
    headline["cos"] = {k: cos.get(k) for k in ("solve_rate", "solve_rate_ci95", "commit_step", "multiple_candidates_early",
                                               "off_solution_mass_early", "off_solution_mass_late",
                                               "off_solution_mass_early_minus_late", "off_solution_mass_early_minus_late_ci95")}
    headline["behaviour"] = {k: beh.get(k) for k in ("self_correction", "corrected_rate", "markers_kept_all_steps",
                                                     "scene_settle_step_mean", "path_commit_step_mean", "perception_first_fraction")}
    for name, runner in _probe_stages():
        headline[name] = stage(name, lambda r=runner: r(den, probe, str(out / name), cfg, progress))

    ens_methods = [Method("single"), cold_single(3), Method("ensemble", EnsembleConfig(k=3, window=(0, 2), rule="mean_xt", after="single"))]
    ens = stage("ensemble", lambda: compare(den, "maze", cfg.size, cfg.ensemble_n, cfg.seed, sampling, ens_methods,
                                            out / "ensemble", progress=progress))
    headline["ensemble"] = ens["methods"]
    headline["timings_s"] = timings
    headline["total_s"] = round(sum(timings.values()), 2)
    write_json(out / "summary.json", headline)
    gallery = sorted((out / "cos").glob("strip_*.png"))
    write_json(out / "figures.json", [{"path": str(p.relative_to(out)), "title": "Chain-of-Steps",
                                       "caption": "The reference model's clean estimate at each denoising step (rows) for each frame (columns).",
                                       "command": f"steplens demo --out {out}"} for p in gallery[:1]])
    write_json(out / "manifest.json", {"kind": "demo", "config": headline["config"]})
    stages = ["cos", "behaviour", *[n for n, _ in _probe_stages()], "ensemble"]
    lines = [f"steplens demo: model {cfg.model}, {cfg.n} held-out {cfg.size}x{cfg.size} mazes, {cfg.steps} Euler steps "
             f"({headline['total_s']:.0f} s). Reproduce any stage with the command under its figures."]
    for name in stages:
        txt = out / name / "summary.txt"
        if txt.exists():
            lines += ["", f"[{name}]", *txt.read_text().strip().splitlines()]
    atomic_write_text(out / "summary.txt", "\n".join(lines) + "\n")
    if report:
        from .report.html import build_report

        stage("report", lambda: {"path": str(build_report(out))})
        headline["timings_s"] = timings
        write_json(out / "summary.json", headline)
    return headline


def _probe_stages() -> list[tuple[str, Callable[..., dict[str, Any]]]]:
    """Probe stages that plug in through the same ProbeConfig (perturbation, CKA, layers)."""
    from .probes import layers, perturb

    return [("perturb", perturb.demo_perturb), ("cka", perturb.demo_cka), ("layers", layers.demo_layers)]
