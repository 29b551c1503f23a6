"""Peak resident memory of the HTTP service under load: starts deploy/serving/server.py (its
default pool and queue unless server options say otherwise), sends --requests prediction requests
of the images in --image_dir from --concurrency client threads, and prints the peak RSS (VmHWM)
of the server process, and of each worker process with --workers > 1, idle and after the load.

    python benchmarks/serving_memory.py --model_dir output_inference/dac_demo \
        --image_dir dataset/demo/val [--concurrency 8] [--requests 80] [-- SERVER OPTIONS]
"""

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", required=True, help="exported model directory")
    parser.add_argument("--image_dir", required=True, help="JPEG/PNG images sent round-robin")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--requests", type=int, default=80)
    parser.add_argument(
        "server_options", nargs=argparse.REMAINDER, help="after --: options passed to server.py"
    )
    args = parser.parse_args(argv)
    if args.server_options[:1] == ["--"]:
        args.server_options = args.server_options[1:]
    if not os.path.isdir(args.image_dir):
        parser.error(f"--image_dir {args.image_dir!r} is not a directory")
    return args


def peak_rss(pid):
    """VmHWM of process ``pid`` in bytes."""
    with open(f"/proc/{pid}/status") as f:
        line = next(ln for ln in f if ln.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def children(pid):
    """Direct child process ids of ``pid`` (its worker processes)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(c) for c in f.read().split()]
    return found


def start_server(args):
    """(Popen, base URL) of server.py once it prints its 'serving on' line."""
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.join(REPO, "deploy", "serving", "server.py"),
            "--model_dir",
            args.model_dir,
            "--port",
            "0",
        ]
        + args.server_options,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in proc.stdout:
        if "serving on http://" in line:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, "http://" + line.split("http://")[1].split("/")[0]
    raise RuntimeError(f"server.py exited with status {proc.wait()} before serving")


def post(url, body):
    request = urllib.request.Request(
        url + "/dac_detr/prediction", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as reply:
            return json.loads(reply.read())["err_no"]
    except urllib.error.HTTPError as err:
        return json.loads(err.read())["err_no"]


def report(proc, label):
    pids = [proc.pid] + children(proc.pid)
    peaks = [peak_rss(pid) for pid in pids]
    print(
        f"{label}: peak RSS "
        + ", ".join(f"pid {pid} {peak / 2**30:.2f} GB" for pid, peak in zip(pids, peaks))
        + f" (sum {sum(peaks) / 2**30:.2f} GB)",
        flush=True,
    )


def main(argv=None):
    args = parse_args(argv)
    names = sorted(
        n
        for n in os.listdir(args.image_dir)
        if n.lower().endswith((".jpg", ".jpeg", ".png", ".bmp"))
    )
    if not names:
        raise SystemExit(f"no JPEG/PNG/BMP image in {args.image_dir}")
    bodies = []
    for name in names:
        with open(os.path.join(args.image_dir, name), "rb") as f:
            bodies.append(
                json.dumps(
                    {"key": ["image"], "value": [base64.b64encode(f.read()).decode()]}
                ).encode()
            )
    proc, url = start_server(args)
    try:
        time.sleep(1.0)
        report(proc, "idle")
        start = time.monotonic()
        with ThreadPoolExecutor(args.concurrency) as pool:
            codes = list(
                pool.map(lambda i: post(url, bodies[i % len(bodies)]), range(args.requests))
            )
        print(
            f"{args.requests} requests from {args.concurrency} threads in "
            f"{time.monotonic() - start:.1f} s: {codes.count(0)} answered, "
            f"{len(codes) - codes.count(0)} refused (busy or bad)",
            flush=True,
        )
        report(proc, f"after {args.requests} requests at concurrency {args.concurrency}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


if __name__ == "__main__":
    main()
