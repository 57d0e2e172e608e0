"""Run folders: a manifest of the run's config, one atomically written result per sample, resumable.

Layout: `RUN/manifest.json` (kind, config), `RUN/samples/<id>.json` (one per finished sample),
and whatever summaries the command writes. Re-running the same command on the same folder skips
finished samples; a different config is refused, so results of two configs never mix. Results
written together with `write_many` go through a journal (`samples/.commit-*.jsonl`), replayed when
the folder is opened, so a crash leaves all of them or none.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .config import InputError, atomic_write_text, jsonable, to_json, write_json


class RunConfigMismatch(InputError, RuntimeError):
    """The folder holds a run of another config."""


class RunFolder:
    def __init__(self, root: str | Path, kind: str, config: dict[str, Any]):
        self.root = Path(root)
        self.kind = kind
        self.config = jsonable(config)  # normalise tuples etc.
        manifest = self.root / "manifest.json"
        if manifest.exists():
            old = json.loads(manifest.read_text())
            if old.get("kind") != kind or old.get("config") != self.config:
                diff = sorted(k for k in set(self.config) | set(old.get("config", {}))
                              if self.config.get(k) != old.get("config", {}).get(k))
                raise RunConfigMismatch(f"{self.root} holds a {old.get('kind')} run with a different config "
                                        f"(differs in: {', '.join(diff) or 'kind'}); use another --out or the same arguments")
        else:
            write_json(manifest, {"kind": kind, "config": self.config})
        (self.root / "samples").mkdir(parents=True, exist_ok=True)
        for journal in sorted((self.root / "samples").glob(".commit-*.jsonl")):
            self._replay(journal)  # a crash between journal and sample files: finish the commit

    def path(self, sample_id: str) -> Path:
        return self.root / "samples" / f"{sample_id}.json"

    def done(self, sample_id: str) -> bool:
        return self.path(sample_id).exists()

    def finished(self, sample_id: str) -> bool:
        """Done without an error (errored samples count as pending, so a re-run retries them)."""
        p = self.path(sample_id)
        return p.exists() and "error" not in json.loads(p.read_text())

    def write(self, sample_id: str, result: dict[str, Any]) -> None:
        atomic_write_text(self.path(sample_id), to_json({"id": sample_id, **result}) + "\n")

    def write_many(self, results: Mapping[str, dict[str, Any]]) -> None:
        """Write several results as one unit: after a crash either all of them exist or none."""
        if not results:
            return
        journal = self.root / "samples" / f".commit-{next(iter(results))}.jsonl"
        atomic_write_text(journal, "".join(to_json({"id": i, **r}) + "\n" for i, r in results.items()))
        self._replay(journal)

    def _replay(self, journal: Path) -> None:
        for line in journal.read_text().splitlines():
            atomic_write_text(self.path(json.loads(line)["id"]), line + "\n")
        journal.unlink()

    def results(self, ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Finished results, in the order of `ids` (default: sorted by id)."""
        if ids is None:
            files = sorted((self.root / "samples").glob("*.json"))
        else:
            files = [self.path(i) for i in ids if self.done(i)]
        return [json.loads(f.read_text()) for f in files]

    def write_jsonl(self, name: str, rows: list[dict[str, Any]]) -> Path:
        p = self.root / name
        atomic_write_text(p, "".join(to_json(r) + "\n" for r in rows))
        return p


def instance_bar(progress: bool) -> Any:
    """The instance-level bar of the long commands (search run, ensemble sweep): done/total, elapsed and ETA, on stderr
    (stdout keeps the JSON lines); rich draws it live on a terminal and once, at the end, elsewhere."""
    from rich.console import Console
    from rich.progress import MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress(*Progress.get_default_columns(), MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True),
                    disable=not progress)
