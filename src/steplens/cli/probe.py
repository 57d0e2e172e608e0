"""`steplens probe ...`: the paper's analyses as commands (thin layer over steplens.probes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from ..config import to_json
from .common import (ALLOW_SEEN, BENCH_TASKS, DEVICE, EVALKIT, EVALKIT_ENTRY, HEIGHT, MODEL, OUT, PRECISION, PROMPT_EMBEDS, RAY, SAMPLER, SCORER,
                     SHIFT, SIZE, SPLITS, STEPS, TASK, VIDEO_PRESET, WIDTH, WORKERS, batch_option, choose_precision, data_run_seed,
                     fail, load_model, model_sampling, n_option, parse_ints, parse_names, parse_window, record_precision,
                     sample_failures, sampling_config, seed_option)

probe_app = typer.Typer(no_args_is_help=True, help="Reproduce the paper's analyses on any model: cos, perturb, cka, layers, behaviour.")

SEED = seed_option(20_000)
EVERY = typer.Option(3, "--every", min=1, help="Inject at every k-th step.")
MODE = typer.Option("replace,renoise", "--mode",
                    help="One or more of replace (the paper's wording: unit noise), renoise (level-matched control: "
                         "(1 - sigma) x0_hat + sigma noise), add (x += strength * sigma * noise), destroy (SNR-matched: a fraction "
                         "strength of the signal replaced by noise); comma-separated, each reported.")
STRENGTH = typer.Option(1.0, "--strength", help="Scale of added noise (--mode add); fraction of signal destroyed (--mode destroy).")
PX = typer.Option(None, "--px", min=1, help="wan: models: pixels per task block (presets: 16 quick, 96 paper; padded to what the model accepts).")
FRAMES = typer.Option(None, "--frames", min=1, help="wan: models: video frames, 4k+1 (presets: 9 quick, 49 paper).")


def _run(out: str, body: Callable[..., dict[str, Any]], model: str, task: str, size: int | None, n: int, seed: int,
         steps: int | None, shift: float | None, batch: int, sampler: str = "euler", prompt_embeds: str | None = None,
         ray: str | None = None, workers: int | None = None, device: str = "auto", px: int | None = None,
         frames: int | None = None, precision: str = "auto", allow_seen: bool = False) -> None:
    """Build the probe config, load the model and run `body(den, cfg, ray_address=..., num_workers=...)`.

    Every probe folder is resumable: re-running the command skips the batches it already holds."""
    from ..models.registry import with_options
    from ..probes.common import ProbeConfig, held_out

    model = with_options(model, px=px, frames=frames)  # in the spec: Ray workers load the same
    choice = choose_precision(precision, device)
    cfg = ProbeConfig(model=model, task=task, size=size, n=n, seed=seed, batch=batch, device=device, precision=choice.precision.value,
                      sampling=sampling_config(model, steps, shift, sampler), allow_seen=allow_seen)
    held_out(cfg)  # too few unseen instances: one error line before the model loads
    den = load_model(model, device, choice, prompt_embeds, ray)
    summary = body(den, cfg, ray_address=ray, num_workers=workers)
    record_precision(out, choice)
    typer.echo((Path(out) / "summary.txt").read_text())
    typer.echo(f"wrote {out} ({len(to_json(summary))} bytes of summary)")


@probe_app.command("cos")
def cos(ctx: typer.Context, out: str = OUT, model: str = MODEL, task: str = TASK, size: int | None = SIZE, n: int = n_option(16), seed: int = SEED,
        steps: int | None = STEPS, shift: float | None = SHIFT, batch: int = batch_option(16), prompt_embeds: str | None = PROMPT_EMBEDS,
        ray: str | None = RAY, workers: int | None = WORKERS, device: str = DEVICE, precision: str = PRECISION,
        px: int | None = PX, frames: int | None = FRAMES, sampler: str = SAMPLER,
        views: int = typer.Option(4, "--views", min=0, help="Samples to draw as strips and GIFs."),
        data: str | None = typer.Option(None, "--data", help="An official VBVR-Bench root: score the decoded x0_hat of every --every-th "
                                        "step (and the last) with --scorer like a final video (OUT/step_SS/<split>/<task>/<i:05d>.mp4); "
                                        "a wan: model, seed 1 unless --seed is given."),
        every: int = typer.Option(5, "--every", min=1, help="--data: score every k-th step's x0_hat (and the last step's)."),
        split: str = SPLITS, tasks: str = BENCH_TASKS, video_preset: str = VIDEO_PRESET, height: int = HEIGHT, width: int = WIDTH,
        scorer: str = SCORER, evalkit: str | None = EVALKIT, evalkit_entry: str = EVALKIT_ENTRY, allow_seen: bool = ALLOW_SEEN) -> None:
    """Chain-of-Steps: decode x0_hat at every step; candidate mass, lit branches, commit step."""
    from ..probes.cos import run_cos

    if data is not None:
        seed = data_run_seed(ctx, model, ray, seed)
        _cos_on_bench(data, out, model, seed, steps, shift, sampler, precision, prompt_embeds, device, every, split, tasks,
                      video_preset, frames or 0, height, width, scorer, evalkit, evalkit_entry)
        return
    _refuse_bench_options(split, tasks, video_preset, height, width, scorer, evalkit)
    _run(out, lambda den, cfg, **kw: run_cos(den, cfg, out, n_views=views, **kw),
         model, task, size, n, seed, steps, shift, batch, sampler, prompt_embeds, ray, workers, device, px, frames, precision, allow_seen)


def _cos_on_bench(data: str, out: str, model: str, seed: int, steps: int | None, shift: float | None, sampler: str, precision: str,
                  prompt_embeds: str | None, device: str, every: int, split: str, tasks: str, video_preset: str, frames: int, height: int,
                  width: int, scorer: str, evalkit: str | None, evalkit_entry: str) -> None:
    """probe cos --data: each chosen step's x0_hat scored like a final video (steplens.probes.bench_steps)."""
    from ..probes.bench_steps import run_bench_steps, steps_lines

    sampling = sampling_config(model, steps, shift, sampler)
    choice, cfg, scorers, load = _bench_setup(data, model, seed, precision, prompt_embeds, device, split, tasks, video_preset, frames,
                                              height, width, scorer, evalkit, evalkit_entry)
    den = load()
    result = run_bench_steps(den, cfg, out, sampling, scorers, every=every,
                             manifest={"model": model, "precision": choice.precision.value, "every": every}, echo=typer.echo)
    errors = result["generation_errors"]
    if len(errors) < result["n_samples"] * result["n_roots"]:  # a result: record what ran (see record_precision)
        record_precision(out, choice)
    typer.echo("\n".join(steps_lines(result)))
    if errors:
        raise sample_failures(len(errors), result["n_samples"] * result["n_roots"], errors[0], "generated")


