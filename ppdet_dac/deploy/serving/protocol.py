"""The PaddleServing pipeline protocol of the service: paths, err_no table, the request and
answer schemas (also the OpenAPI page) and request body -> (image bytes, logid)."""

import base64
import binascii
import json

from pydantic import BaseModel, Field, ValidationError

from ppdet_dac.data.image_headers import FORMATS_TEXT

SERVICE = "dac_detr"
PREDICT_PATH = f"/{SERVICE}/prediction"
INPUT_KEY, OUTPUT_KEY = "image", "detections"
# error numbers of PaddleServing's pipeline (ChannelDataErrcode)
OK, TIMEOUT, TYPE_ERROR, CLIENT_ERROR, NO_SERVICE, UNKNOWN, INPUT_PARAMS_ERROR = 0, 1, 3, 5, 7, 8, 9
MAX_LOGID = 2**64 - 1  # PaddleServing's logid is a uint64


class RequestError(Exception):
    """A request the service refuses; err_no and the message go back to the client.

    close: answer with ``Connection: close`` (the body was not read to its end)."""

    def __init__(self, err_no, message, http_status=200, close=False, retry_after=None):
        super().__init__(message)
        self.err_no, self.http_status = err_no, http_status
        self.close, self.retry_after = close, retry_after


class PredictionRequest(BaseModel, strict=True):
    """PaddleServing pipeline request: one image under the key ``image``. Strict: no
    coercion (a logid "7" or true is refused, as is a number where the image string goes)."""

    key: list[str] = Field(description=f'exactly ["{INPUT_KEY}"]', examples=[[INPUT_KEY]])
    value: list[str] = Field(
        description=f"[base64 of a {FORMATS_TEXT} file]", examples=[["/9j/4AAQSkZJRgABAQ..."]]
    )
    logid: int = Field(0, ge=0, le=MAX_LOGID, description="echoed in the server log")


class Detection(BaseModel):
    """One entry of the JSON list in ``value[0]`` of an answer."""

    class_id: int
    label: str
    score: float
    bbox: list[float] = Field(description="[x1, y1, x2, y2] in pixels of the original image")


class PredictionResponse(BaseModel):
    """PaddleServing pipeline answer; ``value[0]`` is a JSON string: a list of Detection,
    highest score first. err_no != 0: refused, err_msg says why."""

    err_no: int = Field(
        description="0 ok; 1 busy / timeout; 5 body too large; 7 no such path; "
        "8 internal error; 9 bad request or image"
    )
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


def response(err_no=OK, err_msg="", value=None):
    """An answer of the protocol (PredictionResponse's fields) as a dict."""
    return {
        "err_no": err_no,
        "err_msg": err_msg,
        "key": [OUTPUT_KEY] if value is not None else [],
        "value": [value] if value is not None else [],
        "tensors": [],
    }


def _short(value, limit=60):
    """repr of ``value`` cut to ``limit`` characters (messages stay one short line)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _json_type(value):
    """The JSON name of a decoded value's type."""
    names = {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _parse_json(body):
    """Body bytes -> the decoded JSON value; RequestError (err_no 9, one line) for invalid
    UTF-8, bad JSON, nesting too deep for the parser and integers of more digits than Python
    converts. (Python's json, not pydantic's parser: NaN is a number here, and the messages
    name Python's own limits.)"""
    try:
        return json.loads(body)
    except RecursionError:
        raise RequestError(
            INPUT_PARAMS_ERROR, "request body is not acceptable JSON: nested too deeply"
        ) from None
    except json.JSONDecodeError as err:
        raise RequestError(INPUT_PARAMS_ERROR, f"request body is not JSON: {err}") from None
    except UnicodeDecodeError as err:
        raise RequestError(
            INPUT_PARAMS_ERROR, f"request body is not UTF-8 JSON: {err.reason} at byte {err.start}"
        ) from None
    except ValueError as err:  # an integer of more digits than Python converts
        raise RequestError(
            INPUT_PARAMS_ERROR,
            f"request body is not acceptable JSON: {str(err).split(';')[0][:200]}",
        ) from None


def _refusal(request, error):
    """The message of the first rule PredictionRequest's ``error`` (a ValidationError of the
    dict ``request``) breaks, in the order: key, the image value, logid."""
    fields = {e["loc"][0] for e in error.errors()}
    if "key" in fields or request["key"] != [INPUT_KEY]:
        return f"expected key [{INPUT_KEY!r}], got {_short(request['key'])}"
    if "value" in fields:
        return (
            f"value of {INPUT_KEY!r} must be a base64 string, got JSON "
            f"{_json_type(request['value'][0])}"
        )
    return f"'logid' must be an integer from 0 to 2^64 - 1, got {_short(request.get('logid'))}"


def decode_request(body):
    """Body bytes -> (encoded image bytes, logid); RequestError (err_no 9) naming what is wrong.

    Any malformed body is a RequestError, never an exception of its own."""
    request = _parse_json(body)
    if not isinstance(request, dict):
        raise RequestError(
            INPUT_PARAMS_ERROR,
            "request body must be a JSON object with "
            "'key' and 'value' lists, got JSON "
            f"{_json_type(request)}",
        )
    keys, values = request.get("key"), request.get("value")
    if not isinstance(keys, list) or not isinstance(values, list) or len(keys) != len(values):
        raise RequestError(INPUT_PARAMS_ERROR, "'key' and 'value' must be lists of equal length")
    try:
        parsed = PredictionRequest.model_validate(request)
    except ValidationError as err:
        raise RequestError(INPUT_PARAMS_ERROR, _refusal(request, err)) from None
    if parsed.key != [INPUT_KEY]:
        raise RequestError(INPUT_PARAMS_ERROR, f"expected key [{INPUT_KEY!r}], got {_short(keys)}")
    try:
        image = base64.b64decode(parsed.value[0], validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(INPUT_PARAMS_ERROR, f"value of {INPUT_KEY!r} is not valid base64: {err}")
    if not image:
        raise RequestError(INPUT_PARAMS_ERROR, f"value of {INPUT_KEY!r} is empty")
    return image, parsed.logid
