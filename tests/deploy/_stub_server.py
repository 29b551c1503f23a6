"""The service's command-line serving path (serving.serve: its signal handling, uvicorn's
graceful shutdown; serving.exit_promptly) around a stand-in predictor that answers at once, for
the SIGTERM tests:

    python tests/deploy/_stub_server.py BODY_TIMEOUT GRACE

prints ``stub serving on port N`` once it listens; all other limits are long (60 s) so that only
the shutdown itself can end a stalled upload.
"""

import sys

from _serving_harness import InstantPredictor

from ppdet_dac.deploy import serving as server


def main(body_timeout, grace):
    options = server.ServingOptions(
        "unused",
        pool_size=1,
        max_queue=1,
        request_timeout=60.0,
        max_body_mb=1.0,
        body_timeout=body_timeout,
    )
    app = server.build_app(server.DetectionService(InstantPredictor(), 1, 1), options)
    config = server.make_config(
        app,
        port=0,
        timeout_keep_alive=60.0,
        timeout_graceful_shutdown=grace,
        max_body_bytes=options.max_body_bytes,
        body_timeout=body_timeout,
    )
    sock = config.bind_socket()
    sock.listen(config.backlog)
    port = sock.getsockname()[1]
    server.serve(config, sock, lambda: print(f"stub serving on port {port}", flush=True))
    server.exit_promptly(0)


if __name__ == "__main__":
    main(float(sys.argv[1]), float(sys.argv[2]))