def _refuse_bench_options(split: str, tasks: str, video_preset: str, height: int, width: int, scorer: str, evalkit: str | None) -> None:
    """A task run (no --data) given an option of the --data runs: one error line."""
    if split or tasks or video_preset != "auto" or height or width or scorer != "steplens" or evalkit is not None:
        raise fail("--split, --tasks, --video-preset, --height, --width, --scorer and --evalkit apply to --data runs only")


def _bench_setup(data: str, model: str, seed: int, precision: str, prompt_embeds: str | None, device: str, split: str, tasks: str,
                 video_preset: str, frames: int, height: int, width: int, scorer: str, evalkit: str | None,
                 evalkit_entry: str) -> tuple[Any, Any, list[Any], Callable[[], Any]]:
    """A --data probe's precision, BenchConfig and scorers (every refusal before the model loads), and its model loader."""
    from ..models.errors import resolve_device
    from ..vbvr.kit import make_scorers
    from ..vbvr.run import BenchConfig
    from .vbvr import load_bench_model

    choice = choose_precision(precision, device)
    cfg = BenchConfig(data, tuple(parse_names(split)), tuple(parse_names(tasks)), video_preset, frames, height, width, seed, prompt_embeds)
    device = str(resolve_device(device))
    scorers = make_scorers(scorer, evalkit=evalkit, entry=evalkit_entry, device=device.split(":")[0])
    return choice, cfg, scorers, lambda: load_bench_model(model, device, choice, {"text_encoder": prompt_embeds is None})


