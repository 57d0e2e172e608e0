"""`steplens demo`: every analysis of the paper on the shipped reference model, with a verdict per finding.

Stages write ordinary run folders under DIR (cos, behaviour, perturb, cka, layers, ensemble), each
reproducible alone by the command in DIR/summary.json["commands"]. DIR/summary.json also holds the
demo config, each stage's summary as the stage wrote it, a few numbers the demo derives from them
(`derived`), and `findings`: one verdict per claim of the paper (steplens.findings). DIR/report.html
opens with those findings.

The default size is where the shipped model reasons: 6x6 mazes, solved ~80% of the time by one seed
(5x5 is solved 95% of the time: nothing left to prune or correct). Each stage's sample size is a
field of DemoConfig: at least findings.MIN_N (24) wherever a card bears a verdict, 48 for the noise,
information-flow, layer and ensemble cards; a card its n does not decide prints the n it needs.
Stages share compute: the Chain-of-Steps trace feeds the behaviour stage and the early-commitment
card, perturbations at a step branch from the clean run's cached latents, and CKA is read off the
perturb stage's runs (same instances and injections); DemoConfig(share=False) computes each stage alone
(benchmarks/bench_demo.py --before times both side by side). The instances are held out by content
(`runner.held_out_instances` with the model's seen-set), reported as DIR/summary.json["held_out"].
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import ConfigError, atomic_write_text, read_jsonl, write_json
from .findings import MIN_N
from .interventions import MODES
from .runner import SamplingConfig

QUICK_BANNER = ("Quick run: a few samples of small mazes, to check that every stage runs. Its verdicts are not "
                "meaningful at this size; run `steplens demo` for them.")


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs: one maze size, and a sample size per stage (in held-out instances)."""

    model: str = "maze"
    size: int = 6  # ~80% single-seed solve rate on the shipped model: it must reason (README)
    steps: int = 20
    seed: int = 40_000  # first held-out instance; every stage uses the same instances from here
    # sample sizes: no card bears a verdict below findings.MIN_N (24) instances; the noise, information-flow, layer and
    # ensemble cards run at 48. A card its n does not decide prints the n its measured spread needs.
    n_cos: int = 56  # traced once, shared by Chain-of-Steps and behaviours; early-minus-late excludes 0 from ~40 (heavy-tailed)
    views: int = 4  # samples drawn as strips, GIFs and in the step viewer
    n_perturb: int = 48
    n_cka: int = 48  # = n_perturb with cka_mode among perturb_modes: read off the perturb stage's runs (no model runs of its own)
    every: int = 5  # perturb and cka inject at every k-th step
    perturb_modes: str = "replace,renoise,destroy"  # the paper's wording, the level-matched control, SNR-matched damage (d=1)
    cka_mode: str = "renoise"  # fresh noise at the step's level, the clean estimate kept: unlike a late unit-noise replacement
    n_layers: int = 48  # each sample costs 2 + 2 x depth runs
    n_ensemble: int = 48  # x3 methods; the ensemble's gain needs n in the hundreds to decide (README): inconclusive here
    quick: bool = False
    precision: str = "fp32"  # resolved (steplens.precision.choose), not "auto"
    min_n: int = MIN_N  # the config check's floor; bench_demo lowers it to time reduced sizes (verdicts still need MIN_N)
    share: bool = True  # False: each stage computes alone (its own traces, CKA its own runs); bench_demo --before times it

    def __post_init__(self) -> None:
        if min(self.n_cos, self.n_perturb, self.n_cka, self.n_layers, self.n_ensemble) < 2 or self.steps < 4:
            raise ConfigError("the demo needs n >= 2 in every stage and steps >= 4")
        few = {k: v for k, v in self.stage_ns().items() if v < self.min_n}
        if few and not self.quick:
            raise ConfigError(f"{', '.join(f'{k}={v}' for k, v in few.items())}: below {self.min_n} instances no card bears a verdict "
                              "(findings.MIN_N); raise them, or run the quick demo to check that every stage runs")
        if self.n_layers % _batch(self.n_layers) == 1:
            raise ConfigError(f"n_layers={self.n_layers} leaves a batch of one; the layer probe patches from another sample of the batch")
        if not 1 <= self.every < self.steps:
            raise ConfigError(f"every must lie in [1, steps), got {self.every}")
        for name, modes in (("perturb_modes", self.perturb_modes), ("cka_mode", self.cka_mode)):
            if not modes or any(m.strip() not in MODES for m in modes.split(",")):
                raise ConfigError(f"{name} must be one or more of {', '.join(MODES)} (comma-separated), got {modes!r}")

    def stage_ns(self) -> dict[str, int]:
        """Each verdict-bearing stage's n (behaviours share the Chain-of-Steps trace)."""
        return {"n_cos": self.n_cos, "n_perturb": self.n_perturb, "n_cka": self.n_cka, "n_layers": self.n_layers,
                "n_ensemble": self.n_ensemble}

    @property
    def cka_shared(self) -> bool:
        """CKA is read off the perturb stage's runs: same instances and injection steps, its mode among perturb's."""
        return self.n_cka == self.n_perturb and all(m.strip() in self.perturb_modes.split(",") for m in self.cka_mode.split(","))

    @staticmethod
    def make(model: str = "maze", quick: bool = False, **kw: Any) -> DemoConfig:
        """The default sizes, or the sub-minute `--quick` ones (every stage runs; verdicts mean nothing)."""
        if quick:
            small = dict(size=4, steps=8, n_cos=4, views=2, n_perturb=3, n_cka=3, every=2, n_layers=2, n_ensemble=6)
            return DemoConfig(model=model, quick=True, **(small | kw))
        return DemoConfig(model=model, **kw)


