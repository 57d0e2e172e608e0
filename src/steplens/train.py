"""Flow-matching trainer for the reference video DiT: tasks generated on the fly, fully seeded.

Every step's data and noise come from generators seeded by (seed, step), so a run that is
interrupted and resumed from its checkpoint reproduces the uninterrupted run exactly (on CPU).
"""
# long module: the step's data, its replay (seen-sets, generator versions) and the checkpoint must stay in one file, so that
# what a replay enumerates is provably what a training step drew

from __future__ import annotations

import copy
import dataclasses
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .config import ConfigError, atomic_write_bytes, from_dict, to_dict, write_json
from .models.dit import PRESETS, BlockCodec, DiTConfig, VideoDiT
from .models.serialize import export
from .precision import Precision, choose
from .tasks import get_task

TRAIN_SEED_BASE = 2**31  # training instances use seeds >= 2**31; evaluation seeds lie below


@dataclass(frozen=True)
class TrainConfig:
    tasks: tuple[str, ...] = ("maze",)
    sizes: tuple[int, ...] = (3, 4, 5)
    task_sizes: tuple[tuple[int, ...], ...] = ()  # per task (same order as `tasks`); empty: every task draws from `sizes`
    task_weights: tuple[float, ...] = ()  # per task (same order as `tasks`): how often its batches come; empty: uniform
    n_frames: int = 4
    preset: str = "base"
    steps: int = 1500
    batch: int = 32
    lr: float = 1e-3
    min_lr_frac: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema: float = 0.999
    t_shift: float = 2.0  # training times t = shift u / (1 + (shift-1) u), u ~ U(0,1): more weight on high noise
    seed: int = 0
    ckpt_every: int = 100
    eval_every: int = 0  # 0: no evaluation during training
    minutes: float = 0.0  # wall-clock cap (0: none); the schedule still follows `steps`
    init: str = ""  # start from a checkpoint.pt's model and EMA weights, or an exported model's (a later stage)
    precision: str = "auto"  # network precision, resolved per run by steplens.precision.choose (auto: bf16 on CUDA/AMX, else fp32)
    reserve: int = 0  # > 0: never draw an instance whose content key is 0 mod `reserve` (the reserved bucket evaluation takes first)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; choose from {sorted(PRESETS)}")
        for name in self.tasks:
            get_task(name)
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"tasks repeat: {self.tasks}")
        if self.task_sizes and (len(self.task_sizes) != len(self.tasks) or not all(self.task_sizes)):
            raise ConfigError(f"task_sizes needs one non-empty size list per task ({len(self.tasks)}), got {self.task_sizes}")
        for name, sizes in zip(self.tasks, self.task_sizes or (self.sizes,) * len(self.tasks)):
            allowed = get_task(name).sizes
            if bad := [s for s in sizes if s not in allowed]:
                raise ConfigError(f"{name}: sizes {bad} are outside its range {min(allowed)}..{max(allowed)}")
        if self.task_weights and (len(self.task_weights) != len(self.tasks) or min(self.task_weights) < 0 or sum(self.task_weights) <= 0):
            raise ConfigError(f"task_weights needs one weight >= 0 per task ({len(self.tasks)}), not all 0; got {self.task_weights}")
        if not self.sizes or self.n_frames < 2 or self.steps < 1 or self.batch < 1:
            raise ConfigError("need sizes, n_frames >= 2, steps >= 1, batch >= 1")
        if not 0 < self.ema < 1:
            raise ConfigError(f"ema must be in (0, 1), got {self.ema}")
        if self.reserve < 0 or self.reserve == 1:
            raise ConfigError(f"reserve must be 0 (none) or >= 2 (the bucket key % reserve == 0), got {self.reserve}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")

    def autocast(self, device: str, precision: Precision | str) -> torch.autocast:
        """The autocast context of a training step in the run's resolved precision (master weights stay fp32)."""
        kind = "cuda" if device.startswith("cuda") else "cpu"
        return torch.autocast(kind, dtype=torch.bfloat16, enabled=Precision.of(precision) is Precision.BF16)

    def sizes_of(self, task_index: int) -> tuple[int, ...]:
        """The sizes that task `task_index` draws from."""
        return self.task_sizes[task_index] if self.task_sizes else self.sizes

    def model_config(self) -> DiTConfig:
        return PRESETS[self.preset](tasks=self.tasks)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to min_lr_frac * lr."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def batch_draw(cfg: TrainConfig, step: int) -> tuple[int, int, list[int]]:
    """What the batch of `step` is drawn from: (task index, size, instance seeds); no instance is generated."""
    rng = np.random.default_rng([cfg.seed, step])
    if cfg.task_weights:  # weighted draw; the uniform branch keeps earlier runs' batches bit for bit
        w = np.asarray(cfg.task_weights, dtype=np.float64)
        ti = int(rng.choice(len(cfg.tasks), p=w / w.sum()))
    else:
        ti = int(rng.integers(len(cfg.tasks)))
    sizes = cfg.sizes_of(ti)
    size = sizes[int(rng.integers(len(sizes)))]
    return ti, size, [int(s) for s in rng.integers(TRAIN_SEED_BASE, 2**62, size=cfg.batch)]


