"""`steplens evaluate`: sample held-out instances, score them, report the solve rate with a 95% CI."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import ConfigError, to_dict, write_json
from .distributed import map_shards, worker_model
from .precision import Precision, precision_of
from .runner import SamplingConfig, generate, held_out_instances, noise_seed, prepare
from .runs import RunFolder
from .stats import proportion_ci, wilson
from .tasks import get_task


@dataclass(frozen=True)
class EvalConfig:
    model: str = "maze"
    task: str = "maze"
    size: int | None = None  # None: the task's default size
    n: int = 100
    seed: int = 10_000
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    batch: int = 50
    save_frames: bool = True
    precision: str = "fp32"  # the network's precision as resolved (steplens.precision.choose), not "auto"
    allow_seen: bool = False  # fill up with instances the model trained on when too few unseen ones exist (marked)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", get_task(self.task).check_size(self.size))
        Precision.of(self.precision)
        if self.n < 1 or self.batch < 1:
            raise ConfigError("n and batch must be >= 1")


def sample_id(task: str, size: int, seed: int) -> str:
    return f"{task}_{size}_{seed:010d}"


def eval_seeds(denoiser: Any, task_name: str, size: int, seeds: Sequence[int], sampling: SamplingConfig) -> list[dict[str, Any]]:
    """Generate, sample and score the instances of `seeds` (one batch); returns result dicts with frames.

    A sample whose final latents hold NaN or inf gets `{"error", "error_type"}` instead of a score.
    """
    task = get_task(task_name)
    n_frames = getattr(denoiser, "n_frames", 4)
    insts = [task.generate(int(s), size, n_frames=n_frames, cell_px=1) for s in seeds]
    batch = prepare(denoiser, task, insts)
    lat = generate(denoiser, batch, [noise_seed(int(s)) for s in seeds], sampling)
    finite = torch.isfinite(lat).flatten(1).all(1).tolist()  # (B,) a diverged sample must not be scored as a guess
    frames = denoiser.decode(lat)
    out = []
    for s, inst, fr, ok in zip(seeds, insts, frames, finite):
        head = {"task": task_name, "size": size, "seed": int(s)}
        if ok:
            out.append({**head, **task.score(inst, fr).to_dict(), "frames": fr})
        else:
            out.append({**head, "error": "non-finite final latents (NaN or inf)", "error_type": "NonFiniteLatents"})
    return out


@dataclass(frozen=True)
class EvalShard:
    """One chunk of an evaluation, as shipped to a worker: a model spec and seeds, no tensors."""

    model: str
    task: str
    size: int
    seeds: tuple[int, ...]
    sampling: SamplingConfig
    precision: str  # the driver's network precision (fp32/bf16), applied by the worker too
    device: str = field(default="auto", kw_only=True)  # where a worker loads the model ("auto": cuda if it has one)


def eval_shard(shard: EvalShard, denoiser: Any | None = None) -> list[dict[str, Any]]:
    """Evaluate one shard as one batch; if the batch raises, each sample alone, recording its error.

    `denoiser` defaults to the shard's model spec, loaded once per process (see `distributed`).
    """
    from .models.errors import raise_if_device

    den = denoiser if denoiser is not None else worker_model(shard.model, shard.device, shard.precision)
    run = lambda seeds: eval_seeds(den, shard.task, shard.size, seeds, shard.sampling)  # noqa: E731
    try:
        return run(shard.seeds)
    except Exception as e:  # noqa: BLE001 - find the bad sample(s); the others still count
        raise_if_device(e, den, None, len(shard.seeds))  # a failing device fails every sample: stop, do not record
        if len(shard.seeds) == 1:
            return [_error(shard, shard.seeds[0], e)]
    out = []
    for s in shard.seeds:
        try:
            out += run([s])
        except Exception as e:  # noqa: BLE001 - recorded in the sample file, retried on re-run
            raise_if_device(e, den, None, 1)
            out.append(_error(shard, s, e))
    return out


def _error(shard: EvalShard, seed: int, e: BaseException) -> dict[str, Any]:
    from .models.errors import error_kind

    return {"task": shard.task, "size": shard.size, "seed": int(seed), "error": str(e) or repr(e), "error_type": type(e).__name__,
            "error_kind": error_kind(e)}


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in results if "error" not in r]
    k = sum(bool(r["success"]) for r in ok)
    lo, hi = wilson(k, len(ok))
    m, mlo, mhi = proportion_ci([r["score"] for r in ok])
    errors = [{"id": r.get("id"), "error_type": r.get("error_type", "Error"), "error": r["error"]} for r in results if "error" in r]
    return {"n": len(ok), "n_errors": len(errors), "solved": k, "solve_rate": k / len(ok) if ok else float("nan"),
            "solve_rate_ci95": [lo, hi], "mean_score": m, "mean_score_ci95": [mlo, mhi], "errors": errors}


def evaluate(denoiser: Any | None, cfg: EvalConfig, out: str | Path, *, progress: bool = True,
             on_batch: Callable[[int], None] | None = None, ray_address: str | None = None,
             num_workers: int | None = None, device: str = "auto") -> dict[str, Any]:
    """Evaluate into run folder `out` (resumable: finished samples are skipped, errored ones retried).

    Seeds are cut into fixed chunks of `cfg.batch` (a chunk's pending samples form one batch), so
    results do not depend on where a previous run stopped, nor on running locally or on Ray
    (`ray_address`, see `steplens.distributed.map_shards`). With Ray, or with `denoiser=None`, the
    model is loaded from `cfg.model` where the work runs, on `device` (a given `denoiser` is never shipped).
    """
    if denoiser is not None and precision_of(denoiser) != cfg.precision:
        raise ConfigError(f"the model runs in {precision_of(denoiser)} but the config says {cfg.precision}: "
                          "apply the same precision to both (den.to_precision(cfg.precision))")
    held = evaluation_instances(denoiser, cfg.model, cfg.task, cfg.size, cfg.seed, cfg.n, allow_seen=cfg.allow_seen)
    run = RunFolder(out, "evaluate", to_dict(cfg))
    seeds = list(held.seeds)
    marked = {s for s, m in zip(held.seeds, held.seen) if m}
    ids = [sample_id(cfg.task, cfg.size, s) for s in seeds]
    shards = []
    for start in range(0, cfg.n, cfg.batch):
        todo = tuple(s for s, i in zip(seeds[start : start + cfg.batch], ids[start : start + cfg.batch]) if not run.finished(i))
        if todo:
            shards.append(EvalShard(cfg.model, cfg.task, cfg.size, todo, cfg.sampling, cfg.precision, device=device))
    n_todo = sum(len(sh.seeds) for sh in shards)
    t0 = time.time()
    from rich.progress import Progress

    with Progress(disable=not progress) as bar:
        tid = bar.add_task(f"evaluate {cfg.task} {cfg.size}x{cfg.size}", total=cfg.n, completed=cfg.n - n_todo)
        computed = 0

        def commit(i: int, results: list[dict[str, Any]]) -> None:
            nonlocal computed
            rows = {}
            for r in results:
                sid = sample_id(cfg.task, cfg.size, r["seed"])
                if r["seed"] in marked:
                    r["seen_in_training"] = True
                frames = r.pop("frames", None)
                if cfg.save_frames and frames is not None:
                    _save_strip(run.root / "frames" / f"{sid}.png", frames)
                rows[sid] = r
            run.write_many(rows)  # after the frames: a sample file means its strip exists
            computed += len(results)
            bar.update(tid, advance=len(results))
            if on_batch:
                on_batch(computed)

        def failed(i: int, e: BaseException) -> None:  # the shard's worker died for good: record, retry on re-run
            commit(i, [_error(shards[i], s, e) for s in shards[i].seeds])

        fn = eval_shard if denoiser is None or ray_address is not None else partial(eval_shard, denoiser=denoiser)
        map_shards(fn, shards, ray_address=ray_address, num_workers=num_workers, on_result=commit, on_error=failed)
    results = run.results(ids)
    run.write_jsonl("results.jsonl", results)
    summary = {"config": to_dict(cfg), **summarize(results), **held.to_dict(), "n_computed_this_call": n_todo,
               "wall_s_this_call": round(time.time() - t0, 2)}
    write_json(run.root / "summary.json", summary)
    return summary


def model_frames(denoiser: Any | None, spec: str) -> int:
    """The frame count a model samples (its instances are generated, and keyed, at that length)."""
    if denoiser is not None:
        return int(getattr(denoiser, "n_frames", 4))
    from .models.controls import ControlDenoiser, is_control
    from .models.registry import parse_spec
    from .models.serialize import ModelLoadError, load_meta

    if is_control(spec):  # null:*, control:*: no weights, no json
        return ControlDenoiser.n_frames
    prefix, _, opts = parse_spec(spec)
    if prefix is not None:
        return int(opts.get("frames", 4))
    try:
        return int(load_meta(spec)[0].get("data", {}).get("n_frames", 4))
    except ModelLoadError:  # a name that loads no export (an in-process model's label): no seen-set either (seen.load_seen)
        return 4


def evaluation_instances(denoiser: Any | None, spec: str, task: str, size: int, seed: int, n: int, *, allow_seen: bool = False) -> Any:
    """`runner.held_out_instances` for model `spec`: its seen-set (`steplens.seen.load_seen`) and frame count."""
    from .seen import load_seen

    seen = load_seen(spec)
    return held_out_instances(get_task(task), size, seed, n, n_frames=model_frames(denoiser, spec),
                              seen=seen if seen.sha256 else None, allow_seen=allow_seen)


def _save_strip(path: Path, frames: np.ndarray) -> None:
    """Frames side by side, upscaled 4x, as one PNG."""
    from PIL import Image

    strip = np.concatenate(list(np.repeat(np.repeat(frames, 4, 1), 4, 2)), axis=1)
    path.parent.mkdir(exist_ok=True)
    Image.fromarray(strip).save(path)