def stage_commands(cfg: DemoConfig) -> dict[str, str]:
    """The command that reproduces each stage alone (same instances, noises and sizes)."""
    def probe(name: str, n: int, *extra: str) -> str:
        args = ["steplens", "probe", name, "--model", cfg.model, "--size", str(cfg.size), "--n", str(n), "--seed", str(cfg.seed),
                "--steps", str(cfg.steps), "--batch", str(_batch(n)), *extra, "--out", "RUN"]
        return " ".join(shlex.quote(a) for a in args)

    return {
        "cos": probe("cos", cfg.n_cos, "--views", str(cfg.views)),
        "behaviour": probe("behaviour", cfg.n_cos),
        "perturb": probe("perturb", cfg.n_perturb, "--every", str(cfg.every), "--mode", cfg.perturb_modes),
        "cka": probe("cka", cfg.n_cka, "--every", str(cfg.every), "--mode", cfg.cka_mode),
        "layers": probe("layers", cfg.n_layers),
        "ensemble": " ".join(["steplens ensemble run --model", shlex.quote(cfg.model), f"--size {cfg.size} --k 3 --window 0:2",
                              f"--rule mean_xt --after single --n {cfg.n_ensemble} --seed {cfg.seed} --steps {cfg.steps} --out RUN"]),
    }


def _batch(n: int) -> int:
    return min(n, 16)


# side by side with jobs=2, balanced by per-stage seconds (bench_demo --before, scaled by n): layers + ensemble about
# 2300 s of one thread on a loaded 2-core machine, Chain-of-Steps + perturb (CKA read off it) about 2260 s
NO_BLOCKS = "not measurable on this model: it has no transformer blocks"  # the oracle controls (steplens.models.controls)
GROUPS = (("layers", "ensemble"), ("cos", "perturb", "cka"))
ORDER = ("cos", "behaviour", "perturb", "cka", "layers", "ensemble")  # the stages' order in summary.json


def run_demo(out: str | Path, cfg: DemoConfig, *, progress: bool = True, report: bool = True, device: str = "cpu",
             jobs: int | None = None) -> dict[str, Any]:
    """Run every stage into `out`; returns the summary (also DIR/summary.json), findings included.

    jobs=2 (the default on a CPU with two or more cores) runs the stage groups `GROUPS` in two processes of one
    torch thread each: small batches keep one thread busy better than two share one batch. Results match a
    sequential run up to the rounding of a different thread count.
    """
    from .findings import evaluate

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if jobs is None:
        jobs = 2 if device == "cpu" and (os.cpu_count() or 1) >= 2 else 1
    if jobs not in (1, 2):
        raise ConfigError(f"jobs must be 1 or 2, got {jobs}")
    summary: dict[str, Any] = {"config": asdict(cfg), "commands": stage_commands(cfg), "held_out": demo_instances(cfg, device).to_dict()}
    if cfg.quick:
        summary["banner"] = QUICK_BANNER
        if progress:
            print(f"[demo] {QUICK_BANNER}", flush=True)
    t0 = time.perf_counter()
    if jobs == 1:
        results, timings = run_stages(cfg, str(out), GROUPS[0] + GROUPS[1], progress, device)
    else:
        results, timings = _run_two(cfg, out, progress, device)
    summary.update({k: results[k] for k in ORDER})
    summary["derived"] = derived(summary, out)
    summary["findings"] = evaluate(summary)
    summary["timings_s"] = {k: timings[k] for k in ("sample", *ORDER) if k in timings}
    summary["stage_s"] = timings  # every timed step, the cards and layer thirds included (benchmarks/bench_demo.py)
    summary["jobs"] = jobs
    summary["total_s"] = round(time.perf_counter() - t0, 2)  # wall time (stage timings overlap with jobs=2)
    _write(out, cfg, summary)
    if report:
        from .report.html import build_report

        t = time.perf_counter()
        build_report(out)
        summary["timings_s"]["report"] = round(time.perf_counter() - t, 2)
        write_json(out / "summary.json", summary)
    return summary