@probe_app.command("perturb")
def perturb(out: str = OUT, model: str = MODEL, task: str = TASK, size: int | None = SIZE, n: int = n_option(12), seed: int = SEED,
            steps: int | None = STEPS, shift: float | None = SHIFT, batch: int = batch_option(12), prompt_embeds: str | None = PROMPT_EMBEDS,
            ray: str | None = RAY, workers: int | None = WORKERS, device: str = DEVICE, precision: str = PRECISION, px: int | None = PX,
            frames: int | None = FRAMES, every: int = EVERY, mode: str = MODE, strength: float = STRENGTH,
            frame_window: str = typer.Option("", "--frame-window", metavar="A:B",
                                             help="Also corrupt each frame only at steps A..B-1, then release it: "
                                                  "does the answer survive, how fast does the frame's x0_hat recover."), allow_seen: bool = ALLOW_SEEN) -> None:
    """Noise at a step (all frames) vs noise at a frame (every step): score vs injection index, 95% CIs.

    Always samples with flow-matching Euler: a multistep corrector (UniPC) would undo most of the injected noise.
    """
    from ..probes.perturb import parse_modes, run_perturb

    parse_modes(mode)  # before the model loads
    _run(out, lambda den, cfg, **kw: run_perturb(den, cfg, out, every=every, mode=mode, strength=strength,
                                                 frame_window=parse_window(frame_window, "--frame-window") if frame_window else None, **kw),
         model, task, size, n, seed, steps, shift, batch, "euler", prompt_embeds, ray, workers, device, px, frames, precision, allow_seen)


@probe_app.command("cka")
def cka(out: str = OUT, model: str = MODEL, task: str = TASK, size: int | None = SIZE, n: int = n_option(8), seed: int = SEED,
        steps: int | None = STEPS, shift: float | None = SHIFT, batch: int = batch_option(16), prompt_embeds: str | None = PROMPT_EMBEDS,
        ray: str | None = RAY, workers: int | None = WORKERS, device: str = DEVICE, precision: str = PRECISION,
        px: int | None = PX, frames: int | None = FRAMES, every: int = EVERY,
        layers: str = typer.Option("", "--layers", help="Comma-separated block indices (default: middle and last)."),
        mode: str = MODE, strength: float = STRENGTH, allow_seen: bool = ALLOW_SEEN) -> None:
    """Information flow: 1 - CKA between clean and perturbed x0_hat, outputs and block streams, injection step x later step.

    Always samples with flow-matching Euler: a multistep corrector (UniPC) would undo most of the injected noise.
    """
    from ..probes.perturb import parse_modes, run_cka

    parse_modes(mode)
    ls = parse_ints(layers, "--layers") or None
    _run(out, lambda den, cfg, **kw: run_cka(den, cfg, out, every=every, layers=ls, mode=mode, strength=strength, **kw),
         model, task, size, n, seed, steps, shift, batch, "euler", prompt_embeds, ray, workers, device, px, frames, precision, allow_seen)


