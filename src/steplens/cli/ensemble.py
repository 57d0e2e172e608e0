"""`steplens ensemble ...`: training-free latent trajectory ensembles (thin layer over steplens.ensemble)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..config import to_json
from .common import (ALLOW_SEEN, BENCH_TASKS, DEVICE, EVALKIT, EVALKIT_ENTRY, FRAMES, HEIGHT, LORA_HIGH, LORA_LOW, MODEL, OUT, PRECISION,
                     PROMPT_EMBEDS, RAY, SAMPLER, SCORER, SHIFT, SIZE, SPLITS, STEPS, TASK, VIDEO_PRESET, WIDTH, WORKERS, RunByDefault,
                     choose_precision, data_run_seed, fail, load_model, n_option, parse_ints, parse_names, parse_window,
                     record_precision, sampling_config, seed_option, task_size)

ensemble_app = typer.Typer(cls=RunByDefault, no_args_is_help=True,
                           help="Merge K seeds' latents during early steps; compare with compute-matched baselines "
                                "(`ensemble --k 3 ...` means `ensemble run ...`).")
MAX_BATCH = typer.Option(64, "--max-batch", min=1, help="Trajectories per forward pass.")


@ensemble_app.command("run")
def run_cmd(
    ctx: typer.Context,
    out: str = OUT,
    model: str = MODEL,
    task: str = TASK,
    size: int | None = SIZE,
    k: int = typer.Option(3, "--k", min=1, help="Seeds (trajectories) per instance."),
    window: str = typer.Option("0:2", "--window", help="Merge during steps START:END (end exclusive)."),
    rule: str = typer.Option("mean_xt", "--rule", help="mean_xt | mean_v | mean_x0_renoise."),
    norm_correct: bool = typer.Option(False, "--norm-correct", help="mean_xt: restore the std of the merged noise part."),
    after: str = typer.Option("all", "--after", help="all: continue K and select one; single: keep the first after the window."),
    select: str = typer.Option("first", "--select", help="first | agreement | vote | oracle (oracle needs ground truth)."),
    n: int = n_option(100),
    seed: int = seed_option(30_000),
    steps: int | None = STEPS,
    shift: float | None = SHIFT,
    sampler: str = SAMPLER,
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also run the compute-matched baselines."),
    max_batch: int = MAX_BATCH,
    ray: str | None = RAY,
    workers: int | None = WORKERS,
    precision: str = PRECISION,
    data: str | None = typer.Option(None, "--data", help="An official VBVR-Bench root (GT/<split>/<task>/<i:05d>/): run a wan: model on it "
                                    "and write OUT/<method>/<split>/<task>/<i:05d>.mp4; there --steps, --shift and --seed default "
                                    "to the model's (the paper's 50 and 5.0 for Wan) and 1 (the noise seed)."),
    split: str = SPLITS,
    tasks: str = BENCH_TASKS,
    video_preset: str = VIDEO_PRESET,
    frames: int = FRAMES,
    height: int = HEIGHT,
    width: int = WIDTH,
    prompt_embeds: str | None = PROMPT_EMBEDS,
    lora_high: str | None = LORA_HIGH,
    lora_low: str | None = LORA_LOW,
    scorer: str = SCORER,
    evalkit: str | None = EVALKIT,
    evalkit_entry: str = EVALKIT_ENTRY,
    device: str = DEVICE,
    sizes: str = typer.Option("", "--sizes", help="--task suite: sizes other than each task's default, e.g. 'maze=6;rotate=11'."),
    allow_seen: bool = ALLOW_SEEN,
) -> None:
    """Evaluate one ensemble setting (and its baselines) on the same instances; prints the JSON summary.

    With --data: on an official VBVR-Bench root, one output root per method, scored (see `evaluate-vbvr`).
    """
    from ..ensemble import EnsembleConfig, Method, baselines as make_baselines, compare

    if data is not None:
        seed = data_run_seed(ctx, model, ray, seed)
    elif split or tasks or video_preset != "auto" or frames or height or width or lora_high or lora_low \
            or scorer != "steplens" or evalkit is not None:
        raise fail("--split, --tasks, --video-preset, --frames, --height, --width, --lora-high, --lora-low, --scorer "
                   "and --evalkit apply to --data runs only")
    sampling = sampling_config(model, steps, shift, sampler)
    ens = EnsembleConfig(k=k, window=parse_window(window), rule=rule, norm_correct=norm_correct, after=after, select=select)
    ens.check(sampling.steps)
    choice = choose_precision(precision, device)
    if data is not None:
        from ..vbvr.run import BenchConfig, bench_methods
        from .vbvr import run_bench_cmd

        cfg = BenchConfig(data, tuple(parse_names(split)), tuple(parse_names(tasks)), video_preset, frames, height, width, seed,
                          prompt_embeds)
        wan = {"lora_high": lora_high, "lora_low": lora_low, "text_encoder": prompt_embeds is None}
        methods = bench_methods(ens, sampling, baselines=baselines)
        run_bench_cmd(model, wan, device, choice, cfg, out, methods, sampling, scorer, evalkit, evalkit_entry, kind="ensemble-vbvr-bench")
        return
    methods = make_baselines(ens, sampling) if baselines else [Method("single"), Method("ensemble", ens)]
    if task == "suite":  # every task of the model, then the benchmark-style aggregate with paired differences to single
        from ..suite import model_tasks, rows_by_method, run_suite, suite_sizes

        den = load_model(model, device, choice, prompt_embeds, ray)

        def one(t: str, sz: int, folder: Path) -> dict[str, list[dict]]:
            compare(den, t, sz, n, seed, sampling, methods, folder, max_batch=max_batch, ray_address=ray, num_workers=workers,
                    model=model, device=device, progress=True, allow_seen=allow_seen)
            record_precision(folder, choice, quiet=True)
            return rows_by_method(folder / "results.jsonl")

        run_suite(out, suite_sizes(model_tasks(den), sizes), one, kind="ensemble-suite", baseline="single",
                  config={"model": model, "n": n, "seed": seed, "ensemble": ens.__dict__, "methods": [m.name for m in methods]})
        record_precision(out, choice)
        typer.echo((Path(out) / "summary.txt").read_text())
        return
    if sizes:
        raise fail("--sizes applies to --task suite only (one task: --size)")
    size = task_size(task, size)
    summary = compare(load_model(model, device, choice, prompt_embeds, ray), task, size, n, seed, sampling, methods, out, max_batch=max_batch,
                      ray_address=ray, num_workers=workers, model=model, device=device, allow_seen=allow_seen)
    record_precision(out, choice)
    typer.echo(to_json(summary, indent=1))


@ensemble_app.command("sweep")
def sweep_cmd(
    out: str = OUT,
    model: str = MODEL,
    task: str = TASK,
    size: int | None = SIZE,
    n: int = n_option(100),
    seed: int = seed_option(30_000),
    ks: str = typer.Option("2,3,4,8", "--ks", help="Comma-separated K values."),
    windows: str = typer.Option("0:1,0:2,0:4", "--windows", help="Comma-separated START:END windows."),
    rules: str = typer.Option("mean_xt,mean_v,mean_x0_renoise", "--rules"),
    norm_correct: bool = typer.Option(True, "--norm-correct/--no-norm-correct", help="Also sweep mean_xt with norm correction."),
    after: str = typer.Option("single", "--after", help="single (default: same answer as all with select=first, less compute) or all."),
    select: str = typer.Option("first", "--select"),
    matched: bool = typer.Option(True, "--matched/--no-matched", help="Also run one seed with each setting's NFE (more steps), as a control."),
    steps: int | None = STEPS,
    shift: float | None = SHIFT,
    sampler: str = SAMPLER,
    max_batch: int = MAX_BATCH,
    ray: str | None = RAY,
    workers: int | None = WORKERS,
    device: str = DEVICE,
    precision: str = PRECISION,
    allow_seen: bool = ALLOW_SEEN,
) -> None:
    """Sweep K x window x rule (x norm correction) against single seed; writes sweep.json/.md/.png."""
    from ..ensemble import sweep, sweep_methods

    size = task_size(task, size)
    choice = choose_precision(precision, device)
    sampling = sampling_config(model, steps, shift, sampler)
    k_list = parse_ints(ks, "--ks")
    wins = [parse_window(w, "--windows") for w in parse_names(windows)]
    rule_list = parse_names(rules)
    ncs = (False, True) if norm_correct else (False,)
    if not k_list or not wins or not rule_list:
        raise typer.BadParameter("--ks, --windows and --rules must not be empty")
    for m in sweep_methods(k_list, wins, rule_list, ncs, after=after, select=select):
        m.ens.check(sampling.steps)
    sweep(load_model(model, device, choice), task, size, n, seed, sampling, out, ks=k_list, windows=wins, rules=rule_list,
          norm_correct=ncs, after=after, select=select, max_batch=max_batch, ray_address=ray, num_workers=workers, model=model,
          device=device, matched=matched, allow_seen=allow_seen)
    record_precision(out, choice)
    typer.echo((Path(out) / "summary.txt").read_text())
    typer.echo((Path(out) / "sweep.md").read_text())
