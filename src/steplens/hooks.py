"""Named hook points on any denoiser, through plain torch forward hooks (no model code is edited).

A denoiser declares `hook_blocks()` (its transformer blocks) and `hook_sites()` (sub-module sites,
e.g. {"attn_out": "attn", "mlp_out": "mlp"}). Points are named
    blocks.{i}.resid_pre    the block's input (forward pre-hook on the block)
    blocks.{i}.resid_post   the block's output
    blocks.{i}.{site}       the output of the declared sub-module
and selected by exact name, glob (`blocks.*.resid_post`, `blocks.[0-2].attn_out`), a list of
those, or a predicate on `PointSpec`. A hook is `fn(tensor, *, point: HookInfo) -> Tensor | None`:
None observes, a tensor of the same shape replaces the activation. `hooks(...)` is a nestable
context manager that removes exactly the handles it added, even when its body raises.
Tokens are (B, N, D) with N in (frame, row, col) row-major order of `denoiser.token_grid(...)`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .context import current_call

BLOCK_SITES = ("resid_pre", "resid_post")


@dataclass(frozen=True)
class PointSpec:
    name: str
    layer: int
    site: str
    module: nn.Module
    kind: str  # "pre" (input of module) or "post" (output of module)


@dataclass(frozen=True)
class HookInfo:
    """What a hook function is told: the point, and the model call in flight (-1/None outside a sampler)."""

    name: str
    layer: int
    site: str
    step: int = -1
    sigma: float = float("nan")
    branch: str = "main"
    phase: str = "main"
    expert: str | None = None


HookFn = Callable[..., Tensor | None]
Selector = str | Sequence[str] | Callable[[PointSpec], bool]


def hook_points(denoiser: Any) -> dict[str, PointSpec]:
    """Every named point of `denoiser`, in layer order."""
    points: dict[str, PointSpec] = {}
    sites = denoiser.hook_sites()
    for i, blk in enumerate(denoiser.hook_blocks()):
        points[f"blocks.{i}.resid_pre"] = PointSpec(f"blocks.{i}.resid_pre", i, "resid_pre", blk, "pre")
        points[f"blocks.{i}.resid_post"] = PointSpec(f"blocks.{i}.resid_post", i, "resid_post", blk, "post")
        for site, attr in sites.items():
            mod = blk
            for part in attr.split("."):
                mod = getattr(mod, part)
            points[f"blocks.{i}.{site}"] = PointSpec(f"blocks.{i}.{site}", i, site, mod, "post")
    return points


def select_points(points: Mapping[str, PointSpec], selector: Selector) -> list[PointSpec]:
    """Points matching a name, glob, list of those, or predicate; an unknown exact name is an error."""
    if callable(selector):
        return [p for p in points.values() if selector(p)]
    pats = [selector] if isinstance(selector, str) else list(selector)
    out: dict[str, PointSpec] = {}
    for pat in pats:
        if any(c in pat for c in "*?["):
            hits = [p for n, p in points.items() if fnmatch.fnmatchcase(n, pat)]
        else:
            hits = [points[pat]] if pat in points else []
        if not hits:
            examples = ", ".join(list(points)[:4])
            raise KeyError(f"no hook point matches {pat!r} (the model has {len(points)} points, e.g. {examples}, ...)")
        out.update((p.name, p) for p in hits)
    return list(out.values())


def _info(p: PointSpec) -> HookInfo:
    c = current_call()
    if c is None:
        return HookInfo(p.name, p.layer, p.site)
    return HookInfo(p.name, p.layer, p.site, c.step, c.sigma, c.branch, c.phase, c.expert)


def _checked(p: PointSpec, old: Tensor, new: Tensor | None) -> Tensor | None:
    if new is not None and new.shape != old.shape:
        raise ValueError(f"hook on {p.name} returned shape {tuple(new.shape)}, expected {tuple(old.shape)}")
    return new


def _attach(p: PointSpec, fn: HookFn):
    if p.kind == "pre":
        def pre(module: nn.Module, args: tuple, kwargs: dict):
            new = _checked(p, args[0], fn(args[0], point=_info(p)))
            return None if new is None else ((new, *args[1:]), kwargs)

        return p.module.register_forward_pre_hook(pre, with_kwargs=True)

    def post(module: nn.Module, args: tuple, output: Any):
        t = output[0] if isinstance(output, tuple) else output
        new = _checked(p, t, fn(t, point=_info(p)))
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return p.module.register_forward_hook(post)


@contextmanager
def hooks(denoiser: Any, mapping: Mapping[Any, HookFn] | Sequence[tuple[Selector, HookFn]]) -> Iterator[list[PointSpec]]:
    """Attach `fn` at every point its selector matches, for the duration of the block."""
    pairs = list(mapping.items()) if isinstance(mapping, Mapping) else list(mapping)
    points = hook_points(denoiser)
    resolved = [(p, fn) for sel, fn in pairs for p in select_points(points, sel)]  # resolve all before attaching any
    handles = []
    try:
        for p, fn in resolved:
            handles.append(_attach(p, fn))
        yield [p for p, _ in resolved]
    finally:
        for h in handles:
            h.remove()


def tokens_to_grid(t: Tensor, grid: tuple[int, int, int]) -> Tensor:
    """(B, N, ...) tokens -> (B, F, H, W, ...) on the token grid."""
    f, h, w = grid
    if t.shape[1] != f * h * w:
        raise ValueError(f"{t.shape[1]} tokens do not fill a {f}x{h}x{w} grid")
    return t.reshape(t.shape[0], f, h, w, *t.shape[2:])
