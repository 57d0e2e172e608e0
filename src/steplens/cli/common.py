"""What the CLI modules share: the root group with the one error path, the options that repeat, input parsing.

Exit codes (README, "Exit codes"):
    0  done;
    1  done, with a partial failure: some samples could not be scored or run (recorded in the run folder
       as errors, which a re-run retries), or an audit found a broken task;
    2  no result: bad input or usage, an error before any result, or every sample failed. One line on
       stderr (`error: ...`) names the problem, and a run folder this call created is removed when it
       holds no result (a manifest, summaries and error records at most), so a corrected re-run
       starts clean. STEPLENS_DEBUG=1 re-raises the error with its traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from ..config import INPUT_ERRORS

if TYPE_CHECKING:
    from ..precision import PrecisionChoice

EXIT_FAILED = 1  # ran to the end, but some samples failed (or an audit did)
EXIT_INPUT = 2  # no result: bad input, usage, an error before any result, or every sample failed


def one_line(text: str) -> str:
    """A message on one line: its non-empty lines joined by '; '."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def error_line(e: BaseException) -> str:
    """`error: ...` for an exception: the message, with the type name when it is not a plain input error."""
    if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
        msg = e.args[0]  # str(KeyError) adds quotes
    elif isinstance(e, OSError) and e.filename is not None and e.strerror:
        msg = f"{e.filename}: {e.strerror}"
    else:
        msg = str(e)
    msg = one_line(msg)
    if not isinstance(e, INPUT_ERRORS) or not msg:
        msg = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return f"error: {msg}"


def fail(message: str) -> typer.Exit:
    """Print `error: message` to stderr and return the Exit(2) to raise."""
    typer.echo(f"error: {one_line(message)}", err=True)
    return typer.Exit(EXIT_INPUT)


def sample_failures(n_failed: int, n: int, first: str, what: str = "scored") -> typer.Exit:
    """The line and exit for a run whose samples partly (exit 1) or all (exit 2: no result at all) failed."""
    typer.echo(f"error: {n_failed} of {n} samples could not be {what}; first: {one_line(first)}", err=True)
    return typer.Exit(EXIT_INPUT if n_failed >= n else EXIT_FAILED)


def _out_paths(args: Sequence[str]) -> list[Path]:
    """The --out folders named on a command line."""
    out = []
    for i, a in enumerate(args):
        if a == "--out" and i + 1 < len(args):
            out.append(Path(args[i + 1]))
        elif a.startswith("--out="):
            out.append(Path(a[len("--out="):]))
    return out


_DERIVED = {"manifest.json", "summary.json", "summary.txt", "results.jsonl", "figures.json",  # rebuilt by every call
            "steps.json", "steps.txt", "steps.png"}  # (probe cos --data's curve)


def _remove_if_no_results(path: Path) -> None:
    """Remove a folder this call created when it holds nothing a re-run would keep.

    That is: its manifest, summaries and scores derived from its samples, and sample records that are errors
    (a re-run retries those). A folder with one finished sample, checkpoint or trace is left alone.
    """
    if not path.is_dir():
        return
    for f in (p for p in path.rglob("*") if p.is_file()):
        if (f.parent == path and f.name in _DERIVED) or f.parent == path / "scores":  # --data runs rescore every call
            continue
        if f.parent == path / "samples" and f.suffix == ".json" and "error" in json.loads(f.read_text()):
            continue
        return
    shutil.rmtree(path, ignore_errors=True)


class SteplensGroup(TyperGroup):
    """The root command group: every error, usage errors included, ends as one line on stderr and an exit code."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        fresh = [p for p in _out_paths(args) if not p.exists()]
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except typer.TyperException as e:  # usage: unknown command or option, a value out of range (click's errors)
            if type(e).__name__ == "NoArgsIsHelpError":  # a bare `steplens` or group: its help is the message
                typer.echo(e.format_message())
            else:
                typer.echo(f"error: {one_line(e.format_message())}", err=True)
            code = EXIT_INPUT
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            code = EXIT_FAILED
        except Exception as e:
            if os.environ.get("STEPLENS_DEBUG"):
                raise
            typer.echo(error_line(e), err=True)
            code = EXIT_INPUT
        if code == EXIT_INPUT:
            for p in fresh:
                _remove_if_no_results(p)
        if standalone_mode:
            sys.exit(code)
        return code


class RunByDefault(TyperGroup):
    """A command group whose `run` subcommand is the default: `steplens trace --model m ...` is `trace run --model m ...`."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if args and args[0].startswith("-") and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


