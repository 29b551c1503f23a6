"""HTTP detection service over Paddle Inference that speaks the PaddleServing pipeline protocol,
on FastAPI + uvicorn.

    python deploy/serving/server.py --model_dir output_inference/dac_demo \
        [--host 127.0.0.1] [--port 18093] [--workers 1] [--pool_size 2] [--cpu_threads 1] \
        [--disable_mkldnn] [--max_body_mb 20] [--max_pixels 40000000] \
        [--score_threshold 0.0] [--nms_threshold N] \
        [--slice_infer [--slice_size 640 640] [--overlap_ratio 0.25 0.25] \
         [--combine_method nms|concat] [--match_threshold 0.6] [--match_metric ios|iou]] \
        [--request_timeout 60] [--body_timeout 10] [--max_queue 8] [--max_connections 256] \
        [--timeout_keep_alive 5] [--timeout_graceful_shutdown S] [--access_log]

Service name ``dac_detr``:

* ``POST /dac_detr/prediction`` with ``{"key": ["image"], "value": ["<base64 JPEG/PNG/BMP>"],
  "logid": 1}`` answers ``{"err_no": 0, "err_msg": "", "key": ["detections"],
  "value": ["<JSON list of {class_id, label, score, bbox [x1, y1, x2, y2]}>"], "tensors": []}``,
  boxes clipped to the image, scores >= ``--score_threshold`` (``--threshold``, its older name),
  NMS at ``--nms_threshold`` when given (the detections of an export at that threshold). With
  ``--slice_infer`` every image is run in overlapping tiles and the tiles' detections merged
  (ppdet's slice flags; an image smaller than a tile is one tile).
  Every request that is refused gets ``err_no`` != 0 and an ``err_msg`` of its own (body not
  JSON, wrong keys, bad base64, not an image, an image over ``--max_pixels`` or of an aspect ratio
  the model cannot take, body over the limit, server busy, no answer in time); the connection is
  never closed without an answer.
* ``GET /health`` answers ``{"status": "ok", "service": "dac_detr", "pool_size": N, ...}``.
* ``GET /docs`` (Swagger UI) and ``GET /openapi.json``: the request and response schemas.

Limits: the request body (``--max_body_mb``, also for chunked bodies); the image size, read from
the image header before anything is decoded (``--max_pixels``: decompression bombs are refused);
``--request_timeout`` seconds per request, body upload included (504 with err_no 1); the body
within ``--body_timeout`` seconds of the header (408, err_no 1, and the connection closed); at most
``pool_size + max_queue`` requests admitted per worker, the next ones answered busy at once (503,
err_no 1, Retry-After); ``--max_connections`` open connections per worker (beyond: 503 and closed);
a connection that has not sent a complete request header within ``--timeout_keep_alive`` seconds
(of connecting or of its previous answer) is closed. A client that hangs up is logged in one line;
its queued request is dropped. Malformed JSON of any shape is err_no 9 in one line; a trailing
slash is a 404, never a redirect.

It binds the loopback address unless ``--host`` says otherwise; each worker process
(``--workers``) runs ``pool_size`` predictors (clones sharing the weights), with oneDNN on CPU
unless ``--disable_mkldnn``. On SIGINT/SIGTERM it stops accepting, closes idle keep-alive
connections at once, answers uploads still arriving busy (503) at once, finishes the requests in
flight (``--timeout_graceful_shutdown``) and exits 0.

At start it also writes a PaddleServing pipeline ``config.yml`` and
``serving_server_conf.prototxt`` (feed/fetch variables) into the model directory, so the same
directory can be served by a real PaddleServing install (optional; see deploy/serving/README.md).
"""
import os
import runpy

# first, before anything imports cv2: OpenCV's own pixel limit from --max_pixels
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools",
                            "_decode_limit.py"))
import argparse  # noqa: E402
import asyncio
import base64
import binascii
import contextlib
import dataclasses
import functools
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from uvicorn.supervisors import Multiprocess

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # this folder, when imported

