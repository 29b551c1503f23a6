"""The service's FastAPI app: ``POST /dac_detr/prediction``, ``GET /health`` and the OpenAPI
pages, with the body limit, the body and request timeouts and the busy answers of its options.

The body limit is read here rather than by Starlette's ``RequestBodyLimitMiddleware``: that
middleware answers a plain-text 413 of its own and replaces any answer started while the
declared Content-Length is over the limit, where the protocol needs its JSON answer (err_no 5)
after draining what the client still sends (so that the client reads it).
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
from starlette.exceptions import HTTPException as StarletteHTTPException
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
    too_big = RequestError(
        CLIENT_ERROR,
        f"request body of {length or 'more than %d' % limit} "
        f"bytes exceeds the limit of {limit} bytes "
        "(--max_body_mb)",
        413,
        close=True,
    )

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
        with anyio.fail_after(timeout):
            return await read()
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
            body = await _read_body(request, options.max_body_bytes, *options.body_deadline)
            image, logid = await anyio.to_thread.run_sync(service.parse, body)
            records = await _answer(
                request, service, image, options.request_timeout - (time.monotonic() - start)
            )
        except RequestError as err:
            logger.debug(f"logid {logid}: err_no {err.err_no}: {err}")
            return _json(
                response(err.err_no, str(err)), err.http_status, err.close, err.retry_after
            )
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
