"""`steplens score` and `steplens evaluate`: score videos with the tasks' rule-based scorers; sample and score held-out instances."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from .common import (DEVICE, EVALKIT, EVALKIT_ENTRY, MODEL, OUT, PRECISION, RAY, SAMPLER, SHIFT, SIZE, STEPS, TASK, WORKERS, batch_option,
                     choose_precision, fail, load_model, n_option, record_precision, sample_failures, sampling_config, seed_option)

commands = typer.Typer()


@commands.command("score")
def score(
    data_dir: Path = typer.Argument(..., help="Folder of samples: ROOT/<sample>/ or ROOT/<split>/<task>/<sample>/."),
    videos: Path | None = typer.Option(None, "--videos", help="Folder of model videos <sample>.mp4 or <sample>/ frames (default: each sample's ground truth)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line per sample, then a summary line."),
    out: Path | None = typer.Option(None, "--out", help="Also write the JSON lines to this .jsonl file."),
    scorer: str | None = typer.Option(None, "--scorer", help="Official layout (GT/<split>/<task>/<00000>/ and --videos "
                                      "V/<split>/<task>/<00000>.mp4): steplens, vbvr-evalkit, or both comma-separated."),
    evalkit: str | None = EVALKIT,
    evalkit_entry: str = EVALKIT_ENTRY,
) -> None:
    """Score every sample's video with its task's rule-based scorer; exit 1 if some samples could not be scored, 2 if none could.

    An official VBVR-Bench root with --videos (any model's videos, made elsewhere) is scored by --scorer (default
    steplens), e.g. the official kit: `--scorer steplens,vbvr-evalkit --evalkit KIT`."""
    from ..config import atomic_write_text, to_json
    from ..scoring import score_folder
    from ..tasks.vbvr import is_bench_root, iter_bench

    official = is_bench_root(data_dir) and any(r.steplens_task is None for r in iter_bench(data_dir))
    if official or scorer is not None or evalkit is not None:
        _score_official(data_dir, videos, scorer or "steplens", evalkit, evalkit_entry, as_json, out)
        return
    summary = score_folder(data_dir, videos)
    lines = [to_json(r.to_dict()) for r in summary.results] + [to_json({"summary": summary.to_dict()})]
    if out is not None:
        atomic_write_text(out, "\n".join(lines) + "\n")
    if as_json:
        for line in lines:
            typer.echo(line)
    else:
        _print_summary(summary)
    if summary.n_errors:
        raise sample_failures(summary.n_errors, summary.n, summary.errors[0])


def _score_official(data_dir: Path, videos: Path | None, scorer: str, evalkit: str | None, entry: str, as_json: bool,
                    out: Path | None) -> None:
    """`score` on an official-layout root: every scorer on V/<split>/<task>/<index>.mp4; one line per sample, then a summary."""
    import shutil
    import tempfile

    from ..config import atomic_write_text, to_json
    from ..tasks.vbvr import is_bench_root, iter_bench
    from ..vbvr.kit import make_scorers, score_root

    if not is_bench_root(data_dir):
        raise fail(f"--scorer and --evalkit apply to an official VBVR-Bench root (DATA/In-Domain_50/<task>/<00000>/); "
                   f"{data_dir} is not one")
    if videos is None:
        raise fail("an official VBVR-Bench root is scored on --videos V (V/<split>/<task>/<00000>.mp4)")
    if not videos.is_dir():
        raise fail(f"{videos}: videos folder not found")
    scorers = make_scorers(scorer, evalkit=evalkit, entry=entry)
    refs = iter_bench(data_dir)
    work = Path(tempfile.mkdtemp(prefix="steplens-score-")) if out is None else out.parent / f"{out.name}.kit"
    got = score_root(data_dir, videos, refs, scorers, lambda key: work / key)
    if out is None:
        shutil.rmtree(work, ignore_errors=True)  # kept only on failure (a KitError names its log there)
    lines = [to_json({"split": ref.split, "task": ref.task, "index": ref.index,
                         "scores": {k: rows[i].score for k, (rows, _) in got.items()},
                         "status": {k: rows[i].status for k, (rows, _) in got.items()}}) for i, ref in enumerate(refs)]
    means = {k: {"score": s["overall"]["score"], "ci95": s["overall"]["ci95"], "n": s["overall"]["n"],
                 "n_missing": s["overall"]["n_missing"], "n_errors": s["overall"]["n_errors"], "not_covered": s["not_covered"]["n"],
                 "convention": s["scorer"]["convention"]} for k, (_, s) in got.items()}
    kit = {k: s["kit_reported"] for k, (_, s) in got.items() if "kit_reported" in s}
    lines.append(to_json({"summary": {"n_samples": len(refs), "scorers": means, "kit_reported": kit}}))
    if out is not None:
        atomic_write_text(out, "\n".join(lines) + "\n")
    if as_json:
        typer.echo("\n".join(lines))
    else:
        for k, m in means.items():
            score = "-" if m["score"] is None else f"{m['score']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"
            overall = kit.get(k, {}).get("overall")
            ktxt = f"  kit overall {overall['mean_score']:.4f} (n={overall['num_samples']})" if overall else ""
            typer.echo(f"{k:<27} {score}  n={m['n']} missing={m['n_missing']} errors={m['n_errors']} not_covered={m['not_covered']}"
                       f"{ktxt}  ({m['convention']})")
    per_sample = [[rows[i] for rows, _ in got.values()] for i in range(len(refs))]
    failed = [next(r.message for r in rs if r.status in ("missing", "error")) for rs in per_sample
              if any(r.status in ("missing", "error") for r in rs)]
    if failed:  # a sample fails when a scorer that covers it has no video or could not score it
        raise sample_failures(len(failed), sum(any(r.status != "not_covered" for r in rs) for rs in per_sample), failed[0] or "")


def _print_summary(summary: Any) -> None:
    """A rich table of per-task and overall means, then the errors."""
    from rich.console import Console
    from rich.table import Table

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    table = Table("task", "n", "errors", "success", "score", "process")  # process: every frame a legal successor
    for name, t in summary.per_task.items():
        table.add_row(name, str(t.n), str(t.n_errors), fmt(t.success), fmt(t.score), fmt(t.process_success))
    o = summary.overall
    table.add_row("[bold]all", str(o.n), str(o.n_errors), fmt(o.success), fmt(o.score), fmt(o.process_success))
    console = Console()
    console.print(table)
    for err in summary.errors:
        console.print(f"[red]sample error:[/red] {err}", highlight=False, markup=True)


@commands.command("evaluate")
def evaluate(
    out: str = OUT,
    model: str = MODEL,
    task: str = TASK,
    size: int | None = SIZE,
    n: int = n_option(100),
    seed: int = seed_option(10_000),
    steps: int | None = STEPS,
    shift: float | None = SHIFT,
    sampler: str = SAMPLER,
    batch: int = batch_option(50),
    ray: str | None = RAY,
    workers: int | None = WORKERS,
    device: str = DEVICE,
    precision: str = PRECISION,
    sizes: str = typer.Option("", "--sizes", help="--task suite: sizes other than each task's default, e.g. 'maze=6;rotate=11'."),
    allow_seen: bool = typer.Option(False, "--allow-seen", help="Where a level has too few instances unseen in training, fill up with seen ones "
                                    "(marked seen_in_training) instead of failing."),
) -> None:
    """Sample held-out instances with a model, score them, and report the solve rate with a 95% CI (resumable).

    `--task suite`: every task of the model (its default size, or --sizes), one run folder each, and a benchmark-style
    aggregate (mean of per-task scores with a stratified bootstrap CI, per category) in OUT/summary.json.
    Exit 1 when some samples could not be scored (a re-run retries them), 2 when none could."""
    from ..config import to_json
    from ..evaluate import EvalConfig, evaluate as run_eval
    choice = choose_precision(precision, device)
    if task == "suite":
        _evaluate_suite(out, model, sizes, n, seed, steps, shift, sampler, batch, ray, workers, device, choice, allow_seen)
        return
    if sizes:
        raise fail("--sizes applies to --task suite only (one task: --size)")
    cfg = EvalConfig(model=model, task=task, size=size, n=n, seed=seed, batch=batch, precision=choice.precision.value,
                     sampling=sampling_config(model, steps, shift, sampler), allow_seen=allow_seen)
    summary = run_eval(None if ray else load_model(model, device, choice), cfg, out, ray_address=ray, num_workers=workers, device=device)
    if summary["n"]:  # a result (some samples scored): record what ran; none is one error line and no folder
        record_precision(out, choice)
    keys = ("n", "solved", "solve_rate", "solve_rate_ci95", "mean_score", "n_errors", "held_out", "n_skipped_seen", "n_seen_in_training",
            "seen_set_sha256", "n_computed_this_call", "wall_s_this_call")
    typer.echo(to_json({k: summary.get(k) for k in keys}))
    if summary["n_errors"]:  # summary["n"] counts the scored samples
        raise sample_failures(summary["n_errors"], summary["n"] + summary["n_errors"], summary["errors"][0]["error"])


def _evaluate_suite(out: str, model: str, sizes: str, n: int, seed: int, steps: int | None, shift: float | None, sampler: str,
                    batch: int, ray: str | None, workers: int | None, device: str, choice: Any, allow_seen: bool = False) -> None:
    """evaluate --task suite: one evaluate run per task of the model, then the aggregate (steplens.suite)."""
    from ..evaluate import EvalConfig, evaluate as run_eval
    from ..suite import model_tasks, rows_by_method, run_suite, suite_sizes

    den = load_model(model, device, choice)  # its task list; with --ray the workers load their own
    sampling = sampling_config(model, steps, shift, sampler)
    per = suite_sizes(model_tasks(den), sizes)

    def one(task: str, size: int, folder: Any) -> dict[str, list[dict[str, Any]]]:
        cfg = EvalConfig(model=model, task=task, size=size, n=n, seed=seed, batch=batch, precision=choice.precision.value, sampling=sampling,
                         allow_seen=allow_seen)
        run_eval(None if ray else den, cfg, folder, ray_address=ray, num_workers=workers, device=device)
        record_precision(folder, choice, quiet=True)  # said once for the suite
        return rows_by_method(Path(folder) / "results.jsonl")

    run_suite(out, per, one, kind="evaluate-suite", config={"model": model, "n": n, "seed": seed, "sampling": sampling.__dict__,
                                                            "precision": choice.precision.value})
    record_precision(out, choice)
    typer.echo((Path(out) / "summary.txt").read_text())
