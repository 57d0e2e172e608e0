"""What every probe shares: its config, held-out instances, the run folder and figure bookkeeping.

Every probe writes into its run folder: `manifest.json` (kind + config), `summary.json` (headline
numbers), `summary.txt` (a few lines for people), data files (`*.npz`, `*.json`) and
`figures.json` (each figure's path, title, caption and the command that reproduces it), which
is all `steplens report` needs.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, atomic_write_text, to_dict, write_json
from ..evaluate import sample_id
from ..precision import Precision
from ..runner import Batch, HeldOut, SamplingConfig, noise_seed, prepare
from ..runs import RunFolder
from ..tasks import get_task


@dataclass(frozen=True)
class ProbeConfig:
    """Which model, task, instances and sampler a probe runs on."""

    model: str = "maze"
    task: str = "maze"
    size: int | None = None  # None: the task's default size
    n: int = 16
    seed: int = 20_000
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    batch: int = 16
    precision: str = "fp32"  # the network's precision as resolved (steplens.precision.choose), not "auto"
    device: str = "auto"  # where Ray workers load the model ("auto": cuda if they have one)
    allow_seen: bool = False  # fill up with instances the model trained on when too few unseen ones exist (marked)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", get_task(self.task).check_size(self.size))
        Precision.of(self.precision)
        if self.n < 1 or self.batch < 1:
            raise ConfigError("n and batch must be >= 1")

    def seeds(self) -> list[int]:
        return list(held_out(self).seeds)


@lru_cache(maxsize=64)
def held_out(cfg: ProbeConfig) -> HeldOut:
    """The probe's instances, held out by content from `cfg.model`'s seen-set (`evaluate.evaluation_instances`)."""
    from ..evaluate import evaluation_instances

    return evaluation_instances(None, cfg.model, cfg.task, cfg.size, cfg.seed, cfg.n, allow_seen=cfg.allow_seen)


def held_out_record(held: HeldOut) -> dict[str, Any]:
    """What a manifest fixes before any shard runs: the instance seeds, which were seen in training, and the walk's counts."""
    return {"seeds": list(held.seeds), "seen_in_training": [s for s, m in zip(held.seeds, held.seen) if m], **held.to_dict()}


def chunks(cfg: ProbeConfig) -> list[tuple[int, ...]]:
    """The held-out seeds cut into fixed chunks of `cfg.batch`: one batch, one shard, one commit each."""
    seeds = cfg.seeds()
    return [tuple(seeds[i : i + cfg.batch]) for i in range(0, len(seeds), cfg.batch)]


def make_batch(den: Any, cfg: ProbeConfig, seeds: Sequence[int]) -> tuple[Batch, list[int]]:
    """The instances of `seeds` as one batch, with each instance's noise seed."""
    task = get_task(cfg.task)
    insts = [task.generate(int(s), cfg.size, n_frames=getattr(den, "n_frames", 4), cell_px=1) for s in seeds]
    return prepare(den, task, insts), [noise_seed(int(s)) for s in seeds]


def batches(den: Any, cfg: ProbeConfig) -> list[tuple[Batch, list[int]]]:
    """Held-out instances in batches of `cfg.batch`, with each instance's noise seed."""
    return [make_batch(den, cfg, c) for c in chunks(cfg)]


# -- sample-level probe work: sharded, resumable, local or on Ray ---------------------------------
Record = dict[str, Any]  # one sample's result: JSON values and numpy arrays
BatchFn = Callable[..., list[Record]]  # fn(den, batch, noise_seeds, cfg, *, tick) -> one record per instance


@dataclass(frozen=True)
class ProbeShard:
    """One chunk of a probe's samples, as shipped to a worker: a model spec and seeds, no tensors."""

    cfg: ProbeConfig
    seeds: tuple[int, ...]


def probe_shard(shard: ProbeShard, fn: BatchFn, denoiser: Any = None, tick: Callable[[int], None] | None = None) -> list[Record]:
    """Run `fn` on one shard as one batch; an exception marks every sample of the shard as an error."""
    import torch

    from ..distributed import worker_model
    from ..models.errors import error_kind, raise_if_device

    den = denoiser if denoiser is not None else worker_model(shard.cfg.model, shard.cfg.device, shard.cfg.precision)
    batch = None
    try:
        batch, noise = make_batch(den, shard.cfg, shard.seeds)
        with torch.no_grad():
            recs = fn(den, batch, noise, shard.cfg, tick=tick)
    except Exception as e:  # noqa: BLE001 - recorded per sample; the run goes on and a re-run retries them
        raise_if_device(e, den, None if batch is None else batch.latent_shape, len(shard.seeds))  # a failing device stops the run
        return [{"seed": int(s), "error": str(e) or repr(e), "error_type": type(e).__name__, "error_kind": error_kind(e)}
                for s in shard.seeds]
    return [{"seed": int(s), **r} for s, r in zip(shard.seeds, recs)]


def require_finite(latents: Any, what: str = "final latents") -> None:
    """Raise when a sampled latent holds NaN or inf: a diverged run must not be scored as a guess."""
    import torch

    if not bool(torch.isfinite(latents).all()):
        raise FloatingPointError(f"non-finite {what} (NaN or inf)")


