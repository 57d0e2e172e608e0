"""`steplens train` and `steplens export`: the reference model's trainer and its export."""

from __future__ import annotations

import typer

from ..config import named_parts
from .common import DEVICE, PRECISION, parse_ints

commands = typer.Typer()


@commands.command("train")
def train(
    out: str = typer.Option(..., "--out", help="Run folder: checkpoint, metrics and the exported model."),
    task: str = typer.Option("maze", "--task", help="Task name, or several separated by commas."),
    sizes: str = typer.Option("3,4,5,5", "--sizes", help="Sizes to draw from (repeat one to weight it); per task: 'maze=4,5;rotate=7,9'."),
    task_weights: str = typer.Option("", "--task-weights", help="How often each task's batches come, e.g. 'rotate=2;tictactoe=3' (unnamed tasks: 1)."),
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
    reserve: int = typer.Option(0, "--reserve", help="Never draw an instance whose content key is 0 mod N: a bucket kept for evaluation (0: none)."),
    device: str = DEVICE,
    precision: str = PRECISION,
) -> None:
    """Train the reference video DiT with flow matching; re-running the same command resumes."""
    from ..models.errors import resolve_device
    from ..train import TrainConfig, train as run_train

    tasks = tuple(task.split(","))
    flat, per_task = _train_sizes(sizes, tasks)
    cfg = TrainConfig(tasks=tasks, sizes=flat, task_sizes=per_task, task_weights=_task_weights(task_weights, tasks), n_frames=frames, preset=preset,
                      steps=steps, batch=batch, lr=lr, seed=seed, minutes=minutes, warmup=warmup, init=init, precision=precision,
                      reserve=reserve)
    st = run_train(cfg, out, device=str(resolve_device(device)), stop_after=stop_after or None)
    typer.echo(f"trained {st.step} steps in {st.elapsed:.0f} s -> {out}")


def _train_sizes(spec: str, tasks: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """`--sizes`: '3,4,5' for every task, or 'maze=4,5;rotate=7,9' naming each task once."""
    if "=" not in spec:
        return tuple(parse_ints(spec, "--sizes")), ()
    per = {name: tuple(parse_ints(vals or "", f"--sizes {name}=")) for _, name, vals in named_parts(spec)}
    if set(per) != set(tasks):
        raise typer.BadParameter(f"--sizes names tasks {sorted(per)}, but --task is {list(tasks)}; name each task once")
    by_task = tuple(per[t] for t in tasks)
    return by_task[0], by_task


def _task_weights(spec: str, tasks: tuple[str, ...]) -> tuple[float, ...]:
    """`--task-weights`: 'rotate=2;tictactoe=3'; tasks not named weigh 1; empty: uniform (no weights)."""
    if not spec.strip():
        return ()
    per: dict[str, float] = {}
    for part, name, val in named_parts(spec):
        if val is None or name not in tasks:
            raise typer.BadParameter(f"--task-weights: {part!r} must be TASK=WEIGHT with TASK one of {list(tasks)}")
        try:
            per[name] = float(val)
        except ValueError:
            raise typer.BadParameter(f"--task-weights {name}=: {val!r} is not a number") from None
    return tuple(per.get(t, 1.0) for t in tasks)


@commands.command("export")
def export(checkpoint: str = typer.Argument(..., help="A training run's checkpoint.pt."),
           out: str = typer.Argument(..., help="Output prefix: writes PREFIX.safetensors and PREFIX.json.")) -> None:
    """Export a checkpoint's EMA weights as a model that `--model PREFIX` (or a shipped name) loads."""
    from ..train import export_checkpoint

    typer.echo(str(export_checkpoint(checkpoint, out)))