@probe_app.command("layers")
def layers(out: str = OUT, model: str = MODEL, task: str = TASK, size: int | None = SIZE, n: int = n_option(6), seed: int = SEED,
           steps: int | None = STEPS, shift: float | None = SHIFT, batch: int = batch_option(6),
           step: int = typer.Option(-1, "--step", help="Step for the maps (default: steps/4)."),
           window: str = typer.Option("", "--window", help="Steps START:END over which blocks are skipped (default: all)."),
           patch: str = typer.Option("resid", "--patch", help="resid: replace block L's output (all tokens), the paper's protocol; "
                                                             "writes: replace only what block L adds (attention and MLP outputs)."),
           patch_window: str = typer.Option("", "--patch-window", help="Steps START:END during which layers are patched "
                                                                       "(default: 0:steps/2)."),
           skip: bool = typer.Option(True, "--skip/--no-skip", help="Also skip each block and measure the solve-rate drop."),
           token_maps: bool = typer.Option(True, "--token-maps/--no-token-maps", help="Linear probes of what each layer's tokens encode."),
           prompt_embeds: str | None = PROMPT_EMBEDS, ray: str | None = RAY, workers: int | None = WORKERS, device: str = DEVICE,
           px: int | None = PX, frames: int | None = FRAMES, precision: str = PRECISION, allow_seen: bool = ALLOW_SEEN) -> None:
    """Layer specialisation: norm/PCA maps, token-map probes, energy, layer CKA, block skipping, activation patching."""
    from ..probes.layers import run_layers

    w = parse_window(window) if window else None
    pw = parse_window(patch_window, "--patch-window") if patch_window else None
    n_steps = model_sampling(model, steps, shift)[0]
    for option, text, win in (("--window", window, w), ("--patch-window", patch_window, pw)):
        if win is not None and win[1] > n_steps:
            raise typer.BadParameter(f"{option} {text} ends after the {n_steps} sampling steps")

    def body(den: Any, cfg: Any, **kw: Any) -> dict[str, Any]:
        return run_layers(den, cfg, out, step=None if step < 0 else step, window=w, patch_window=pw, patch=patch, skip=skip,
                          token_maps=token_maps, **kw)

    _run(out, body, model, task, size, n, seed, steps, shift, batch, "euler", prompt_embeds, ray, workers, device, px, frames, precision, allow_seen)


@probe_app.command("behaviour")
def behaviour(out: str = OUT, model: str = MODEL, task: str = TASK, size: int | None = SIZE, n: int = n_option(16), seed: int = SEED,
              steps: int | None = STEPS, shift: float | None = SHIFT, batch: int = batch_option(16), prompt_embeds: str | None = PROMPT_EMBEDS,
              ray: str | None = RAY, workers: int | None = WORKERS, device: str = DEVICE, px: int | None = PX,
              frames: int | None = FRAMES, precision: str = PRECISION, allow_seen: bool = ALLOW_SEEN) -> None:
    """Emergent behaviours: self-correction, working memory, perception before action."""
    from ..probes.behaviour import run_behaviour

    _run(out, lambda den, cfg, **kw: run_behaviour(den, cfg, out, **kw),
         model, task, size, n, seed, steps, shift, batch, "euler", prompt_embeds, ray, workers, device, px, frames, precision, allow_seen)


