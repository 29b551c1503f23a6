"""The HTTP detection service (PaddleServing pipeline protocol over FastAPI + uvicorn); its
command line is deploy/serving/server.py.

* ``protocol``: paths, err_no table, request/answer schemas, request body -> image;
* ``pool``: the predictor pool (``DetectionService``) on anyio;
* ``app``: the FastAPI app and its handlers (body limit, timeouts, busy answers);
* ``options``: ``ServingOptions``, every option checked in one place;
* ``connection_limits``: the uvicorn-specific connection layer (the one module on uvicorn's
  internals; its docstring says why and against which versions);
* ``runner``: uvicorn configuration, serving with graceful shutdown, the in-process server;
* ``paddleserving``: PaddleServing's own config files for the model directory.
"""

from .app import build_app
from .options import DEFAULT_HOST, DEFAULT_PORT, MAX_DEFAULT_GRACE, ServingOptions
from .paddleserving import serving_files, write_serving_files
from .pool import DetectionService
from .protocol import PREDICT_PATH, SERVICE, RequestError, decode_request, response
from .runner import (
    InProcessServer,
    app_of,
    build_service,
    config_of,
    create_app,
    exit_promptly,
    load_predictor,
    make_config,
    serve,
)

__all__ = [
    "build_app",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "MAX_DEFAULT_GRACE",
    "ServingOptions",
    "serving_files",
    "write_serving_files",
    "DetectionService",
    "PREDICT_PATH",
    "SERVICE",
    "RequestError",
    "decode_request",
    "response",
    "InProcessServer",
    "app_of",
    "build_service",
    "config_of",
    "create_app",
    "exit_promptly",
    "load_predictor",
    "make_config",
    "serve",
]
