"""Hostile bodies and limits for the service, the SIGTERM drain (issue 11) and the service under faults
(issue 20).

Bodies it cannot serve get a 4xx naming what is wrong (never a 500, never a 200 for a body over
the limit); bad limits refuse to start; SIGTERM answers every request already sent, and at the drain
deadline answers the rest with a JSON 503 and exits; a client that never finishes its headers gets 408.

    .venv/bin/python -m pytest -q tests/test_serve_hostile.py
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from agrl.errors import UserError
from agrl.model.score import Scorer
from agrl.serve.app import Limits, create_app
from agrl.serve.server import header_timeout_protocol

LIMITS = Limits(max_items=8, max_query_chars=100, max_item_chars=600, max_body_bytes=20_000, body_timeout_s=1.0)
JSON = {"content-type": "application/json"}
ITEM = b'{"title": "nike running shoe"}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def url(tiny_model_dir, start_service):
    scorer = Scorer(tiny_model_dir, batch_size=16, device="cpu")
    return start_service(create_app(scorer, LIMITS, "tiny"), http=header_timeout_protocol(1.0))


def body(query: bytes = b'"shoes"', item: bytes = ITEM) -> bytes:
    return b'{"query": ' + query + b', "items": [' + item + b"]}"


@pytest.mark.parametrize(
    "content, headers, status, message",
    [
        # not JSON: refused before reading (a cross-site form post cannot drive the service)
        (body(), {"content-type": "text/plain"}, 415, "content-type: must be application/json"),
        (b"query=shoes", {"content-type": "application/x-www-form-urlencoded"}, 415, "got application/x-www-form"),
        (body(), {"content-type": "multipart/form-data; boundary=x"}, 415, "content-type"),
        (body(), {}, 415, "got none"),
        # over the body limit: 413 from the declared length, before any parsing
        (body(item=b'{"title": "' + b"x" * 30_000 + b'"}'), JSON, 413, "over the limit of 20000"),
        # nesting: a 400, not a RecursionError 500
        (b"[" * 5000 + b"]" * 5000, JSON, 400, "nested"),
        (body(item=b'{"title": "x", "extra": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}"), JSON, 400, "nested"),
        # values no later stage can use: 422 naming the field
        (body(query=b'"shoes \\ud800"'), JSON, 422, "query: lone surrogate"),
        (body(item=b'{"title": "shoe \\udfff"}'), JSON, 422, "items[0].title: lone surrogate"),
        (body(query=b'"shoes \\u0000"'), JSON, 422, "query: control character U+0000"),
        (body(item=b'{"title": "shoe \\u001b[31m"}'), JSON, 422, "items[0].title: control character U+001B"),
        (body(item=b'{"title": "x", "price": 1' + b"0" * 5000 + b"}"), JSON, 422, "items[0].price: must be a finite"),
        (body(item=b'{"title": "x", "price": NaN}'), JSON, 422, "items[0].price: must be a finite"),
        (body(item=b'{"title": "x", "price": -Infinity}'), JSON, 422, "items[0].price: must be a finite"),
        (body(item=b'{"title": "x", "attributes": {"Size": Infinity}}'), JSON, 422, "items[0].attributes"),
        (body(item=b'{"title": "x", "attributes": {"9lives": "y"}}'), JSON, 422, "attribute name"),
        (b'{"query": "shoes", "items": [' + b",".join([ITEM] * 9) + b"]}", JSON, 413, "over the limit of 8"),
        (b"\xff\xfe{}", JSON, 400, "bad JSON"),
    ],
)
def test_bodies_it_cannot_serve_get_a_clear_4xx(url, content, headers, status, message):
    response = httpx.post(f"{url}/v1/score", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_a_body_streamed_past_the_limit_is_cut_off_without_a_length(url):
    def chunks():  # chunked transfer: no content-length to refuse up front
        yield b'{"query": "shoes", "items": [{"title": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}]}'

    response = httpx.post(f"{url}/v1/score", content=chunks(), headers=JSON)
    assert response.status_code == 413 and "over the limit" in response.json()["error"]


def test_a_client_that_never_finishes_its_upload_gets_408(url):
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/score HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 500\r\n\r\n" + b'{"query": "sh')
        start = time.time()
        reply = sock.recv(4096)
    assert b" 408 " in reply.split(b"\r\n")[0] and time.time() - start < 5


def test_good_requests_still_score(url):
    response = httpx.post(f"{url}/v1/score", json={"query": "shoes", "items": [{"title": "x", "price": 1e300}]})
    assert response.status_code == 200 and len(response.json()["results"]) == 1


def test_every_error_is_json_naming_the_field(url):
    for response in (httpx.post(f"{url}/no/such", json={}), httpx.get(f"{url}/v1/score"),
                     httpx.post(f"{url}/v1/score", content=b"{", headers=JSON)):
        error = response.json()
        assert set(error) == {"error", "error_type"} and re.match(r"[\w./\[\]-]+: ", error["error"]), error


def test_made_up_methods_and_paths_add_no_metric_series(url):
    """Any client can send any method token: each must not grow /metrics (label values are bounded)."""
    def series() -> set[str]:
        text = httpx.get(f"{url}/metrics").text
        return {line.split(" ")[0] for line in text.splitlines() if line.startswith("agrl_http_requests_total")}

    httpx.request("QWERTY0", f"{url}/healthz")
    httpx.get(f"{url}/no/such/0")
    before = series()
    for i in range(1, 30):
        assert httpx.request(f"QWERTY{i}", f"{url}/healthz").status_code == 405
        httpx.get(f"{url}/no/such/{i}")
    after = series()
    assert after - before <= {s for s in after if 'route="/metrics"' in s}  # only the /metrics scrapes
    assert any('method="other"' in s for s in after) and not any("QWERTY" in s for s in after)
    assert any('method="GET"' in s for s in after)


@pytest.mark.parametrize("field", ["max_items", "max_batch", "max_body_bytes", "max_item_chars"])
def test_zero_limits_refuse_to_start(field):
    with pytest.raises(UserError, match=f"--{field.replace('_', '-')} 0"):
        Limits(**{field: 0})


def test_nan_wait_refuses_to_start():
    with pytest.raises(UserError, match="max-wait-ms"):
        Limits(max_wait_ms=float("nan"))


@pytest.mark.parametrize("value", [0.0, -1.0, float("inf")])
def test_a_header_timeout_that_never_or_always_fires_refuses_to_start(value):
    with pytest.raises(UserError, match="header-timeout-s"):
        Limits(header_timeout_s=value)


# ---------------------------------------------------------------------------- header timeout


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def test_half_sent_headers_get_408_and_the_connection_is_closed(url):
    """20 clients that send half a request line and stop: each gets a JSON 408 after the header timeout
    (1 s here) and its connection is closed; one that sends nothing is closed without a word."""
    port = int(url.rsplit(":", 1)[1])
    start = time.time()
    stalled = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
    for sock in stalled:
        sock.sendall(b"POST /v1/sco")
    silent = socket.create_connection(("127.0.0.1", port), timeout=10)
    replies = [read_all(sock) for sock in stalled]  # returns once the server closes the connection
    assert read_all(silent) == b""
    assert time.time() - start < 5
    for reply in replies:
        head, _, payload = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ") and json.loads(payload)["error"].startswith("headers: not received")
    for sock in stalled + [silent]:
        sock.close()
    assert httpx.post(f"{url}/v1/score", content=body(), headers=JSON).status_code == 200  # still serving


def test_the_header_timeout_applies_to_the_next_request_on_a_kept_alive_connection(url):
    port = int(url.rsplit(":", 1)[1])
    request = (b"POST /v1/score HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
               b"content-length: %d\r\n\r\n%s" % (len(body()), body()))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        first = sock.recv(65536)
        sock.sendall(b"GET /heal")  # the next request starts and stalls
        rest = read_all(sock)
    assert first.startswith(b"HTTP/1.1 200 ") and b" 408 " in rest.split(b"\r\n")[0]


# ---------------------------------------------------------------------------- SIGTERM drain


def start_cli(model_dir, *options: str) -> tuple[subprocess.Popen, str]:
    """`agrl serve` in a subprocess, once /healthz answers 200."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agrl", "serve", "--model", str(model_dir), "--port", str(port), "--device", "cpu",
         *options], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)


