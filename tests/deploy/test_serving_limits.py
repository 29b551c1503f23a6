"""The service's limits, deterministic: the real app, protocol and uvicorn server in this process
(InProcessServer) around a stand-in predictor that answers only when the test opens its gate.
Busy answers, per-request timeouts, slow uploads, the connection cap, the header timeout for
silent and trickling connections, and shutdown with an idle keep-alive connection."""
import base64
import http.client
import importlib.util
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from _deploy_helpers import REPO, encoded_image

IMAGE = encoded_image(30, 40)
BODY = json.dumps({"key": ["image"], "value": [base64.b64encode(IMAGE).decode()]}).encode()
GATE_TIMEOUT = 60  # the stand-in never waits longer than this for its gate


def _server_module():
    name = "dac_serving_server"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, f"{REPO}/deploy/serving/server.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


class GatedPredictor:
    """Answers one detection per image once ``gate`` is set; counts the runs it started."""

    label_list = ["thing"]

    def __init__(self, gate=None, started=None):
        self.gate = gate or threading.Event()
        self.started = started if started is not None else []

    def clone(self):
        return GatedPredictor(self.gate, self.started)

    def check_size(self, h, w, what="the image"):
        return h, w

    def load(self, image):
        return np.zeros((2, 2, 3), np.uint8)

    def detect(self, image):
        self.started.append(time.monotonic())
        assert self.gate.wait(GATE_TIMEOUT), "test gate never opened"
        return np.array([[0, 0.9, 1, 2, 3, 4]], np.float32)


@pytest.fixture
def make_server():
    """make_server(pool_size=, max_queue=, request_timeout=, **uvicorn options) ->
    (InProcessServer, GatedPredictor, DetectionService); all stopped at the end."""
    server_mod = _server_module()
    made = []

    def make(pool_size=1, max_queue=1, request_timeout=30.0, max_body_mb=1.0, **config):
        predictor = GatedPredictor()
        service = server_mod.DetectionService(predictor, pool_size, max_queue)
        options = server_mod.ServingOptions("unused", pool_size=pool_size, max_queue=max_queue,
                                            request_timeout=request_timeout,
                                            max_body_mb=max_body_mb)
        config.setdefault("max_body_bytes", options.max_body_bytes)
        srv = server_mod.InProcessServer(server_mod.build_app(service, options), **config)
        made.append((srv, predictor))
        return srv.start(), predictor, service

    yield make
    for srv, predictor in made:
        predictor.gate.set()
        srv.stop(30)


def post(port, body=BODY, timeout=60, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/dac_detr/prediction", body=body,
                     headers=dict({"Content-Type": "application/json"}, **(headers or {})))
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read()), dict(reply.getheaders())
    finally:
        conn.close()


def wait_until(condition, timeout=30):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_answers_busy_instead_of_queueing(make_server):
    srv, predictor, service = make_server(pool_size=1, max_queue=1)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, srv.port)
        wait_until(lambda: len(predictor.started) == 1)
        second = pool.submit(post, srv.port)                # waits in the queue
        wait_until(lambda: service.in_flight == 2)
        start = time.monotonic()
        status, answer, headers = post(srv.port)            # pool 1 + queue 1: full
        assert time.monotonic() - start < 5
        assert status == 503 and answer["err_no"] == 1 and headers.get("retry-after") == "1"
        assert "server busy: 2 requests in progress or queued (pool_size 1 + max_queue 1)" \
            in answer["err_msg"]
        predictor.gate.set()
        for future in (first, second):
            status, answer, _ = future.result(60)
            assert status == 200 and answer["err_no"] == 0
            assert json.loads(answer["value"][0]) == [
                {"class_id": 0, "label": "thing", "score": pytest.approx(0.9),
                 "bbox": [1.0, 2.0, 3.0, 4.0]}]
    wait_until(lambda: service.in_flight == 0)


def test_request_timeout_answers_and_drops_queued_work(make_server):
    srv, predictor, service = make_server(pool_size=1, max_queue=1, request_timeout=1.5)
    with ThreadPoolExecutor(2) as pool:
        start = time.monotonic()
        running = pool.submit(post, srv.port)
        wait_until(lambda: len(predictor.started) == 1)
        queued = pool.submit(post, srv.port)
        for future in (running, queued):
            status, answer, _ = future.result(30)
            assert status == 504 and answer["err_no"] == 1
            assert "no answer within" in answer["err_msg"] and "--request_timeout" in \
                answer["err_msg"]
        assert time.monotonic() - start < 15
    # the queued prediction was dropped, the running one still holds its predictor
    wait_until(lambda: service.in_flight == 1)
    assert len(predictor.started) == 1
    predictor.gate.set()
    wait_until(lambda: service.in_flight == 0)
    status, answer, _ = post(srv.port)
    assert status == 200 and answer["err_no"] == 0


def test_slow_upload_times_out_with_an_answer(make_server):
    srv, _, _ = make_server(request_timeout=1.0)
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    try:
        sock.sendall(b"POST /dac_detr/prediction HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                     b"Content-Type: application/json\r\n\r\n{\"key\": [")
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            reply += data
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
        answer = json.loads(body)
        assert answer["err_no"] == 1 and "request body not received within 1 s" in \
            answer["err_msg"]
        assert sock.recv(1) == b""  # and closed
    finally:
        sock.close()


def test_connections_beyond_the_cap_get_busy_answers(make_server):
    srv, predictor, _ = make_server(max_connections=3, timeout_keep_alive=30)
    predictor.gate.set()
    idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=30) for _ in range(3)]
    try:
        time.sleep(0.2)
        status, answer, headers = post(srv.port)           # the 4th open connection
        assert status == 503 and answer["err_no"] == 1 and headers.get("connection") == "close"
        assert "more than 3 open connections (--max_connections)" in answer["err_msg"]
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    status, answer, _ = post(srv.port)
    assert status == 200 and answer["err_no"] == 0


def _closed_within(sock, seconds):
    """True when the server closes ``sock`` within ``seconds``."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False


def test_silent_and_trickling_connections_are_closed(make_server):
    """--timeout_keep_alive bounds the time to a complete request header, also for a client
    that sends one header byte at a time (uvicorn's own timer restarts on every byte)."""
    srv, predictor, _ = make_server(timeout_keep_alive=1.0)
    predictor.gate.set()
    silent = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    trickle = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    stop = threading.Event()

    def drip():
        for byte in b"POST /dac_detr/prediction HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 200:
            if stop.wait(0.1):
                return
            try:
                trickle.sendall(bytes([byte]))
            except OSError:
                return

    dripping = threading.Thread(target=drip, daemon=True)
    start = time.monotonic()
    dripping.start()
    try:
        assert _closed_within(silent, 10)
        assert _closed_within(trickle, 10)
        assert time.monotonic() - start < 8
    finally:
        stop.set()
        dripping.join(10)
        silent.close()
        trickle.close()
    status, answer, _ = post(srv.port)
    assert status == 200 and answer["err_no"] == 0


def test_shutdown_does_not_wait_for_idle_keep_alive(make_server):
    srv, predictor, _ = make_server(timeout_keep_alive=120)
    predictor.gate.set()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("GET", "/health")
    assert json.loads(conn.getresponse().read())["status"] == "ok"   # kept alive, idle
    start = time.monotonic()
    srv.stop(30)
    assert not srv.thread.is_alive() and time.monotonic() - start < 5
    assert _closed_within(conn.sock, 5)
    conn.close()
