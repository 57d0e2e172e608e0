"""A read-only local dashboard over run folders (standard library only; never re-runs a model).

Pages: `/` lists the runs under the root (folders with a manifest.json), `/run/<rel>` renders one
run with the report builder (images by URL), `/steps?run=<rel>&sample=<id>` browses one sample's
steps, `/compare?a=<rel>&b=<rel>` puts two runs side by side, and `/files/<rel>` serves a file.
Only files inside the root are served: `..`, absolute paths, backslashes, NUL bytes, encoded or
double-encoded traversal and symlinks that resolve outside the root get 404; methods other than
GET and HEAD get 405. Binds to 127.0.0.1 by default and, when bound to a loopback address, answers
only requests addressed to a loopback name (so a web page cannot reach it through DNS rebinding).
"""

from __future__ import annotations

import html
import mimetypes
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from .folders import ReportError, Run, is_run, load_run, read_json
from .html import cell, config_html, figure_html, flatten, fmt_num, page, render_body, viewer_html

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_DEPTH = 3  # how deep under the root the index looks for run folders
SKIP_DIRS = {"samples", "steps", "__pycache__", "node_modules"}


def safe_path(root: Path, rel: str) -> Path | None:
    """`rel` (percent-decoded once) as a path inside `root` (resolved) after following symlinks, or None."""
    if "\x00" in rel or "\\" in rel or "%" in rel or rel.startswith("/"):
        return None  # a '%' left after one decoding is double-encoded: refuse rather than guess
    rel = rel.rstrip("/")
    if rel in ("", "."):
        return root
    if any(p in ("", ".", "..") for p in rel.split("/")):
        return None
    p = (root / rel).resolve()
    return p if p == root or p.is_relative_to(root) else None


def find_runs(root: Path) -> list[Path]:
    """Run folders under `root` (itself included), at most MAX_DEPTH levels down, not following symlinks."""
    found = []
    for dirpath, dirnames, _ in os.walk(root, followlinks=False):
        d = Path(dirpath)
        depth = len(d.relative_to(root).parts)
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and n not in SKIP_DIRS and depth < MAX_DEPTH)
        if is_run(d):
            found.append(d)
    return found


def _host_ok(header: str | None, bound: str) -> bool:
    """On a loopback address, accept only requests whose Host names a loopback address (no DNS rebinding)."""
    if bound not in LOOPBACK:
        return True
    h = (header or "").strip().lower()
    name = h[1:h.find("]")] if h.startswith("[") else h.split(":")[0]
    return name in LOOPBACK