from connection_limits import CUT_OFF, ServingConfig, ServingProtocol  # noqa: E402

from ppdet.utils.logger import setup_logger  # noqa: E402

from ppdet_dac.data.image_io import (DEFAULT_MAX_PIXELS, check_image_size,  # noqa: E402
                                     check_max_pixels)
from ppdet_dac.deploy.predictor import (DEVICES, Predictor, add_cpu_options,  # noqa: E402
                                        add_detection_options, detection_options_from_args,
                                        detection_records, mkldnn_from_args)
from ppdet_dac.deploy.slicing import SliceConfig  # noqa: E402

logger = setup_logger("dac_detr_server")
setup_logger("uvicorn")  # uvicorn's own lines (start, shutdown, bad HTTP) in ppdet's format

SERVICE = "dac_detr"
PREDICT_PATH = f"/{SERVICE}/prediction"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 18093
MAX_DEFAULT_GRACE = 20.0   # s; orchestrators send SIGKILL 30 s after SIGTERM
INPUT_KEY, OUTPUT_KEY = "image", "detections"
# error numbers of PaddleServing's pipeline (ChannelDataErrcode)
OK, TIMEOUT, TYPE_ERROR, CLIENT_ERROR, NO_SERVICE, UNKNOWN, INPUT_PARAMS_ERROR = 0, 1, 3, 5, 7, 8, 9


class RequestError(Exception):
    """A request the service refuses; err_no and the message go back to the client.

    close: answer with ``Connection: close`` (the body was not read to its end)."""

    def __init__(self, err_no, message, http_status=200, close=False, retry_after=None):
        super().__init__(message)
        self.err_no, self.http_status = err_no, http_status
        self.close, self.retry_after = close, retry_after


# ---------------------------------------------------------------- schemas (OpenAPI)
class PredictionRequest(BaseModel):
    """PaddleServing pipeline request: one image under the key ``image``."""
    key: list[str] = Field(description=f'exactly ["{INPUT_KEY}"]', examples=[[INPUT_KEY]])
    value: list[str] = Field(description="[base64 of a JPEG/PNG/BMP file]",
                             examples=[["/9j/4AAQSkZJRgABAQ..."]])
    logid: int = Field(0, description="echoed in the server log")


class Detection(BaseModel):
    """One entry of the JSON list in ``value[0]`` of an answer."""
    class_id: int
    label: str
    score: float
    bbox: list[float] = Field(description="[x1, y1, x2, y2] in pixels of the original image")


class PredictionResponse(BaseModel):
    """PaddleServing pipeline answer; ``value[0]`` is a JSON string: a list of Detection,
    highest score first. err_no != 0: refused, err_msg says why."""
    err_no: int = Field(description="0 ok; 1 busy / timeout; 5 body too large; 7 no such path; "
                                    "8 internal error; 9 bad request or image")
    err_msg: str
    key: list[str] = Field(examples=[[OUTPUT_KEY]])
    value: list[str]
    tensors: list = []


class HealthResponse(BaseModel):
    status: str
    service: str
    pool_size: int
    in_flight: int = Field(description="requests of this worker being answered or queued")
    max_queue: int
    pid: int


