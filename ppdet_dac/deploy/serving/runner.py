"""Running the service on uvicorn: its configuration, the main-thread server with graceful
SIGINT/SIGTERM handling (also with worker processes), and a server on a thread of this process
(benchmarks, tests)."""

import functools
import json
import logging
import os
import signal
import sys
import threading
import time

import uvicorn
from uvicorn.supervisors import Multiprocess

from ppdet_dac.deploy.predictor import Predictor

from .app import build_app, logger
from .connection_limits import ServingConfig, ServingProtocol
from .options import DEFAULT_HOST, DEFAULT_PORT
from .pool import DetectionService
from .protocol import TIMEOUT, response


def load_predictor(options):
    """The Predictor of ``options`` (raises naming what is wrong with the model directory)."""
    return Predictor(
        options.model_dir,
        device=options.device,
        cpu_threads=options.cpu_threads,
        enable_mkldnn=options.enable_mkldnn,
        max_pixels=options.max_pixels,
        nms_threshold=options.nms_threshold,
        score_threshold=options.score_threshold,
        slicing=options.slicing,
    )


def build_service(options, predictor=None):
    """The predictor pool of ``options`` (around ``predictor`` when given)."""
    return DetectionService(
        predictor or load_predictor(options),
        options.pool_size,
        options.max_queue,
        options.max_pixels,
    )


def create_app(options):
    """App factory of a worker process (workers > 1): its own predictor pool."""
    return build_app(build_service(options), options)


def app_of(options, predictor):
    """What uvicorn serves: the app around ``predictor``, or with workers > 1 a picklable
    factory (each worker process builds its own pool)."""
    if options.workers == 1:
        return build_app(build_service(options, predictor), options)
    return functools.partial(create_app, options)


def _busy_json(message):
    """Body of a busy answer (err_no 1) that the connection layer sends by itself."""
    return json.dumps(response(TIMEOUT, message)).encode()


def make_config(
    app,
    host=DEFAULT_HOST,
    port=DEFAULT_PORT,
    workers=1,
    max_connections=256,
    timeout_keep_alive=5.0,
    timeout_graceful_shutdown=None,
    access_log=False,
    max_body_bytes=20 << 20,
    body_timeout=10.0,
):
    """uvicorn configuration of the service (``app``: an ASGI app, or for workers > 1 a
    picklable factory)."""
    return ServingConfig(
        app,
        host=host,
        port=port,
        workers=workers,
        http=ServingProtocol,
        ws="none",
        lifespan="on",
        log_config=None,
        access_log=access_log,
        timeout_keep_alive=timeout_keep_alive,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        factory=workers > 1,
        max_connections=max_connections,
        max_body_bytes=max_body_bytes,
        body_timeout=body_timeout,
        busy_json=_busy_json,
        proxy_headers=False,
    )


def config_of(app, options):
    """make_config with the connection options of ``options`` (a ServingOptions)."""
    return make_config(
        app,
        options.host,
        options.port,
        options.workers,
        options.max_connections,
        options.timeout_keep_alive,
        options.grace,
        options.access_log,
        options.max_body_bytes,
        options.body_deadline[0],
    )


class _Server(uvicorn.Server):
    """uvicorn's Server that calls ``on_started`` once it listens."""

    def __init__(self, config, on_started=None):
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets=None):
        await super().startup(sockets)
        if self.started and self._on_started is not None:
            self._on_started()


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


class InProcessServer:
    """The service on a uvicorn thread of this process (benchmarks, tests): ``start()`` returns
    once it listens on ``port``; ``stop()`` shuts it down gracefully."""

    def __init__(self, app, host=DEFAULT_HOST, port=0, **config_kwargs):
        self.config = make_config(app, host, port, **config_kwargs)
        self.socket = self.config.bind_socket()
        self.port = self.socket.getsockname()[1]
        self.server = _Server(self.config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

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
