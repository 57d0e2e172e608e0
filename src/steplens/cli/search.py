"""`steplens search ...`: test-time search on the steps at equal compute (thin layer over steplens.search)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from .common import (ALLOW_SEEN, BENCH_TASKS, DEVICE, EVALKIT, EVALKIT_ENTRY, FRAMES, HEIGHT, LORA_HIGH, LORA_LOW, MODEL, OUT, PRECISION,
                     PROMPT_EMBEDS, RAY, SAMPLER, SCORER, SHIFT, SIZE, SPLITS, STEPS, TASK, VIDEO_PRESET, WIDTH, WORKERS, RunByDefault,
                     choose_precision, data_run_seed, fail, load_model, n_option, parse_ints, parse_names, record_precision,
                     sampling_config, seed_option, task_size)

search_app = typer.Typer(cls=RunByDefault, no_args_is_help=True,
                         help="Screen seeds by their early plan and compare with best-of-k, ensembles and cold starts at equal NFE "
                              "(`search --budget 4 ...` means `search run ...`).")

N = n_option(60)
SEED = seed_option(30_000)
K = typer.Option(12, "--k", min=1, help="Seeds per instance (seed k of instance i starts from noise_seed(i, k)).")
SCREEN_STEP = typer.Option(4, "--screen-step", min=1, help="Steps before the early score (default methods and curves).")


def _setup(model: str, sampler: str, steps: int | None, shift: float | None, prompt_embeds: str | None, ray: str | None,
           device: str, precision: str) -> tuple[Any, Any, Any]:
    """The denoiser (in --precision chosen for --device), SamplingConfig (the model's steps and shift where not given) and
    PrecisionChoice of the command line."""
    choice = choose_precision(precision, device)
    sampling = sampling_config(model, steps, shift, sampler)
    return load_model(model, device, choice, prompt_embeds, ray), sampling, choice


def _check_k(k: int, budget: float, what: str) -> None:
    """best-of-B spends a budget of B single runs on B of the --k seeds sampled per instance: K below B is not equal compute."""
    if math.isfinite(budget) and k < budget:
        raise fail(f"--k ({k}) is below {what} ({budget:g}): best-of-B at a budget of B runs needs B seeds per instance")


@search_app.command("run")
def run_cmd(
    ctx: typer.Context,
    out: str = OUT,
    budget: float = typer.Option(4.0, "--budget", help="Compute per instance, in single-seed runs (B x steps NFE for Euler)."),
    model: str = MODEL, task: str = TASK, size: int | None = SIZE, n: int = N, seed: int = SEED, k: int = K, screen_step: int = SCREEN_STEP,
    steps: int | None = STEPS, shift: float | None = SHIFT, sampler: str = SAMPLER, precision: str = PRECISION,
    prompt_embeds: str | None = PROMPT_EMBEDS, ray: str | None = RAY, workers: int | None = WORKERS, device: str = DEVICE,
    data: str | None = typer.Option(None, "--data", help="An official VBVR-Bench root (GT/<split>/<task>/<i:05d>/): run a wan: model on it, "
                                    "one output root per method (OUT/<method>/<split>/<task>/<i:05d>.mp4), scored; there the early "
                                    "scores are the pixel ones (agreement, stability) and --seed defaults to 1."),
    split: str = SPLITS, tasks: str = BENCH_TASKS, video_preset: str = VIDEO_PRESET, frames: int = FRAMES, height: int = HEIGHT,
    width: int = WIDTH, lora_high: str | None = LORA_HIGH, lora_low: str | None = LORA_LOW, scorer: str = SCORER,
    evalkit: str | None = EVALKIT, evalkit_entry: str = EVALKIT_ENTRY,
    sizes: str = typer.Option("", "--sizes", help="--task suite: sizes other than each task's default, e.g. 'maze=7;rotate=11'."),
    allow_seen: bool = ALLOW_SEEN,
) -> None:
    """Compare single, single_cold, the paper's ensemble, best-of-k and early screening at one budget; prints the table.

    `--task suite`: every task of the model in OUT/<task>_<size>/, then the benchmark-style aggregate of the methods that
    apply to every task, with paired differences to single (steplens.suite)."""
    from ..search import default_methods, run_search

    if data is not None:
        seed = data_run_seed(ctx, model, ray, seed)
        _run_on_bench(data, out, budget, model, seed, k, screen_step, steps, shift, sampler, precision, prompt_embeds, device,
                      split, tasks, video_preset, frames, height, width, lora_high, lora_low, scorer, evalkit, evalkit_entry)
        return
    if split or tasks or video_preset != "auto" or frames or height or width or lora_high or lora_low or scorer != "steplens" \
            or evalkit is not None:
        raise fail("--split, --tasks, --video-preset, --frames, --height, --width, --lora-high, --lora-low, --scorer and --evalkit "
                   "apply to --data runs only")
    den, sampling, choice = _setup(model, sampler, steps, shift, prompt_embeds, ray, device, precision)
    if task == "suite":
        _search_suite(den, model, out, budget, k, screen_step, sampling, n, seed, sizes, ray, workers, device, choice, allow_seen)
        return
    if sizes:
        raise fail("--sizes applies to --task suite only (one task: --size)")
    size = task_size(task, size)
    default_methods(budget, k, screen_step, sampling, task)  # validate before sampling anything
    _check_k(k, budget, "--budget")
    run_search(den, task, size, n, seed, sampling, out, budget=budget, k=k, screen_step=screen_step,
               ray_address=ray, num_workers=workers, model=model, device=device, allow_seen=allow_seen)
    record_precision(out, choice)
    typer.echo((Path(out) / "summary.txt").read_text())


def _search_suite(den: Any, model: str, out: str, budget: float, k: int, screen_step: int, sampling: Any, n: int, seed: int, sizes: str,
                  ray: str | None, workers: int | None, device: str, choice: Any, allow_seen: bool = False) -> None:
    """search run --task suite: one search run per task of the model, then steplens.suite's aggregate."""
    from ..search import default_methods, run_search
    from ..suite import model_tasks, rows_by_method, run_suite, suite_sizes

    per = suite_sizes(model_tasks(den), sizes)
    for t in per:
        default_methods(budget, k, screen_step, sampling, t)  # validate every task before sampling anything

    def one(task: str, size: int, folder: Path) -> dict[str, list[dict[str, Any]]]:
        run_search(den, task, size, n, seed, sampling, folder, budget=budget, k=k, screen_step=screen_step, ray_address=ray,
                   num_workers=workers, model=model, device=device, allow_seen=allow_seen)
        record_precision(folder, choice, quiet=True)
        return rows_by_method(folder / f"results_b{budget:g}.jsonl")

    run_suite(out, per, one, kind="search-suite", baseline="single",
              config={"model": model, "n": n, "seed": seed, "budget": budget, "k": k, "screen_step": screen_step})
    record_precision(out, choice)
    typer.echo((Path(out) / "summary.txt").read_text())


def _run_on_bench(data: str, out: str, budget: float, model: str, seed: int, k: int, screen_step: int, steps: int | None,
                  shift: float | None, sampler: str, precision: str, prompt_embeds: str | None, device: str, split: str, tasks: str,
                  video_preset: str, frames: int, height: int, width: int, lora_high: str | None, lora_low: str | None, scorer: str,
                  evalkit: str | None, evalkit_entry: str) -> None:
    """search run --data: every method of search.bench at one budget on an official root (see `evaluate-vbvr`)."""
    from ..search.bench import bench_search_methods
    from ..vbvr.run import BenchConfig
    from .vbvr import run_bench_cmd

    sampling = sampling_config(model, steps, shift, sampler)
    methods = bench_search_methods(budget, k, screen_step, sampling)
    choice = choose_precision(precision, device)
    cfg = BenchConfig(data, tuple(parse_names(split)), tuple(parse_names(tasks)), video_preset, frames, height, width, seed, prompt_embeds)
    wan = {"lora_high": lora_high, "lora_low": lora_low, "text_encoder": prompt_embeds is None}
    run_bench_cmd(model, wan, device, choice, cfg, out, methods, sampling, scorer, evalkit, evalkit_entry, kind="search-vbvr-bench",
                  extra={"budget": budget, "k": k, "screen_step": screen_step})


@search_app.command("sweep")
def sweep_cmd(
    out: str = OUT,
    budgets: str = typer.Option("1,2,4,8", "--budgets", help="Budgets in single-seed runs."),
    ks: str = typer.Option("4,8,12", "--ks", help="Seeds screened."),
    ss: str = typer.Option("1,2,3,4,6,8", "--ss", help="Screening steps."),
    model: str = MODEL, task: str = TASK, size: int | None = SIZE, n: int = N, seed: int = SEED, k: int = K, screen_step: int = SCREEN_STEP,
    steps: int | None = STEPS, shift: float | None = SHIFT, sampler: str = SAMPLER, precision: str = PRECISION,
    prompt_embeds: str | None = PROMPT_EMBEDS, ray: str | None = RAY, workers: int | None = WORKERS, device: str = DEVICE,
    allow_seen: bool = ALLOW_SEEN,
) -> None:
    """Solve rate vs NFE per method over K, s and m (writes sweep.json, sweep.md, curve.png)."""
    from ..search import run_sweep

    lists = {}
    for opt, text in (("--budgets", budgets), ("--ks", ks), ("--ss", ss)):
        lists[opt] = parse_ints(text, opt)
        if not lists[opt] or min(lists[opt]) < 1:
            raise fail(f"{opt} must be positive integers, got {text!r}")
    size = task_size(task, size)
    den, sampling, choice = _setup(model, sampler, steps, shift, prompt_embeds, ray, device, precision)
    _check_k(k, max(lists["--budgets"]), "the largest of --budgets")
    if screen_step >= sampling.steps:
        raise fail(f"--screen-step must be below --steps ({sampling.steps}), got {screen_step}")
    if min(lists["--ss"]) >= sampling.steps:  # the grid keeps the (K, s) that fit: none of these would
        raise fail(f"--ss: every screening step is at or past --steps ({sampling.steps}), got {ss!r}")
    if min(lists["--ks"]) > k:
        raise fail(f"--ks: every K is above --k ({k}), the seeds sampled per instance, got {ks!r}")
    run_sweep(den, task, size, n, seed, sampling, out, budgets=lists["--budgets"], ks=lists["--ks"], ss=lists["--ss"], k=k,
              screen_step=screen_step, ray_address=ray, num_workers=workers, model=model, device=device,
              allow_seen=allow_seen)
    record_precision(out, choice)
    typer.echo((Path(out) / "summary.txt").read_text())
