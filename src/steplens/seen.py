"""Seen-sets: the content keys (`Task.key`) of every instance a model's training drew, for holding out by content.

Training is deterministic (`train.batch_draw`), so the instances a run drew are enumerated by replaying its
seed stream, generating each instance (no network) and hashing its block video. A model's seen-set is stored
beside its weights as `PREFIX.seen.npy` (sorted unique uint64) and named in `PREFIX.json` under `seen_set`
with its sha256; it includes the seen-set of the model or checkpoint the run started from (`--init`).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import ConfigError, atomic_write_bytes

SUFFIX = ".seen.npy"


@dataclass(frozen=True)
class SeenSet:
    """Sorted unique uint64 content keys; `sha256` of the stored file (None: the model has no seen-set)."""

    keys: np.ndarray  # (K,) uint64, sorted, unique
    sha256: str | None = None
    reserve: int = 0  # the model's reserved bucket: its training never drew an instance with key % reserve == 0 (0: none)

    @classmethod
    def empty(cls) -> SeenSet:
        return cls(np.zeros(0, dtype=np.uint64))

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: int) -> bool:
        i = int(np.searchsorted(self.keys, np.uint64(key)))
        return i < len(self.keys) and int(self.keys[i]) == key


def unique_keys(keys: Iterable[int] | np.ndarray) -> np.ndarray:
    """Sorted unique uint64 keys."""
    return np.unique(np.fromiter((int(k) for k in keys), dtype=np.uint64) if not isinstance(keys, np.ndarray) else keys.astype(np.uint64))


def encode(keys: np.ndarray) -> bytes:
    """The `.npy` bytes of sorted unique uint64 keys (deterministic: same keys, same bytes, same sha256)."""
    buf = io.BytesIO()
    np.save(buf, unique_keys(keys), allow_pickle=False)
    return buf.getvalue()


def write_seen(prefix: str | Path, keys: np.ndarray, **extra: Any) -> dict[str, Any]:
    """Write `prefix.seen.npy`; returns its entry for the model's JSON (file name, sha256, key count, `extra`)."""
    blob = encode(keys)
    path = Path(str(prefix) + SUFFIX)
    atomic_write_bytes(path, blob)
    return {"file": path.name, "sha256": hashlib.sha256(blob).hexdigest(), "n_keys": int(len(unique_keys(keys))), **extra}


def load_seen(spec: str) -> SeenSet:
    """A model's seen-set (sha256 checked); empty with sha256 None for a model without one (or a diffusers backend)."""
    from .models.registry import parse_spec
    from .models.serialize import ModelLoadError, load_meta

    if parse_spec(spec)[0] is not None:
        return SeenSet.empty()
    try:
        meta, path = load_meta(spec)
    except ModelLoadError:
        return SeenSet.empty()
    entry = meta.get("seen_set")
    if not entry:
        return SeenSet.empty()
    file = path.parent / entry["file"]
    try:
        blob = file.read_bytes()
    except OSError as e:
        raise ConfigError(f"{spec}: its seen-set {file} is unreadable ({e})") from None
    if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
        raise ConfigError(f"{spec}: its seen-set {file} does not match the sha256 in {path.name}")
    reserve = int((meta.get("train") or {}).get("reserve", 0))
    return SeenSet(np.load(io.BytesIO(blob), allow_pickle=False).astype(np.uint64), entry["sha256"], reserve)


def add_to_meta(json_path: str | Path, entry: dict[str, Any]) -> None:
    """Record a seen-set entry in an exported model's JSON (used when a seen-set is made after the export)."""
    from .config import write_json

    p = Path(json_path)
    meta = json.loads(p.read_text())
    meta["seen_set"] = entry
    write_json(p, meta)
