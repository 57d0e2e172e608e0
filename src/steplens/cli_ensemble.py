"""`steplens ensemble ...`: training-free latent trajectory ensembles (thin layer over steplens.ensemble)."""

from __future__ import annotations

import json
from typing import Any

import typer

from .cli_common import RunByDefault

ensemble_app = typer.Typer(cls=RunByDefault, no_args_is_help=True,
                           help="Merge K seeds' latents during early steps; compare with compute-matched baselines "
                                "(`ensemble --k 3 ...` means `ensemble run ...`).")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _window(s: str) -> tuple[int, int]:
    try:
        a, b = s.split(":")
        return int(a), int(b)
    except ValueError:
        raise _fail(f"window must be START:END steps (e.g. 0:2), got {s!r}") from None


def _csv(s: str) -> list[str]:
    return [v.strip() for v in s.split(",") if v.strip()]


def _sampling(sampler: str, steps: int, shift: float) -> Any:
    from .config import ConfigError
    from .runner import SamplingConfig

    try:
        return SamplingConfig(sampler=sampler, steps=steps, shift=shift)
    except (ConfigError, ValueError) as e:
        raise _fail(str(e)) from None


def _load(model: str) -> Any:
    from .models.registry import load

    try:
        return load(model)
    except Exception as e:  # noqa: BLE001 - one clear line, exit 2
        raise _fail(f"{type(e).__name__}: {e}") from None