def run_sharded(den: Any, cfg: ProbeConfig, fn: BatchFn, *, folder: RunFolder | None = None, label: str = "probe",
                work_per_sample: int = 1, progress: bool = True, ray_address: str | None = None,
                num_workers: int | None = None) -> list[Record]:
    """Every held-out sample's record, in seed order: computed by `fn` chunk by chunk, here or on Ray.

    With a `folder`, each chunk's records are committed together (arrays in `samples/<id>.npz` beside the
    JSON), finished chunks are skipped on a re-run and errored ones retried; a kill loses at most
    the chunks in flight. `work_per_sample`: progress units `fn` reports per sample through `tick`.
    """
    from rich.progress import Progress

    from ..distributed import map_shards

    ids = {s: sample_id(cfg.task, cfg.size, s) for c in chunks(cfg) for s in c}
    held = held_out(cfg)
    marked = {s for s, m in zip(held.seeds, held.seen) if m}
    todo = [ProbeShard(cfg, c) for c in chunks(cfg) if folder is None or not all(folder.finished(ids[s]) for s in c)]
    if ray_address is not None and (getattr(den, "prompt_embeds", None) is not None or getattr(den, "prompt_lookup", None) is not None):
        raise ConfigError("--ray loads the model in each worker from its spec; precomputed prompt embeddings are not shipped")
    kept: dict[int, Record] = {}
    with Progress(disable=not progress) as bar:
        total = cfg.n * work_per_sample
        tid = bar.add_task(label, total=total, completed=total - sum(len(t.seeds) for t in todo) * work_per_sample)

        def commit(i: int, recs: list[Record]) -> None:
            for r in recs:
                if r["seed"] in marked:
                    r["seen_in_training"] = True
            if folder is not None:
                write_records(folder, {ids[r["seed"]]: r for r in recs})
            else:
                kept.update((r["seed"], r) for r in recs)
            if ray_address is not None:
                bar.advance(tid, len(recs) * work_per_sample)

        def failed(i: int, e: BaseException) -> None:  # a worker died for good
            commit(i, [{"seed": s, "error": str(e) or repr(e), "error_type": type(e).__name__} for s in todo[i].seeds])

        if ray_address is None:
            run = partial(probe_shard, fn=fn, denoiser=den, tick=lambda k: bar.advance(tid, k))
        else:
            run = partial(probe_shard, fn=fn)
        map_shards(run, todo, ray_address=ray_address, num_workers=num_workers, on_result=commit, on_error=failed)
    if folder is None:
        return [kept[s] for s in ids]
    return read_records(folder, list(ids.values()))


def write_records(folder: RunFolder, records: dict[str, Record]) -> None:
    """Commit records as one unit: numpy arrays to `samples/<id>.npz` first, then the JSON (journaled)."""
    rows = {}
    for sid, r in records.items():
        arrays = {k: v for k, v in r.items() if isinstance(v, np.ndarray)}
        if arrays:
            save_npz(folder.root / "samples" / f"{sid}.npz", **arrays)
        rows[sid] = {**{k: v for k, v in r.items() if k not in arrays}, "arrays": sorted(arrays)}
    folder.write_many(rows)


def read_records(folder: RunFolder, ids: Sequence[str]) -> list[Record]:
    out = []
    for r in folder.results(ids):
        names = r.pop("arrays", [])
        if names:
            with np.load(folder.root / "samples" / f"{r['id']}.npz") as z:
                r.update({k: z[k] for k in names})
        out.append(r)
    return out


def split_errors(records: Sequence[Record]) -> tuple[list[Record], list[dict[str, Any]]]:
    """(records without errors, [{id, error_type, error}] for the others): analysis runs on the first."""
    ok = [r for r in records if "error" not in r]
    errors = [{"seed": r["seed"], "error_type": r.get("error_type", "Error"), "error": r["error"]} for r in records if "error" in r]
    if not ok:
        first = errors[0] if errors else {"error": "no samples"}
        raise RuntimeError(f"every sample failed; first error: {first.get('error_type', '')}: {first['error']}")
    return ok, errors


class ProbeRun:
    """A probe's run folder: manifest, figures list and summaries."""

    def __init__(self, out: str | Path, kind: str, config: Any, *, held: HeldOut | None = None):
        """`held`: the run's instances (a ProbeConfig's own by default), fixed in the manifest and reported in the summary."""
        if held is None and isinstance(config, ProbeConfig):
            held = held_out(config)
        self.held = held
        conf = to_dict(config) if not isinstance(config, dict) else config
        if held is not None:
            conf = {**conf, "instances": held_out_record(held)}
        self.folder = RunFolder(out, kind, conf)
        self.root = self.folder.root
        self.figures: list[dict[str, str]] = []
        self.command = " ".join(shlex.quote(a) for a in ["steplens", *sys.argv[1:]]) if Path(sys.argv[0]).name == "steplens" else ""

    def figure(self, path: str, title: str, caption: str) -> str:
        self.figures.append({"path": path, "title": title, "caption": caption, "command": self.command})
        return str(self.root / path)

    def finish(self, summary: dict[str, Any], text: str) -> dict[str, Any]:
        if self.held is not None:
            summary = {**summary, **self.held.to_dict()}
        write_json(self.root / "figures.json", self.figures)
        write_json(self.root / "summary.json", summary)
        atomic_write_text(self.root / "summary.txt", text.rstrip() + "\n")
        return summary


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Atomic npz write (analysis reads these without re-running a model)."""
    import io

    from ..config import atomic_write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def upscale(blocks: np.ndarray, px: int) -> np.ndarray:
    return np.repeat(np.repeat(blocks, px, axis=-3), px, axis=-2)


def plt():
    """matplotlib in a headless backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot
