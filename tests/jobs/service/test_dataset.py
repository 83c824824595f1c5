"""jobs/service/dataset.py against a real HTTP server on 127.0.0.1 standing in for Supabase Storage.

The server answers a signed-looking path as Storage does: the file for the right token, its 400 InvalidJWT
answer for any other. Nothing here reaches the network: a refused URL must be refused before a connection,
and every test checks that the token is in no message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from jobs.service.dataset import FetchError, fetch, limit_from_env, redact

TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1cmwiOiJ0cmFpbmluZy1maWxlcy9qb2IuanNvbiJ9.c2lnbmF0dXJlLXNlY3JldA"
)
SIGNED = "/storage/v1/object/sign/training-files/job.json"
BODY = json.dumps({"format": "brightrun-v4", "conversations": [{"id": "c1", "turns": []}]}).encode()
EXPIRED = {"statusCode": "400", "error": "InvalidJWT", "message": '"exp" claim timestamp check failed'}


class Storage(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked bodies (no Content-Length) need it
    disable_nagle_algorithm = True  # headers and body written apart: no 40 ms wait for an ACK each

    def log_message(self, *args):  # quiet
        pass

    def send(self, code: int, body: bytes, headers: dict | None = None, length: int | None = None):
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 -- http.server's naming
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        path = url.path
        try:
            if path == SIGNED:
                if query.get("token") == [TOKEN]:
                    self.send(200, BODY, {"Content-Type": "application/json"})
                else:
                    self.send(400, json.dumps(EXPIRED).encode(), {"Content-Type": "application/json"})
            elif path.startswith("/hop/"):  # /hop/N: N redirects, relative, then the signed file
                n = int(path.rsplit("/", 1)[1])
                target = f"/hop/{n - 1}" if n > 1 else f"{SIGNED}?token={TOKEN}"
                self.send(302, b"", {"Location": target})
            elif path == "/away":  # a downgrade to plain http on a public host
                self.send(302, b"", {"Location": f"http://example.com/data.json?token={TOKEN}"})
            elif path == "/big":  # over the cap, declared
                self.send(200, b"x" * int(query["n"][0]))
            elif path == "/stream":  # over the cap, undeclared (chunked)
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for _ in range(int(query["n"][0]) // 1000):
                    self.wfile.write(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            elif path == "/slow":  # nothing for a second
                time.sleep(1.0)
                self.send(200, BODY)
            elif path == "/stall":  # headers and half the body, then nothing
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY[:10])
                self.wfile.flush()
                time.sleep(1.0)
            elif path == "/cut":  # fewer bytes than declared, then the connection closes
                self.close_connection = True
                self.send(200, BODY[:10], length=len(BODY))
            elif path == "/empty":
                self.send(200, b"")
            elif path == "/echo":  # a server that repeats the request back: the token must not pass
                said = {"error": "Unauthorized", "message": f"bad token {query['token'][0]} for {self.path}"}
                self.send(403, json.dumps(said).encode())
            elif path == "/boom":
                self.send(500, b"<html>oops</html>")
            else:
                self.send(404, b'{"error":"not_found","message":"Object not found"}')
        except OSError:  # the client gave up (a timeout test): nothing to tell it
            pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Storage)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def hosts(monkeypatch):
    """Every host the fetch connects to, from httpx's transport: a refused URL must leave none."""
    seen: list[str] = []
    real = httpx.HTTPTransport.handle_request

    def recording(self, request):
        seen.append(request.url.host)
        return real(self, request)

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", recording)
    return seen


def refused(url: str, dest, **kwargs) -> str:
    with pytest.raises(FetchError) as info:
        fetch(url, dest, **kwargs)
    message = str(info.value)
    assert TOKEN not in message and TOKEN[:20] not in message and "token=" not in message
    assert "\n" not in message
    assert not dest.exists() or os.listdir(dest) == [], "nothing is left behind, temp files included"
    return message


