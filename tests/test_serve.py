import http.client
import os

import pytest

from steplens.report.serve import serve_in_thread
from report_fixture import make_run


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    make_run(root, "a")
    make_run(root, "b")
    (tmp_path / "secret.txt").write_text("top secret")
    os.symlink(tmp_path / "secret.txt", root / "a" / "link.txt")
    srv, url = serve_in_thread(root)
    yield srv, url
    srv.shutdown()
    srv.server_close()


def get(url, path, method="GET"):
    host = url.split("//")[1]
    c = http.client.HTTPConnection(host, timeout=5)
    c.putrequest(method, path, skip_accept_encoding=True)  # send the path exactly as written
    c.endheaders()
    r = c.getresponse()
    return r.status, r.read()


def test_pages(server):
    _, url = server
    assert server[0].server_address[0] == "127.0.0.1"
    st, body = get(url, "/")
    assert st == 200 and b"/run/a" in body and b"/run/b" in body
    st, body = get(url, "/run/a")
    assert st == 200 and b"/files/a/plot.png" in body and b"viewer" in body
    assert get(url, "/files/a/plot.png")[0] == 200
    st, body = get(url, "/compare?a=a&b=b")
    assert st == 200 and body.count(b"<h3>A plot</h3>") == 2


@pytest.mark.parametrize("path", ["/../secret.txt", "/files/../secret.txt", "/files/..%2fsecret.txt", "/files/%2e%2e/secret.txt",
                                  "/files/%252e%252e/secret.txt", "/files//etc/passwd", "/files/%2Fetc%2Fpasswd", "/files/a/link.txt",
                                  "/files/a%5c..%5c..%5csecret.txt", "/files/a/plot.png%00", "/run/..", "/compare?a=..&b=a"])
def test_traversal_is_404(server, path):
    _, url = server
    st, body = get(url, path)
    assert st == 404 and b"secret" not in body


def test_read_only(server):
    _, url = server
    assert get(url, "/files/a/plot.png", "POST")[0] == 405
    assert get(url, "/", "DELETE")[0] == 405
