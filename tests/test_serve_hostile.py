"""Hostile bodies and limits for the service, and the SIGTERM drain (issue 11).

Bodies it cannot serve get a 4xx naming what is wrong (never a 500, never a 200 for a body over
the limit); bad limits refuse to start; SIGTERM answers every request already sent.

    .venv/bin/python -m pytest -q tests/test_serve_hostile.py
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from agrl.errors import UserError
from agrl.score import Scorer
from agrl.serve import Limits, create_app

LIMITS = Limits(max_items=8, max_query_chars=100, max_item_chars=600, max_body_bytes=20_000, body_timeout_s=1.0)
JSON = {"content-type": "application/json"}
ITEM = b'{"title": "nike running shoe"}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def url(tiny_model_dir):
    scorer = Scorer(tiny_model_dir, batch_size=16, device="cpu")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(scorer, LIMITS, "tiny"), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


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


@pytest.mark.parametrize("field", ["max_items", "max_batch", "max_body_bytes", "max_item_chars"])
def test_zero_limits_refuse_to_start(field):
    with pytest.raises(UserError, match=f"--{field.replace('_', '-')} 0"):
        Limits(**{field: 0})


def test_nan_wait_refuses_to_start():
    with pytest.raises(UserError, match="max-wait-ms"):
        Limits(max_wait_ms=float("nan"))


# ---------------------------------------------------------------------------- SIGTERM drain


def test_sigterm_answers_every_request_already_sent(tiny_model_dir):
    """150 requests in flight (held by a 1.5 s micro-batch wait) and one stalled upload when SIGTERM
    arrives: every request gets its 200, the stalled one its 408, and the process exits 0."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agrl", "serve", "--model", str(tiny_model_dir), "--port", str(port),
         "--max-wait-ms", "1500", "--max-batch", "512", "--body-timeout-s", "2", "--device", "cpu"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(b"POST /v1/score HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                        b"content-length: 100\r\n\r\n{")
        results: list = [None] * 150

        def post(i: int) -> None:
            try:
                results[i] = httpx.post(f"{base}/v1/score", timeout=30,
                                        json={"query": f"shoes {i}", "items": [{"title": "nike shoe"}]}).status_code
            except httpx.HTTPError as err:
                results[i] = repr(err)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(150)]
        for thread in threads:
            thread.start()
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
    assert results == [200] * 150, [r for r in results if r != 200][:5]
    assert b" 408 " in reply.split(b"\r\n")[0]