def listening(base: str) -> bool:
    host, port = base.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def post_many(base: str, n: int) -> tuple[list, list[threading.Thread]]:
    """n /v1/score requests from n threads; each result is (status, JSON body) or the transport error."""
    results: list = [None] * n

    def post(i: int) -> None:
        try:
            response = httpx.post(f"{base}/v1/score", timeout=60,
                                  json={"query": f"shoes {i}", "items": [{"title": "nike shoe"}]})
            results[i] = (response.status_code, response.json())
        except (httpx.HTTPError, ValueError) as err:
            results[i] = repr(err)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    return results, threads


def test_sigterm_answers_every_request_already_sent(tiny_model_dir):
    """150 requests in flight (held by a 1.5 s micro-batch wait) and one stalled upload when SIGTERM
    arrives: every request gets its 200, the stalled one its 408, and the process exits 0."""
    proc, base = start_cli(tiny_model_dir, "--max-wait-ms", "1500", "--max-batch", "512", "--body-timeout-s", "3")
    port = int(base.rsplit(":", 1)[1])
    try:
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(b"POST /v1/score HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                        b"content-length: 100\r\n\r\n{")
        results, threads = post_many(base, 150)
        time.sleep(0.5)  # sent, and waiting in the micro-batch
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        health = httpx.get(f"{base}/healthz", timeout=5)  # still answered, and says it is going away
        assert health.status_code == 503 and health.json()["status"] == "draining"
        for thread in threads:
            thread.join(timeout=30)
        reply = stalled.recv(4096)
        stalled.close()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [r[0] if isinstance(r, tuple) else r for r in results] == [200] * 150, \
        [r for r in results if not isinstance(r, tuple) or r[0] != 200][:5]
    assert b" 408 " in reply.split(b"\r\n")[0]


def test_requests_the_drain_cannot_finish_get_a_json_503_and_the_server_exits_soon_after(tiny_model_dir):
    """150 requests held past the drain deadline (a 60 s micro-batch wait, `--drain-timeout-s 5`): each
    gets a JSON 503 (no plain-text 500, no CancelledError traceback), and the server stops listening
    within about a second of the deadline (uvicorn's own 15 s graceful wait is not added), then exits 0."""
    proc, base = start_cli(tiny_model_dir, "--max-wait-ms", "60000", "--max-batch", "512", "--drain-timeout-s", "5",
                           "--header-timeout-s", "2")
    try:
        half = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=10)
        half.sendall(b"GET /heal")  # and never the rest: `--header-timeout-s 2` closes it, drain or not
        results, threads = post_many(base, 150)
        time.sleep(1.0)  # sent, and waiting in the micro-batch
        signalled = time.time()
        proc.send_signal(signal.SIGTERM)
        while listening(base):
            assert time.time() - signalled < 30
            time.sleep(0.05)
        closed = time.time() - signalled
        code = proc.wait(timeout=30)  # then the interpreter's own teardown (torch: ~1-3 s on a busy machine)
        for thread in threads:
            thread.join(timeout=30)
        stderr = proc.stderr.read().decode()
        reply = read_all(half)
        half.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    # ~6 s on a quiet machine (the deadline, then the 503s go out); 8 s seen at load average 14 on 2 cores
    assert code == 0 and 5 <= closed < 9.5, (code, closed)
    assert all(isinstance(r, tuple) and r[0] == 503 for r in results), \
        [r for r in results if not isinstance(r, tuple) or r[0] != 503][:5]
    assert {r[1]["error_type"] for r in results} == {"Unhealthy"}
    assert all(r[1]["error"].startswith("server: shutting down") for r in results)
    assert "Traceback" not in stderr and "CancelledError" not in stderr, stderr[-2000:]
    assert reply.startswith(b"HTTP/1.1 408 ")