# -- input parsing: one way to read each kind of list, with errors that name the option --------------
def parse_ints(text: str, option: str) -> list[int]:
    """'1, 2,3' -> [1, 2, 3] (blanks ignored); anything else is a one-line error naming `option`."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{option} must be comma-separated integers, got {text!r}") from None


def parse_window(text: str, option: str = "--window") -> tuple[int, int]:
    """'START:END' -> (start, end), both integers >= 0 with start <= end."""
    a, colon, b = text.partition(":")
    try:
        if not colon:
            raise ValueError
        start, end = int(a), int(b)
    except ValueError:
        raise typer.BadParameter(f"{option} must be START:END steps (e.g. 0:2), got {text!r}") from None
    if not 0 <= start <= end:
        raise typer.BadParameter(f"{option} must satisfy 0 <= START <= END, got {text!r}")
    return start, end


def parse_names(text: str) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c'] (blanks ignored)."""
    return [v.strip() for v in text.split(",") if v.strip()]


# -- options that repeat: one definition each -----------------------------------------------------
def _default_sizes() -> str:
    """'maze 5, occlusion 12, ...': each task's default size, for --size's help."""
    from ..tasks import TASKS

    return ", ".join(f"{name} {t.default_size}" for name, t in sorted(TASKS.items()))


def task_size(task: str, size: int | None) -> int | None:
    """--size for --task: the task's default when not given; a size outside the task's range is refused here, before
    any sample runs (`--task suite` takes each task's default or --sizes: None)."""
    from ..tasks import get_task

    return None if task == "suite" else get_task(task).check_size(size)


MODEL = typer.Option("maze", "--model", help="Shipped model name (maze, multi), path to an exported model, or a diffusers folder: "
                     "wan:DIR, hunyuan15:DIR, ltx2:DIR; or a control: null:shrink, null:blur, null:noise, null:forget, control:candidates, control:commit.")
TASK = typer.Option("maze", "--task", help="Task name (see `steplens tasks list`); evaluate, ensemble run and search run also take "
                                        "`suite` (every task of the model).")
SIZE = typer.Option(None, "--size", show_default=False, help=f"Task size (default: the task's own: {_default_sizes()}; "
                                                            "the ranges in `steplens tasks list`).")
STEPS = typer.Option(None, "--steps", min=1, help="Sampling steps (default: the model's: 20; wan: 50, the paper's).")
SHIFT = typer.Option(None, "--shift", help="Time shift of the schedule (default: the model's: 1; wan: 5, the paper's).")
DEVICE = typer.Option("auto", "--device", help="auto (cuda if there is one), cpu, cuda, cuda:1 ...; Ray workers use the same.")
SAMPLER = typer.Option("euler", "--sampler", help="euler or heun.")
RAY = typer.Option(None, "--ray", metavar="ADDRESS",
                   help="Run on Ray: 'local' starts a local cluster; else a cluster address ('auto', 'ray://host:10001'). "
                        "Needs steplens[ray].")
WORKERS = typer.Option(None, "--workers", min=1, help="With --ray: most chunks in flight (default: the cluster's GPUs, else CPUs).")
ALLOW_SEEN = typer.Option(False, "--allow-seen", help="Where a level has too few instances unseen in training, fill up with seen ones "
                          "(marked seen_in_training) instead of failing.")
OUT = typer.Option(..., "--out", help="Run folder (re-running the same command resumes).")


def model_sampling(model: str, steps: int | None, shift: float | None) -> tuple[int, float]:
    """--steps and --shift for `model`: None takes the model's own default (`models.registry.sampling_defaults`)."""
    from ..models.registry import sampling_defaults

    d_steps, d_shift = sampling_defaults(model)
    return d_steps if steps is None else steps, d_shift if shift is None else shift


def sampling_config(model: str, steps: int | None, shift: float | None, sampler: str = "euler") -> Any:
    """The SamplingConfig of --sampler/--steps/--shift, the model's defaults where not given."""
    from ..runner import SamplingConfig

    steps, shift = model_sampling(model, steps, shift)
    return SamplingConfig(sampler=sampler, steps=steps, shift=shift)


def n_option(default: int) -> Any:
    return typer.Option(default, "--n", min=1, help="Held-out instances.")


def seed_option(default: int) -> Any:
    return typer.Option(default, "--seed", min=0, help="First held-out instance seed (instances SEED..SEED+N-1).")


def batch_option(default: int) -> Any:
    return typer.Option(default, "--batch", min=1, help="Samples per batch.")


# -- precision: every command that runs a network takes it, applies it and records it the same way -------
PRECISION = typer.Option("auto", "--precision",
                         help="Network precision: auto (bf16 on CUDA or a CPU with bf16 matrix units (AMX), else fp32), fp32 or bf16.")