def demo_instances(cfg: DemoConfig, device: str = "cpu") -> Any:
    """The demo's instances held out by content (`runner.HeldOut`): the first max(n) the model's seen-set lacks, from cfg.seed.

    Every stage (and every null run beside it) draws through the same walk with the model's seen-set, so a stage of n
    instances gets the first n of this list: the stages and their nulls share instances. The quick demo's 4x4 mazes are
    all memorisable (README): it allows seen instances and reports how many it used.
    """
    from .evaluate import evaluation_instances
    from .models.registry import load

    n = max(cfg.stage_ns().values())
    return evaluation_instances(load(cfg.model, device=device), cfg.model, "maze", cfg.size, cfg.seed, n, allow_seen=cfg.quick)


def _run_two(cfg: DemoConfig, out: Path, progress: bool, device: str) -> tuple[dict[str, Any], dict[str, float]]:
    """GROUPS[1] in a spawned process (one thread, no bars), GROUPS[0] here with one thread; merged."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    import torch

    if progress:
        print(f"[demo] {', '.join(GROUPS[1])} run in a second process", flush=True)
    threads = torch.get_num_threads()
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        other = pool.submit(run_stages, cfg, str(out), GROUPS[1], False, device, 1)
        torch.set_num_threads(1)
        try:
            here, t_here = run_stages(cfg, str(out), GROUPS[0], progress, device)
        finally:
            torch.set_num_threads(threads)
        there, t_there = other.result()
    if progress:
        print(f"[demo] {', '.join(GROUPS[1])} done (" + ", ".join(f"{k} {v:.0f} s" for k, v in t_there.items()) + ")", flush=True)
    return here | there, t_here | t_there


def run_stages(cfg: DemoConfig, out: str, names: tuple[str, ...], progress: bool, device: str,
               threads: int | None = None) -> tuple[dict[str, Any], dict[str, float]]:
    """Run the named stages ("cos" also runs the sample and behaviour stages on its trace); (summaries, seconds)."""
    from .ensemble import EnsembleConfig, Method, cold_single, compare
    from .models.registry import load
    from .probes.behaviour import run_behaviour
    from .probes.common import ProbeConfig, ProbeRun
    from .probes.cos import run_cos, trace_x0
    from .probes.depth import run_thirds
    from .probes.layers import run_layers
    from .probes.perturb import cka_from_perturb, default_cka_layers, run_cka, run_perturb

    if threads:
        import torch

        torch.set_num_threads(threads)
    root = Path(out)
    den = load(cfg.model, device=device).to_precision(cfg.precision)
    sampling = SamplingConfig(steps=cfg.steps)
    timings: dict[str, float] = {}
    res: dict[str, Any] = {}

    def probe(n: int) -> ProbeConfig:
        return ProbeConfig(model=cfg.model, size=cfg.size, n=n, seed=cfg.seed, sampling=sampling, batch=_batch(n), precision=cfg.precision,
                           allow_seen=cfg.quick)

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        if progress:
            print(f"[demo] {name} ...", flush=True)
        r = fn()
        timings[name] = round(time.perf_counter() - t, 2)
        return r

    for name in names:
        if name == "cos" and not cfg.share:  # each consumer traces the same instances alone: what the bank saves
            cos_cfg = probe(cfg.n_cos)
            res["cos"] = stage("cos", lambda: run_cos(den, cos_cfg, str(root / "cos"), n_views=min(cfg.views, cfg.n_cos), progress=progress))
            res["behaviour"] = stage("behaviour", lambda: run_behaviour(den, cos_cfg, str(root / "behaviour"), progress=progress))
            res["cos"]["cards"] = stage("cards", lambda: null_cards(den, cfg, cos_cfg, trace_x0(den, cos_cfg, progress=False)))
        elif name == "cos":
            cos_cfg = probe(cfg.n_cos)
            # sampled once into the cos folder (resumable), shared by the Chain-of-Steps and behaviour stages
            traced = stage("sample", lambda: trace_x0(den, cos_cfg, progress, folder=ProbeRun(root / "cos", "probe-cos", cos_cfg).folder))
            res["cos"] = stage("cos", lambda: run_cos(den, cos_cfg, str(root / "cos"), n_views=min(cfg.views, cfg.n_cos), progress=progress,
                                                      traced=traced))
            res["behaviour"] = stage("behaviour", lambda: run_behaviour(den, cos_cfg, str(root / "behaviour"), progress=progress,
                                                                        traced=traced))
            res["cos"]["cards"] = stage("cards", lambda: null_cards(den, cfg, cos_cfg, traced))
            del traced
        elif name == "perturb":
            shared = cfg.share and cfg.cka_shared and "cka" in names and bool(den.hook_blocks())
            res["perturb"] = stage("perturb", lambda: run_perturb(den, probe(cfg.n_perturb), str(root / "perturb"), every=cfg.every,
                                                                  mode=cfg.perturb_modes, progress=progress,
                                                                  cka_layers=default_cka_layers(den) if shared else ()))
            p = null_stage(cfg, den, res["perturb"], lambda nd: run_perturb(nd, probe(cfg.n_perturb), str(root / "nulls" / "perturb"),
                                                                            every=cfg.every, mode=cfg.perturb_modes, progress=False))
            res["perturb"]["null"] = {"model": p["model"], "by_mode": {m: {k: v for k, v in d.items() if k.startswith("step_minus_frame_drop")}
                                                                       for m, d in p["summary"].get("by_mode", {}).items()}}
        elif name == "cka" and not den.hook_blocks():  # CKA compares block activations beside x0_hat
            res["cka"] = {"n": 0, "applicable": NO_BLOCKS}
        elif name == "cka" and cfg.share and cfg.cka_shared and "perturb" in res:
            res["cka"] = stage("cka", lambda: cka_from_perturb(res["perturb"], root / "perturb", root / "cka", probe(cfg.n_cka),
                                                               every=cfg.every, mode=cfg.cka_mode, layers=default_cka_layers(den)))
        elif name == "cka":
            res["cka"] = stage("cka", lambda: run_cka(den, probe(cfg.n_cka), str(root / "cka"), every=cfg.every, mode=cfg.cka_mode,
                                                      progress=progress))
        elif name == "layers" and not den.hook_blocks():  # an oracle control (steplens.models.controls): no layers to probe
            res["layers"] = {"n": 0, "applicable": NO_BLOCKS, "thirds": {"applicable": NO_BLOCKS}}
        elif name == "layers":
            res["layers"] = stage("layers", lambda: run_layers(den, probe(cfg.n_layers), str(root / "layers"), progress=progress))
            res["layers"]["thirds"] = stage("layer thirds", lambda: run_thirds(den, probe(cfg.n_layers), progress=progress))
        elif name == "ensemble":
            methods = [Method("single"), cold_single(3), Method("ensemble", EnsembleConfig(k=3, window=(0, 2), rule="mean_xt", after="single"))]
            res["ensemble"] = stage("ensemble", lambda: compare(den, "maze", cfg.size, cfg.n_ensemble, cfg.seed, sampling, methods,
                                                                root / "ensemble", progress=progress, model=cfg.model,
                                                                allow_seen=cfg.quick))
            p = null_stage(cfg, den, res["ensemble"], lambda nd: compare(nd, "maze", cfg.size, cfg.n_ensemble, cfg.seed, sampling, methods,
                                                                         root / "nulls" / "ensemble", progress=False,
                                                                         model=cfg.model, allow_seen=cfg.quick))
            res["ensemble"]["null"] = {"model": p["model"],
                                       "diff_vs_single": p["summary"]["methods"]["ensemble"]["diff_vs_single"]["solve_rate"]}
        else:
            raise ValueError(f"unknown demo stage {name!r}")
    return res, timings


def null_stage(cfg: DemoConfig, den: Any, own: dict[str, Any], run: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """A stage's summary on the null (`null:shrink`, under DIR/nulls/): the model's own when the model is the null."""
    from .models.registry import load
    from .probes.candidates import NULL_MODEL

    return {"model": NULL_MODEL, "summary": own if cfg.model == NULL_MODEL else run(load(NULL_MODEL))}


def null_cards(den: Any, cfg: DemoConfig, cos_cfg: Any, traced: Any) -> dict[str, Any]:
    """The cards' measures on the model's trace and on the null's (`null:shrink`, same instances and noise seeds)."""
    from .models.registry import load
    from .probes.candidates import NULL_MODEL, card_measures
    from .probes.cos import trace_x0
    from .tasks import get_task

    if cfg.model == NULL_MODEL:
        null_steps = traced.steps
    else:
        null = trace_x0(load(NULL_MODEL), cos_cfg, progress=False)
        by_seed = {i.seed: s for i, s in zip(null.insts, null.steps)}
        null_steps = np.stack([by_seed[i.seed] for i in traced.insts])
    return card_measures(get_task(cos_cfg.task), traced.insts, traced.steps, null_steps)