@probe_app.command("splice")
def splice(ctx: typer.Context, out: str = OUT, model: str = MODEL, task: str = TASK, size: int = SIZE, n: int = n_option(16), seed: int = SEED,
           steps: int | None = STEPS, shift: float | None = SHIFT, batch: int = batch_option(4), prompt_embeds: str | None = PROMPT_EMBEDS,
           ray: str | None = RAY, workers: int | None = WORKERS, device: str = DEVICE, px: int | None = PX,
           frames: int | None = FRAMES, precision: str = PRECISION, sampler: str = SAMPLER,
           k: int = typer.Option(8, "--k", min=2, help="Seeds per instance, among which pairs with different final answers are found."),
           every: int = typer.Option(2, "--every", min=1, help="Splice at every k-th step (0, k, 2k, ...)."),
           pairs: int = typer.Option(1, "--pairs", min=1, help="Pairs of seeds with different answers spliced per instance (at most)."),
           self_check: bool = typer.Option(False, "--self-check/--no-self-check",
                                           help="Also splice each A into itself (the control: must reproduce A's final)."),
           erase: bool = typer.Option(False, "--erase/--no-erase",
                                      help="Also erase A's largest drawn wrong candidate (a maze: lit dead-end branch) from its clean "
                                           "estimate at each splice step (A's noise kept): does the model re-draw it?"), allow_seen: bool = ALLOW_SEEN,
           data: str | None = typer.Option(None, "--data", help="An official VBVR-Bench root: a final's answer is its --scorer score "
                                           "(one scorer); pairs are seeds whose scores differ by at least --margin, and a spliced "
                                           "final follows the donor whose score it lies within half their gap of (OUT/seeds, "
                                           "OUT/splices); a wan: model, seed 1 unless --seed is given."),
           margin: float = typer.Option(0.05, "--margin", help="--data: two finals differ when their scores differ by at least this."),
           split: str = SPLITS, tasks: str = BENCH_TASKS, video_preset: str = VIDEO_PRESET, height: int = HEIGHT, width: int = WIDTH,
           scorer: str = SCORER, evalkit: str | None = EVALKIT, evalkit_entry: str = EVALKIT_ENTRY) -> None:
    """When is the answer decided: splice seed B's clean estimate into seed A's state at each step (A's noise kept)."""
    from ..probes.splice import run_splice

    if data is not None:
        refused = [o for o, on in (("--erase", erase), ("--self-check", self_check), ("--pairs", pairs != 1)) if on]
        if refused:
            raise fail(f"{', '.join(refused)} apply to task runs only: --data splices one pair per sample, scored by the benchmark")
        seed = data_run_seed(ctx, model, ray, seed)
        _splice_on_bench(data, out, model, seed, steps, shift, sampler, precision, prompt_embeds, device, k, every, margin, split, tasks,
                         video_preset, frames or 0, height, width, scorer, evalkit, evalkit_entry)
        return
    _refuse_bench_options(split, tasks, video_preset, height, width, scorer, evalkit)
    _run(out, lambda den, cfg, **kw: run_splice(den, cfg, out, k=k, every=every, max_pairs=pairs, self_check=self_check,
                                                 erase=erase, **kw),
         model, task, size, n, seed, steps, shift, batch, sampler, prompt_embeds, ray, workers, device, px, frames, precision, allow_seen)


def _splice_on_bench(data: str, out: str, model: str, seed: int, steps: int | None, shift: float | None, sampler: str, precision: str,
                     prompt_embeds: str | None, device: str, k: int, every: int, margin: float, split: str, tasks: str,
                     video_preset: str, frames: int, height: int, width: int, scorer: str, evalkit: str | None,
                     evalkit_entry: str) -> None:
    """probe splice --data: the pair search and the outcomes read off one benchmark scorer (steplens.probes.bench_splice)."""
    from ..probes.bench_splice import run_bench_splice

    if len(parse_names(scorer)) > 1:
        raise fail(f"--data splices read a final's answer off one scorer; --scorer names {scorer!r}: give one")
    sampling = sampling_config(model, steps, shift, sampler)
    choice, cfg, scorers, load = _bench_setup(data, model, seed, precision, prompt_embeds, device, split, tasks, video_preset, frames,
                                              height, width, scorer, evalkit, evalkit_entry)
    den = load()
    summary = run_bench_splice(den, cfg, out, sampling, scorers[0], k=k, every=every, margin=margin,
                               manifest={"model": model, "precision": choice.precision.value}, echo=typer.echo)
    record_precision(out, choice)
    typer.echo((Path(out) / "summary.txt").read_text())
    typer.echo(f"wrote {out} ({len(to_json(summary))} bytes of summary)")


@probe_app.command("splice-curves")
def splice_curves(runs: list[str] = typer.Argument(..., help="Splice run folders (steplens probe splice --out ...)."), out: str = OUT) -> None:
    """One figure over several splice runs: the follow-plan rate vs splice step, one line per model/task/size."""
    from ..probes.splice import compare_runs

    compare_runs(runs, out)
    typer.echo((Path(out) / "summary.txt").read_text())