def generator_versions(tasks: tuple[str, ...] | list[str]) -> dict[str, int]:
    """Each task's current `generator_version` (what a run trained today draws; recorded in the model's json)."""
    return {t: int(get_task(t).generator_version) for t in tasks}


def recorded_versions(meta: dict[str, Any]) -> dict[str, int]:
    """The generator versions a model json or checkpoint records (`generator_versions`); absent: {} (version 1 everywhere)."""
    return {str(t): int(v) for t, v in (meta.get("generator_versions") or {}).items()}


def generate_versioned(task: Any, seed: int, size: int, version: int, **kw: Any) -> Any:
    """`task.generate` with generator `version` (a task still at version 1 takes no `version` argument)."""
    if task.generator_version == 1:
        if version != 1:
            raise ConfigError(f"{task.name} has only generator version 1, asked for {version}")
        return task.generate(seed, size, **kw)
    return task.generate(seed, size, version=version, **kw)


def batch_instances(cfg: TrainConfig, step: int, versions: dict[str, int] | None = None) -> tuple[int, list[Any]]:
    """The instances of `step`'s batch (as `make_batch` trains on them) and their task index.

    `versions`: each task's generator version (missing: 1); None: today's (`generator_versions`). With `cfg.reserve`
    = m, an instance of the reserved bucket (content key 0 mod m) is replaced by the next draw of the stream seeded by
    (seed, step, 1) that lies outside it, so the bucket stays unseen.
    """
    ti, size, seeds = batch_draw(cfg, step)
    task = get_task(cfg.tasks[ti])
    v = task.generator_version if versions is None else versions.get(task.name, 1)
    draw = lambda s: generate_versioned(task, s, size, v, n_frames=cfg.n_frames, cell_px=1)  # noqa: E731
    insts = [draw(s) for s in seeds]
    if cfg.reserve:
        spare = np.random.default_rng([cfg.seed, step, 1])
        for j in range(len(insts)):
            for _ in range(1000):
                if task.key(insts[j]) % cfg.reserve:
                    break
                insts[j] = draw(int(spare.integers(TRAIN_SEED_BASE, 2**62)))
            else:
                raise ConfigError(f"{task.name} size {size}: 1000 draws in a row fell in the reserved bucket (key % {cfg.reserve} == 0)")
    return ti, insts