# ---------------------------------------------------------------- request -> response
def _short(value, limit=60):
    """repr of ``value`` cut to ``limit`` characters (messages stay one short line)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


MAX_LOGID = 2 ** 64 - 1   # PaddleServing's logid is a uint64


def decode_request(body):
    """Body bytes -> (encoded image bytes, logid); RequestError naming what is wrong.

    Any malformed body is a RequestError (err_no 9, one line), never an exception of its own:
    invalid UTF-8, bad JSON, nesting too deep for the parser, integers of more digits than
    Python converts, wrong types."""
    try:
        request = json.loads(body)
    except RecursionError:
        raise RequestError(INPUT_PARAMS_ERROR, "request body is not acceptable JSON: nested too "
                                               "deeply") from None
    except json.JSONDecodeError as err:
        raise RequestError(INPUT_PARAMS_ERROR, f"request body is not JSON: {err}") from None
    except UnicodeDecodeError as err:
        raise RequestError(INPUT_PARAMS_ERROR, f"request body is not UTF-8 JSON: {err.reason} "
                                               f"at byte {err.start}") from None
    except ValueError as err:  # an integer of more digits than Python converts
        raise RequestError(INPUT_PARAMS_ERROR, "request body is not acceptable JSON: "
                                               f"{str(err).split(';')[0][:200]}") from None
    if not isinstance(request, dict):
        raise RequestError(INPUT_PARAMS_ERROR, "request body must be a JSON object with "
                                               "'key' and 'value' lists, got JSON "
                                               f"{_json_type(request)}")
    keys, values = request.get("key"), request.get("value")
    if not isinstance(keys, list) or not isinstance(values, list) or len(keys) != len(values):
        raise RequestError(INPUT_PARAMS_ERROR, "'key' and 'value' must be lists of equal length")
    if keys != [INPUT_KEY]:
        raise RequestError(INPUT_PARAMS_ERROR, f"expected key [{INPUT_KEY!r}], got {_short(keys)}")
    if not isinstance(values[0], str):
        raise RequestError(INPUT_PARAMS_ERROR, f"value of {INPUT_KEY!r} must be a base64 string, "
                                               f"got JSON {_json_type(values[0])}")
    logid = request.get("logid", 0)
    if type(logid) is not int or not 0 <= logid <= MAX_LOGID:
        raise RequestError(INPUT_PARAMS_ERROR, "'logid' must be an integer from 0 to 2^64 - 1, "
                                               f"got {_short(logid)}")
    try:
        image = base64.b64decode(values[0], validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(INPUT_PARAMS_ERROR, f"value of {INPUT_KEY!r} is not valid base64: {err}")
    if not image:
        raise RequestError(INPUT_PARAMS_ERROR, f"value of {INPUT_KEY!r} is empty")
    return image, logid


def _json_type(value):
    """The JSON name of a decoded value's type."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
             float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def response(err_no=OK, err_msg="", value=None):
    return {"err_no": err_no, "err_msg": err_msg, "key": [OUTPUT_KEY] if value is not None else [],
            "value": [value] if value is not None else [], "tensors": []}


class DetectionService:
    """A fixed pool of predictors, each on its own thread, and the request -> answer logic.

    ``parse(body)`` checks a request (JSON, base64, the image header: size and aspect ratio, of
    the tiles when the predictor slices); ``submit(image)`` admits it (at most pool_size running
    + max_queue waiting; beyond, a busy RequestError at once) and returns a concurrent Future of
    the detection records. The predictor's options (score and NMS thresholds, slicing) apply.
    """

    def __init__(self, predictor, pool_size=2, max_queue=8, max_pixels=DEFAULT_MAX_PIXELS):
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.label_list = predictor.label_list
        self.pool_size, self.max_queue = int(pool_size), int(max_queue)
        self.max_pixels = check_max_pixels(max_pixels)
        self.check_size = predictor.check_size
        self._idle = queue.SimpleQueue()
        self._idle.put(predictor)
        for _ in range(pool_size - 1):
            self._idle.put(predictor.clone())
        self._executor = ThreadPoolExecutor(self.pool_size, thread_name_prefix="predictor")
        self._lock = threading.Lock()
        self._admitted = 0

    @property
    def in_flight(self):
        return self._admitted

    def parse(self, body):
        """Request body -> (image bytes, logid) after the header checks; RequestError."""
        image, logid = decode_request(body)
        what = f"the image in {INPUT_KEY!r}"
        try:
            height, width = check_image_size(image, self.max_pixels, what)
            self.check_size(height, width, what)
        except ValueError as err:  # not an image, over max_pixels, too thin for the model
            raise RequestError(INPUT_PARAMS_ERROR, str(err))
        return image, logid

    def submit(self, image):
        """Admit one parsed image: a Future of its detection records, or RequestError (busy)."""
        with self._lock:
            if self._admitted >= self.pool_size + self.max_queue:
                raise RequestError(TIMEOUT, f"server busy: {self._admitted} requests in progress "
                                            f"or queued (pool_size {self.pool_size} + max_queue "
                                            f"{self.max_queue}); retry later", 503, retry_after=1)
            self._admitted += 1
        future = self._executor.submit(self._predict, image)
        future.add_done_callback(self._release)  # also when cancelled while queued
        return future

    def _release(self, _future):
        with self._lock:
            self._admitted -= 1

    def _predict(self, image):
        predictor = self._idle.get()
        try:
            try:
                image = predictor.load(image)
            except ValueError as err:  # pixel data that do not decode
                raise RequestError(INPUT_PARAMS_ERROR, f"value of {INPUT_KEY!r}: {err}")
            detections = predictor.detect(image)
        finally:
            self._idle.put(predictor)
        return detection_records(detections, self.label_list)

    def close(self):
        self._executor.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------- HTTP
