"""The service's FastAPI app: ``POST /dac_detr/prediction``, ``GET /health`` and the OpenAPI
pages, with the body limit, the body and request timeouts and the busy answers of its options.

The body limit is Starlette's ``RequestBodyLimitMiddleware``, wrapped by ProtocolBodyLimit
so that its refusal is the protocol's JSON answer (err_no 5) and reaches a client still
sending; the timeouts are anyio's ``fail_after``.
"""

import contextlib
import json
import os
import time

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ppdet.utils.logger import setup_logger
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.requests import ClientDisconnect

from .connection_limits import CUT_OFF
from .protocol import (
    CLIENT_ERROR,
    NO_SERVICE,
    PREDICT_PATH,
    SERVICE,
    TIMEOUT,
    UNKNOWN,
    HealthResponse,
    PredictionRequest,
    PredictionResponse,
    RequestError,
    response,
)

logger = setup_logger("dac_detr_server")
setup_logger("uvicorn")  # uvicorn's own lines (start, shutdown, bad HTTP) in ppdet's format


def _json(payload, status=200, close=False, retry_after=None):
    headers = {}
    if close:
        headers["Connection"] = "close"
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(payload, status_code=status, headers=headers)


def _client_name(request):
    return "%s:%s" % tuple(request.client) if request.client else "a client"