def make_batch(cfg: TrainConfig, step: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The training batch of `step`: clean latents (B, 3, F, H, W), task ids (B,), and the task name."""
    ti, insts = batch_instances(cfg, step)
    task = get_task(cfg.tasks[ti])
    blocks = np.stack([task.blocks(i) for i in insts])
    return BlockCodec.encode_blocks(blocks), torch.full((cfg.batch,), ti, dtype=torch.long), task.name


def flow_loss(model: VideoDiT, x0: torch.Tensor, task_id: torch.Tensor, g: torch.Generator, t_shift: float) -> torch.Tensor:
    """Rectified-flow loss on frames 1.. (frame 0 is the clean conditioning frame, as at sampling)."""
    b = x0.shape[0]
    u = torch.rand(b, generator=g)
    t = t_shift * u / (1 + (t_shift - 1) * u)
    eps = torch.randn(x0.shape, generator=g)
    tt = t.view(b, 1, 1, 1, 1)
    xt = (1 - tt) * x0 + tt * eps
    xt[:, :, 0] = x0[:, :, 0]
    v = model(xt.to(_dev(model)), t.to(_dev(model)), x0[:, :, 0].to(_dev(model)), task_id.to(_dev(model)))
    target = (eps - x0).to(v.device)
    return F.mse_loss(v[:, :, 1:].float(), target[:, :, 1:])


def _dev(m: torch.nn.Module) -> torch.device:
    return next(m.parameters()).device


@dataclass
class TrainState:
    model: VideoDiT
    ema: VideoDiT
    opt: torch.optim.Optimizer
    step: int = 0
    elapsed: float = 0.0
    log: list[dict[str, Any]] = field(default_factory=list)
    precision: dict[str, Any] = field(default_factory=dict)  # steplens.precision.PrecisionChoice.to_dict(), fixed at the run's start


def new_state(cfg: TrainConfig, device: str = "cpu") -> TrainState:
    torch.manual_seed(cfg.seed)
    model = VideoDiT(cfg.model_config()).to(device)
    init = _init_weights(cfg, device) if cfg.init else None
    if init:
        model.load_state_dict(init["model"])
    ema = copy.deepcopy(model).requires_grad_(False)
    if init:
        ema.load_state_dict(init["ema"])
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "embed" in n else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.99))
    return TrainState(model, ema, opt)


def _init_weights(cfg: TrainConfig, device: str) -> dict[str, dict[str, torch.Tensor]]:
    """Model and EMA weights to start from: a checkpoint.pt, or an exported model (both from its EMA)."""
    if cfg.init.endswith(".pt"):
        ck = read_checkpoint(cfg.init, device)
        theirs = ck["config"].get("preset"), tuple(ck["config"].get("tasks", ()))
        if theirs != (cfg.preset, cfg.tasks):  # another architecture (or task embedding): its weights do not fit this model
            raise ConfigError(f"--init {cfg.init}: a checkpoint of preset {theirs[0]!r} on tasks {list(theirs[1])}, not this run's "
                              f"preset {cfg.preset!r} on {list(cfg.tasks)} (an exported model of other tasks can be given instead)")
        return ck
    from .models.registry import load

    den = load(cfg.init, device=device)  # checks the export's sha256 and config
    want = cfg.model_config()
    if dataclasses.replace(den.model.cfg, tasks=want.tasks) != want:
        raise ConfigError(f"--init {cfg.init}: its model config {den.model.cfg} is not this run's {want}")
    weights = den.model.state_dict()
    if den.model.cfg.tasks != want.tasks:  # a model of other tasks: its known tasks keep their embeddings
        weights = dict(weights)
        fresh = VideoDiT(want).task_embed.weight.detach().to(device)  # seeded by new_state's manual_seed
        old = weights["task_embed.weight"]
        weights["task_embed.weight"] = torch.stack([old[den.model.cfg.tasks.index(t)] if t in den.model.cfg.tasks else fresh[i]
                                                    for i, t in enumerate(want.tasks)])
    return {"model": weights, "ema": weights}


def save_checkpoint(path: Path, cfg: TrainConfig, st: TrainState) -> None:
    buf = io.BytesIO()
    torch.save({"config": to_dict(cfg), "model": st.model.state_dict(), "ema": st.ema.state_dict(),
                "opt": st.opt.state_dict(), "step": st.step, "elapsed": st.elapsed, "log": st.log,
                "precision": st.precision, "generator_versions": generator_versions(cfg.tasks)}, buf)
    atomic_write_bytes(path, buf.getvalue())


class CheckpointError(ConfigError):
    """A training checkpoint that is missing, corrupt or of another kind."""


def read_checkpoint(path: str | Path, device: str = "cpu") -> dict[str, Any]:
    """A checkpoint.pt's contents, read safely (tensors, dicts, lists and numbers only: no pickled code).

    Raises CheckpointError naming the file when it is missing, unreadable or not a training checkpoint.
    """
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as e:  # noqa: BLE001 - torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"{path}: not a readable training checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    missing = [k for k in ("config", "model", "ema", "opt", "step", "elapsed", "log") if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise CheckpointError(f"{path}: not a steplens training checkpoint (no {', '.join(missing)})")
    return ck


def load_checkpoint(path: Path, cfg: TrainConfig, device: str = "cpu") -> TrainState:
    ck = read_checkpoint(path, device)
    saved = from_dict(TrainConfig, ck["config"])
    if _identity(saved) != _identity(cfg):
        raise ConfigError(f"{path} was written by a different training config; use another --out or the same arguments.\n"
                          f"  saved: {_identity(saved)}\n  asked: {_identity(cfg)}")
    drew, today = recorded_versions(ck), generator_versions(cfg.tasks)
    if any(drew.get(t, 1) != v for t, v in today.items()):  # resuming would draw other instances than the steps before
        raise ConfigError(f"{path} drew with generator versions {({t: drew.get(t, 1) for t in today})}, today's are {today}; "
                          "use another --out to train afresh")
    st = new_state(cfg, device)
    st.model.load_state_dict(ck["model"])
    st.ema.load_state_dict(ck["ema"])
    st.opt.load_state_dict(ck["opt"])
    st.step, st.elapsed, st.log = ck["step"], ck["elapsed"], ck["log"]
    st.precision = ck.get("precision") or _legacy_precision(saved, device)
    return st


def _legacy_precision(cfg: TrainConfig, device: str) -> dict[str, Any]:
    """What a checkpoint written before precisions were recorded ran in: auto was bf16 on CUDA only."""
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.startswith("cuda"))
    return {"requested": cfg.precision, "precision": "bf16" if bf16 else "fp32", "capability": None}


def resolve_precision(cfg: TrainConfig, device: str) -> dict[str, Any]:
    """A new run's precision (steplens.precision.choose) as recorded in its checkpoint: a resumed run keeps its own."""
    return choose(cfg.precision, device).to_dict()


def _identity(cfg: TrainConfig) -> dict[str, Any]:
    """The parts of a config that change the result (not the wall-clock cap or logging cadence)."""
    d = to_dict(cfg)
    for k in ("minutes", "ckpt_every", "eval_every"):
        d.pop(k)
    return d


def train_step(cfg: TrainConfig, st: TrainState, device: str, precision: Precision | str) -> tuple[float, torch.Tensor]:
    """One optimisation step on step `st.step`'s seeded batch and noise, then the EMA; returns (loss, grad norm)."""
    x0, task_id, _ = make_batch(cfg, st.step)
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + st.step)
    for grp in st.opt.param_groups:
        grp["lr"] = lr_at(cfg, st.step)
    with cfg.autocast(device, precision):
        loss = flow_loss(st.model, x0, task_id, g, cfg.t_shift)
    st.opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(st.model.parameters(), cfg.grad_clip)
    st.opt.step()
    decay = min(cfg.ema, (1 + st.step) / (10 + st.step))
    with torch.no_grad():
        for pe, pm in zip(st.ema.parameters(), st.model.parameters()):
            pe.lerp_(pm, 1 - decay)
    st.step += 1
    return float(loss.detach()), gnorm