class Dashboard:
    """The pages, as pure functions of the root folder and the request (no HTTP here)."""

    def __init__(self, root: Path):
        self.root = root.resolve()

    def rel(self, p: Path) -> str:
        return p.relative_to(self.root).as_posix() or "."

    def src(self, p: Path) -> str:
        try:
            return "/files/" + quote(p.relative_to(self.root).as_posix())
        except ValueError:
            return "#"

    def run_url(self, p: Path) -> str:
        return "/run/" + quote(self.rel(p))

    def step_url(self, run: Path, sample: str) -> str:
        return "/steps?" + urlencode({"run": self.rel(run), "sample": sample})

    def run_dir(self, rel: str) -> Path | None:
        d = safe_path(self.root, rel)
        return d if d is not None and d.is_dir() and is_run(d) else None

    def _crumbs(self, *links: tuple[str, str]) -> str:
        items = [("/", "all runs"), *links]
        return "<div class=crumbs>" + "".join(f'<a href="{html.escape(u)}">{html.escape(t)}</a>' for u, t in items) + "</div>"

    def _options(self, runs: list[Path], selected: str) -> str:
        return "".join(f'<option value="{html.escape(self.rel(r))}"{" selected" if self.rel(r) == selected else ""}>'
                       f"{html.escape(self.rel(r))}</option>" for r in runs)

    def index(self) -> str:
        runs = find_runs(self.root)
        rows = []
        for r in runs:
            try:
                manifest = read_json(r / "manifest.json")
                figs = read_json(r / "figures.json", [])
                kind, n_figs = str(manifest.get("kind", "run")), len(figs) if isinstance(figs, list) else 0
                txt = (r / "summary.txt").read_text(errors="replace") if (r / "summary.txt").is_file() else ""
                note = next((line.strip() for line in txt.splitlines() if line.strip()), "")
            except (ReportError, AttributeError, OSError) as e:
                kind, n_figs, note = "?", 0, f"cannot read: {e}"
            steps = r / "steps"
            n_samples = sum(1 for p in steps.iterdir() if p.is_dir()) if steps.is_dir() else 0
            name = self.rel(r) if r != self.root else f"{self.root.name}/ (this folder)"
            rows.append(f'<tr><td><a href="{html.escape(self.run_url(r))}">{html.escape(name)}</a></td>'
                        f"<td><span class=badge>{html.escape(kind)}</span></td><td class=v>{n_figs}</td>"
                        f"<td class=v>{n_samples}</td><td class=muted>{html.escape(note[:140])}</td></tr>")
        table = ("<table><tr><th>run</th><th>kind</th><th class=v>figures</th><th class=v>samples</th><th></th></tr>"
                 + "".join(rows) + "</table>") if rows else "<p class=empty>No run folders (with a manifest.json) here yet.</p>"
        a, b = (self.rel(runs[0]), self.rel(runs[min(1, len(runs) - 1)])) if runs else ("", "")
        form = (f"<form class='compare card block' action=/compare method=get><b>Compare</b> "
                f"<select name=a aria-label='run A'>{self._options(runs, a)}</select> with "
                f"<select name=b aria-label='run B'>{self._options(runs, b)}</select> <button type=submit>compare</button></form>"
                if len(runs) > 1 else "")
        return page("steplens dashboard", f"<header><h1>steplens runs</h1><p class=sub>{html.escape(str(self.root))} "
                                          f"(read-only)</p></header>{form}<div class='card block'>{table}</div>")

    def _sample_links(self, run: Run) -> str:
        items = "".join(f'<li><a href="{html.escape(self.step_url(run.folder, s.id))}">{html.escape(s.id)}</a></li>'
                        for s in run.samples)
        return f"<details class=block><summary>one page per sample ({len(run.samples)})</summary><ul class=samples>{items}</ul></details>"

    def run_page(self, d: Path) -> str:
        title, content = render_body(d, self.src, max_samples=None, sample_links=self._sample_links)
        up = [(self.run_url(p), p.name) for p in reversed(d.parents) if p.is_relative_to(self.root) and is_run(p)]
        return page(title, self._crumbs(*up) + content)

    def steps_page(self, d: Path, sample_id: str) -> str | None:
        run = load_run(d)
        ids = [s.id for s in run.samples]
        if sample_id not in ids:
            return None
        k = ids.index(sample_id)
        s = run.samples[k]
        nav = " &middot; ".join(f'<a href="{html.escape(self.step_url(d, ids[j]))}">{label}</a>'
                       for j, label in ((k - 1, "&larr; previous sample"), (k + 1, "next sample &rarr;")) if 0 <= j < len(ids))
        grid = "".join(f'<div class="card fig"><h3>step {i}' + (f" <span class=muted>&sigma; = {fmt_num(s.sigmas[i])}</span>"
                       if i < len(s.sigmas) and s.sigmas[i] is not None else "") +
                       f'</h3><img class=px src="{html.escape(self.src(f))}" alt="step {i}" loading=lazy></div>'
                       for i, f in enumerate(s.frames))
        content = (f"<header><h1>{html.escape(s.id)}<span class=badge>{html.escape(run.kind)}</span></h1>"
                   f"<p class=sub>sample {k + 1} of {len(ids)} in {html.escape(self.rel(d))} &middot; {nav}</p></header>"
                   f"{viewer_html([s], self.src, title='Steps')}<h2 class=block>All steps</h2>"
                   f"<div class=figs style='grid-template-columns:repeat(auto-fill,minmax(220px,1fr))'>{grid}</div>")
        return page(f"{s.id}: steps", self._crumbs((self.run_url(d), self.rel(d))) + content)

    def compare_page(self, a: Path, b: Path) -> str:
        ra, rb = load_run(a), load_run(b)
        heads = "".join(f'<div class=card><h2><a href="{html.escape(self.run_url(r.folder))}">{html.escape(self.rel(r.folder))}</a>'
                        f"<span class=badge>{html.escape(r.kind)}</span></h2>{config_html(r.config)}"
                        + (f"<pre class=txt>{html.escape(r.text.rstrip())}</pre>" if r.text.strip() else "") + "</div>"
                        for r in (ra, rb))
        parts = [f"<header><h1>Compare</h1></header><div class=cols>{heads}</div>"]
        names = tuple(html.escape(self.rel(r.folder)) for r in (ra, rb))
        ca, cb = ({k: v for k, v, _ in flatten(r.config)} for r in (ra, rb))
        diff = [k for k in dict.fromkeys([*ca, *cb]) if ca.get(k) != cb.get(k)]
        if diff:
            rows = "".join(f"<tr><th>{html.escape(k)}</th><td class=v>{cell(ca.get(k))}</td><td class=v>{cell(cb.get(k))}</td></tr>"
                           for k in diff)
            parts.append(f"<div class='card block'><h4>config differences</h4><table class=cmp-table><tr><th></th>"
                         f"<th class=v>{names[0]}</th><th class=v>{names[1]}</th></tr>{rows}</table></div>")
        parts.append(_numbers_side_by_side(ra.summary, rb.summary, names))
        by_a = {f.rel: f for f in ra.figures}
        by_b = {f.rel: f for f in rb.figures}
        for rel in dict.fromkeys([*by_a, *by_b]):
            cols = "".join(figure_html(f, self.src) if f else "<div class='card empty'>not in this run</div>"
                           for f in (by_a.get(rel), by_b.get(rel)))
            parts.append(f"<div class='cols block'>{cols}</div>")
        return page(f"compare {self.rel(a)} / {self.rel(b)}", self._crumbs() + "".join(parts), wide=True)


