"""HTTP detection service over Paddle Inference that speaks the PaddleServing pipeline protocol.

    python deploy/serving/server.py --model_dir output_inference/dac_demo \
        [--host 127.0.0.1] [--port 18093] [--pool_size 2] [--cpu_threads 1] [--enable_mkldnn] \
        [--max_body_mb 20] [--threshold 0.0]

Service name ``dac_detr``:

* ``POST /dac_detr/prediction`` with ``{"key": ["image"], "value": ["<base64 JPEG/PNG/BMP>"],
  "logid": 1}`` answers ``{"err_no": 0, "err_msg": "", "key": ["detections"],
  "value": ["<JSON list of {class_id, label, score, bbox [x1, y1, x2, y2]}>"], "tensors": []}``.
  Errors (body not JSON, wrong keys, bad base64, not an image, body over the limit, ...) answer
  ``err_no`` != 0 with ``err_msg`` saying what is wrong; the server keeps serving.
* ``GET /health`` answers ``{"status": "ok", "service": "dac_detr", "pool_size": N}``.

It binds the loopback address unless ``--host`` says otherwise, runs ``pool_size`` predictors
(clones sharing the weights) for concurrent requests, and on SIGINT/SIGTERM stops accepting,
finishes the requests in flight and exits 0.

At start it also writes a PaddleServing pipeline ``config.yml`` and
``serving_server_conf.prototxt`` (feed/fetch variables) into the model directory, so the same
directory can be served by a real PaddleServing install (optional; see deploy/serving/README.md).
"""
import argparse
import base64
import binascii
import json
import os
import queue
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from ppdet.utils.logger import setup_logger  # noqa: E402

from ppdet_dac.engine.predictor import Predictor, detection_records  # noqa: E402

logger = setup_logger("dac_detr_server")

SERVICE = "dac_detr"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 18093
INPUT_KEY, OUTPUT_KEY = "image", "detections"
# error numbers of PaddleServing's pipeline (ChannelDataErrcode)
OK, TIMEOUT, TYPE_ERROR, CLIENT_ERROR, NO_SERVICE, UNKNOWN, INPUT_PARAMS_ERROR = 0, 1, 3, 5, 7, 8, 9


class RequestError(Exception):
    """A request the service refuses; err_no and the message go back to the client."""

    def __init__(self, err_no, message, http_status=200):
        super().__init__(message)
        self.err_no, self.http_status = err_no, http_status


