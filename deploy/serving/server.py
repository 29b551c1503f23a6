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

* ``POST /dac_detr/prediction`` with ``{"key": ["image"], "value": ["<base64 JPEG/PNG/BMP/TIFF>"],
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

import argparse
import time

from ppdet_dac.deploy.cli_options import (
    add_cpu_options,
    add_detection_options,
    detection_options_from_args,
    mkldnn_from_args,
)
from ppdet_dac.deploy.predictor import DEVICES
from ppdet_dac.deploy.serving import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    MAX_DEFAULT_GRACE,
    PREDICT_PATH,
    SERVICE,
    ServingOptions,
    app_of,
    config_of,
    exit_promptly,
    load_predictor,
    serve,
    write_serving_files,
)
from ppdet_dac.deploy.serving.app import logger
from ppdet_dac.utils.cli import run_cli


# ---------------------------------------------------------------- command line
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="DAC-DETR detection service (PaddleServing pipeline protocol over HTTP)"
    )
    parser.add_argument("--model_dir", required=True, help="exported model directory")
    parser.add_argument("--host", default=DEFAULT_HOST, help="bind address (loopback by default)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes, each with its own predictor pool"
    )
    parser.add_argument(
        "--pool_size", type=int, default=2, help="predictors serving in parallel (per worker)"
    )
    parser.add_argument("--cpu_threads", type=int, default=1, help="math threads per predictor")
    add_cpu_options(parser)
    parser.add_argument("--device", default="CPU", type=str.upper, choices=DEVICES)
    parser.add_argument("--max_body_mb", type=float, default=20.0, help="request body limit")
    add_detection_options(parser)
    parser.add_argument(
        "--threshold",
        dest="score_threshold",
        type=float,
        default=argparse.SUPPRESS,
        help="the older name of --score_threshold",
    )
    parser.add_argument(
        "--request_timeout",
        type=float,
        default=60.0,
        help="seconds from a request's header to its answer (upload, queue and "
        "inference); then err_no 1",
    )
    parser.add_argument(
        "--body_timeout",
        type=float,
        default=10.0,
        help="seconds from a request's header to the end of its body; a client "
        "whose upload is slower is answered 408 (err_no 1) and cut off",
    )
    parser.add_argument(
        "--max_queue",
        type=int,
        default=8,
        help="requests waiting for a predictor (per worker); more are answered busy at once",
    )
    parser.add_argument(
        "--max_connections",
        type=int,
        default=256,
        help="open connections per worker; more are answered busy and closed",
    )
    parser.add_argument(
        "--timeout_keep_alive",
        type=float,
        default=5.0,
        help="seconds a connection may stay without a complete request header "
        "(after connecting or after its last answer)",
    )
    parser.add_argument(
        "--timeout_graceful_shutdown",
        type=float,
        default=None,
        help="on SIGTERM, seconds to finish the requests in flight (default: "
        f"request_timeout + 5, at most {MAX_DEFAULT_GRACE:g}); uploads "
        "still arriving are answered busy at once",
    )
    parser.add_argument("--access_log", action="store_true", help="log one line per request")
    args = parser.parse_args(argv)
    args.enable_mkldnn = mkldnn_from_args(args, parser)
    args.detection = detection_options_from_args(args, parser)
    try:
        args.options = options_from_args(args)
    except ValueError as err:  # a value out of range, named by its flag
        parser.error(str(err))
    return args


def options_from_args(args):
    """The checked ServingOptions of parsed command-line ``args``."""
    return ServingOptions(
        args.model_dir,
        args.device,
        args.pool_size,
        args.cpu_threads,
        args.enable_mkldnn,
        args.max_body_mb,
        args.max_pixels,
        args.detection["score_threshold"],
        args.request_timeout,
        args.max_queue,
        args.detection["nms_threshold"],
        args.detection["slicing"],
        args.body_timeout,
        host=args.host,
        port=args.port,
        workers=args.workers,
        max_connections=args.max_connections,
        timeout_keep_alive=args.timeout_keep_alive,
        timeout_graceful_shutdown=args.timeout_graceful_shutdown,
        access_log=args.access_log,
    )


def main(argv=None):
    args = parse_args(argv)
    options = args.options
    start = time.perf_counter()
    try:
        predictor = load_predictor(options)  # checks the model before the port is bound
    except (OSError, ValueError) as err:  # no model there, bad infer_cfg.yml, ...
        logger.error(str(err))
        return 2
    config = config_of(app_of(options, predictor), options)
    sock = config.bind_socket()
    sock.listen(config.backlog)  # connections wait in the backlog until a worker accepts them
    host, port = sock.getsockname()[:2]
    write_serving_files(options.model_dir, predictor, port)

    def banner():
        sliced = options.slicing
        print(
            f"{SERVICE} serving on http://{host}:{port}{PREDICT_PATH} (workers "
            f"{options.workers}, pool {options.pool_size}, oneDNN "
            f"{'on' if options.enable_mkldnn else 'off'}"
            + (f", sliced {sliced.slice_size[0]}x{sliced.slice_size[1]}" if sliced else "")
            + f", ready in {time.perf_counter() - start:.1f} s)",
            flush=True,
        )

    if options.workers > 1:
        del predictor  # each worker process builds its own
    serve(config, sock, banner)
    return 0


if __name__ == "__main__":
    run_cli(main, exit=exit_promptly)
