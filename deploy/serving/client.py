"""Post an image to the dac_detr service and print the detections.

    python deploy/serving/client.py --image_file demo.jpg [--url http://127.0.0.1:18093]
"""
import argparse
import base64
import json
import sys
import urllib.error
import urllib.request

SERVICE = "dac_detr"


def predict(url, image_bytes, logid=0, timeout=60.0):
    """POST one encoded image; returns the decoded response dict (err_no, err_msg, key, value)."""
    body = json.dumps({"key": ["image"], "value": [base64.b64encode(image_bytes).decode()],
                       "logid": logid}).encode()
    request = urllib.request.Request(f"{url.rstrip('/')}/{SERVICE}/prediction", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as err:  # 4xx/5xx answers still carry err_no / err_msg
        text = err.read()
        try:
            return json.loads(text)
        except ValueError:  # not the service's JSON (e.g. a proxy's page)
            return {"err_no": -1, "err_msg": f"HTTP {err.code}: {text[:200]!r}", "key": [],
                    "value": [], "tensors": []}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image_file", required=True)
    parser.add_argument("--url", default="http://127.0.0.1:18093")
    parser.add_argument("--threshold", type=float, default=0.3, help="print scores >= this")
    args = parser.parse_args(argv)
    with open(args.image_file, "rb") as f:
        result = predict(args.url, f.read())
    if result["err_no"] != 0:
        print(f"error {result['err_no']}: {result['err_msg']}", file=sys.stderr)
        return 1
    detections = json.loads(result["value"][0])
    shown = [d for d in detections if d["score"] >= args.threshold]
    print(f"{args.image_file}: {len(shown)} of {len(detections)} detections with score >= "
          f"{args.threshold}")
    for d in shown:
        print(f"  {d['label']:<12s} {d['score']:.3f}  {d['bbox']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
