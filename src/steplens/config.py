"""Frozen-dataclass configs that validate on construction and round-trip through JSON."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class InputError(Exception):
    """Bad input the user can fix (a missing or corrupt file, a wrong name): the CLI prints it as one line, exit 2."""


class ConfigError(InputError, ValueError):
    """A config value is out of range or of the wrong kind."""


# errors a user can fix from the message alone: the CLI prints them without their type name, and a run
# records them per sample as bad input (models.errors.error_kind)
INPUT_ERRORS: tuple[type[BaseException], ...] = (InputError, ValueError, LookupError, OSError)


def named_parts(spec: str) -> list[tuple[str, str, str | None]]:
    """'maze=6;rotate=7,9' -> [(part, name, value)] with name and part stripped; value None where a part has no '='."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, eq, val = part.partition("=")
        out.append((part, name.strip(), val if eq else None))
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (possibly nested) config dataclass."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = [to_dict(x) if dataclasses.is_dataclass(x) else x for x in v]
        out[f.name] = v
    return out


def _coerce(tp: Any, v: Any) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(v, dict):
        return from_dict(tp, v)
    if origin is tuple and isinstance(v, list | tuple):
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(_coerce(inner, x) for x in v)
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(tp):
            if a is type(None) and v is None:
                return None
        for a in typing.get_args(tp):
            if a is not type(None):
                return _coerce(a, v)
    return v


def from_dict(cls: type[T], d: dict[str, Any]) -> T:
    """Build config `cls` from a dict; unknown keys are an error, not silently dropped."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(hints[k], v) for k, v in d.items()})  # type: ignore[call-arg]


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write `obj` (dataclasses allowed) as indented JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = to_dict(obj)
    atomic_write_text(path, to_json(obj, indent=2) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def json_default(o: Any) -> Any:
    """`json.dumps(default=...)` for what steplens stores: configs, arrays and tensors, numpy scalars, paths, sets."""
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return to_dict(o)
    if hasattr(o, "tolist"):  # numpy arrays and scalars, torch tensors
        return o.tolist()
    if isinstance(o, set | frozenset):
        return sorted(o, key=repr)
    if isinstance(o, range):
        return list(o)
    return str(o)  # paths, dtypes, devices


def finite(obj: Any) -> Any:
    """`obj` with every NaN or infinite float (in dicts, lists and tuples, at any depth) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def to_json(obj: Any, **kw: Any) -> str:
    """Strict JSON of `obj` (`json.dumps` keywords allowed): what `json_default` turns it into, with null for NaN and
    infinities, so every parser reads what steplens writes or prints (JSON has no NaN)."""
    return json.dumps(finite(obj), allow_nan=False, default=lambda o: finite(json_default(o)), **kw)


def jsonable(obj: Any) -> Any:
    """`obj` as plain JSON values (dicts, lists, str, numbers, bool, None), as `to_json` turns it."""
    return json.loads(to_json(obj))
