"""The `steplens` command line: a thin layer over the library."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from .cli_common import RunByDefault, precision_option, record_precision, resolve_precision

app = typer.Typer(add_completion=False, no_args_is_help=True, help="steplens: see how video diffusion models reason along denoising steps.")


@app.callback()
def _startup() -> None:
    """steplens: see how video diffusion models reason along denoising steps."""
    from .allocator import keep_freed_memory

    keep_freed_memory()  # CPU sampling 1.25x faster (benchmarks/bench_allocator.py); STEPLENS_MALLOC=default turns it off


tasks_app = typer.Typer(no_args_is_help=True, help="Generate, inspect and audit reasoning tasks.")
app.add_typer(tasks_app, name="tasks")


@tasks_app.command("list")
def tasks_list() -> None:
    """List the known tasks."""
    from rich.console import Console
    from rich.table import Table

    from .tasks import TASKS

    table = Table("task", "sizes", "default", "description")
    for name, t in sorted(TASKS.items()):
        table.add_row(name, f"{min(t.sizes)}..{max(t.sizes)}", str(t.default_size), t.description)
    Console().print(table)


def _fail(message: str, code: int = 2) -> typer.Exit:
    """Print an error to stderr and return the Exit to raise (usage and input errors exit 2)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@tasks_app.command("generate")
def tasks_generate(
    task: str = typer.Argument(..., help="Task name (see `steplens tasks list`)."),
    n: int = typer.Option(..., "--n", min=1, help="Number of samples."),
    seed: int = typer.Option(0, "--seed", help="Sample i uses seed SEED + i."),
    out: Path = typer.Option(..., "--out", help="Folder to write <task>_<i>/ sample folders into."),
    size: int | None = typer.Option(None, "--size", help="Task size (default: the task's default)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace sample folders that already exist."),
) -> None:
    """Write N samples of TASK in the VBVR-Bench folder format."""
    from .tasks import TaskInputError
    from .tasks.vbvr import generate_set

    try:
        paths = generate_set(task, n, seed, out, size=size, progress=True, overwrite=overwrite)
    except (TaskInputError, ValueError, FileExistsError) as e:
        raise _fail(str(e)) from None
    typer.echo(f"wrote {len(paths)} samples to {out}")