def decode_request(body):
    """Body bytes -> (encoded image bytes, logid); RequestError naming what is wrong."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(INPUT_PARAMS_ERROR, f"request body is not JSON: {err}")
    if not isinstance(request, dict):
        raise RequestError(INPUT_PARAMS_ERROR, "request body must be a JSON object with "
                                               "'key' and 'value' lists")
    keys, values = request.get("key"), request.get("value")
    if not isinstance(keys, list) or not isinstance(values, list) or len(keys) != len(values):
        raise RequestError(INPUT_PARAMS_ERROR, "'key' and 'value' must be lists of equal length")
    if keys != [INPUT_KEY]:
        raise RequestError(INPUT_PARAMS_ERROR, f"expected key [{INPUT_KEY!r}], got {keys!r}")
    if not isinstance(values[0], str):
        raise RequestError(INPUT_PARAMS_ERROR, f"value of {INPUT_KEY!r} must be a base64 string")
    try:
        image = base64.b64decode(values[0], validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(INPUT_PARAMS_ERROR, f"value of {INPUT_KEY!r} is not valid base64: {err}")
    if not image:
        raise RequestError(INPUT_PARAMS_ERROR, f"value of {INPUT_KEY!r} is empty")
    logid = request.get("logid", 0)
    return image, logid if isinstance(logid, int) else 0


def response(err_no=OK, err_msg="", value=None):
    return {"err_no": err_no, "err_msg": err_msg, "key": [OUTPUT_KEY] if value is not None else [],
            "value": [value] if value is not None else [], "tensors": []}


class DetectionService:
    """A fixed pool of predictors and the request -> response logic (no HTTP)."""

    def __init__(self, predictor, pool_size=2, threshold=0.0, queue_timeout=60.0):
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        self.label_list, self.threshold = predictor.label_list, float(threshold)
        self.queue_timeout, self.pool_size = float(queue_timeout), int(pool_size)
        self._pool = queue.Queue()
        self._pool.put(predictor)
        for _ in range(pool_size - 1):
            self._pool.put(predictor.clone())

    def predict(self, body):
        """Request body bytes -> response dict."""
        try:
            image, logid = decode_request(body)
            try:
                predictor = self._pool.get(timeout=self.queue_timeout)
            except queue.Empty:
                raise RequestError(TIMEOUT, f"all {self.pool_size} predictors busy for "
                                            f"{self.queue_timeout:.0f} s; retry later")
            try:
                detections = predictor.predict([image])[0]
            except ValueError as err:  # decoding: not an image
                raise RequestError(INPUT_PARAMS_ERROR, f"value of {INPUT_KEY!r}: {err}")
            finally:
                self._pool.put(predictor)
        except RequestError as err:
            return response(err.err_no, str(err))
        records = detection_records(detections, self.label_list, self.threshold)
        logger.debug(f"logid {logid}: {len(records)} detections")
        return response(value=json.dumps(records))


class _Handler(BaseHTTPRequestHandler):
    server_version = "dac_detr_serving/1.0"
    protocol_version = "HTTP/1.1"
    timeout = 120  # seconds a connection may stay silent

    def _send(self, payload, status=200, close=False):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.rstrip("/") == "/health":
            self._send({"status": "ok", "service": SERVICE,
                        "pool_size": self.server.service.pool_size})
        else:
            self._send(response(NO_SERVICE, f"no such path {self.path}; use GET /health or "
                                             f"POST /{SERVICE}/prediction"), status=404)

    def do_POST(self):
        if self.path.rstrip("/") != f"/{SERVICE}/prediction":
            self._send(response(NO_SERVICE, f"no service at {self.path}; POST to "
                                            f"/{SERVICE}/prediction"), status=404, close=True)
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._send(response(CLIENT_ERROR, "a Content-Length header is required (no chunked "
                                              "bodies)"), status=411, close=True)
            return
        limit = self.server.max_body_bytes
        if int(length) > limit:
            self._discard(int(length), limit)
            self._send(response(CLIENT_ERROR, f"request body of {int(length)} bytes exceeds the "
                                              f"limit of {limit} bytes (--max_body_mb)"),
                       status=413, close=True)
            return
        body = self.rfile.read(int(length))
        self._send(self.server.service.predict(body))

    def _discard(self, length, limit):
        """Read and drop an oversized body (up to 10x the limit) so that the client, still
        sending, gets the answer; beyond that the connection is just closed."""
        if length > 10 * limit:
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)

    def log_message(self, fmt, *args):
        logger.debug("%s - %s" % (self.address_string(), fmt % args))


class DetectionHTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for the requests in flight
    block_on_close = True

    def __init__(self, address, service, max_body_bytes):
        self.service, self.max_body_bytes = service, int(max_body_bytes)
        super().__init__(address, _Handler)


_FEED_DIMS = {"image": [3, -1, -1], "im_shape": [2], "scale_factor": [2], "pad_mask": [-1, -1]}
# (alias, is_lod_tensor, fetch_type: 1 float32 / 2 int32, shape) of the two outputs
_FETCH = (("bbox", "true", 1, [6]), ("bbox_num", "false", 2, [1]))


def _prototxt_var(kind, name, alias, lod, dtype, dims):
    return ([f"{kind}_var {{", f'  name: "{name}"', f'  alias_name: "{alias}"',
             f"  is_lod_tensor: {lod}", f"  {kind}_type: {dtype}"]
            + [f"  shape: {d}" for d in dims] + ["}"])


def serving_files(model_dir, predictor, port):
    """{file name: text} of PaddleServing's serving_server_conf.prototxt and pipeline config.yml."""
    lines = []
    for name in predictor.input_names:
        lines += _prototxt_var("feed", name, name, "false", 1, _FEED_DIMS.get(name, [-1]))
    for name, (alias, lod, dtype, dims) in zip(predictor.output_names, _FETCH):
        lines += _prototxt_var("fetch", name, alias, lod, dtype, dims)
    config = f"""# PaddleServing pipeline config of this model (by deploy/serving/server.py).
# Optional: only for a PaddleServing install (see deploy/serving/README.md).
dag:
  is_thread_op: true
http_port: {port}
rpc_port: {port + 1}
worker_num: 4
op:
  {SERVICE}:
    concurrency: 1
    local_service_conf:
      client_type: local_predictor
      device_type: 0
      devices: ""
      model_config: {os.path.abspath(model_dir)}
      fetch_list: {json.dumps(predictor.output_names[:2])}
      ir_optim: true
      mem_optim: false
"""
    return {"serving_server_conf.prototxt": "\n".join(lines) + "\n", "config.yml": config}