@ensemble_app.command("run")
def run_cmd(
    out: str = typer.Option(..., "--out", help="Run folder (re-running resumes)."),
    model: str = typer.Option("maze", "--model", help="Shipped model name or path to an exported model."),
    task: str = typer.Option("maze", "--task"),
    size: int = typer.Option(5, "--size"),
    k: int = typer.Option(3, "--k", help="Seeds (trajectories) per instance."),
    window: str = typer.Option("0:2", "--window", help="Merge during steps START:END (end exclusive)."),
    rule: str = typer.Option("mean_xt", "--rule", help="mean_xt | mean_v | mean_x0_renoise."),
    norm_correct: bool = typer.Option(False, "--norm-correct", help="mean_xt: restore the std of the merged noise part."),
    after: str = typer.Option("all", "--after", help="all: continue K and select one; single: keep the first after the window."),
    select: str = typer.Option("first", "--select", help="first | agreement | vote | oracle (oracle needs ground truth)."),
    n: int = typer.Option(100, "--n", min=1, help="Held-out instances."),
    seed: int | None = typer.Option(None, "--seed", help="First held-out instance seed (default 30000); with --data: the noise seed (default 1)."),
    steps: int | None = typer.Option(None, "--steps", help="Default 20; with --data 50 (the paper's)."),
    shift: float | None = typer.Option(None, "--shift", help="Default 1.0; with --data 5.0 (the paper's)."),
    sampler: str = typer.Option("euler", "--sampler"),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also run the compute-matched baselines."),
    max_batch: int = typer.Option(64, "--max-batch", min=1, help="Trajectories per forward pass."),
    ray: str | None = typer.Option(None, "--ray", metavar="ADDRESS",
                                   help="Run on Ray: 'local' starts a local cluster; else a cluster address ('auto', 'ray://host:10001')."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="With --ray: most chunks in flight (default: the cluster's GPUs, else CPUs)."),
    data: str | None = typer.Option(None, "--data", help="An official VBVR-Bench root (GT/<split>/<task>/<i:05d>/): run a wan: model "
                                    "on it and write OUT/<method>/<split>/<task>/<i:05d>.mp4."),
    split: str = typer.Option("", "--split", help="With --data: comma-separated splits (default all)."),
    tasks: str = typer.Option("", "--tasks", help="With --data: comma-separated task folders (default all)."),
    preset: str = typer.Option("auto", "--preset", help="With --data: frames and pixel area (auto: from the model)."),
    frames: int = typer.Option(0, "--frames", help="With --data: frames (0: the preset's)."),
    height: int = typer.Option(0, "--height", help="With --data: height and width (0: the preset's area at the first frame's aspect)."),
    width: int = typer.Option(0, "--width"),
    prompt_embeds: str | None = typer.Option(None, "--prompt-embeds", help="With --data: precomputed prompt embeddings (.pt)."),
    lora_high: str | None = typer.Option(None, "--lora-high", help="With --data: LoRA of Wan2.2's high-noise expert."),
    lora_low: str | None = typer.Option(None, "--lora-low", help="With --data: LoRA of Wan2.2's low-noise expert."),
    scorer: str = typer.Option("steplens", "--scorer", help="With --data: steplens, vbvr-evalkit, or both comma-separated."),
    evalkit: str | None = typer.Option(None, "--evalkit", help="With --data: a VBVR-EvalKit checkout."),
    evalkit_entry: str = typer.Option("run_evaluation", "--evalkit-entry", help="run_evaluation (task score only) or evaluate (weighted mix)."),
) -> None:
    """Evaluate one ensemble setting (and its baselines) on the same instances; prints the JSON summary."""
    from .config import ConfigError
    from .ensemble import EnsembleConfig, Method, baselines as make_baselines, compare

    if data is not None:
        if ray is not None:
            raise _fail("--ray does not apply to --data runs (one process generates the benchmark's samples)")
        _bench_run(data, out, model, k, window, rule, norm_correct, after, select, seed, steps, shift, sampler, baselines, split, tasks,
                   preset, frames, height, width, prompt_embeds, lora_high, lora_low, scorer, evalkit, evalkit_entry)
        return
    seed, steps, shift = 30_000 if seed is None else seed, 20 if steps is None else steps, 1.0 if shift is None else shift
    sampling = _sampling(sampler, steps, shift)
    try:
        ens = EnsembleConfig(k=k, window=_window(window), rule=rule, norm_correct=norm_correct, after=after, select=select)
        ens.check(steps)
        methods = make_baselines(ens, sampling) if baselines else [Method("single"), Method("ensemble", ens)]
    except ConfigError as e:
        raise _fail(str(e)) from None
    den = _load(model)
    try:
        summary = compare(den, task, size, n, seed, sampling, methods, out, max_batch=max_batch, ray_address=ray,
                          num_workers=workers, model=model)
    except Exception as e:  # noqa: BLE001
        raise _fail(f"{type(e).__name__}: {e}") from None
    typer.echo(json.dumps(summary, indent=1))


