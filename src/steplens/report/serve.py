"""A read-only local dashboard over run folders (standard library only).

Pages: `/` lists runs under the root, `/run/<rel>` renders one run (images by URL),
`/compare?a=<rel>&b=<rel>` shows two side by side, `/files/<rel>` serves a file. Only files inside
the root are served: `..`, absolute paths, backslashes, NUL bytes, encoded traversal and symlinks
that resolve outside the root get 404; methods other than GET/HEAD get 405.
"""

from __future__ import annotations

import html
import mimetypes
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .html import CSS, JS, ReportError, is_run, run_section


def safe_path(root: Path, rel: str) -> Path | None:
    """`rel` (already percent-decoded once) resolved inside `root`, or None."""
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/") or "%" in rel:
        return None if rel else root
    parts = rel.split("/")
    if any(p in ("..", ".") for p in parts):
        return None
    p = (root / rel).resolve()
    return p if p == root or p.is_relative_to(root) else None


def _runs(root: Path) -> list[Path]:
    found = [root] if is_run(root) else []
    for m in sorted(root.rglob("manifest.json")):
        d = m.parent.resolve()
        if d != root and d.is_relative_to(root) and len(d.relative_to(root).parts) <= 3:
            found.append(d)
    return found


def _page(title: str, body: str) -> bytes:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{CSS}.cols{{display:grid;grid-template-columns:1fr 1fr;gap:16px}}</style></head>"
            f"<body><main><p><a href='/'>all runs</a></p>{body}</main><script>{JS}</script></body></html>").encode()


def make_handler(root: Path) -> type[BaseHTTPRequestHandler]:
    root = root.resolve()

    def src(p: Path) -> str:
        return "/files/" + quote(str(p.resolve().relative_to(root)))

    class Handler(BaseHTTPRequestHandler):
        server_version = "steplens"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _send(self, code: int, body: bytes, ctype: str = "text/html; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _not_found(self) -> None:
            self._send(404, b"not found", "text/plain")

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            raw = url.path
            if "\x00" in raw or "\\" in raw:
                return self._not_found()
            path = unquote(raw)
            try:
                if path == "/":
                    items = "".join(f"<li><a href='/run/{quote(str(r.relative_to(root)) or '.')}'>{html.escape(str(r.relative_to(root)) or '.')}</a></li>"
                                    for r in _runs(root))
                    return self._send(200, _page("steplens runs", f"<h1>Runs under {html.escape(root.name)}</h1><ul>{items or '<li>none</li>'}</ul>"))
                if path.startswith("/run/"):
                    rel = path[5:].rstrip("/")
                    d = root if rel == "." else safe_path(root, rel)
                    if d is None or not d.is_dir() or not is_run(d):
                        return self._not_found()
                    return self._send(200, _page(d.name, run_section(d, src, "top")))
                if path == "/compare":
                    q = parse_qs(url.query)
                    cols = []
                    for key in ("a", "b"):
                        rel = (q.get(key) or [""])[0]
                        d = root if rel == "." else safe_path(root, rel)
                        if d is None or not d.is_dir() or not is_run(d):
                            return self._not_found()
                        cols.append(f"<div>{run_section(d, src, key)}</div>")
                    return self._send(200, _page("compare", f"<h1>Compare</h1><div class=cols>{''.join(cols)}</div>"))
                if path.startswith("/files/"):
                    f = safe_path(root, path[7:])
                    if f is None or not f.is_file():
                        return self._not_found()
                    return self._send(200, f.read_bytes(), mimetypes.guess_type(f.name)[0] or "application/octet-stream")
            except ReportError as e:
                return self._send(500, html.escape(str(e)).encode(), "text/plain")
            return self._not_found()

        def _refuse(self) -> None:
            self._send(405, b"read-only", "text/plain")

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    return Handler


def make_server(root: str | Path, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"{root}: not a folder")
    return ThreadingHTTPServer((host, port), make_handler(root))


def serve(root: str | Path, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve until interrupted."""
    srv = make_server(root, host, port)
    try:
        srv.serve_forever()
    finally:
        srv.server_close()


def serve_in_thread(root: str | Path, host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """For tests and notebooks: a server on a free port in a daemon thread; returns it and its URL."""
    srv = make_server(root, host, port)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://{host}:{srv.server_address[1]}"