def write_serving_files(model_dir, predictor, port):
    """Write serving_files() into model_dir; a read-only directory only logs a warning."""
    written = []
    for name, text in serving_files(model_dir, predictor, port).items():
        path = os.path.join(model_dir, name)
        try:
            with open(path, "w") as f:
                f.write(text)
            written.append(path)
        except OSError as err:
            logger.warning(f"could not write {path} ({err}); serving continues without it")
    return written


def make_server(model_dir, host=DEFAULT_HOST, port=DEFAULT_PORT, pool_size=2, cpu_threads=1,
                enable_mkldnn=False, device="CPU", max_body_mb=20.0, threshold=0.0,
                queue_timeout=60.0):
    """Load the model, build the predictor pool, write the serving files; the unstarted server."""
    predictor = Predictor(model_dir, device=device, cpu_threads=cpu_threads,
                          enable_mkldnn=enable_mkldnn)
    service = DetectionService(predictor, pool_size, threshold, queue_timeout)
    server = DetectionHTTPServer((host, port), service, max_body_mb * 1024 * 1024)
    write_serving_files(model_dir, predictor, server.server_address[1])
    return server


def serve(server):
    """serve_forever until SIGINT/SIGTERM, then finish requests in flight and close."""
    stopping = threading.Event()

    def stop(signum, _frame):
        if not stopping.is_set():
            stopping.set()
            logger.info(f"signal {signal.Signals(signum).name}: shutting down")
            threading.Thread(target=server.shutdown, daemon=True).start()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    logger.info("server stopped")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="DAC-DETR detection service (PaddleServing "
                                                 "pipeline protocol over HTTP)")
    parser.add_argument("--model_dir", required=True, help="exported model directory")
    parser.add_argument("--host", default=DEFAULT_HOST, help="bind address (loopback by default)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--pool_size", type=int, default=2, help="predictors serving in parallel")
    parser.add_argument("--cpu_threads", type=int, default=1, help="math threads per predictor")
    parser.add_argument("--enable_mkldnn", action="store_true")
    parser.add_argument("--device", default="CPU", type=str.upper)
    parser.add_argument("--max_body_mb", type=float, default=20.0, help="request body limit")
    parser.add_argument("--threshold", type=float, default=0.0,
                        help="return detections with score >= this")
    parser.add_argument("--queue_timeout", type=float, default=60.0,
                        help="seconds a request waits for a free predictor")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    server = make_server(args.model_dir, args.host, args.port, args.pool_size, args.cpu_threads,
                         args.enable_mkldnn, args.device, args.max_body_mb, args.threshold,
                         args.queue_timeout)
    host, port = server.server_address[:2]
    print(f"{SERVICE} serving on http://{host}:{port}/{SERVICE}/prediction "
          f"(pool {args.pool_size}, ready in {time.perf_counter() - start:.1f} s)", flush=True)
    serve(server)


if __name__ == "__main__":
    main()
