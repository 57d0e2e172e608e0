"""`steplens serve`: a read-only dashboard that serves nothing outside its root."""

import http.client
import inspect
import os
import threading

import pytest

from fixtures_report import make_demo, make_run
from steplens.report.serve import make_server, running, safe_path


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "root"
    make_demo(root)
    make_run(root / "more", "b")
    (tmp_path / "secret.txt").write_text("top secret")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "manifest.json").write_text('{"kind": "secret", "config": {}}')
    os.symlink(tmp_path / "secret.txt", root / "cos" / "link.txt")  # a file link pointing outside
    os.symlink(tmp_path / "outside", root / "linkdir")  # a folder link pointing outside
    os.symlink(root / "cos" / "plot.png", root / "cos" / "inside.png")  # a link that stays inside
    with running(root) as url:
        yield url


def get(url, path, method="GET", host=None):
    c = http.client.HTTPConnection(url.split("//")[1], timeout=10)
    c.putrequest(method, path, skip_host=host is not None, skip_accept_encoding=True)  # the path exactly as written
    if host is not None:
        c.putheader("Host", host)
    c.endheaders()
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def test_pages(server):
    st, body = get(server, "/")
    assert st == 200 and b'href="/run/."' in body and b'href="/run/cos"' in body and b'href="/run/more/b"' in body
    assert b"linkdir" not in body and b"secret" not in body
    st, body = get(server, "/run/cos")
    assert st == 200 and b'src="/files/cos/plot.png"' in body and b"/files/cos/steps/s0/step_000.png" in body
    assert b"data:image" not in body and b'href="/steps?run=cos&amp;sample=s1"' in body
    st, body = get(server, "/run/.")
    assert st == 200 and b'id="run-cos"' in body and b"/files/cos/plot.png" in body  # the parent, sections and all
    assert get(server, "/files/cos/plot.png")[1][:8] == b"\x89PNG\r\n\x1a\n"
    assert get(server, "/files/cos/inside.png")[0] == 200
    st, body = get(server, "/steps?run=cos&sample=s1")
    assert st == 200 and b"/files/cos/steps/s1/step_002.png" in body and b"previous sample" in body
    st, body = get(server, "/compare?a=cos&b=more/b")
    assert st == 200 and body.count(b"<h3>A plot</h3>") == 2 and b"right &minus; left" in body
    st, body = get(server, "/files/cos/plot.png", "HEAD")
    assert st == 200 and body == b""


@pytest.mark.parametrize("path", [
    "/../secret.txt", "/files/../secret.txt", "/files/../../etc/passwd", "/files/..%2fsecret.txt", "/files/%2e%2e/secret.txt",
    "/files/%2e%2e%2fsecret.txt", "/files/%252e%252e/secret.txt", "/files//etc/passwd", "/files/%2Fetc%2Fpasswd",
    "/files/cos/link.txt", "/files/linkdir/manifest.json", "/files/cos%5c..%5c..%5csecret.txt", "/files/cos\\..\\plot.png",
    "/files/cos/plot.png%00", "/files/cos/plot.png%00.txt", "/run/..", "/run/linkdir", "/run/%2e%2e", "/compare?a=..&b=cos",
    "/compare?a=/etc&b=cos", "/steps?run=cos&sample=../../..", "/steps?run=cos&sample=nope", "/nothing"])
def test_traversal_is_404(server, path):
    st, body = get(server, path)
    assert st == 404 and b"secret" not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_read_only(server, method):
    assert get(server, "/files/cos/plot.png", method)[0] == 405


def test_other_hosts_are_refused(server):
    """A page on another site that rebinds its name to 127.0.0.1 must not read the runs."""
    assert get(server, "/", host="evil.example:8765")[0] == 403
    assert get(server, "/", host="localhost")[0] == 200


def test_safe_path(tmp_path):
    root = tmp_path.resolve()
    (root / "a").mkdir()
    assert safe_path(root, "a") == root / "a" and safe_path(root, "") == root and safe_path(root, "a/") == root / "a"
    for bad in ("..", "a/../..", "/etc", "a//b", "a/./b", "a\\b", "a\x00", "%2e%2e"):
        assert safe_path(root, bad) is None, bad


def test_defaults_and_clean_stop(tmp_path):
    assert inspect.signature(make_server).parameters["host"].default == "127.0.0.1"
    make_run(tmp_path)
    before = threading.active_count()
    with running(tmp_path) as url:
        assert url.startswith("http://127.0.0.1:") and get(url, "/run/run")[0] == 200
    assert threading.active_count() == before  # the serving thread ended
    with pytest.raises(OSError):
        get(url, "/")
