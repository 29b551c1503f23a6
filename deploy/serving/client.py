"""Post an image to the dac_detr service and print the detections.

    python deploy/serving/client.py --image_file demo.jpg [--host 127.0.0.1] [--port 18093]
    python deploy/serving/client.py --image_file demo.jpg --url http://127.0.0.1:18093
    python deploy/serving/client.py --image_file demo.jpg \
        --url http://127.0.0.1:18093/dac_detr/prediction

``--url`` takes the service's base URL (the scheme may be left out) or the full prediction URL
that the server prints in its ``serving on`` line; ``--host`` / ``--port`` build the URL
instead. Exit status 1 when the service refuses the request (its err_no and err_msg printed),
2 for a bad URL or an unreachable service.
"""

import argparse
import base64
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

SERVICE = "dac_detr"
PREDICT_PATH = f"/{SERVICE}/prediction"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 18093


def prediction_url(url=None, host=DEFAULT_HOST, port=DEFAULT_PORT):
    """The prediction URL from ``url`` (a base URL, possibly with a proxy's path prefix, or the
    full prediction URL; ``http://`` when no scheme is given), else from ``host`` and ``port``.
    ValueError naming the URL when it is not http(s) or has a query or fragment."""
    if url is None:
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host  # IPv6
        return f"http://{host}:{int(port)}{PREDICT_PATH}"
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"--url {url!r}: expected http://HOST:PORT or http://HOST:PORT{PREDICT_PATH}"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"--url {url!r}: no query or fragment expected")
    path = parts.path.rstrip("/")
    if not path.endswith(PREDICT_PATH):
        path += PREDICT_PATH  # a base URL, possibly under a proxy's prefix
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def predict(url, image_bytes, logid=0, timeout=60.0):
    """POST one encoded image to the prediction URL ``url``; returns the decoded response dict
    (err_no, err_msg, key, value)."""
    body = json.dumps(
        {"key": ["image"], "value": [base64.b64encode(image_bytes).decode()], "logid": logid}
    ).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as err:  # 4xx/5xx answers still carry err_no / err_msg
        text = err.read()
        try:
            return json.loads(text)
        except ValueError:  # not the service's JSON (e.g. a proxy's page)
            return {
                "err_no": -1,
                "err_msg": f"HTTP {err.code}: {text[:200]!r}",
                "key": [],
                "value": [],
                "tensors": [],
            }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image_file", required=True)
    parser.add_argument(
        "--url", default=None, help="the service's base URL or the prediction URL the server prints"
    )
    parser.add_argument("--host", default=None, help=f"service host (default {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=int, default=None, help=f"service port (default {DEFAULT_PORT})"
    )
    parser.add_argument("--threshold", type=float, default=0.3, help="print scores >= this")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    args = parser.parse_args(argv)
    if args.url is not None and (args.host is not None or args.port is not None):
        parser.error("give --url or --host/--port, not both")
    try:
        url = prediction_url(
            args.url, args.host or DEFAULT_HOST, DEFAULT_PORT if args.port is None else args.port
        )
    except ValueError as err:
        parser.error(str(err))
    try:
        with open(args.image_file, "rb") as f:
            image = f.read()
    except OSError as err:  # one line, as the tools end on a user error (exit status 2)
        print(f"client.py: error: cannot read {args.image_file}: {err.strerror}", file=sys.stderr)
        return 2
    try:
        result = predict(url, image, timeout=args.timeout)
    except (urllib.error.URLError, OSError) as err:
        print(f"cannot reach the service at {url}: {getattr(err, 'reason', err)}", file=sys.stderr)
        return 2
    if result["err_no"] != 0:
        print(f"error {result['err_no']}: {result['err_msg']}", file=sys.stderr)
        return 1
    detections = json.loads(result["value"][0])
    shown = [d for d in detections if d["score"] >= args.threshold]
    print(
        f"{args.image_file}: {len(shown)} of {len(detections)} detections with score >= "
        f"{args.threshold}"
    )
    for d in shown:
        # the tools' console format (ppdet_dac.deploy.postprocess.format_box: 2 decimals); this
        # client imports nothing of ppdet_dac, so that it runs with Python alone
        box = ", ".join(f"{v:.2f}" for v in d["bbox"])
        print(f"  {d['label']:<12s} {d['score']:.3f}  [{box}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
