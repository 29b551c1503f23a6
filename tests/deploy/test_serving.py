"""deploy/serving/server.py started as its CLI on an ephemeral loopback port: answers, errors,
concurrency, bound address, serving files and graceful shutdown."""
import base64
import json
import os
import random
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from _deploy_helpers import REPO

MAX_BODY_MB = 0.5
START_TIMEOUT = 120


class Server:
    def __init__(self, model_dir):
        env = dict(os.environ, PYTHONPATH=REPO)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "deploy", "serving", "server.py"),
             "--model_dir", model_dir, "--port", "0", "--pool_size", "2",
             "--max_body_mb", str(MAX_BODY_MB)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
        assert banner, "server did not start:\n" + "".join(self.lines[-40:])
        address = banner[0].split("http://")[1].split("/")[0]
        self.host, self.port = address.rsplit(":", 1)[0], int(address.rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def post(self, body, path="/dac_detr/prediction"):
        request = urllib.request.Request(self.url + path, data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def post_image(self, image_bytes, key="image"):
        value = base64.b64encode(image_bytes).decode()
        return self.post(json.dumps({"key": [key], "value": [value], "logid": 3}).encode())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
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
def reference(exported):
    """The in-process predictor's detections for the test images (what the server must say)."""
    from ppdet_dac.engine.predictor import Predictor, detection_records
    predictor = Predictor(exported.model_dirs["op"])
    return {path: detection_records(predictor.predict([path])[0], predictor.label_list)
            for path in exported.images}


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
    np.testing.assert_allclose([[d["score"]] + d["bbox"] for d in got],
                               [[d["score"]] + d["bbox"] for d in expected], rtol=0, atol=1e-4)


def test_good_request_equals_predictor(server, reference, exported):
    for path in exported.images:
        status, answer = server.post_image(_read(path))
        assert status == 200
        assert answer["err_msg"] == ""
        _assert_same_detections(answer, reference[path])


BAD_REQUESTS = {
    "bad base64": (json.dumps({"key": ["image"], "value": ["not*base64!"]}).encode(), "base64"),
    "not an image": (json.dumps({"key": ["image"], "value": [
        base64.b64encode(b"GIF89a definitely not a picture").decode()]}).encode(), "decode"),
    "wrong key": (json.dumps({"key": ["img"], "value": ["aGVsbG8="]}).encode(), "expected key"),
    "not json": (b"{'key': ", "not JSON"),
    "value not a list": (json.dumps({"key": ["image"], "value": "aGVsbG8="}).encode(), "lists"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_is_refused_and_server_keeps_serving(server, reference, exported, case):
    body, message = BAD_REQUESTS[case]
    status, answer = server.post(body)
    assert answer["err_no"] != 0 and message in answer["err_msg"], answer
    assert answer["value"] == []
    _assert_same_detections(server.post_image(_read(exported.images[0]))[1],
                            reference[exported.images[0]])


def test_oversized_body_is_refused(server, reference, exported):
    too_big = b"A" * int(MAX_BODY_MB * 1024 * 1024 + 10)
    body = json.dumps({"key": ["image"], "value": [too_big.decode()]}).encode()
    status, answer = server.post(body)
    assert status == 413 and answer["err_no"] != 0 and "exceeds the limit" in answer["err_msg"]
    _assert_same_detections(server.post_image(_read(exported.images[1]))[1],
                            reference[exported.images[1]])


def test_health_and_unknown_path(server):
    with urllib.request.urlopen(server.url + "/health", timeout=30) as reply:
        assert json.loads(reply.read()) == {"status": "ok", "service": "dac_detr", "pool_size": 2}
    status, answer = server.post(b"{}", path="/other/prediction")
    assert status == 404 and answer["err_no"] != 0 and "/dac_detr/prediction" in answer["err_msg"]


def test_concurrent_mixed_requests(server, reference, exported):
    """200 requests, one in ten good, from 8 threads: every one answered correctly."""
    rng = random.Random(0)
    jobs = []
    for i in range(200):
        if i % 10 == 0:
            jobs.append(("good", exported.images[(i // 10) % 2]))
        else:
            jobs.append(("bad", rng.choice(sorted(BAD_REQUESTS))))

    def send(job):
        kind, what = job
        if kind == "good":
            return job, server.post_image(_read(what))[1]
        return job, server.post(BAD_REQUESTS[what][0])[1]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, jobs))
    assert len(answers) == 200
    for (kind, what), answer in answers:
        if kind == "good":
            _assert_same_detections(answer, reference[what])
        else:
            assert answer["err_no"] != 0 and BAD_REQUESTS[what][1] in answer["err_msg"]
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


def test_client_prints_detections(server, exported):
    out = subprocess.run([sys.executable, os.path.join(REPO, "deploy", "serving", "client.py"),
                          "--image_file", exported.images[0], "--url", server.url,
                          "--threshold", "0"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"{exported.images[0]}: " in out.stdout and " detections with score >= 0" in out.stdout


def test_sigterm_shuts_down_cleanly(server, exported):
    """Last in this module: stops the shared server (a request in flight is still answered)."""
    answers = []
    worker = threading.Thread(target=lambda: answers.append(
        server.post_image(_read(exported.images[0]))[1]))
    worker.start()
    threading.Event().wait(0.2)  # accepted by then; the prediction itself takes longer
    assert server.stop() == 0
    worker.join(60)
    assert any("server stopped" in line for line in server.lines)
    assert answers and answers[0]["err_no"] == 0
