"""Named hook points on any denoiser, through plain torch forward hooks (no model code is edited).

A denoiser declares `hook_blocks()` (its transformer blocks) and `hook_sites()` (sub-module sites,
e.g. {"attn_out": "attn", "mlp_out": "mlp"}). Points are named
    blocks.{i}.resid_pre    the block's input (forward pre-hook on the block, replaces args[0])
    blocks.{i}.resid_post   the block's output
    blocks.{i}.{site}       the output of the declared sub-module
and selected by exact name, glob (`blocks.*.resid_post`, `blocks.[0-2].attn_out`), a list of
those, or a predicate on `PointSpec`. A hook is `fn(tensor, *, point: HookInfo) -> Tensor | None`:
None observes, a tensor of the same shape replaces the activation. `hooks(...)` is a nestable
context manager that removes exactly the handles it added, even when its body raises.

Hooks run in registration order at each point, and each sees what the previous one returned, so an
outer context's replacement is what an inner context's observer sees.
Tokens are (B, N, D) with N in (frame, row, col) row-major order of `denoiser.token_grid(...)`;
`tokens_to_grid` and `frame_tokens` map between the two.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .context import current_call

BLOCK_SITES = ("resid_pre", "resid_post")


@dataclass(frozen=True)
class PointSpec:
    """One named point: where it is (layer, site) and how it is hooked (module, pre/post)."""

    name: str
    layer: int
    site: str
    module: nn.Module
    kind: str  # "pre" (input of module) or "post" (output of module)


@dataclass(frozen=True)
class HookInfo:
    """What a hook function is told: the point, and the model call in flight (-1/NaN/None outside a sampler)."""

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


class HookPointError(KeyError):
    """A selector names a point the model does not have."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


def hook_points(denoiser: Any) -> dict[str, PointSpec]:
    """Every named point of `denoiser`, in layer order (resid_pre, declared sites, resid_post)."""
    points: dict[str, PointSpec] = {}
    sites = denoiser.hook_sites()
    for site in sites:
        if site in BLOCK_SITES or "." in site:
            raise ValueError(f"hook site name {site!r} is reserved or contains a dot")
    for i, blk in enumerate(denoiser.hook_blocks()):
        points[f"blocks.{i}.resid_pre"] = PointSpec(f"blocks.{i}.resid_pre", i, "resid_pre", blk, "pre")
        for site, attr in sites.items():
            mod = blk
            for part in attr.split("."):
                mod = getattr(mod, part)
            points[f"blocks.{i}.{site}"] = PointSpec(f"blocks.{i}.{site}", i, site, mod, "post")
        points[f"blocks.{i}.resid_post"] = PointSpec(f"blocks.{i}.resid_post", i, "resid_post", blk, "post")
    return points


def _unknown(points: Mapping[str, PointSpec], pat: str) -> HookPointError:
    layers = sorted({p.layer for p in points.values()})
    sites = list(dict.fromkeys(p.site for p in points.values()))
    span = f"blocks.{{{layers[0]}..{layers[-1]}}}.{{{', '.join(sites)}}}" if layers else "none (no hook_blocks)"
    examples = ", ".join(list(points)[: min(4, len(points))])
    return HookPointError(f"no hook point matches {pat!r}: the model has {len(points)} points, {span}; e.g. {examples}")


def select_points(points: Mapping[str, PointSpec], selector: Selector) -> list[PointSpec]:
    """Points matching a name, glob, list of those, or predicate; a name or glob matching nothing is an error."""
    if callable(selector):
        return [p for p in points.values() if selector(p)]
    pats = [selector] if isinstance(selector, str) else list(selector)
    out: dict[str, PointSpec] = {}
    for pat in pats:
        if not isinstance(pat, str):
            raise TypeError(f"a selector is a name, glob, list of those or predicate, got {type(pat).__name__}")
        if any(c in pat for c in "*?["):
            hits = [p for n, p in points.items() if fnmatch.fnmatchcase(n, pat)]
        else:
            hits = [points[pat]] if pat in points else []
        if not hits:
            raise _unknown(points, pat)
        out.update((p.name, p) for p in hits)
    return list(out.values())