@dataclasses.dataclass
class ServingOptions:
    """Everything a worker needs to build its app (picklable: sent to worker processes)."""
    model_dir: str
    device: str = "CPU"
    pool_size: int = 2
    cpu_threads: int = 1
    enable_mkldnn: bool = True
    max_body_mb: float = 20.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    score_threshold: float = 0.0
    request_timeout: float = 60.0
    max_queue: int = 8
    nms_threshold: float = None
    slicing: SliceConfig = None
    body_timeout: float = 10.0

    @property
    def max_body_bytes(self):
        return int(self.max_body_mb * 1024 * 1024)


def _json(payload, status=200, close=False, retry_after=None):
    headers = {}
    if close:
        headers["Connection"] = "close"
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(payload, status_code=status, headers=headers)


def _client_name(request):
    return "%s:%s" % tuple(request.client) if request.client else "a client"


async def _drain(request, received, limit):
    """Read and drop the rest of an oversized body (up to 10x the limit) so that the client,
    still sending, reads the answer; beyond that the connection is closed after the answer."""
    async for chunk in request.stream():
        received += len(chunk)
        if received > 10 * limit:
            break


async def _read_body(request, limit, timeout, flag="--body_timeout"):
    """The request body, at most ``limit`` bytes, within ``timeout`` s of its header (``flag``
    names the limit that set it); RequestError else: 408, and the connection is closed, so a
    client that stalls its upload frees its connection and request slot at the cut-off."""
    length = request.headers.get("content-length")
    if length is not None and not length.isdigit():
        raise RequestError(CLIENT_ERROR, f"bad Content-Length header {length!r}", 400, close=True)
    too_big = RequestError(CLIENT_ERROR, f"request body of {length or 'more than %d' % limit} "
                                         f"bytes exceeds the limit of {limit} bytes "
                                         "(--max_body_mb)", 413, close=True)

    async def read():
        if length is not None and int(length) > limit:
            if int(length) <= 10 * limit:
                await _drain(request, 0, limit)
            raise too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                await _drain(request, size, limit)
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        async with asyncio.timeout(timeout):
            return await read()
    except TimeoutError:
        raise RequestError(TIMEOUT, f"request body not received within {timeout:g} s ({flag})",
                           408, close=True) from None


def _body_deadline(options):
    """(seconds, flag): the upload's time limit, the shorter of --body_timeout and
    --request_timeout."""
    if options.body_timeout <= options.request_timeout:
        return options.body_timeout, "--body_timeout"
    return options.request_timeout, "--request_timeout"


class ClientGone(Exception):
    """The client closed its connection before the answer."""


async def _until_disconnect(receive):
    while (await receive())["type"] != "http.disconnect":
        pass