def choose_precision(precision: str, device: str) -> PrecisionChoice:
    """--precision chosen for --device as resolved ('auto': cuda if there is one): `steplens.precision.choose`."""
    from ..models.errors import resolve_device
    from ..precision import choose

    return choose(precision, resolve_device(device))


def load_model(model: str, device: str, choice: PrecisionChoice, prompt_embeds: str | None = None, ray: str | None = None,
               **kw: Any) -> Any:
    """Load --model on --device in the chosen precision (`kw`: backend options for wan: models); wan: models with
    --prompt-embeds skip the text encoder and look up each instance's prompt."""
    from ..models.registry import BACKENDS, load, parse_spec

    if prompt_embeds and parse_spec(model)[0] is None:
        names = " / ".join(f"{p}:" for p in sorted(BACKENDS))
        raise typer.BadParameter(f"--prompt-embeds applies to text-conditioned {names} models only")
    if prompt_embeds and ray:
        raise typer.BadParameter("--ray loads the model in each worker from --model; --prompt-embeds is not shipped to workers")
    den = load(model, device=device, **kw, **({"text_encoder": False} if prompt_embeds else {})).to_precision(choice.precision)
    if prompt_embeds:
        from ..vbvr.wan import load_prompt_embeds

        den.prompt_lookup = load_prompt_embeds(prompt_embeds)  # each instance's own prompt
    return den


def data_run_seed(ctx: Any, model: str, ray: str | None, seed: int) -> int:
    """--data runs (an official VBVR-Bench root): a diffusers model (wan:DIR, ...) in this process; the noise seed is 1 (the
    paper's) unless given."""
    if ray is not None:
        raise fail("--ray does not apply to --data runs (one process generates the benchmark's samples)")
    from ..models.registry import BACKENDS, parse_spec

    if parse_spec(model)[0] is None:
        names = ", ".join(f"{p}:DIR" for p in sorted(BACKENDS))
        raise fail(f"--data needs a diffusers image-to-video model ({names}), got --model {model!r}")
    # typer vendors click, so its ParameterSource enum is compared by name
    return 1 if getattr(ctx.get_parameter_source("seed"), "name", "DEFAULT") == "DEFAULT" else seed


def record_precision(out: str | Path, choice: PrecisionChoice, *, quiet: bool = False) -> None:
    """After a run with a result: OUT/precision.json (what was asked, what ran, the hardware) and the same as a line on stderr.

    Written last and only then, so a refused resume or a run without a result leaves an earlier record (or none) as it was,
    its folder is cleaned up as any other, and its error stays one line."""
    from ..config import write_json

    write_json(Path(out) / "precision.json", choice.to_dict())
    if not quiet:
        typer.echo(choice.describe(), err=True)


# -- wan: models and VBVR-Bench's official layout (evaluate-vbvr on an official root, ensemble run --data) --
PROMPT_EMBEDS = typer.Option(None, "--prompt-embeds",
                             help="wan: models: precomputed prompt embeddings (.pt, as evaluate-vbvr takes); skips the text encoder.")
LORA_HIGH = typer.Option(None, "--lora-high", help="LoRA for Wan2.2's high-noise expert.")
LORA_LOW = typer.Option(None, "--lora-low", help="LoRA for Wan2.2's low-noise expert.")
HEIGHT = typer.Option(0, "--height", min=0, help="Generate at this height (0: on an official root the preset's pixel area at the "
                                                 "first frame's aspect; on flat folders the sample's, rounded down to a multiple of 16).")
WIDTH = typer.Option(0, "--width", min=0, help="Generate at this width (0: as --height).")
SPLITS = typer.Option("", "--split", help="Official layout: comma-separated splits (In-Domain_50, Out-of-Domain_50; default all).")
BENCH_TASKS = typer.Option("", "--tasks", help="Official layout: comma-separated task folders (default all).")
VIDEO_PRESET = typer.Option("auto", "--video-preset", help="Official layout: frames and pixel area (auto: from the model).")
FRAMES = typer.Option(0, "--frames", min=0, help="Official layout: frames to generate (0: the preset's).")
SCORER = typer.Option("steplens", "--scorer", help="Official layout: steplens, vbvr-evalkit, or both comma-separated.")
EVALKIT = typer.Option(None, "--evalkit", help="A VBVR-EvalKit checkout (for --scorer vbvr-evalkit).")
EVALKIT_ENTRY = typer.Option("run_evaluation", "--evalkit-entry", help="run_evaluation (task score only) or evaluate (weighted mix).")