def _info(p: PointSpec) -> HookInfo:
    c = current_call()
    if c is None:
        return HookInfo(p.name, p.layer, p.site)
    return HookInfo(p.name, p.layer, p.site, c.step, c.sigma, c.branch, c.phase, c.expert)


def _checked(p: PointSpec, old: Tensor, new: Tensor | None) -> Tensor | None:
    if new is None:
        return None
    if not isinstance(new, Tensor):
        raise TypeError(f"hook on {p.name} returned {type(new).__name__}; return None to observe or a Tensor to replace")
    if new.shape != old.shape:
        raise ValueError(f"hook on {p.name} returned shape {tuple(new.shape)}, expected {tuple(old.shape)} (a replacement keeps the shape)")
    return new.to(old.dtype)  # a float32 replacement in a bf16 network runs on in the network's dtype


def _attach(p: PointSpec, fn: HookFn) -> Any:
    # register through the module's own methods: adapters may route them (Wan's ExpertBlocks hooks every expert)
    if p.kind == "pre":
        def pre(module: nn.Module, args: tuple, kwargs: dict) -> Any:
            if args:
                new = _checked(p, args[0], fn(args[0], point=_info(p)))
                return None if new is None else ((new, *args[1:]), kwargs)
            name = next((k for k, v in kwargs.items() if isinstance(v, Tensor)), None)  # block called with keywords only
            if name is None:
                return None
            new = _checked(p, kwargs[name], fn(kwargs[name], point=_info(p)))
            return None if new is None else (args, {**kwargs, name: new})

        return p.module.register_forward_pre_hook(pre, with_kwargs=True)

    def post(module: nn.Module, args: tuple, output: Any) -> Any:
        t = output[0] if isinstance(output, tuple) else output
        new = _checked(p, t, fn(t, point=_info(p)))
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return p.module.register_forward_hook(post)


@contextmanager
def hooks(denoiser: Any, mapping: Mapping[Any, HookFn] | Iterable[tuple[Selector, HookFn]]) -> Iterator[list[PointSpec]]:
    """Attach each `fn` at every point its selector matches, for the duration of the block.

    Args:
        denoiser: anything with `hook_blocks()` and `hook_sites()`.
        mapping: {selector: fn} or (selector, fn) pairs (pairs allow lists and repeated selectors).
    Returns:
        (as the context value) the points hooked, in attachment order.
    """
    pairs = list(mapping.items()) if isinstance(mapping, Mapping) else list(mapping)
    points = hook_points(denoiser)
    resolved = [(p, fn) for sel, fn in pairs for p in select_points(points, sel)]  # resolve all before attaching any
    handles = []
    try:
        for p, fn in resolved:
            handles.append(_attach(p, fn))
        yield [p for p, _ in resolved]
    finally:
        for h in reversed(handles):
            h.remove()


def tokens_to_grid(t: Tensor, grid: Sequence[int]) -> Tensor:
    """(B, N, ...) tokens -> (B, F, H, W, ...) on the token grid (tokens in (frame, row, col) row-major order)."""
    f, h, w = grid
    if t.ndim < 2 or t.shape[1] != f * h * w:
        raise ValueError(f"{tuple(t.shape)}: dim 1 does not hold the {f}x{h}x{w} = {f * h * w} tokens of the grid")
    return t.reshape(t.shape[0], f, h, w, *t.shape[2:])


def grid_to_tokens(t: Tensor) -> Tensor:
    """(B, F, H, W, ...) -> (B, N, ...): the inverse of `tokens_to_grid`."""
    return t.reshape(t.shape[0], t.shape[1] * t.shape[2] * t.shape[3], *t.shape[4:])


def frame_tokens(frames: Iterable[int], grid: Sequence[int]) -> list[int]:
    """Token indices of the chosen token-grid frames (for `tokens=` of captures and patching)."""
    f, h, w = grid
    out = []
    for fr in frames:
        if not -f <= fr < f:
            raise ValueError(f"frame {fr} is outside the token grid's {f} frames")
        start = (fr % f) * h * w
        out += range(start, start + h * w)
    return out