def derived(summary: dict[str, Any], out: Path) -> dict[str, Any]:
    """Numbers the findings need that no stage reports as such, computed from the stages' outputs."""
    from .stats import paired_diff, rate_record, wilson

    d: dict[str, Any] = {}
    cos = summary.get("cos", {})
    hist, n_steps = cos.get("commit_step", {}).get("histogram"), cos.get("n_steps")
    if hist and n_steps:
        quarter = max(1, n_steps // 4)  # the same first quarter as the early-minus-late window
        k, n = int(sum(hist[:quarter])), int(sum(hist))
        d["early_commit"] = {"rate": k / n, "ci95": list(wilson(k, n)), "n": n, "by_step": quarter - 1, "stats": rate_record(k, n)}
    layers = summary.get("layers", {})
    # the most important block and the flip layer: chosen on a calibration half, reported on the held-out half
    if "skip_drop_held_out" in layers:
        d["skip_drop_top"] = layers["skip_drop_held_out"]
    elif layers.get("most_important_layers"):  # a layers run from before the held-out split: chosen in-sample
        top = layers["most_important_layers"][0]
        d["skip_drop_top"] = {"layer": top, **layers["skip_drop"][str(top)], "n": layers.get("n"), "selection": "chosen in-sample"}
    patching = layers.get("patching", {})
    if "flip_held_out" in patching:
        d["patch_flip_max"] = patching["flip_held_out"]
    elif per_layer := patching.get("per_layer", {}):
        top = max(per_layer, key=lambda l: per_layer[l]["flip"]["rate"])
        d["patch_flip_max"] = {"layer": int(top), **per_layer[top]["flip"], "n": layers.get("n"), "selection": "chosen in-sample"}
    results = out / "ensemble" / "results.jsonl"
    if results.is_file():
        rows = read_jsonl(results)
        by = {m: {r["seed"]: float(r["success"]) for r in rows if r["method"] == m} for m in ("ensemble", "single_cold")}
        seeds = sorted(set(by["ensemble"]) & set(by["single_cold"]))
        if seeds:
            diff, lo, hi, rec = paired_diff([by["single_cold"][s] for s in seeds], [by["ensemble"][s] for s in seeds], rates=True)
            d["ensemble_minus_cold"] = {"diff": diff, "ci95": [lo, hi], "n": len(seeds), "stats": rec}
    return d


def findings_lines(findings: list[dict[str, Any]]) -> list[str]:
    """One line per finding: title, verdict, value [CI], n."""
    from .findings import format_value

    return [f"{f['title']}: {f['verdict']}" + (f" ({format_value(f)})" if f["value"] is not None else "")
            + "".join(f"; {r['label']}: {format_value({**r, 'unit': f['unit']})} ({r['verdict']})" for r in f.get("requires", [])
                      if r["value"] is not None)
            + (f"; needs n >= {f['needed_n']}" if f.get("needed_n") else "") for f in findings]


def _write(out: Path, cfg: DemoConfig, summary: dict[str, Any]) -> None:
    write_json(out / "summary.json", summary)
    write_json(out / "figures.json", [])  # the report draws each finding's figure in its card
    write_json(out / "manifest.json", {"kind": "demo", "config": summary["config"]})
    lines = [f"steplens demo: model {cfg.model}, held-out {cfg.size}x{cfg.size} mazes, {cfg.steps} Euler steps "
             f"({summary['total_s']:.0f} s)."]
    if "banner" in summary:
        lines.append(summary["banner"])
    lines += ["", "Findings:", *findings_lines(summary["findings"])]
    for name in summary["commands"]:
        txt = out / name / "summary.txt"
        if txt.exists():
            lines += ["", f"[{name}] {summary['commands'][name]}", *txt.read_text().strip().splitlines()]
    atomic_write_text(out / "summary.txt", "\n".join(lines) + "\n")