class ProtocolBodyLimit:
    """Starlette's ``RequestBodyLimitMiddleware`` (which counts the body and refuses it) with
    the protocol's answer: its plain-text 413 becomes err_no 5 naming ``--max_body_mb``, sent
    with ``Connection: close`` after reading and dropping what the client still sends (up to
    10x the limit, for at most ``seconds``), so that a client still sending reads it."""

    def __init__(self, app, max_body_size, seconds):
        self.limited = RequestBodyLimitMiddleware(app, max_body_size=max_body_size)
        self.limit, self.seconds = max_body_size, seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.limited(scope, receive, send)
        body = {"received": 0, "ended": False, "refused": False}

        async def counting_receive():
            message = await receive()
            body["received"] += len(message.get("body", b""))
            body["ended"] = message["type"] != "http.request" or not message.get("more_body")
            return message

        async def protocol_send(message):
            if message["type"] == "http.response.start" and message["status"] == 413:
                body["refused"] = True
                await self._refuse(scope, counting_receive, send, body)
            elif not body["refused"]:  # (the plain-text body of a replaced answer is dropped)
                await send(message)

        await self.limited(scope, counting_receive, protocol_send)

    async def _refuse(self, scope, receive, send, body):
        length = Headers(scope=scope).get("content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        if declared is None or declared <= 10 * self.limit:
            with anyio.move_on_after(self.seconds):
                while not body["ended"] and body["received"] <= 10 * self.limit:
                    await receive()
        message = (
            f"request body of {declared if declared is not None else 'more than %d' % self.limit}"
            f" bytes exceeds the limit of {self.limit} bytes (--max_body_mb)"
        )
        await _json(response(CLIENT_ERROR, message), 413, close=True)(scope, receive, send)


async def _read_body(request, timeout, flag):
    """The request body within ``timeout`` s of its header (``flag`` names the limit that set
    it); RequestError else: 408, and the connection is closed, so a client that stalls its
    upload frees its connection and request slot at the cut-off. (Over the size limit, the
    body's reader raises the HTTPException(413) that ProtocolBodyLimit answers.)"""
    try:
        with anyio.fail_after(timeout):
            return await request.body()
    except TimeoutError:
        raise RequestError(
            TIMEOUT, f"request body not received within {timeout:g} s ({flag})", 408, close=True
        ) from None


class ClientGone(Exception):
    """The client closed its connection before the answer."""


async def _answer(request, service, image, timeout):
    """The detection records of ``image`` from ``service``; ClientGone when the client hangs up
    first, RequestError on timeout. Work still queued is dropped in both cases."""
    outcome = {}
    async with anyio.create_task_group() as tasks:

        async def watch():
            while (await request.receive())["type"] != "http.disconnect":
                pass
            outcome["gone"] = True
            tasks.cancel_scope.cancel()

        tasks.start_soon(watch)
        try:
            with anyio.fail_after(timeout):
                outcome["records"] = await service.detect(image)
        except Exception as err:  # raised below, outside the task group
            outcome["error"] = err
        tasks.cancel_scope.cancel()
    if "records" in outcome:
        return outcome["records"]
    if isinstance(outcome.get("error"), TimeoutError):
        raise RequestError(
            TIMEOUT,
            f"no answer within {timeout:g} s (--request_timeout): the "
            "predictors are busy or the image is slow; retry later",
            504,
        )
    if "error" in outcome:
        raise outcome["error"]
    raise ClientGone()


def build_app(service, options):
    """The FastAPI app serving ``service`` (a DetectionService) with ``options``' limits."""

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        async with service.running():
            logger.info(
                f"worker {os.getpid()} ready: {service.pool_size} predictor(s), "
                f"max_queue {service.max_queue}"
            )
            yield

    app = FastAPI(
        title="DAC-DETR detection service",
        description=f"PaddleServing pipeline protocol over HTTP (service `{SERVICE}`).",
        version="1.0",
        lifespan=lifespan,
        redirect_slashes=False,
    )  # a trailing slash is a 404, no Location from Host
    app.add_middleware(
        ProtocolBodyLimit, max_body_size=options.max_body_bytes, seconds=options.body_deadline[0]
    )
    request_schema = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PredictionRequest.model_json_schema()}},
        }
    }

    @app.post(
        PREDICT_PATH,
        response_model=PredictionResponse,
        openapi_extra=request_schema,
        summary="Detect objects in one image",
        responses={
            503: {"description": "busy (err_no 1)"},
            504: {"description": "no answer in time (err_no 1)"},
            413: {"description": "body over --max_body_mb (err_no 5)"},
        },
    )
    async def prediction(request: Request):
        start = time.monotonic()
        logid = 0
        try:
            body = await _read_body(request, *options.body_deadline)
            image, logid = await anyio.to_thread.run_sync(service.parse, body)
            records = await _answer(
                request, service, image, options.request_timeout - (time.monotonic() - start)
            )
        except RequestError as err:
            logger.debug(f"logid {logid}: err_no {err.err_no}: {err}")
            return _json(
                response(err.err_no, str(err)), err.http_status, err.close, err.retry_after
            )
        except StarletteHTTPException:  # the body limit's 413, answered by ProtocolBodyLimit
            raise
        except (ClientGone, ClientDisconnect):
            if CUT_OFF in request.scope:  # the connection was closed by ServingProtocol
                logger.info(f"{_client_name(request)}: {request.scope[CUT_OFF]}")
            else:
                logger.info(
                    f"{_client_name(request)} closed the connection before its answer "
                    f"(logid {logid}); request dropped"
                )
            return Response(status_code=499)  # nobody reads it
        except Exception as err:  # an internal failure still gets an answer (and a traceback)
            logger.exception(f"logid {logid}: prediction failed")
            return _json(response(UNKNOWN, f"internal error: {type(err).__name__}: {err}"), 500)
        logger.debug(f"logid {logid}: {len(records)} detections")
        return _json(response(value=json.dumps(records)))

    @app.get("/health", response_model=HealthResponse, summary="Liveness and pool state")
    async def health():
        return {
            "status": "ok",
            "service": SERVICE,
            "pool_size": service.pool_size,
            "in_flight": service.in_flight,
            "max_queue": service.max_queue,
            "pid": os.getpid(),
        }

    @app.exception_handler(StarletteHTTPException)
    async def no_such_path(request, err):
        return _json(
            response(
                NO_SERVICE,
                f"no service at {request.method} {request.url.path}: "
                f"{err.detail}; use POST {PREDICT_PATH} or "
                "GET /health",
            ),
            err.status_code,
        )

    return app