async def _answer(request, future, timeout):
    """The records of ``future``; ClientGone when the client hangs up first, RequestError on
    timeout. Work still queued is dropped in both cases."""
    answer = asyncio.wrap_future(future)
    gone = asyncio.ensure_future(_until_disconnect(request.receive))
    try:
        done, _ = await asyncio.wait({answer, gone}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if answer in done:
        return answer.result()
    answer.cancel()  # cancels the prediction if it has not started
    if gone in done:
        raise ClientGone()
    raise RequestError(TIMEOUT, f"no answer within {timeout:g} s (--request_timeout): the "
                                "predictors are busy or the image is slow; retry later", 504)


def build_app(service, options):
    """The FastAPI app serving ``service`` (a DetectionService) with ``options``' limits."""

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        logger.info(f"worker {os.getpid()} ready: {service.pool_size} predictor(s), max_queue "
                    f"{service.max_queue}")
        yield
        service.close()

    app = FastAPI(title="DAC-DETR detection service",
                  description="PaddleServing pipeline protocol over HTTP (service "
                              f"`{SERVICE}`).", version="1.0", lifespan=lifespan,
                  redirect_slashes=False)  # a trailing slash is a 404, no Location from Host
    request_schema = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": PredictionRequest.model_json_schema()}}}}

    @app.post(PREDICT_PATH, response_model=PredictionResponse, openapi_extra=request_schema,
              summary="Detect objects in one image",
              responses={503: {"description": "busy (err_no 1)"},
                         504: {"description": "no answer in time (err_no 1)"},
                         413: {"description": "body over --max_body_mb (err_no 5)"}})
    async def prediction(request: Request):
        start = time.monotonic()
        logid = 0
        try:
            body = await _read_body(request, options.max_body_bytes, *_body_deadline(options))
            image, logid = await run_in_threadpool(service.parse, body)
            future = service.submit(image)
            records = await _answer(request, future,
                                    options.request_timeout - (time.monotonic() - start))
        except RequestError as err:
            logger.debug(f"logid {logid}: err_no {err.err_no}: {err}")
            return _json(response(err.err_no, str(err)), err.http_status, err.close,
                         err.retry_after)
        except (ClientGone, ClientDisconnect):
            if CUT_OFF in request.scope:   # the connection was closed by ServingProtocol
                logger.info(f"{_client_name(request)}: {request.scope[CUT_OFF]}")
            else:
                logger.info(f"{_client_name(request)} closed the connection before its answer "
                            f"(logid {logid}); request dropped")
            return Response(status_code=499)  # nobody reads it
        except Exception as err:  # an internal failure still gets an answer (and a traceback)
            logger.exception(f"logid {logid}: prediction failed")
            return _json(response(UNKNOWN, f"internal error: {type(err).__name__}: {err}"), 500)
        logger.debug(f"logid {logid}: {len(records)} detections")
        return _json(response(value=json.dumps(records)))

    @app.get("/health", response_model=HealthResponse, summary="Liveness and pool state")
    async def health():
        return {"status": "ok", "service": SERVICE, "pool_size": service.pool_size,
                "in_flight": service.in_flight, "max_queue": service.max_queue,
                "pid": os.getpid()}

    @app.exception_handler(StarletteHTTPException)
    async def no_such_path(request, err):
        return _json(response(NO_SERVICE, f"no service at {request.method} {request.url.path}: "
                                          f"{err.detail}; use POST {PREDICT_PATH} or "
                                          "GET /health"), err.status_code)

    return app


# ---------------------------------------------------------------- connections (uvicorn)
def _busy_json(message):
    """Body of a busy answer (err_no 1) that the connection layer sends by itself."""
    return json.dumps(response(TIMEOUT, message)).encode()


def make_config(app, host=DEFAULT_HOST, port=DEFAULT_PORT, workers=1, max_connections=256,
                timeout_keep_alive=5.0, timeout_graceful_shutdown=None, access_log=False,
                max_body_bytes=20 << 20, body_timeout=10.0):
    """uvicorn configuration of the service (``app``: an ASGI app, or for workers > 1 a
    picklable factory)."""
    return ServingConfig(app, host=host, port=port, workers=workers, http=ServingProtocol,
                         ws="none", lifespan="on", log_config=None, access_log=access_log,
                         timeout_keep_alive=timeout_keep_alive,
                         timeout_graceful_shutdown=timeout_graceful_shutdown,
                         factory=workers > 1, max_connections=max_connections,
                         max_body_bytes=max_body_bytes, body_timeout=body_timeout,
                         busy_json=_busy_json, proxy_headers=False)


class _Server(uvicorn.Server):
    """uvicorn's Server that calls ``on_started`` once it listens."""

    def __init__(self, config, on_started=None):
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets=None):
        await super().startup(sockets)
        if self.started and self._on_started is not None:
            self._on_started()