def train(cfg: TrainConfig, out: str | Path, *, device: str = "cpu", progress: bool = True,
          eval_fn: Callable[[VideoDiT, int], dict[str, Any]] | None = None, stop_after: int | None = None) -> TrainState:
    """Train (or resume) into `out/`: checkpoint.pt while running, metrics.json and the EMA export at the end.

    `stop_after` ends the call after that many steps in total (as a kill would), keeping the checkpoint.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        st = load_checkpoint(ckpt, cfg, device)
    else:
        st = new_state(cfg, device)
        st.precision = resolve_precision(cfg, device)
    write_json(out / "train_config.json", cfg)
    prec = st.precision["precision"]
    if progress:
        cap = st.precision.get("capability") or {}
        flags = ", ".join(cap.get("cpu_flags", [])) or "none"
        kept = " (kept from the checkpoint)" if st.step else ""
        print(f"train: precision {prec}{kept}, asked {st.precision['requested']}; {cap.get('device', device)} bf16 flags: {flags}", flush=True)
    t_start = time.time() - st.elapsed
    torch.set_float32_matmul_precision("high")

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    cols = [TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*cols, disable=not progress) as bar:
        tid = bar.add_task("train", total=cfg.steps, completed=st.step, loss=float("nan"))
        losses: list[float] = []
        while st.step < cfg.steps:
            if stop_after is not None and st.step >= stop_after:
                break
            if cfg.minutes and time.time() - t_start > cfg.minutes * 60:
                break
            loss, gnorm = train_step(cfg, st, device, prec)
            losses.append(loss)
            bar.update(tid, completed=st.step, loss=float(np.mean(losses[-20:])))
            if st.step % 20 == 0 or st.step == cfg.steps:
                st.log.append({"step": st.step, "loss": float(np.mean(losses[-20:])), "grad_norm": float(gnorm),
                               "lr": lr_at(cfg, st.step - 1), "elapsed_s": round(time.time() - t_start, 1)})
            if eval_fn and cfg.eval_every and st.step % cfg.eval_every == 0:
                st.log.append({"step": st.step, "eval": eval_fn(st.ema, st.step)})
            if st.step % cfg.ckpt_every == 0 or st.step == cfg.steps:
                st.elapsed = time.time() - t_start
                save_checkpoint(ckpt, cfg, st)
                if progress and not bar.console.is_terminal:  # a log file gets a line per checkpoint instead of a live bar
                    bar.console.print(f"step {st.step}/{cfg.steps} loss {np.mean(losses[-20:]):.4f} {st.elapsed:.0f} s")
    st.elapsed = time.time() - t_start
    save_checkpoint(ckpt, cfg, st)
    write_json(out / "metrics.json", {"steps": st.step, "elapsed_s": round(st.elapsed, 1), "done": st.step >= cfg.steps, "precision": st.precision,
                                      "final_loss": st.log[-1]["loss"] if st.log else None, "log": st.log})
    if st.step >= cfg.steps or cfg.minutes:
        export_model(st.ema, cfg, out / "model", seen_steps=st.step)
    return st


def export_checkpoint(ckpt: str | Path, prefix: str | Path) -> Path:
    """Export a training checkpoint's EMA weights as a loadable model (`prefix`.safetensors + .json)."""
    ck = read_checkpoint(ckpt)
    cfg = from_dict(TrainConfig, ck["config"])
    model = VideoDiT(cfg.model_config())
    model.load_state_dict(ck["ema"])
    return export_model(model, cfg, prefix, seen_steps=ck["step"], versions=recorded_versions(ck), trained_steps=ck["step"],
                        train_elapsed_s=round(ck["elapsed"], 1))


