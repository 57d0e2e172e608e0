"""One code path for sample-level work, in-process or on a Ray cluster: `map_shards(fn, shards)`.

The work is cut into shards (for `evaluate`: contiguous chunks of `batch` held-out seeds) and a
top-level, picklable `fn(shard) -> list[result dict]` runs once per shard. Without `ray_address`
the shards run here, in order. With it, each shard is one Ray task (`num_gpus=1` when the cluster
has GPUs, else `num_cpus=1`); results come back to the driver as tasks finish (`ray.wait`) and the
driver, never a worker, writes them, so the run folder has a single writer. A task whose worker
dies is retried by Ray (`max_retries`); since results are written by sample id, and a chunk of
results is committed as one unit (`RunFolder.write_many`), a retry or a re-run cannot duplicate a
sample. Workers receive a model *spec* (a shipped name, a path, `wan:...`), never a model object,
and load it once per worker process (`worker_model`).

Determinism. On CPU, a sample's result is a function of (model weights, task, size, seed, sampling
config, batch composition): the local path and the Ray path run the same shards through the same
function, so with the same config they write bit-identical sample files (tested). Batch
composition matters: CPU matmul kernels block differently for different batch sizes, so the same
sample batched with other samples can differ in the last float bits (rarely in its score). That is
why shard boundaries are fixed chunks of the full seed list, and why a chunk's results are
committed together: an interrupted run resumes by recomputing whole chunks. Thread count: Ray
workers run with one intra-op thread (`OMP_NUM_THREADS=1`); for the reference DiT on x86 CPUs we
observed the same bits with 1 and 2 threads, but that is not a guarantee for every op or CPU. On GPU results are *not* bit-identical across runs or machines unless you opt in:
cuBLAS and the fused attention kernels pick algorithms by shape and hardware and some reduce in a
non-deterministic order (`torch.use_deterministic_algorithms(True)` plus
`CUBLAS_WORKSPACE_CONFIG=:4096:8` fixes that on one GPU type, slower); bf16 autocast amplifies
any difference; different GPU models or library versions differ anyway. Expect the same solve
rate within its confidence interval, not the same bits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

S = TypeVar("S")
Results = list[dict[str, Any]]
OnResult = Callable[[int, Results], None]
OnError = Callable[[int, BaseException], None]

_MODELS: dict[tuple[str, str, str], Any] = {}  # (spec, device, sha256) -> denoiser, one per worker process


def worker_model(spec: str, device: str | None = None) -> Any:
    """The denoiser for `spec`, loaded once per process on `device` (None or "auto": CUDA when there is one).

    Reference models are keyed by their weights' sha256 too, so a re-exported model is reloaded.
    """
    from .models.errors import resolve_device
    from .models.registry import load, parse_spec
    from .models.serialize import load_meta

    device = str(resolve_device(device))  # None / "auto": cuda when this worker has one
    key = (spec, device, "" if parse_spec(spec)[0] is not None else str(load_meta(spec)[0].get("sha256")))
    if key not in _MODELS:
        _MODELS[key] = load(spec, device=device)
    return _MODELS[key]


def map_shards(fn: Callable[[S], Results], shards: Sequence[S], *, ray_address: str | None = None,
               num_workers: int | None = None, max_retries: int = 2, on_result: OnResult | None = None,
               on_error: OnError | None = None) -> list[Results] | None:
    """Run `fn` on every shard, locally (`ray_address=None`) or as Ray tasks.

    Args:
        fn: a top-level (picklable) function `fn(shard) -> list[result dict]`.
        shards: picklable shard descriptions; keep them small (seeds and a model spec, no tensors).
        ray_address: None to run here, in order; "local" to start a local Ray cluster for this
            call; anything else is passed to `ray.init(address=...)` ("auto", "ray://host:10001").
            An already initialised Ray session is reused and left running.
        num_workers: most shards in flight at once (default: the cluster's GPUs, else its CPUs);
            with "local", also the CPUs the local cluster gets.
        max_retries: Ray retries of a shard whose worker process died (not of exceptions `fn` raises).
        on_result: called in the driver as `on_result(index, results)` when a shard finishes
            (completion order under Ray); results are then not kept.
        on_error: called as `on_error(index, exception)` for a shard whose worker died more than
            `max_retries` times (without it, that is raised). An exception raised by `fn` itself
            propagates, as it does locally.

    Returns:
        The results in shard order, or None when `on_result` consumed them.
    """
    keep: list[Results | None] = [None] * len(shards)

    def deliver(i: int, res: Results) -> None:
        if on_result is None:
            keep[i] = res
        else:
            on_result(i, res)

    if ray_address is None:
        for i, shard in enumerate(shards):
            deliver(i, fn(shard))
    elif shards:
        _map_ray(fn, shards, ray_address, num_workers, max_retries, deliver, on_error)
    return None if on_result is not None else [r if r is not None else [] for r in keep]


def _call(fn: Callable[[S], Results], shard: S) -> Results:
    from .allocator import keep_freed_memory

    keep_freed_memory()  # a Ray worker is its own process: the same allocator settings as the driver's CLI
    return fn(shard)


def _map_ray(fn: Callable[[S], Results], shards: Sequence[S], address: str, num_workers: int | None,
             max_retries: int, deliver: OnResult, on_error: OnError | None) -> None:
    try:
        import ray
    except ImportError:
        raise RuntimeError("Ray is not installed: pip install 'steplens[ray]'") from None

    started = not ray.is_initialized()
    if started:
        init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
        if address == "local":
            init["num_cpus"] = num_workers
        else:
            init["address"] = address
        ray.init(**init)
    try:
        res = ray.cluster_resources()
        gpus = int(res.get("GPU", 0))
        opts = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        width = num_workers or gpus or max(1, int(res.get("CPU", 1)))
        task = ray.remote(max_retries=max_retries, **opts)(_call)
        fn_ref = ray.put(fn)  # shipped once, not once per shard
        todo = list(range(len(shards)))[::-1]  # popped from the end: shard order
        running: dict[Any, int] = {}
        while todo or running:
            while todo and len(running) < width:
                i = todo.pop()
                running[task.remote(fn_ref, shards[i])] = i
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                i = running.pop(ref)
                try:
                    out = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - fn raised (RayTaskError) or its worker died for good
                    if on_error is None or isinstance(e, ray.exceptions.RayTaskError):
                        for r in running:
                            ray.cancel(r, force=True)
                        cause = getattr(e, "cause", None)
                        raise (cause if isinstance(cause, Exception) else e) from None
                    on_error(i, e)
                    continue
                deliver(i, out)
    finally:
        if started:
            ray.shutdown()


__all__ = ["map_shards", "worker_model"]