def load_predictor(options):
    """The Predictor of ``options`` (raises naming what is wrong with the model directory)."""
    return Predictor(options.model_dir, device=options.device, cpu_threads=options.cpu_threads,
                     enable_mkldnn=options.enable_mkldnn, max_pixels=options.max_pixels,
                     nms_threshold=options.nms_threshold,
                     score_threshold=options.score_threshold, slicing=options.slicing)


def build_service(options, predictor=None):
    """The predictor pool of ``options`` (around ``predictor`` when given)."""
    return DetectionService(predictor or load_predictor(options), options.pool_size,
                            options.max_queue, options.max_pixels)


def create_app(options):
    """App factory of a worker process (workers > 1): its own predictor pool."""
    return build_app(build_service(options), options)


class InProcessServer:
    """The service on a uvicorn thread of this process (benchmarks, tests): ``start()`` returns
    once it listens on ``port``; ``stop()`` shuts it down gracefully."""

    def __init__(self, app, host=DEFAULT_HOST, port=0, **config_kwargs):
        self.config = make_config(app, host, port, **config_kwargs)
        self.socket = self.config.bind_socket()
        self.port = self.socket.getsockname()[1]
        self.server = _Server(self.config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                       daemon=True)

    def start(self, timeout=60):
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-process server did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout=60):
        self.server.should_exit = True
        self.thread.join(timeout)


# ---------------------------------------------------------------- PaddleServing files
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


