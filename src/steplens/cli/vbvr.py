"""`steplens evaluate-vbvr`: a Wan model on VBVR-format samples, end to end (thin layer over steplens.vbvr.wan
and, on an official VBVR-Bench root, steplens.vbvr.run)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ..config import to_json
from .common import (BENCH_TASKS, DEVICE, EVALKIT, EVALKIT_ENTRY, FRAMES, HEIGHT, LORA_HIGH, LORA_LOW, PRECISION, PROMPT_EMBEDS, SCORER,
                     SHIFT, SPLITS, STEPS, VIDEO_PRESET, WIDTH, choose_precision, fail, model_sampling, parse_names, record_precision,
                     sample_failures)

if TYPE_CHECKING:
    from ..precision import PrecisionChoice

commands = typer.Typer()


@commands.command("evaluate-vbvr")
def evaluate_vbvr_cmd(
    model: str = typer.Option(..., "--model", help="wan:DIR, a local diffusers Wan folder (I2V: Wan2.1/2.2 A14B or TI2V)."),
    data: Path = typer.Option(..., "--data", help="VBVR-format samples: ROOT/<sample>/, ROOT/<split>/<task>/<sample>/, or an official "
                                                  "VBVR-Bench root GT/<split>/<task>/<00000>/ (no meta.json needed)."),
    out: Path = typer.Option(..., "--out", help="Run folder (re-running resumes)."),
    steps: int | None = STEPS,
    shift: float | None = SHIFT,
    guidance: float = typer.Option(5.0, "--guidance", help="CFG scale (high-noise expert for Wan2.2 A14B)."),
    guidance_2: float | None = typer.Option(None, "--guidance-2", help="CFG scale of the low-noise expert (default: --guidance)."),
    seed: int = typer.Option(1, "--seed", help="Noise seed, the same for every sample."),
    prompt_embeds: str | None = PROMPT_EMBEDS,
    height: int = HEIGHT,
    width: int = WIDTH,
    lora: str | None = typer.Option(None, "--lora", help="LoRA for every transformer (both experts of Wan2.2 A14B)."),
    lora_high: str | None = LORA_HIGH,
    lora_low: str | None = LORA_LOW,
    lora_scale: float = typer.Option(1.0, "--lora-scale", help="Adapter scale of the LoRA(s)."),
    lora_scale_low: float | None = typer.Option(None, "--lora-scale-low", help="Adapter scale of the low-noise expert's LoRA (default: --lora-scale)."),
    device: str = DEVICE,
    precision: str = PRECISION,
    offload: str = typer.Option("none", "--offload", help="model: large modules wait on the CPU until they run (one A14B expert on the GPU at a time)."),
    preset: str = typer.Option("paper", "--preset", help="paper (expert switch at 875, shift 5) or folder (the folder's boundary_ratio and shift)."),
    vae_tiling: bool = typer.Option(False, "--vae-tiling", help="Decode in tiles (less VAE memory)."),
    split: str = SPLITS,
    tasks: str = BENCH_TASKS,
    video_preset: str = VIDEO_PRESET,
    frames: int = FRAMES,
    method: str = typer.Option("single", "--method", help="Official layout: name of the output root OUT/<method>/."),
    scorer: str = SCORER,
    evalkit: str | None = EVALKIT,
    evalkit_entry: str = EVALKIT_ENTRY,
) -> None:
    """Generate every VBVR sample with a Wan model and score it; exit 1 if some samples failed, 2 if all did.

    An official VBVR-Bench root (GT/<split>/<task>/<i:05d>/) writes OUT/<method>/<split>/<task>/<i:05d>.mp4.
    """
    from ..vbvr.wan import VbvrRunConfig, evaluate_vbvr
    from ..models.registry import with_options
    from ..models.wan import load_wan
    from ..tasks.vbvr import is_bench_root

    path = model.removeprefix("wan:")
    steps, shift = model_sampling(with_options(f"wan:{path}", preset=preset), steps, shift)
    choice = choose_precision(precision, device)
    wan = {"lora": lora, "lora_high": lora_high, "lora_low": lora_low, "lora_scale": lora_scale, "lora_scale_low": lora_scale_low,
           "text_encoder": prompt_embeds is None, "guidance_scale": guidance, "guidance_scale_2": guidance_2, "offload": offload,
           "preset": preset, "vae_tiling": vae_tiling}
    if is_bench_root(data):
        from ..ensemble import Method
        from ..runner import SamplingConfig
        from ..vbvr.run import BenchConfig

        cfg = BenchConfig(str(data), tuple(parse_names(split)), tuple(parse_names(tasks)), video_preset, frames, height, width, seed,
                          prompt_embeds)
        run_bench_cmd(model, wan, device, choice, cfg, out, [Method(method)], SamplingConfig("euler", steps, shift), scorer, evalkit,
                      evalkit_entry, kind="evaluate-vbvr-bench")
        return
    if split or tasks or video_preset != "auto" or frames or method != "single" or scorer != "steplens" or evalkit is not None:
        raise fail("--split, --tasks, --video-preset, --frames, --method, --scorer and --evalkit apply to an official VBVR-Bench root "
                   f"(DATA/In-Domain_50/<task>/<00000>/); {data} is not one")
    cfg = VbvrRunConfig(model=model, data=str(data), steps=steps, shift=shift, guidance=guidance, guidance_2=guidance_2,
                        seed=seed, prompt_embeds=prompt_embeds, height=height, width=width, lora=lora, lora_high=lora_high,
                        lora_low=lora_low, lora_scale=lora_scale, lora_scale_low=lora_scale_low, preset=preset, offload=offload,
                        precision=choice.precision.value)
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no such data folder")
    den = load_wan(path, device=device, dtype=choice.precision.dtype, **wan)
    summary = evaluate_vbvr(den, cfg, out, echo=typer.echo)
    if summary["n_errors"] < summary["n"]:  # a result: record what ran (see record_precision)
        record_precision(out, choice)
    typer.echo(to_json({k: summary[k] for k in ("n", "n_errors", "success", "score")}))
    if summary["n_errors"]:
        raise sample_failures(summary["n_errors"], summary["n"], summary["errors"][0], "run and scored")


def run_bench_cmd(model: str, wan: dict[str, Any], device: str, choice: PrecisionChoice, cfg: Any, out: str | Path, methods: list[Any],
                  sampling: Any, scorer: str, evalkit: str | None, evalkit_entry: str, *, kind: str,
                  extra: dict[str, Any] | None = None) -> None:
    """Generate with every method on an official root, score, print the summary (evaluate-vbvr, ensemble run --data).

    `wan`: keywords for `load_wan` (other families: text_encoder only), recorded in the run's manifest with the precision
    the transformers run in (`choice`).
    Exit 1 if some samples could not be generated, 2 if none could.
    """
    from ..models.errors import resolve_device
    from ..vbvr.kit import make_scorers
    from ..vbvr.run import evaluate_bench, summary_lines

    device = str(resolve_device(device))
    scorers = make_scorers(scorer, evalkit=evalkit, entry=evalkit_entry, device=device.split(":")[0])  # the kit takes cuda, not cuda:1
    den = load_bench_model(model, device, choice, wan)
    summary = evaluate_bench(den, cfg, out, methods, sampling, scorers, kind=kind, echo=typer.echo,
                             manifest={"model": model, **wan, "precision": choice.precision.value, **(extra or {})})
    errors, n = summary["generation_errors"], summary["n_samples"] * len(summary["methods"])  # methods: with the trivial ones
    if len(errors) < n:  # a result: record what ran (see record_precision)
        record_precision(out, choice)
    typer.echo("\n".join(summary_lines(summary)))
    if errors:
        raise sample_failures(len(errors), n, errors[0], "generated")


def load_bench_model(model: str, device: str, choice: PrecisionChoice, options: dict[str, Any]) -> Any:
    """A diffusers image-to-video model for an official-root run: wan:DIR with every Wan option (`load_wan`); another
    family's prefix (hunyuan15:, ltx2:) through the registry, where a Wan-only option that is set is refused."""
    from ..models.registry import load, parse_spec
    from ..models.wan import load_wan

    prefix = parse_spec(model)[0]
    if prefix == "wan":
        return load_wan(model.removeprefix("wan:"), device=device, dtype=choice.precision.dtype, **options)
    wan_only = sorted(k for k, v in options.items() if k != "text_encoder" and v)
    if wan_only:
        raise fail(f"{', '.join('--' + k.replace('_', '-') for k in wan_only)} apply to wan: models only, got --model {model!r}")
    return load(model, device=device, text_encoder=options.get("text_encoder", True)).to_precision(choice.precision)