def _numbers_side_by_side(sa: dict[str, Any], sb: dict[str, Any], names: tuple[str, ...]) -> str:
    """One table of both runs' numbers, with B - A where both are numbers (names: escaped column labels)."""
    fa = {k: (v, ci) for k, v, ci in flatten(sa)}
    fb = {k: (v, ci) for k, v, ci in flatten(sb)}
    rows = []
    for k in dict.fromkeys([*fa, *fb]):
        (va, ca), (vb, cb) = fa.get(k, (None, None)), fb.get(k, (None, None))
        delta = ""
        if isinstance(va, int | float) and isinstance(vb, int | float) and not isinstance(va, bool) and not isinstance(vb, bool):
            d = vb - va
            delta = f"<span class={'up' if d > 0 else 'down' if d < 0 else 'muted'}>{'+' if d > 0 else ''}{fmt_num(d)}</span>"
        rows.append(f"<tr><th>{html.escape(k)}</th><td class=v>{cell(va)}{_ci(ca)}</td><td class=v>{cell(vb)}{_ci(cb)}</td>"
                    f"<td class=v>{delta}</td></tr>")
    if not rows:
        return ""
    return (f"<div class='card block'><h4>numbers</h4><table class=cmp-table><tr><th></th><th class=v>{names[0]}</th>"
            f"<th class=v>{names[1]}</th><th class=v>right &minus; left</th></tr>{''.join(rows)}</table></div>")


def _ci(ci: list[float] | None) -> str:
    return f" <span class=ci>[{fmt_num(ci[0])}, {fmt_num(ci[1])}]</span>" if ci else ""


def make_handler(root: Path, bound_host: str) -> type[BaseHTTPRequestHandler]:
    dash = Dashboard(root)

    class Handler(BaseHTTPRequestHandler):
        server_version = "steplens"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the CLI prints the URL, not every request
            pass

        def _head(self, code: int, ctype: str, length: int) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(length))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()

        def _send(self, code: int, text: str, ctype: str = "text/html; charset=utf-8") -> None:
            data = text.encode("utf-8")
            self._head(code, ctype, len(data))
            if self.command != "HEAD":
                self.wfile.write(data)

        def _file(self, f: Path) -> None:
            with f.open("rb") as fh:
                self._head(200, mimetypes.guess_type(f.name)[0] or "application/octet-stream", os.fstat(fh.fileno()).st_size)
                if self.command != "HEAD":
                    shutil.copyfileobj(fh, self.wfile)

        def do_GET(self) -> None:
            if not _host_ok(self.headers.get("Host"), bound_host):
                return self._send(403, "forbidden: this dashboard answers only requests to 127.0.0.1 / localhost", "text/plain")
            url = urlsplit(self.path)
            if "\x00" in url.path or "\\" in url.path:
                return self._send(404, "not found", "text/plain")
            path, query = unquote(url.path), parse_qs(url.query)
            try:
                out = self._route(path, {k: v[0] for k, v in query.items()})
            except ReportError as e:
                return self._send(500, f"error: {e}", "text/plain; charset=utf-8")
            if out is None:
                return self._send(404, "not found", "text/plain")
            if isinstance(out, Path):
                return self._file(out)
            return self._send(200, out)

        def _route(self, path: str, q: dict[str, str]) -> str | Path | None:
            if path == "/":
                return dash.index()
            if path.startswith("/run/"):
                d = dash.run_dir(path[len("/run/"):])
                return dash.run_page(d) if d else None
            if path == "/steps":
                d, sample = dash.run_dir(q.get("run", "")), q.get("sample", "")
                if d is None or not sample or "/" in sample or safe_path(d, "steps/" + sample) is None:
                    return None
                return dash.steps_page(d, sample)
            if path == "/compare":
                a, b = dash.run_dir(q.get("a", "")), dash.run_dir(q.get("b", ""))
                return dash.compare_page(a, b) if a and b else None
            if path.startswith("/files/"):
                f = safe_path(dash.root, path[len("/files/"):])
                return f if f is not None and f.is_file() else None
            return None

        do_HEAD = do_GET

        def _refuse(self) -> None:
            self.send_response(405)
            self.send_header("Allow", "GET, HEAD")
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "10")
            self.end_headers()
            self.wfile.write(b"read-only\n")

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a closed browser tab is not an error
            super().handle_error(request, client_address)


def make_server(root: str | Path, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A dashboard server over `root`, bound but not yet serving (port 0: any free port)."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"{root}: not a folder")
    return _Server((host, port), make_handler(root, host))


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else host
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def serve(root: str | Path, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the dashboard until interrupted (Ctrl-C)."""
    srv = make_server(root, host, port)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


@contextmanager
def running(root: str | Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """The dashboard in a background thread for the duration of a `with` block; yields its URL."""
    srv = make_server(root, host, port)
    t = threading.Thread(target=srv.serve_forever, name="steplens-dashboard", daemon=True)
    t.start()
    try:
        yield url_of(srv)
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=10)