@tasks_app.command("audit")
def tasks_audit(
    task: str = typer.Argument(..., help="Task name (see `steplens tasks list`)."),
    n: int = typer.Option(100, "--n", min=1, help="Number of instances to audit."),
    seed: int = typer.Option(0, "--seed", help="First seed."),
    size: int | None = typer.Option(None, "--size", help="Task size (default: the task's default)."),
) -> None:
    """Check TASK's generator and scorer (ground truth passes, corruptions fail); exit 1 if the audit fails."""
    from .tasks import TASKS

    if task not in TASKS:
        raise _fail(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
    from .tasks.audit import audit_task, format_report

    report = audit_task(task, n, seed, size)
    typer.echo(format_report(report))
    if not report.passed:
        raise typer.Exit(1)


@app.command("score")
def score(
    data_dir: Path = typer.Argument(..., help="Folder of samples: ROOT/<sample>/ or ROOT/<split>/<task>/<sample>/."),
    videos: Path | None = typer.Option(None, "--videos", help="Folder of model videos <sample>.mp4 or <sample>/ frames (default: each sample's ground truth)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line per sample, then a summary line."),
    out: Path | None = typer.Option(None, "--out", help="Also write the JSON lines to this .jsonl file."),
) -> None:
    """Score every sample's video with its task's rule-based scorer; exit 2 if any sample could not be scored."""
    import json

    from .config import atomic_write_text
    from .scoring import score_folder
    from .tasks import TaskInputError

    try:
        summary = score_folder(data_dir, videos)
    except TaskInputError as e:
        raise _fail(str(e)) from None
    lines = [json.dumps(r.to_dict()) for r in summary.results] + [json.dumps({"summary": summary.to_dict()})]
    if out is not None:
        atomic_write_text(out, "\n".join(lines) + "\n")
    if as_json:
        for line in lines:
            typer.echo(line)
    else:
        _print_summary(summary)
    if summary.n_errors:
        raise _fail(f"{summary.n_errors} of {summary.n} samples could not be scored")


def _print_summary(summary: Any) -> None:
    """A rich table of per-task and overall means, then the errors."""
    from rich.console import Console
    from rich.table import Table

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    table = Table("task", "n", "errors", "success", "score")
    for name, t in summary.per_task.items():
        table.add_row(name, str(t.n), str(t.n_errors), fmt(t.success), fmt(t.score))
    o = summary.overall
    table.add_row("[bold]all", str(o.n), str(o.n_errors), fmt(o.success), fmt(o.score))
    console = Console()
    console.print(table)
    for err in summary.errors:
        console.print(f"[red]error:[/red] {err}", highlight=False, markup=True)


def _csv_ints(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {s!r}") from None


@app.command()
def train(
    out: str = typer.Option(..., "--out", help="Run folder: checkpoint, metrics and the exported model."),
    task: str = typer.Option("maze", "--task", help="Task name, or several separated by commas."),
    sizes: str = typer.Option("3,4,5,5", "--sizes", help="Sizes to draw from (repeat one to weight it)."),
    frames: int = typer.Option(4, "--frames", help="Video frames (= latent frames) per sample."),
    preset: str = typer.Option("base", "--preset", help="Model size preset."),
    steps: int = typer.Option(1500, "--steps"),
    minutes: float = typer.Option(0.0, "--minutes", help="Stop after this wall time (0: run all steps)."),
    batch: int = typer.Option(32, "--batch"),
    lr: float = typer.Option(1e-3, "--lr"),
    seed: int = typer.Option(0, "--seed"),
    warmup: int = typer.Option(100, "--warmup"),
    init: str = typer.Option("", "--init", help="Start from another run's checkpoint.pt (model and EMA weights) or an exported model (a path or shipped name)."),
    stop_after: int = typer.Option(0, "--stop-after", help="End this call after N steps in total (resumable)."),
    device: str = typer.Option("cpu", "--device"),
    precision: str = precision_option(),
) -> None:
    """Train the reference video DiT with flow matching; re-running the same command resumes."""
    from .config import ConfigError
    from .train import TrainConfig, train as run_train

    try:
        cfg = TrainConfig(tasks=tuple(task.split(",")), sizes=_csv_ints(sizes), n_frames=frames, preset=preset,
                          steps=steps, batch=batch, lr=lr, seed=seed, minutes=minutes, warmup=warmup, init=init,
                          precision=precision)
        st = run_train(cfg, out, device=device, stop_after=stop_after or None)
    except (ConfigError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"trained {st.step} steps in {st.elapsed:.0f} s -> {out}")


@app.command("export")
def export_cmd(checkpoint: str = typer.Argument(..., help="A training run's checkpoint.pt."),
               out: str = typer.Argument(..., help="Output prefix: writes PREFIX.safetensors and PREFIX.json.")) -> None:
    """Export a checkpoint's EMA weights as a model that `--model PREFIX` (or a shipped name) loads."""
    from .train import export_checkpoint

    typer.echo(str(export_checkpoint(checkpoint, out)))


@app.command()
def evaluate(
    out: str = typer.Option(..., "--out", help="Run folder (re-running resumes)."),
    model: str = typer.Option("maze", "--model", help="Shipped model name or path to an exported model."),
    task: str = typer.Option("maze", "--task"),
    size: int = typer.Option(5, "--size"),
    n: int = typer.Option(100, "--n"),
    seed: int = typer.Option(10_000, "--seed", help="First held-out instance seed (instances seed..seed+n-1)."),
    steps: int = typer.Option(20, "--steps"),
    shift: float = typer.Option(1.0, "--shift"),
    sampler: str = typer.Option("euler", "--sampler"),
    batch: int = typer.Option(50, "--batch"),
    ray: str | None = typer.Option(None, "--ray", metavar="ADDRESS",
                                   help="Run on Ray: 'local' starts a local cluster; else a cluster address ('auto', 'ray://host:10001'). Needs steplens[ray]."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="With --ray: most batches in flight (default: the cluster's GPUs, else CPUs)."),
    precision: str = precision_option(),
) -> None:
    """Sample held-out instances with a model, score them, and report the solve rate with a 95% CI (resumable)."""
    import json

    from .evaluate import EvalConfig, evaluate as run_eval
    from .models.registry import load
    from .runner import SamplingConfig

    try:
        choice = resolve_precision(precision)
        cfg = EvalConfig(model=model, task=task, size=size, n=n, seed=seed, batch=batch, precision=choice.precision.value,
                         sampling=SamplingConfig(sampler=sampler, steps=steps, shift=shift))
        summary = run_eval(None if ray else load(model).to_precision(choice.precision), cfg, out, ray_address=ray, num_workers=workers)
        record_precision(out, choice)
    except Exception as e:  # noqa: BLE001 - the CLI reports every failure as one clear line
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    keys = ("n", "solved", "solve_rate", "solve_rate_ci95", "mean_score", "n_errors", "n_computed_this_call", "wall_s_this_call")
    typer.echo(json.dumps({k: summary.get(k) for k in keys}))
    if summary.get("n_errors"):
        raise typer.Exit(1)


trace_app = typer.Typer(cls=RunByDefault, no_args_is_help=True,
                        help="Record and inspect traces: step events plus reduced captures (`trace --model ...` means `trace run ...`).")
app.add_typer(trace_app, name="trace")


@trace_app.command("run")
def trace_run(
    out: str = typer.Option(..., "--out"),
    model: str = typer.Option("maze", "--model"),
    task: str = typer.Option("maze", "--task"),
    size: int = typer.Option(5, "--size"),
    n: int = typer.Option(8, "--n"),
    seed: int = typer.Option(20_000, "--seed"),
    steps: int = typer.Option(20, "--steps"),
    capture: str = typer.Option("", "--capture", help="e.g. 'blocks.*.resid_post:norm,proj16' (';' separates specs, '@0-4' picks steps)."),
    budget_mb: float = typer.Option(512.0, "--budget-mb", help="Refuse plans whose captures would exceed this."),
    fields: str = typer.Option("x0_hat", "--fields", help="Event tensors to keep per step: x, x0_hat, velocity, x_next."),
    k: int = typer.Option(1, "--k", min=1, help="Record a latent-trajectory ensemble of K seeds per instance (1: plain sampling)."),
    window: str = typer.Option("0:2", "--window", help="With --k > 1: merge during steps START:END."),
    rule: str = typer.Option("mean_xt", "--rule", help="With --k > 1: mean_xt | mean_v | mean_x0_renoise."),
    after: str = typer.Option("single", "--after", help="With --k > 1: all (continue K, keep the first) or single."),
    precision: str = precision_option(),
) -> None:
    """Sample held-out instances and save a trace (events + reduced captures) to OUT."""
    from .models.registry import load
    from .probes.common import ProbeConfig, batches
    from .runner import SamplingConfig, noise_seed
    from .trace import CapturePlan, describe, record

    try:
        choice = resolve_precision(precision)
        cfg = ProbeConfig(model=model, task=task, size=size, n=n, seed=seed, batch=n, sampling=SamplingConfig(steps=steps),
                          precision=choice.precision.value)
        ens = None
        if k > 1:
            from .ensemble import EnsembleConfig

            a, b = window.split(":") if ":" in window else (window, "")
            ens = EnsembleConfig(k=k, window=(int(a), int(b)), rule=rule, after=after)
            ens.check(steps)
        den = load(model).to_precision(choice.precision)
        plan = CapturePlan.parse(capture, budget_mb)
        (batch, noise), = batches(den, cfg)
        if ens is not None:  # the K noises of `steplens ensemble` for the same instances
            noise = [noise_seed(s, j) for s in cfg.seeds() for j in range(k)]
        tr = record(den, batch, noise, cfg.sampling, plan, fields=tuple(f.strip() for f in fields.split(",") if f.strip()),
                    config={"model": model, "task": task, "size": size, "n": n, "seed": seed, "steps": steps, "capture": capture,
                            "seeds": cfg.seeds(), "precision": choice.to_dict()}, ensemble=ens)
        tr.save(out)
    except Exception as e:  # noqa: BLE001
        typer.echo(f"error: {type(e).__name__}: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(describe(tr))
    typer.echo(f"wrote {out}")


@trace_app.command("show")
def trace_show(path: str = typer.Argument(..., help="A trace folder.")) -> None:
    """Print what a saved trace holds (no model needed)."""
    from .trace import Trace, TraceError, describe

    try:
        typer.echo(describe(Trace.load(path)))
    except TraceError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


@app.command()
def demo(out: str = typer.Option("demo", "--out", help="Output folder: report.html, summary.json and one folder per stage."),
         model: str = typer.Option("maze", "--model"), quick: bool = typer.Option(False, "--quick", help="Sub-minute version (tests)."),
         no_report: bool = typer.Option(False, "--no-report"), precision: str = precision_option()) -> None:
    """Run every analysis on the shipped reference model and write an HTML report (a few minutes on a CPU)."""
    import json

    from .demo import DemoConfig, run_demo

    try:
        choice = resolve_precision(precision)
        summary = run_demo(out, DemoConfig.make(model=model, quick=quick, precision=choice.precision.value), report=not no_report)
        record_precision(out, choice)
    except Exception as e:  # noqa: BLE001
        typer.echo(f"error: {type(e).__name__}: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({"total_s": summary["total_s"], "timings_s": summary["timings_s"]}))
    typer.echo(f"open {out}/report.html")


from .cli_ensemble import register as _register_ensemble  # noqa: E402
from .cli_probe import register as _register_probe  # noqa: E402

from .cli_report import register as _register_report  # noqa: E402
from .cli_wan import register as _register_wan  # noqa: E402

_register_probe(app)
_register_ensemble(app)
_register_wan(app)
_register_report(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
