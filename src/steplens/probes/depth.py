"""Layer specialisation by depth: skip the early, middle or late third of the blocks, over every step or a step window.

The paper's claim is a division of labour by depth ("early layers encode dense perceptual structure, middle layers
execute reasoning, and later layers consolidate latent representations"), not "some block matters" (true of any
network). Per third, over the same instances and noise as a plain run:
- `answer_drop`: solve rate of the plain run minus with the third skipped (Newcombe paired CI);
- `scene_kept`: samples whose final frame still draws every scene block (walls, markers) right (Wilson CI): what a
  third that carries perception would destroy and one that carries only reasoning would keep.
`middle_minus_late`: the middle third's answer drop minus the late third's (paired): the card's value; positive
when the middle carries more of the answer than the late third. Fewer than 3 blocks: not measurable (no thirds).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from ..hooks import hooks
from ..interventions import skip_blocks
from ..runner import Batch, generate
from ..stats import paired_diff, wilson
from ..tasks.base import classify_blocks
from .common import ProbeConfig, require_finite, run_sharded, split_errors

THIRDS = ("early", "middle", "late")


def thirds(depth: int) -> dict[str, list[int]] | None:
    """Blocks of each third (the middle one takes the remainder), or None below 3 blocks."""
    if depth < 3:
        return None
    a = depth // 3
    b = depth - a
    return {"early": list(range(a)), "middle": list(range(a, b)), "late": list(range(b, depth))}


def _outcomes(den: Any, batch: Batch, lat: Any) -> list[tuple[float, float]]:
    """(solved, scene kept) per sample of decoded final latents."""
    out = []
    for inst, frames in zip(batch.instances, den.decode(lat)):
        task = batch.task
        final = task.video_blocks(inst, frames)[-1]
        scene = task.roles(inst)["scene"]
        truth = classify_blocks(task.blocks(inst)[-1].astype(np.float32), task.colors)
        kept = bool((classify_blocks(final, task.colors)[scene] == truth[scene]).all())
        out.append((float(task.score(inst, frames).success), float(kept)))
    return out


def thirds_batch(den: Any, batch: Batch, noise: list[int], cfg: ProbeConfig, *, window: tuple[int, int],
                 tick: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """One batch: a plain run, then each third skipped over steps `window`; per sample {"base": (solved, kept), third: ...}."""
    parts = thirds(len(den.hook_blocks()))
    assert parts is not None
    lat = generate(den, batch, noise, cfg.sampling)
    require_finite(lat)
    recs: list[dict[str, Any]] = [{"base": o} for o in _outcomes(den, batch, lat)]
    for name, blocks in parts.items():
        with hooks(den, skip_blocks(blocks, steps=range(*window))):
            lat = generate(den, batch, noise, cfg.sampling)
        for r, o in zip(recs, _outcomes(den, batch, lat)):
            r[name] = o
        if tick:
            tick(len(batch.instances))
    return recs


def analyse(recs: list[dict[str, Any]], parts: dict[str, list[int]], window: tuple[int, int]) -> dict[str, Any]:
    """Per third: answer drop and scene kept with CIs; middle minus late (pure)."""
    n = len(recs)
    base = [r["base"][0] for r in recs]
    out: dict[str, Any] = {"n": n, "window": list(window), "thirds": parts, "applicable": "measured", "by_third": {}}
    for name in THIRDS:
        solved = [r[name][0] for r in recs]
        kept = int(sum(r[name][1] for r in recs))
        d, lo, hi, _ = paired_diff(solved, base, rates=True)
        out["by_third"][name] = {"answer_drop": d, "answer_drop_ci95": [lo, hi], "scene_kept": kept / n, "scene_kept_ci95": list(wilson(kept, n))}
    # the middle third's drop minus the late third's = late's solve rate minus middle's (the plain run cancels)
    d, lo, hi, rec = paired_diff([r["middle"][0] for r in recs], [r["late"][0] for r in recs], rates=True)
    out["middle_minus_late"] = {"diff": d, "ci95": [lo, hi], "stats": rec}
    return out


def run_thirds(den: Any, cfg: ProbeConfig, *, window: tuple[int, int] | None = None, progress: bool = True) -> dict[str, Any]:
    """The depth-thirds summary on `cfg`'s held-out instances (no run folder: the demo stores it in its layers stage)."""
    parts = thirds(len(den.hook_blocks()))
    if parts is None:
        return {"n": 0, "applicable": f"not measurable on this model: {len(den.hook_blocks())} blocks, fewer than one per third"}
    window = window or (0, cfg.sampling.steps)
    recs = run_sharded(den, cfg, partial(thirds_batch, window=tuple(window)), label="layer thirds", work_per_sample=3, progress=progress)
    ok, _ = split_errors(recs)
    return analyse(ok, parts, window)