def test_fetches_the_signed_file_by_content_hash(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # httpx logs each request's URL at INFO: the token must not be there
    path, digest = fetch(f"{server}{SIGNED}?token={TOKEN}", tmp_path)
    assert digest == hashlib.sha256(BODY).hexdigest()
    assert path == tmp_path / f"sha256-{digest}.json" and path.read_bytes() == BODY
    assert "HTTP Request: GET" in caplog.text and TOKEN not in caplog.text


def test_same_content_twice_is_one_file(server, tmp_path):
    first = fetch(f"{server}{SIGNED}?token={TOKEN}", tmp_path)
    again = fetch(f"{server}/hop/1", tmp_path)
    assert first == again and os.listdir(tmp_path) == [first[0].name]


def test_expired_token_says_so(server, tmp_path):
    message = refused(f"{server}{SIGNED}?token=eyJexpired.{TOKEN[:30]}x", tmp_path)
    assert message == (
        f"dataset_url {server}{SIGNED}: HTTP 400 (the signed URL may have expired; make a new one); "
        'the server said: InvalidJWT: "exp" claim timestamp check failed'
    )


def test_a_server_repeating_the_token_is_not_repeated(server, tmp_path):
    assert refused(f"{server}/echo?token={TOKEN}", tmp_path) == (
        f"dataset_url {server}/echo: HTTP 403 (the signed URL may have expired; make a new one); "
        "the server said: Unauthorized: bad token … for /echo?…"
    )


def test_other_statuses(server, tmp_path):
    assert refused(f"{server}/boom?token={TOKEN}", tmp_path) == (
        f"dataset_url {server}/boom: HTTP 500 (Internal Server Error)"
    )
    assert "HTTP 404 (no such file" in refused(f"{server}/nothing?token={TOKEN}", tmp_path)
    assert refused(f"{server}/empty", tmp_path).endswith(": the file is empty")


@pytest.mark.parametrize(("hops", "ok"), [(1, True), (3, True), (4, False)])
def test_redirects_at_most_three(server, tmp_path, hops, ok):
    url = f"{server}/hop/{hops}?token={TOKEN}"
    if ok:
        assert fetch(url, tmp_path)[0].read_bytes() == BODY
    else:
        assert refused(url, tmp_path) == f"dataset_url {server}/hop/4: more than 3 redirects; refused"


def test_redirect_to_plain_http_is_refused_unconnected(server, tmp_path, hosts):
    message = refused(f"{server}/away?token={TOKEN}", tmp_path)
    assert message == (
        f"dataset_url {server}/away: redirect 1 to http://example.com/data.json: "
        "plain http is refused; only https URLs are fetched"
    )
    assert hosts == ["127.0.0.1"]


@pytest.mark.parametrize("where", ["big", "stream"])
def test_over_the_cap_is_refused_and_nothing_kept(server, tmp_path, where):
    message = refused(f"{server}/{where}?n=10000&token={TOKEN}", tmp_path, max_bytes=4096)
    declared = "10,000 bytes, " if where == "big" else ""
    assert message == f"dataset_url {server}/{where}: {declared}over the 4,096-byte limit"


def test_at_the_cap_is_kept(server, tmp_path):
    path, _ = fetch(f"{server}/big?n=4096", tmp_path, max_bytes=4096)
    assert path.stat().st_size == 4096


@pytest.mark.parametrize("where", ["slow", "stall"])
def test_a_silent_server_times_out(server, tmp_path, where):
    message = refused(f"{server}/{where}?token={TOKEN}", tmp_path, timeout=0.2)
    assert (
        message
        == f"dataset_url {server}/{where}: timed out: 127.0.0.1:{server.rsplit(':', 1)[1]} sent nothing for 0.2 s"
    )


def test_a_cut_body_leaves_nothing(server, tmp_path):
    assert "RemoteProtocolError" in refused(f"{server}/cut?token={TOKEN}", tmp_path)


def test_the_whole_download_has_a_deadline(server, tmp_path):
    assert refused(f"{server}/stall", tmp_path, timeout=5, deadline=0.3).startswith(
        f"dataset_url {server}/stall: timed out"
    )


def test_nothing_listens(tmp_path):
    message = refused(f"http://127.0.0.1:9/x.json?token={TOKEN}", tmp_path)
    assert message.startswith("dataset_url http://127.0.0.1:9/x.json: could not connect to 127.0.0.1:9: ")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://files.example.com/x.json", "only https URLs are fetched (not ftp)"),
        ("file:///etc/passwd", "only https URLs are fetched (not file)"),
        ("data:application/json,{}", "only https URLs are fetched (not data)"),
        ("http://example.com/x", "plain http is refused; only https URLs are fetched"),
        ("http://10.0.0.1/x", "plain http is refused; only https URLs are fetched"),
        ("https://user:pw@abc.supabase.co/x.json", "a user name or password in the URL is refused"),
        ("https:///x.json", "no host in the URL"),
        ("https://abc.supabase.co/x.json\r\nHost: evil", "control characters in the URL"),
        ("https://abc.supabase.co/" + "a" * 8200, "longer than 8192 characters"),
    ],
)
def test_refused_before_any_connection(tmp_path, hosts, url, why):
    message = refused(f"{url}?token={TOKEN}" if "\r" not in url else url, tmp_path / "d")
    assert message.endswith(f": {why}") and "pw" not in message
    assert hosts == [] and not (tmp_path / "d").exists()


def test_redact():
    assert redact(f"https://abc.supabase.co{SIGNED}?token={TOKEN}#frag") == f"https://abc.supabase.co{SIGNED}"
    assert redact("https://u:secret@abc.supabase.co/x#y?z") == "https://abc.supabase.co/x"
    assert redact("not a url\n?token=1") == "not a url?"
    assert len(redact("https://a.co/" + "b" * 9000)) == 200


def test_the_limit_from_the_environment():
    assert limit_from_env({}) == 200_000_000
    assert limit_from_env({"DATASET_MAX_BYTES": " 1000 "}) == 1000
    for bad in ("0", "-1", "1e9", "lots"):
        with pytest.raises(ValueError, match="DATASET_MAX_BYTES: a whole number of bytes above 0"):
            limit_from_env({"DATASET_MAX_BYTES": bad})
