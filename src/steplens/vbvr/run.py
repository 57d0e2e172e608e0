"""Generate VBVR-Bench samples in the official kit's layout, for any method, and score the outputs.

Input: an official ground-truth root `GT/<split>/<task>/<i:05d>/` (first_frame.png, prompt.txt; no
meta.json needed). The prompt and first frame come from the folder; the frame count and resolution
from the model's preset (`PRESETS`: frames, and a pixel area whose aspect ratio follows the first
frame, as Wan's image-to-video examples do), each overridable. Output: one root per method,
`OUT/<method>/<split>/<task>/<i:05d>.mp4` (what the official kit reads), with the run's bookkeeping
beside it (`OUT/manifest.json`, `OUT/samples/`, `OUT/scores/`, `OUT/summary.json`). Re-running the
same command resumes: a sample is done when its record is finished and its video exists.

A method is a `SampleGenerator`: `fn(denoiser, BenchInput) -> (video (T, H, W, 3) uint8, details)`.
`method_generator` turns an `ensemble.Method` (single seed, the paper's latent ensemble, baselines)
into one; other test-time methods (e.g. a search) plug into `run_bench` the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError
from .baselines import TRIVIAL, trivial_generator
from .wan import PromptLookup, fit_image, load_prompt_embeds
from ..tasks.vbvr import SPLITS, BenchRef

RESERVED = ("samples", "scores", "manifest.json", "summary.json", "summary.txt")  # bookkeeping names beside the method roots


@dataclass(frozen=True)
class VideoPreset:
    """What a model generates by default: `frames` frames of about `area` pixels (aspect from the first frame)."""

    frames: int
    area: int
    note: str


PRESETS: dict[str, VideoPreset] = {
    "wan2.2-i2v-a14b": VideoPreset(81, 480 * 832, "Wan2.2-I2V-A14B (VBVR-Wan2.2's base): 81 frames at 480p"),
    "wan2.1-i2v-14b": VideoPreset(81, 480 * 832, "Wan2.1-I2V-14B: 81 frames at 480p"),
    "wan2.2-ti2v-5b": VideoPreset(121, 704 * 1280, "Wan2.2-TI2V-5B: 121 frames at 720p"),
}


def detect_preset(den: Any) -> str:
    """The preset of a loaded Wan denoiser: TI2V-5B (first-frame latent), A14B (two experts), else Wan2.1 I2V."""
    if getattr(den, "image_mode", None) == "first_frame":
        return "wan2.2-ti2v-5b"
    return "wan2.2-i2v-a14b" if getattr(den, "transformer_2", None) is not None else "wan2.1-i2v-14b"


@dataclass(frozen=True)
class BenchConfig:
    """Which samples to generate, and at what size: 0 means the preset's; splits/tasks empty mean all."""

    data: str
    splits: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    preset: str = "auto"
    frames: int = 0
    height: int = 0
    width: int = 0
    seed: int = 1  # the noise seed of every sample (an ensemble's trajectory j uses seed + j)
    prompt_embeds: str | None = None

    def __post_init__(self) -> None:
        for s in self.splits:
            if s not in SPLITS:
                raise ConfigError(f"unknown split {s!r}; VBVR-Bench splits are {', '.join(SPLITS)}")
        if self.preset != "auto" and self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; choose from auto, {', '.join(PRESETS)}")
        if self.frames < 0 or self.height < 0 or self.width < 0:
            raise ConfigError("frames, height and width must be >= 0 (0: the model's preset)")
        if bool(self.height) != bool(self.width):
            raise ConfigError("give both --height and --width, or neither (the preset's area at the first frame's aspect)")


