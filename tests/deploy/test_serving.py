"""deploy/serving/server.py started as its CLI (FastAPI on uvicorn) on an ephemeral loopback
port with the demo model: answers, every class of bad request, image-size limits and the pixel
bomb (memory bound), concurrency, slow and idle clients, hang-ups, OpenAPI, bound address,
serving files, worker processes and graceful shutdown."""

import base64
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from _deploy_helpers import REPO, encoded_image, png_bomb

MAX_BODY_MB = 0.5
KEEP_ALIVE_S = 2.0
START_TIMEOUT = 180
# Peak resident memory allowed to the demo model's server process (2 predictors): it idles at
# about 0.7 GB (benchmarks/serving_memory.py); decoding the 30000 x 30000 bomb alone would take
# 2.7 GB.
PEAK_RSS_BOUND = 1.5 * 2**30
BOMB_SIDE = 30000


class Server:
    """The server CLI in a subprocess; its output lines are collected by a reader thread."""

    def __init__(self, model_dir, *extra):
        env = dict(os.environ, PYTHONPATH=REPO)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                os.path.join(REPO, "deploy", "serving", "server.py"),
                "--model_dir",
                model_dir,
                "--port",
                "0",
                "--pool_size",
                "2",
                "--max_body_mb",
                str(MAX_BODY_MB),
                "--timeout_keep_alive",
                str(KEEP_ALIVE_S),
                "--request_timeout",
                "60",
                "--body_timeout",
                "60",
            ]
            + list(extra),
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines = []
        ready = threading.Event()

        def read():
            for line in self.proc.stdout:
                self.lines.append(line)
                if "serving on http://" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        ready.wait(START_TIMEOUT)
        banner = [ln for ln in self.lines if "serving on http://" in ln]
        if not banner:
            self.stop()
        assert banner, "server did not start:\n" + "".join(self.lines[-40:])
        address = banner[0].split("http://")[1].split("/")[0]
        self.host, self.port = address.rsplit(":", 1)[0], int(address.rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def post(self, body, path="/dac_detr/prediction", timeout=120):
        request = urllib.request.Request(
            self.url + path, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def post_image(self, image_bytes, key="image"):
        value = base64.b64encode(image_bytes).decode()
        return self.post(json.dumps({"key": [key], "value": [value], "logid": 3}).encode())

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=60) as reply:
            return reply.status, reply.read()

    def peak_rss(self):
        """VmHWM of the server process, bytes."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            line = next(ln for ln in f if ln.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    def wait_for_line(self, text, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [ln for ln in self.lines if text in ln]
            if found:
                return found
            time.sleep(0.1)
        return []

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(exported):
    srv = Server(exported.model_dirs["op"])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def predictor(exported):
    from ppdet_dac.deploy.predictor import Predictor

    return Predictor(exported.model_dirs["op"])


@pytest.fixture(scope="module")
def reference(exported, predictor):
    """The in-process predictor's detections for the test images (what the server must say)."""
    from ppdet_dac.deploy.postprocess import detection_records

    return {
        path: detection_records(predictor.predict([path])[0], predictor.label_list)
        for path in exported.images
    }


@pytest.fixture(scope="module")
def bomb():
    """A real 30000 x 30000 PNG: about 110 KB that decode to 2.7 GB."""
    return png_bomb(BOMB_SIDE, BOMB_SIDE)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _assert_same_detections(answer, expected):
    assert answer["err_no"] == 0, answer["err_msg"]
    assert answer["key"] == ["detections"] and answer["tensors"] == []
    got = json.loads(answer["value"][0])
    assert len(got) == len(expected) > 0
    assert [d["class_id"] for d in got] == [d["class_id"] for d in expected]
    assert [d["label"] for d in got] == [d["label"] for d in expected]
    np.testing.assert_allclose(
        [[d["score"]] + d["bbox"] for d in got],
        [[d["score"]] + d["bbox"] for d in expected],
        rtol=0,
        atol=1e-4,
    )


def _assert_inside(answer, width, height):
    boxes = np.array([d["bbox"] for d in json.loads(answer["value"][0])])
    assert boxes.min() >= 0 and boxes[:, [0, 2]].max() <= width and boxes[:, [1, 3]].max() <= height


def test_good_request_equals_predictor(server, reference, exported, predictor):
    """The answers are the predictor's detections: boxes clipped to the image (the graph's own
    boxes cross its border)."""
    import cv2

    for path in exported.images:
        status, answer = server.post_image(_read(path))
        assert status == 200
        assert answer["err_msg"] == ""
        _assert_same_detections(answer, reference[path])
        height, width = cv2.imread(path).shape[:2]
        raw = predictor.run_model(predictor.preprocessor.batch([path]))["bbox"]
        assert raw[:, 2:].min() < 0 or raw[:, [2, 4]].max() > width or raw[:, [3, 5]].max() > height
        _assert_inside(answer, width, height)


BAD_REQUESTS = {
    "bad base64": (json.dumps({"key": ["image"], "value": ["not*base64!"]}).encode(), "base64"),
    "not an image": (
        json.dumps(
            {
                "key": ["image"],
                "value": [base64.b64encode(b"GIF89a definitely not a picture").decode()],
            }
        ).encode(),
        "decode",
    ),
    "wrong key": (json.dumps({"key": ["img"], "value": ["aGVsbG8="]}).encode(), "expected key"),
    "not json": (b"{'key': ", "not JSON"),
    "value not a list": (json.dumps({"key": ["image"], "value": "aGVsbG8="}).encode(), "lists"),
    "not an object": (b"[1, 2]", "JSON object"),
    "empty image": (json.dumps({"key": ["image"], "value": [""]}).encode(), "is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_is_refused_and_server_keeps_serving(server, reference, exported, case):
    body, message = BAD_REQUESTS[case]
    status, answer = server.post(body)
    assert answer["err_no"] != 0 and message in answer["err_msg"], answer
    assert answer["value"] == []
    _assert_same_detections(
        server.post_image(_read(exported.images[0]))[1], reference[exported.images[0]]
    )


# (width, height) -> what the message says; each is answered, never a closed connection
IMAGE_LIMITS = {
    (1, 4000): "1 x 4000 pixels (width x height, aspect ratio 4000:1): resized for this model",
    (4000, 1): "4000 x 1 pixels (width x height, aspect ratio 4000:1): resized for this model",
    (4000, 257): "resized to 256 x 16 it gives 92 feature positions (strides [8, 16, 32, 64]), "
    "fewer than the 100 proposals",
    (257, 4000): "resized to 16 x 256 it gives 92 feature positions",
    (BOMB_SIDE, BOMB_SIDE): "is 30000 x 30000 = 900000000 pixels, over the limit of 40000000",
    (40000, 30000): "is 40000 x 30000 = 1200000000 pixels, over the limit of 40000000",
}


def _sized_image(size, bomb):
    """A file of IMAGE_LIMITS' (width, height): a PNG bomb when large, else a plain image."""
    width, height = size
    if size == (BOMB_SIDE, BOMB_SIDE):
        return bomb
    return png_bomb(width, height) if width * height > 10**7 else encoded_image(height, width)


@pytest.mark.parametrize("size", sorted(IMAGE_LIMITS))
def test_image_sizes_the_model_cannot_take_are_answered(server, size, bomb):
    status, answer = server.post_image(_sized_image(size, bomb))
    assert status == 200 and answer["err_no"] == 9 and answer["value"] == []
    assert IMAGE_LIMITS[size] in answer["err_msg"], answer["err_msg"]


def test_thinnest_image_the_model_takes_is_answered(server, predictor):
    """One row more than the refused 4000 x 257: 17 resized rows give 140 >= 100 positions, and
    the service answers exactly what the predictor computes."""
    from ppdet_dac.deploy.postprocess import detection_records

    for width, height in ((4000, 258), (258, 4000)):
        data = encoded_image(height, width)
        expected = detection_records(predictor.predict([data])[0], predictor.label_list)
        _assert_same_detections(server.post_image(data)[1], expected)


def test_pixel_bomb_is_refused_before_decoding(server, bomb):
    assert len(bomb) < 200_000  # well under the body limit: only the pixel limit stops it
    for _ in range(3):
        status, answer = server.post_image(bomb)
        assert answer["err_no"] == 9 and "over the limit" in answer["err_msg"]
    assert server.proc.poll() is None
    peak = server.peak_rss()
    print(f"server peak RSS after the bombs: {peak / 2**30:.2f} GB")
    assert peak < PEAK_RSS_BOUND, f"server peak RSS {peak / 2**30:.2f} GB"


def test_oversized_body_is_refused(server, reference, exported):
    too_big = b"A" * int(MAX_BODY_MB * 1024 * 1024 + 10)
    body = json.dumps({"key": ["image"], "value": [too_big.decode()]}).encode()
    status, answer = server.post(body)
    assert status == 413 and answer["err_no"] == 5 and "exceeds the limit" in answer["err_msg"]
    _assert_same_detections(
        server.post_image(_read(exported.images[1]))[1], reference[exported.images[1]]
    )


def test_oversized_chunked_body_is_refused(server):
    """No Content-Length: the limit applies while the chunks arrive."""
    chunk = b"A" * 65536
    parts = [b'{"key": ["image"], "value": ["'] + [chunk] * (int(MAX_BODY_MB * 16) + 2)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request(
        "POST",
        "/dac_detr/prediction",
        body=iter(parts),
        headers={"Content-Type": "application/json"},
        encode_chunked=True,
    )
    reply = conn.getresponse()
    answer = json.loads(reply.read())
    conn.close()
    assert reply.status == 413 and answer["err_no"] == 5
    assert f"more than {int(MAX_BODY_MB * 1024 * 1024)} bytes" in answer["err_msg"]


def test_health_and_unknown_path(server):
    status, body = server.get("/health")
    health = json.loads(body)
    assert status == 200 and health["pid"] == server.proc.pid
    assert {k: health[k] for k in ("status", "service", "pool_size", "max_queue")} == {
        "status": "ok",
        "service": "dac_detr",
        "pool_size": 2,
        "max_queue": 8,
    }
    status, answer = server.post(b"{}", path="/other/prediction")
    assert status == 404 and answer["err_no"] == 7 and "/dac_detr/prediction" in answer["err_msg"]


def test_openapi_describes_the_protocol(server):
    status, body = server.get("/openapi.json")
    spec = json.loads(body)
    post = spec["paths"]["/dac_detr/prediction"]["post"]
    request = post["requestBody"]["content"]["application/json"]["schema"]
    assert set(request["properties"]) == {"key", "value", "logid"}
    answer_ref = post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    answer = spec["components"]["schemas"][answer_ref.rsplit("/", 1)[1]]
    assert set(answer["properties"]) == {"err_no", "err_msg", "key", "value", "tensors"}
    assert "/health" in spec["paths"]
    status, page = server.get("/docs")
    assert status == 200 and b"/openapi.json" in page


def test_concurrent_mixed_requests(server, reference, exported, bomb):
    """200 requests from 8 threads, one in ten good, the others bad requests, refused sizes and
    bombs: every one answered as it should be."""
    rng = random.Random(0)
    bad_images = {size: _sized_image(size, bomb) for size in IMAGE_LIMITS}
    jobs = []
    for i in range(200):
        if i % 10 == 0:
            jobs.append(("good", exported.images[(i // 10) % 2]))
        elif i % 10 < 4:
            jobs.append(("size", rng.choice(sorted(IMAGE_LIMITS))))
        else:
            jobs.append(("bad", rng.choice(sorted(BAD_REQUESTS))))

    def send(job):
        kind, what = job
        if kind == "good":
            return job, server.post_image(_read(what))[1]
        if kind == "size":
            return job, server.post_image(bad_images[what])[1]
        return job, server.post(BAD_REQUESTS[what][0])[1]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, jobs))
    assert len(answers) == 200
    for (kind, what), answer in answers:
        if kind == "good":
            _assert_same_detections(answer, reference[what])
        elif kind == "size":
            assert answer["err_no"] == 9 and IMAGE_LIMITS[what] in answer["err_msg"]
        else:
            assert answer["err_no"] != 0 and BAD_REQUESTS[what][1] in answer["err_msg"]
    assert server.proc.poll() is None


def test_slow_client_does_not_block_others(server, reference, exported):
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    try:
        slow.sendall(
            b"POST /dac_detr/prediction HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"key\""
        )
        start = time.monotonic()
        for path in exported.images * 2:
            _assert_same_detections(server.post_image(_read(path))[1], reference[path])
        took = time.monotonic() - start
        print(f"4 requests beside a stalled upload: {took:.2f} s")
        assert took < 50  # about 1 s; answered while the slow upload still waits (60 s)
    finally:
        slow.close()


def test_idle_connections_hold_nothing_and_are_closed(server, reference, exported):
    """100 connections that never send a byte: others are served meanwhile, and each idle one
    is closed about --timeout_keep_alive seconds after it connected."""
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(100)]
    try:
        opened = time.monotonic()
        _assert_same_detections(
            server.post_image(_read(exported.images[0]))[1], reference[exported.images[0]]
        )
        closed = 0
        for sock in idle:
            sock.settimeout(max(KEEP_ALIVE_S + 30 - (time.monotonic() - opened), 0.1))
            try:
                closed += sock.recv(1) == b""
            except (socket.timeout, ConnectionResetError):
                pass
        assert closed == 100
        print(f"100 idle connections closed {time.monotonic() - opened:.2f} s after opening")
        assert time.monotonic() - opened < KEEP_ALIVE_S + 30  # about KEEP_ALIVE_S: a hang guard
    finally:
        for sock in idle:
            sock.close()


def test_client_hanging_up_is_one_log_line(server, exported):
    body = json.dumps(
        {
            "key": ["image"],
            "value": [base64.b64encode(_read(exported.images[0])).decode()],
            "logid": 77,
        }
    ).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(
        b"POST /dac_detr/prediction HTTP/1.1\r\nHost: x\r\nContent-Type: "
        b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    sock.close()
    lines = server.wait_for_line("(logid 77)", timeout=60)
    assert len(lines) == 1 and "closed the connection before its answer" in lines[0]
    assert server.proc.poll() is None


def _listening_addresses(port):
    """Local addresses (hex, as in /proc/net/tcp*) with a socket listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            for row in f.readlines()[1:]:
                local, state = row.split()[1], row.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    found.append(local.rsplit(":", 1)[0])
    return found


def test_default_host_is_loopback(server):
    assert server.host == "127.0.0.1"
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("no /proc/net/tcp to read the bound address from")
    assert _listening_addresses(server.port) == ["0100007F"]  # 127.0.0.1, nothing else


def test_serving_files_written(server, exported):
    model_dir = exported.model_dirs["op"]
    with open(os.path.join(model_dir, "serving_server_conf.prototxt")) as f:
        proto = f.read()
    for name in ("image", "im_shape", "scale_factor", "pad_mask"):
        assert f'feed_var {{\n  name: "{name}"' in proto
    assert proto.count("fetch_var {") == 2 and 'alias_name: "bbox"' in proto
    import yaml

    with open(os.path.join(model_dir, "config.yml")) as f:
        config = yaml.safe_load(f)
    assert config["http_port"] == server.port
    conf = config["op"]["dac_detr"]["local_service_conf"]
    assert conf["client_type"] == "local_predictor" and conf["mem_optim"] is False
    assert os.path.abspath(conf["model_config"]) == os.path.abspath(model_dir)


def _client(*args, returncode=0):
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "deploy", "serving", "client.py")] + list(args),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == returncode, out.stdout + out.stderr
    return out


def test_client_takes_the_printed_url_the_base_url_or_host_and_port(server, exported):
    """client.py --url with the URL of the server's 'serving on' line, with the base URL (also
    without scheme), and --host/--port: the same answer; --url with --port is refused."""
    printed = next(ln for ln in server.lines if "serving on http://" in ln)
    printed = printed.split("serving on ")[1].split()[0]
    assert printed.endswith("/dac_detr/prediction")
    image = exported.images[0]
    forms = [
        ["--url", printed],
        ["--url", server.url],
        ["--url", server.url + "/"],
        ["--url", f"127.0.0.1:{server.port}"],
        ["--host", "127.0.0.1", "--port", str(server.port)],
    ]
    outputs = [_client("--image_file", image, "--threshold", "0", *form).stdout for form in forms]
    assert f"{image}: " in outputs[0] and " detections with score >= 0" in outputs[0]
    assert len(outputs[0].splitlines()) > 1 and all(out == outputs[0] for out in outputs)
    # coordinates in the tools' console format: 2 decimals (format_box)
    boxes = [line.rsplit("  ", 1)[1] for line in outputs[0].splitlines()[1:]]
    assert boxes and all(re.fullmatch(r"\[-?\d+\.\d\d(, -?\d+\.\d\d){3}\]", b) for b in boxes)
    refused = _client("--image_file", image, "--url", server.url, "--port", "1", returncode=2)
    assert "give --url or --host/--port, not both" in refused.stderr


def test_client_missing_image_is_one_line(tmp_path):
    missing = tmp_path / "absent.jpg"
    proc = _client("--image_file", str(missing), "--port", "1", returncode=2)
    assert proc.stderr == f"client.py: error: cannot read {missing}: No such file or directory\n"


def test_client_prediction_url_forms():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "dac_serving_client", os.path.join(REPO, "deploy", "serving", "client.py")
    )
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    full = "http://10.0.0.5:8080/dac_detr/prediction"
    for url in ("http://10.0.0.5:8080", "http://10.0.0.5:8080/", "10.0.0.5:8080", full, full + "/"):
        assert client.prediction_url(url) == full, url
    assert (
        client.prediction_url("https://example.org/detect/")
        == "https://example.org/detect/dac_detr/prediction"
    )  # a proxy's prefix is kept
    assert client.prediction_url(None, "10.0.0.5", 8080) == full
    assert client.prediction_url(None, "::1", 8080) == "http://[::1]:8080/dac_detr/prediction"
    for bad in ("ftp://10.0.0.5/", "http://", "http://10.0.0.5:8080/?x=1"):
        with pytest.raises(ValueError, match="--url"):
            client.prediction_url(bad)


def test_sigterm_shuts_down_cleanly(server, exported):
    """Last in this module: stops the shared server. A request in flight is still answered, an
    idle keep-alive connection does not hold the shutdown, an upload still arriving is answered
    busy at once, the exit status is 0, and nothing in the whole log was a traceback."""
    keep_alive = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    keep_alive.request("GET", "/health")
    assert json.loads(keep_alive.getresponse().read())["status"] == "ok"  # connection stays open
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    stalled.sendall(
        b"POST /dac_detr/prediction HTTP/1.1\r\nHost: x\r\nContent-Type: "
        b"application/json\r\nContent-Length: 100000\r\n\r\n{\"key\""
    )
    answers = []
    worker = threading.Thread(
        target=lambda: answers.append(server.post_image(_read(exported.images[0]))[1])
    )
    worker.start()
    time.sleep(0.2)  # accepted by then; the prediction itself takes longer
    start = time.monotonic()
    assert server.stop() == 0
    print(f"exited {time.monotonic() - start:.2f} s after SIGTERM")
    assert time.monotonic() - start < 30  # about 0.5 s: a hang guard
    worker.join(60)
    keep_alive.close()
    reply = b""
    while chunk := stalled.recv(65536):
        reply += chunk
    stalled.close()
    assert reply.startswith(b"HTTP/1.1 503") and b"server shutting down" in reply
    assert any("server stopped" in line for line in server.lines)
    assert answers and answers[0]["err_no"] == 0
    log = "".join(server.lines)
    assert "Traceback" not in log and "BrokenPipe" not in log, log[-3000:]


@pytest.mark.slow
def test_two_worker_processes(exported, reference):
    """--workers 2: two processes answer on one port (each with its own pool), and SIGTERM stops
    both and the parent with exit status 0."""
    srv = Server(exported.model_dirs["op"], "--workers", "2", "--pool_size", "1")
    try:
        # the second worker may still be loading its predictor when the first answers: ask
        # again, pausing between requests so that it gets the CPU on a busy machine (about 10 s
        # idle; the 600 s deadline is a hang guard)
        pids, deadline = set(), time.monotonic() + 600
        while len(pids) < 2 and time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
            conn.request("GET", "/health", headers={"Connection": "close"})
            pids.add(json.loads(conn.getresponse().read())["pid"])
            conn.close()
            if len(pids) < 2:
                time.sleep(0.5)
        assert len(pids) == 2 and srv.proc.pid not in pids
        path = exported.images[1]
        _assert_same_detections(srv.post_image(_read(path))[1], reference[path])
    finally:
        assert srv.stop() == 0


def test_sliced_server_with_thresholds(exported, tmp_path):
    """--slice_infer with the grid's cell size, --nms_threshold and --score_threshold: answers
    equal the predictor with the same options (two requests at once on the pool of two, and an
    image smaller than a tile), boxes inside the image; a 4000 x 257 image, too thin for the
    model whole, is answered in tiles."""
    from _deploy_helpers import TILE_H, TILE_W, demo_grid
    from ppdet_dac.deploy.postprocess import detection_records
    from ppdet_dac.deploy.predictor import Predictor
    from ppdet_dac.deploy.slicing import SliceConfig

    grid = str(tmp_path / "grid.jpg")  # under the test server's 0.5 MB body limit
    demo_grid(exported.data_dir, grid)
    thin = encoded_image(257, 4000)
    predictor = Predictor(
        exported.model_dirs["op"],
        nms_threshold=0.2,
        score_threshold=0.02,
        slicing=SliceConfig((TILE_H, TILE_W), (0, 0)),
    )
    images = [_read(grid), _read(grid), _read(exported.images[1]), thin]
    expected = [
        detection_records(predictor.predict([im])[0], predictor.label_list) for im in images
    ]
    srv = Server(
        exported.model_dirs["op"],
        "--slice_infer",
        "--slice_size",
        str(TILE_H),
        str(TILE_W),
        "--overlap_ratio",
        "0",
        "0",
        "--nms_threshold",
        "0.2",
        "--score_threshold",
        "0.02",
    )
    try:
        assert any(f"sliced {TILE_H}x{TILE_W}" in line for line in srv.lines)
        with ThreadPoolExecutor(max_workers=2) as pool:
            answers = list(pool.map(lambda im: srv.post_image(im)[1], images))
        for answer, records, size in zip(
            answers, expected, [(640, 480), (640, 480), (200, 300), (4000, 257)]
        ):
            if records:
                _assert_same_detections(answer, records)
                _assert_inside(answer, *size)
            else:
                assert answer["err_no"] == 0 and json.loads(answer["value"][0]) == []
        whole = Predictor(exported.model_dirs["op"], nms_threshold=0.2, score_threshold=0.02)
        assert len(json.loads(answers[0]["value"][0])) > len(whole.predict([grid])[0])
    finally:
        assert srv.stop() == 0