def export_model(model: VideoDiT, cfg: TrainConfig, prefix: str | Path, *, seen_steps: int | None = None,
                 versions: dict[str, int] | None = None, **extra: Any) -> Path:
    """`steplens.models.serialize.export` with this training config's data and settings recorded.

    `seen_steps`: also write the seen-set of the run's steps 0..seen_steps-1 and its `--init`'s (`steplens.seen`) beside the weights.
    `versions`: the generator versions the run drew with (None: today's); recorded as `generator_versions` for every task.
    """
    versions = generator_versions(cfg.tasks) if versions is None else versions
    extra["generator_versions"] = {t: int(versions.get(t, 1)) for t in cfg.tasks}
    if seen_steps is not None:
        from .seen import write_seen

        inherited, complete = init_keys(cfg.init)
        extra["seen_set"] = write_seen(prefix, np.union1d(drawn_keys(cfg, seen_steps, versions), inherited), steps=seen_steps,
                                       init=cfg.init or None, complete=complete)
    return export(model, prefix, n_frames=cfg.n_frames, sizes=cfg.sizes, train=to_dict(cfg),
                  task_sizes={t: list(cfg.sizes_of(i)) for i, t in enumerate(cfg.tasks)} if cfg.task_sizes else None, **extra)


# -- replay: what a run drew (seen-sets, steplens.seen), from its seed stream alone ---------------------------
def drawn_keys(cfg: Any, steps: int, versions: dict[str, int] | None = None) -> np.ndarray:
    """Content keys of every instance training config `cfg` draws in steps 0..steps-1 (generation only, no model).

    `versions`: the generator versions the run drew with (`recorded_versions` of its json or checkpoint; a task missing
    from it: version 1, as every model trained before versions were recorded); None: today's generators.
    """
    from .seen import unique_keys

    keys: set[int] = set()
    for step in range(steps):
        ti, insts = batch_instances(cfg, step, versions)
        task = get_task(cfg.tasks[ti])
        keys.update(task.key(i) for i in insts)
    return unique_keys(keys)


def init_keys(init: str) -> tuple[np.ndarray, bool]:
    """The seen-set a run inherits from `--init`: (keys, complete); a checkpoint.pt is replayed, an export's file is read.

    `complete` is False when `init` is an exported model without a seen-set (what it saw is unknown).
    """
    if not init:
        return np.zeros(0, dtype=np.uint64), True
    if init.endswith(".pt"):
        ck = read_checkpoint(init)
        cfg = from_dict(TrainConfig, ck["config"])
        own = drawn_keys(cfg, int(ck["step"]), recorded_versions(ck))
        inherited, complete = init_keys(cfg.init)
        return np.union1d(own, inherited), complete
    from .seen import load_seen

    seen = load_seen(init)
    return seen.keys, seen.sha256 is not None