def video_plan(den: Any, first_hw: tuple[int, int], cfg: BenchConfig) -> tuple[int, int, int]:
    """(frames, height, width) to generate for a first frame of size first_hw."""
    preset = PRESETS[detect_preset(den) if cfg.preset == "auto" else cfg.preset]
    frames = cfg.frames or preset.frames
    mh, mw = den.scale_spatial * den.patch_size[1], den.scale_spatial * den.patch_size[2]
    if cfg.height:
        h, w = cfg.height, cfg.width
    else:
        aspect = first_hw[0] / first_hw[1]
        h = max(mh, round(math.sqrt(preset.area * aspect)) // mh * mh)
        w = max(mw, round(math.sqrt(preset.area / aspect)) // mw * mw)
    den.check_size(frames, h, w)
    return frames, h, w


@dataclass
class BenchInput:
    """One sample, ready to sample: its conditioning at the planned size, and its noise seed."""

    ref: BenchRef
    prompt: str
    frames: int
    height: int
    width: int
    cond: Any  # models.protocol.Cond, batch 1
    latent_shape: tuple[int, ...]  # (C, F, H, W)
    seed: int


SampleGenerator = Callable[[Any, BenchInput], tuple[np.ndarray, dict[str, Any]]]


def bench_input(den: Any, ref: BenchRef, cfg: BenchConfig, prompts: PromptLookup | None = None) -> BenchInput:
    """Read a sample's first frame and prompt and condition the model on them."""
    from ..io import read_png
    from ..tasks.vbvr import FIRST_FRAME, read_prompt

    first = read_png(ref.path / FIRST_FRAME)
    prompt = read_prompt(ref.path)
    frames, h, w = video_plan(den, first.shape[:2], cfg)
    text, neg = prompts(prompt) if prompts is not None else den.encode_prompt([prompt])
    cond = den.condition(fit_image(first, h, w)[None], frames, text=text, negative_text=neg)
    return BenchInput(ref, prompt, frames, h, w, cond, tuple(den.latent_shape(frames, h, w)), cfg.seed)


def method_generator(method: Any, sampling: Any) -> SampleGenerator:
    """A SampleGenerator for an `ensemble.Method`: K trajectories from seeds seed..seed+K-1, merged, one video kept.

    Selections that need ground truth (oracle) or the reference model's palette (vote) are refused.
    """
    import torch

    from ..ensemble import choose, ensemble_latents, nfe_per_instance
    from ..sampling import seeded_noise

    ens = method.ens
    if ens.k > 1 and ens.select in ("oracle", "vote"):
        raise ConfigError(f"method {method.name!r}: select {ens.select!r} needs ground truth or the reference palette; "
                          "on VBVR-Bench folders use first or agreement")
    s = method.sampling(sampling)
    nfe = nfe_per_instance(ens, s)

    def generate(den: Any, inp: BenchInput) -> tuple[np.ndarray, dict[str, Any]]:
        seeds = [inp.seed + j for j in range(ens.k)]
        x = seeded_noise(inp.latent_shape, seeds, device=den.device) * method.noise_scale
        with torch.no_grad():
            lat = ensemble_latents(den, x, s.sigmas(den).to(den.device), inp.cond.repeat(ens.k), ens, sampler=s.sampler)
        if ens.select == "first" or len(lat) == 1:
            j, video = 0, den.decode(lat[:1])[0]  # decode only the kept trajectory (VAE time)
        else:
            decoded = den.decode(lat)
            j = choose(ens.select, lat, decoded)
            video = decoded[j]
        return video, {"seeds": seeds, "chosen": j, "nfe": nfe, "steps": s.steps}

    return generate


def _check_method_name(name: str) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in RESERVED or name.startswith("."):
        raise ConfigError(f"method name {name!r} must be letters, digits, '_', '.', '-' and not one of {', '.join(RESERVED)}")


def sample_key(method: str, ref: BenchRef) -> str:
    return f"{method}__{ref.key}"


def run_bench(den: Any, cfg: BenchConfig, out: str | Path, generators: Mapping[str, SampleGenerator], *, kind: str = "vbvr-bench",
              manifest: dict[str, Any] | None = None, refs: Sequence[BenchRef] | None = None,
              echo: Callable[[str], None] = print) -> list[BenchRef]:
    """Generate every selected sample with every method into `out/<method>/<split>/<task>/<i>.mp4` (resumable).

    `manifest`: more config to record (and to refuse a resume with different settings). `refs`: only these samples
    (default: every sample `cfg` selects). Returns the refs.
    A sample that fails is recorded with its error and retried on the next run; the others go on.
    """
    from ..config import to_dict
    from ..io import write_video
    from ..models.errors import error_kind, raise_if_device
    from ..runs import RunFolder
    from ..tasks.vbvr import iter_bench

    if getattr(den, "image_mode", "concat") == "none":
        raise ValueError("a text-to-video model cannot condition on VBVR-Bench first frames; use an image-to-video model")
    if not generators:
        raise ConfigError("no methods to run")
    for name in generators:
        _check_method_name(name)
    refs = list(refs) if refs is not None else iter_bench(cfg.data, splits=cfg.splits, tasks=cfg.tasks)
    out = Path(out)
    run = RunFolder(out, kind, {**to_dict(cfg), **(manifest or {}), "methods": list(generators)})
    prompts = load_prompt_embeds(cfg.prompt_embeds) if cfg.prompt_embeds else None

    def done(name: str, ref: BenchRef) -> bool:
        return run.finished(sample_key(name, ref)) and (out / name / ref.video_rel).is_file()

    todo = [(ref, [n for n in generators if not done(n, ref)]) for ref in refs]
    todo = [(ref, names) for ref, names in todo if names]
    total = len(refs) * len(generators)
    n_todo = sum(len(names) for _, names in todo)
    echo(f"{len(refs)} samples x {len(generators)} methods: {total - n_todo} done, {n_todo} to run")
    for ref, names in todo:
        fields = {"split": ref.split, "task": ref.task, "index": ref.index}
        try:
            inp = bench_input(den, ref, cfg, prompts)
        except Exception as e:  # noqa: BLE001 - one broken sample must not stop the run; a failing device does
            raise_if_device(e, den)
            msg = _message(e, ref)
            for n in names:
                run.write(sample_key(n, ref), {"method": n, **fields, "error": msg, "error_kind": error_kind(e)})
            echo(f"error: {msg}")
            continue
        for n in names:
            t0 = time.time()
            try:
                video, details = generators[n](den, inp)
                vpath = out / n / ref.video_rel
                write_video(vpath, video)
            except Exception as e:  # noqa: BLE001
                raise_if_device(e, den)
                msg = _message(e, ref)
                run.write(sample_key(n, ref), {"method": n, **fields, "error": msg, "error_kind": error_kind(e)})
                echo(f"error: {n}: {msg}")
                continue
            secs = time.time() - t0
            run.write(sample_key(n, ref), {"method": n, **fields, "video": vpath.relative_to(out).as_posix(), "seconds": round(secs, 2),
                                           "size": [int(v) for v in video.shape[:3]], "frames_sha256": frames_digest(video), **details})
            echo(f"{n} {ref.rel}: {video.shape[0]} frames {video.shape[1]}x{video.shape[2]} ({secs:.1f}s)")
    return refs


def frames_digest(video: np.ndarray) -> str:
    """sha256 of the generated uint8 frames before encoding: which frames a method produced, whatever the codec did.

    x264 does not always encode the same frames to the same file (tiny frames vary run to run), so equality of
    two methods' outputs is checked on this, not on the mp4 bytes.
    """
    import hashlib

    v = np.ascontiguousarray(video, dtype=np.uint8)
    return hashlib.sha256(f"{v.shape}".encode() + v.tobytes()).hexdigest()


def _message(e: Exception, ref: BenchRef) -> str:
    from ..tasks import TaskInputError

    return str(e) if isinstance(e, TaskInputError) else f"{ref.path}: {type(e).__name__}: {e}"


def score_bench(out: str | Path, gt_root: str | Path, refs: Sequence[BenchRef], methods: Sequence[str], scorers: Sequence[Any],
                *, baseline: str | None = "single") -> dict[str, Any]:
    """Score every method's output root with every scorer; writes OUT/scores/<method>.<scorer key>.jsonl,
    OUT/summary.json and OUT/summary.txt and returns the summary. Summaries of earlier calls by other scorers
    stay in summary.json while the videos they scored are unchanged.

    With `baseline` among the methods, every other method also gets the paired bootstrap difference
    of its mean score to the baseline's (same samples, same scorer).
    """
    import json

    from ..config import atomic_write_text, write_json
    from .kit import score_root
    from ..stats import bootstrap_diff

    out, gt_root = Path(out), Path(gt_root)
    old = json.loads((out / "summary.json").read_text()).get("methods", {}) if (out / "summary.json").is_file() else {}
    per: dict[str, dict[str, Any]] = {}
    scored: dict[tuple[str, str], list[Any]] = {}
    for m in methods:
        stamp = videos_fingerprint(out / m, refs)
        # other scorers' summaries of these very videos are kept (e.g. both kit conventions); stale ones dropped
        per[m] = {k: v for k, v in old.get(m, {}).items() if v.get("videos_fingerprint") == stamp}
        got = score_root(gt_root, out / m, refs, scorers, lambda key, m=m: out / "scores" / f"{m}.{key}")
        for key, (rows, s) in got.items():
            scored[(m, key)] = rows
            atomic_write_text(out / "scores" / f"{m}.{key}.jsonl", "".join(_jsonl(r.to_dict()) for r in rows))
            per[m][key] = {**s, "videos_fingerprint": stamp}
    if baseline in per:
        for m in methods:
            for sc in scorers:
                if m == baseline:
                    continue
                a = [r for r in scored[(baseline, sc.key)] if r.status != "not_covered"]
                b = [r for r in scored[(m, sc.key)] if r.status != "not_covered"]
                if a and len(a) == len(b):
                    d = bootstrap_diff([float(r.score) for r in a], [float(r.score) for r in b])
                    per[m][sc.key]["diff_vs_" + baseline] = {"score": list(d), "ci": "paired percentile bootstrap over samples"}
    paths = [out / "samples" / f"{sample_key(m, r)}.json" for m in methods for r in refs]
    records = [json.loads(p.read_text()) for p in paths if p.is_file()]
    errors = [f"{x['method']} {x['split']}/{x['task']}/{x['index']}: {x['error']}" for x in records if "error" in x]
    nfe: dict[str, int] = {}  # network evaluations per sample (CFG not counted); records come in `methods` order
    for x in records:
        if "nfe" in x:
            nfe[x["method"]] = max(nfe.get(x["method"], 0), x["nfe"])
    summary = {"kind": "vbvr-bench", "data": str(gt_root), "n_samples": len(refs), "methods": per, "nfe": nfe, "generation_errors": errors,
               "trivial": [m for m in methods if m in TRIVIAL]}
    write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.txt", "\n".join(summary_lines(summary)) + "\n")
    return summary


def videos_fingerprint(root: Path, refs: Sequence[BenchRef]) -> str:
    """A hash of which videos exist under `root` and their sizes and times: a summary of other videos is stale."""
    import hashlib

    h = hashlib.sha256()
    for ref in refs:
        p = root / ref.video_rel
        st = p.stat() if p.is_file() else None
        h.update(f"{ref.video_rel}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}\n".encode())
    return h.hexdigest()[:16]


def _jsonl(d: dict[str, Any]) -> str:
    from ..config import to_json

    return to_json(d) + "\n"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """One line per method and scorer: score [95% CI], counts, and the convention that produced it."""
    lines = [f"VBVR-Bench: {summary['n_samples']} samples of {summary['data']}"]
    for m, by in summary["methods"].items():
        for name, s in by.items():
            o = s["overall"]
            if o["score"] is None:
                lines.append(f"{m:<24} {name:<27} no samples covered ({s['not_covered']['n']} not covered)")
                continue
            diff = next((v for k, v in s.items() if k.startswith("diff_vs_")), None)
            dtxt = f"  diff {diff['score'][0]:+.3f} [{diff['score'][1]:+.3f}, {diff['score'][2]:+.3f}]" if diff else ""
            nfe = summary.get("nfe", {}).get(m)
            kit = (s.get("kit_reported") or {}).get("overall")
            ktxt = f"  kit overall {kit['mean_score']:.4f} (n={kit['num_samples']})" if kit and kit.get("mean_score") is not None else ""
            lines.append(f"{m:<24} {name:<27} {o['score']:.3f} [{o['ci95'][0]:.3f}, {o['ci95'][1]:.3f}]  n={o['n']} "
                         + (f"nfe={nfe} " if nfe is not None else "") +
                         f"missing={o['n_missing']} errors={o['n_errors']} not_covered={s['not_covered']['n']}{dtxt}{ktxt}  "
                         f"({s['scorer']['convention']})")
    if summary.get("trivial"):
        lines.append(f"{', '.join(summary['trivial'])}: trivial videos, no model (static: the first frame held; end-jump: the first "
                     "frame, then the true final frame): a model's score is evidence only beside them")
    if summary["generation_errors"]:
        lines.append(f"{len(summary['generation_errors'])} generation errors, first: {summary['generation_errors'][0]}")
    return lines


def evaluate_bench(den: Any, cfg: BenchConfig, out: str | Path, methods: Sequence[Any], sampling: Any, scorers: Sequence[Any], *,
                   kind: str = "vbvr-bench", manifest: dict[str, Any] | None = None, trivial: bool = True,
                   echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate with every method (run_bench), then score every output root (score_bench).

    A method is an `ensemble.Method` or has `generator(sampling) -> SampleGenerator` (e.g. search.bench.BenchScreen).
    `trivial`: also the videos that need no model (vbvr.baselines: static, end-jump), scored beside every method."""
    from ..config import to_dict

    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"method names must be unique, got {names}")
    if set(names) & set(TRIVIAL):
        raise ConfigError(f"{', '.join(sorted(set(names) & set(TRIVIAL)))}: the name of a trivial method that runs beside every model")
    # an ensemble.Method, or any method that makes its own generator (search.bench.BenchScreen); then the trivial videos
    gens = {m.name: m.generator(sampling) if hasattr(m, "generator") else method_generator(m, sampling) for m in methods}
    gens.update({t: trivial_generator(t) for t in TRIVIAL} if trivial else {})
    names = list(gens)
    extra = {"sampling": to_dict(sampling), "method_configs": [to_dict(m) for m in methods], **(manifest or {})}
    refs = run_bench(den, cfg, out, gens, kind=kind, manifest=extra, echo=echo)
    return score_bench(out, cfg.data, refs, names, scorers)


def bench_methods(ens: Any, sampling: Any, *, baselines: bool) -> list[Any]:
    """single + ensemble, or with `baselines` also every baseline that runs without ground truth (best_of_k_oracle and
    majority_vote are left out: they need ground truth or the reference model's palette)."""
    from ..ensemble import Method, baselines as make_baselines

    method_generator(Method("ensemble", ens), sampling)  # refuses a selection that needs ground truth
    if not baselines:
        return [Method("single"), Method("ensemble", ens)]
    return [m for m in make_baselines(ens, sampling) if m.ens.k == 1 or m.ens.select not in ("oracle", "vote")]


__all__ = ["PRESETS", "RESERVED", "BenchConfig", "BenchInput", "SampleGenerator", "VideoPreset", "bench_input", "bench_methods",
           "detect_preset", "evaluate_bench", "method_generator", "run_bench", "sample_key", "score_bench",
           "summary_lines", "video_plan"]