@ensemble_app.command("sweep")
def sweep_cmd(
    out: str = typer.Option(..., "--out", help="Run folder (re-running resumes)."),
    model: str = typer.Option("maze", "--model"),
    task: str = typer.Option("maze", "--task"),
    size: int = typer.Option(5, "--size"),
    n: int = typer.Option(100, "--n", min=1),
    seed: int = typer.Option(30_000, "--seed"),
    ks: str = typer.Option("2,3,4,8", "--ks", help="Comma-separated K values."),
    windows: str = typer.Option("0:1,0:2,0:4", "--windows", help="Comma-separated START:END windows."),
    rules: str = typer.Option("mean_xt,mean_v,mean_x0_renoise", "--rules"),
    norm_correct: bool = typer.Option(True, "--norm-correct/--no-norm-correct", help="Also sweep mean_xt with norm correction."),
    after: str = typer.Option("single", "--after", help="single (default: same answer as all with select=first, less compute) or all."),
    select: str = typer.Option("first", "--select"),
    steps: int = typer.Option(20, "--steps"),
    shift: float = typer.Option(1.0, "--shift"),
    sampler: str = typer.Option("euler", "--sampler"),
    max_batch: int = typer.Option(64, "--max-batch", min=1),
    ray: str | None = typer.Option(None, "--ray", metavar="ADDRESS",
                                   help="Run on Ray: 'local' starts a local cluster; else a cluster address ('auto', 'ray://host:10001')."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="With --ray: most chunks in flight (default: the cluster's GPUs, else CPUs)."),
) -> None:
    """Sweep K x window x rule (x norm correction) against single seed; writes sweep.json/.md/.png."""
    from .config import ConfigError
    from .ensemble import sweep, sweep_methods

    sampling = _sampling(sampler, steps, shift)
    try:
        k_list = [int(v) for v in _csv(ks)]
    except ValueError:
        raise _fail(f"--ks must be comma-separated integers, got {ks!r}") from None
    wins = [_window(w) for w in _csv(windows)]
    rule_list = _csv(rules)
    ncs = (False, True) if norm_correct else (False,)
    try:
        if not k_list or not wins or not rule_list:
            raise ConfigError("--ks, --windows and --rules must not be empty")
        for m in sweep_methods(k_list, wins, rule_list, ncs, after=after, select=select):
            m.ens.check(steps)
    except ConfigError as e:
        raise _fail(str(e)) from None
    den = _load(model)
    try:
        sweep(den, task, size, n, seed, sampling, out, ks=k_list, windows=wins, rules=rule_list, norm_correct=ncs,
              after=after, select=select, max_batch=max_batch, ray_address=ray, num_workers=workers, model=model)
    except Exception as e:  # noqa: BLE001
        raise _fail(f"{type(e).__name__}: {e}") from None
    from pathlib import Path

    typer.echo((Path(out) / "summary.txt").read_text())
    typer.echo((Path(out) / "sweep.md").read_text())


def _bench_run(data: str, out: str, model: str, k: int, window: str, rule: str, norm_correct: bool, after: str, select: str,
               seed: int | None, steps: int | None, shift: float | None, sampler: str, baselines: bool, split: str, tasks: str,
               preset: str, frames: int, height: int, width: int, prompt_embeds: str | None, lora_high: str | None,
               lora_low: str | None, scorer: str, evalkit: str | None, evalkit_entry: str) -> None:
    """`ensemble run --data GT`: the paper's ensemble on official VBVR-Bench folders (see steplens.vbvr_run)."""
    from .config import ConfigError
    from .ensemble import EnsembleConfig
    from .scoring_kit import make_scorers
    from .vbvr_run import BenchConfig, bench_methods, evaluate_bench, summary_lines

    if not model.startswith("wan:"):
        raise _fail(f"--data needs an image-to-video wan:DIR model, got --model {model!r}")
    sampling = _sampling(sampler, 50 if steps is None else steps, 5.0 if shift is None else shift)
    try:
        import torch

        dev = "cuda" if torch.cuda.is_available() else "cpu"
        ens = EnsembleConfig(k=k, window=_window(window), rule=rule, norm_correct=norm_correct, after=after, select=select)
        ens.check(sampling.steps)
        methods = bench_methods(ens, sampling, baselines=baselines)
        cfg = BenchConfig(data, tuple(_csv(split)), tuple(_csv(tasks)), preset, frames, height, width, 1 if seed is None else seed, prompt_embeds)
        scorers = make_scorers(scorer, evalkit=evalkit, entry=evalkit_entry, device=dev)
    except ConfigError as e:
        raise _fail(str(e)) from None
    from .models.registry import load

    try:
        den = load(model, device=dev, lora_high=lora_high, lora_low=lora_low, text_encoder=prompt_embeds is None)
        manifest = {"model": model, "lora_high": lora_high, "lora_low": lora_low}
        summary = evaluate_bench(den, cfg, out, methods, sampling, scorers, kind="ensemble-vbvr-bench", manifest=manifest, echo=typer.echo)
    except Exception as e:  # noqa: BLE001 - one clear line, exit 2
        raise _fail(f"{type(e).__name__}: {e}") from None
    typer.echo("\n".join(summary_lines(summary)))
    if summary["generation_errors"]:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.add_typer(ensemble_app, name="ensemble")