# ---------------------------------------------------------------- command line
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="DAC-DETR detection service (PaddleServing "
                                                 "pipeline protocol over HTTP)")
    parser.add_argument("--model_dir", required=True, help="exported model directory")
    parser.add_argument("--host", default=DEFAULT_HOST, help="bind address (loopback by default)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes, each with its own predictor pool")
    parser.add_argument("--pool_size", type=int, default=2,
                        help="predictors serving in parallel (per worker)")
    parser.add_argument("--cpu_threads", type=int, default=1, help="math threads per predictor")
    add_cpu_options(parser)
    parser.add_argument("--device", default="CPU", type=str.upper, choices=DEVICES)
    parser.add_argument("--max_body_mb", type=float, default=20.0, help="request body limit")
    add_detection_options(parser)
    parser.add_argument("--threshold", dest="score_threshold", type=float,
                        default=argparse.SUPPRESS, help="the older name of --score_threshold")
    parser.add_argument("--request_timeout", type=float, default=60.0,
                        help="seconds from a request's header to its answer (upload, queue and "
                             "inference); then err_no 1")
    parser.add_argument("--body_timeout", type=float, default=10.0,
                        help="seconds from a request's header to the end of its body; a client "
                             "whose upload is slower is answered 408 (err_no 1) and cut off")
    parser.add_argument("--max_queue", type=int, default=8,
                        help="requests waiting for a predictor (per worker); more are answered "
                             "busy at once")
    parser.add_argument("--max_connections", type=int, default=256,
                        help="open connections per worker; more are answered busy and closed")
    parser.add_argument("--timeout_keep_alive", type=float, default=5.0,
                        help="seconds a connection may stay without a complete request header "
                             "(after connecting or after its last answer)")
    parser.add_argument("--timeout_graceful_shutdown", type=float, default=None,
                        help="on SIGTERM, seconds to finish the requests in flight (default: "
                             f"request_timeout + 5, at most {MAX_DEFAULT_GRACE:g}); uploads "
                             "still arriving are answered busy at once")
    parser.add_argument("--access_log", action="store_true", help="log one line per request")
    args = parser.parse_args(argv)
    args.enable_mkldnn = mkldnn_from_args(args, parser)
    args.detection = detection_options_from_args(args, parser)
    for name, minimum in (("workers", 1), ("pool_size", 1), ("max_queue", 0),
                          ("max_connections", 1)):
        if getattr(args, name) < minimum:
            parser.error(f"--{name} must be >= {minimum}, got {getattr(args, name)}")
    for name in ("max_body_mb", "request_timeout", "body_timeout", "timeout_keep_alive"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name} must be > 0, got {getattr(args, name)}")
    try:
        check_max_pixels(args.max_pixels, "--max_pixels")
    except ValueError as err:
        parser.error(str(err))
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    options = ServingOptions(args.model_dir, args.device, args.pool_size, args.cpu_threads,
                             args.enable_mkldnn, args.max_body_mb, args.max_pixels,
                             args.detection["score_threshold"], args.request_timeout,
                             args.max_queue, args.detection["nms_threshold"],
                             args.detection["slicing"], args.body_timeout)
    try:
        predictor = load_predictor(options)  # checks the model before the port is bound
    except (OSError, ValueError) as err:  # no model there, bad infer_cfg.yml, ...
        logger.error(str(err))
        return 2
    if args.workers == 1:
        app = build_app(build_service(options, predictor), options)
    else:  # each worker process builds its own pool (this one only checked the model)
        app = functools.partial(create_app, options)
    grace = args.timeout_graceful_shutdown
    if grace is None:
        grace = min(args.request_timeout + 5, MAX_DEFAULT_GRACE)
    config = make_config(app, args.host, args.port, args.workers, args.max_connections,
                         args.timeout_keep_alive, grace, args.access_log,
                         options.max_body_bytes, _body_deadline(options)[0])
    sock = config.bind_socket()
    sock.listen(config.backlog)  # connections wait in the backlog until a worker accepts them
    host, port = sock.getsockname()[:2]
    write_serving_files(args.model_dir, predictor, port)

    def banner():
        sliced = options.slicing
        print(f"{SERVICE} serving on http://{host}:{port}{PREDICT_PATH} (workers "
              f"{args.workers}, pool {args.pool_size}, oneDNN "
              f"{'on' if args.enable_mkldnn else 'off'}"
              + (f", sliced {sliced.slice_size[0]}x{sliced.slice_size[1]}" if sliced else "")
              + f", ready in {time.perf_counter() - start:.1f} s)", flush=True)

    if args.workers > 1:
        del predictor  # each worker process builds its own
    serve(config, sock, banner)
    return 0


def serve(config, sock, on_started):
    """Serve ``config`` (make_config) on the listening ``sock`` in this main thread until
    SIGINT/SIGTERM, then shut down gracefully; ``on_started()`` once it listens."""
    # uvicorn restores these handlers after its graceful shutdown and re-raises the signal it
    # caught; these make that a no-op, so the process exits 0 after a SIGTERM.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)
    if config.workers == 1:
        _Server(config, on_started=on_started).run(sockets=[sock])
    else:
        on_started()
        Multiprocess(config, sockets=[sock]).run()
    logger.info("server stopped")


def exit_promptly(status):
    """End the process with ``status`` once the log is flushed, without the interpreter's
    teardown: unloading Paddle's native libraries takes about 2 s, which a SIGTERM's exit should
    not wait for (nothing is left to clean up after the graceful shutdown)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    exit_promptly(main())
