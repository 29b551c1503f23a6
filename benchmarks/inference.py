"""Inference latency side by side: dygraph eval, Paddle Inference (op / reference attention,
with and without oneDNN), onnxruntime (when installed), and the HTTP server's requests/s.

    python benchmarks/inference.py [-c configs/demo/dac_demo.yml] [--weights W] [--image IMG]
        [--threads 1] [--repeats 20] [--requests 40]

The same image (preprocessed once by the predictor's preprocessing) goes through every path.
Without --weights the model has seeded random weights (speed does not depend on them; random
weights give low scores, so the NMS keeps its full load). Prints a Markdown table.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

from _timing import run_timed  # benchmarks/ is on sys.path when a script here runs

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", default=os.path.join(REPO, "configs", "demo",
                                                                "dac_demo.yml"))
    parser.add_argument("--weights", default=None, help="default: seeded random weights")
    parser.add_argument("--image", default=None, help="default: the first demo val image")
    parser.add_argument("--threads", type=int, default=1, help="CPU math threads everywhere")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--requests", type=int, default=40, help="per server concurrency level")
    parser.add_argument("--pool_size", type=int, default=2, help="server predictors")
    return parser.parse_args(argv)


def timed(fn, repeats, warmup):
    """(median wall seconds, median process CPU seconds) per call of fn() after warmup calls."""
    walls, cpus = run_timed(fn, repeats, warmup)
    return sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]


def server_throughput(model_dir, image_path, concurrency, requests, pool_size, threads,
                      enable_mkldnn):
    """Requests/s of the HTTP server (in this process, loopback) at a client concurrency."""
    import base64
    import json
    import threading
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    sys.path.insert(0, os.path.join(REPO, "deploy", "serving"))
    import server as server_mod

    server = server_mod.make_server(model_dir, port=0, pool_size=pool_size, cpu_threads=threads,
                                    enable_mkldnn=enable_mkldnn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/dac_detr/prediction"
    with open(image_path, "rb") as f:
        body = json.dumps({"key": ["image"], "value": [base64.b64encode(f.read()).decode()]})
    body = body.encode()

    def one(_):
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as reply:
            answer = json.loads(reply.read())
        if answer["err_no"] != 0:
            raise RuntimeError(answer["err_msg"])

    try:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(concurrency)))  # warm-up
            start = time.perf_counter()
            list(pool.map(one, range(requests)))
            return requests / (time.perf_counter() - start)
    finally:
        server.shutdown()
        server.server_close()


def main(argv=None):
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before paddle: dygraph's math threads
    sys.path.insert(0, REPO)
    import ppdet_dac  # noqa: F401  (registers classes before load_config)
    import paddle

    from ppdet_dac import ops
    from ppdet_dac.data.demo_data import make_demo_data
    from ppdet_dac.engine import load_checked_config
    from ppdet_dac.engine.export import build_model, export_model
    from ppdet_dac.engine.predictor import Predictor

    paddle.set_device("cpu")
    cfg = load_checked_config(args.config)
    data_dir = cfg["TestDataset"]["dataset_dir"]
    if args.image is None:
        make_demo_data(data_dir)
    image = args.image or os.path.join(data_dir, "val", "000001.jpg")
    work = tempfile.mkdtemp(prefix="dac_bench_")  # exports and the ONNX file; removed at the end
    weights = args.weights
    if weights is None:
        paddle.seed(0)
        weights = os.path.join(work, "random.pdparams")
        paddle.save(build_model(cfg, None).state_dict(), weights)
    dirs = {mode: export_model(cfg, weights, os.path.join(work, mode), mode)
            for mode in ("op", "reference")}

    rows = []
    base = Predictor(dirs["op"], cpu_threads=args.threads)
    feeds = base.preprocessor.batch([image])
    size = "x".join(str(v) for v in feeds["image"].shape[2:])

    model = build_model(cfg, weights)
    tensors = {k: paddle.to_tensor(v) for k, v in feeds.items()}
    for mode in ("op", "reference"):
        previous = ops.force_reference(mode == "reference")
        with paddle.no_grad():
            t = timed(lambda: model(dict(tensors))["bbox"].numpy(), args.repeats, args.warmup)
        ops.force_reference(previous)
        rows.append((f"dygraph eval, {mode} attention", t))
    dygraph_wall, dygraph_cpu = rows[0][1]

    for mode in ("op", "reference"):
        for mkldnn in (False, True):
            predictor = Predictor(dirs[mode], cpu_threads=args.threads, enable_mkldnn=mkldnn)
            t = timed(lambda: predictor.run(feeds), args.repeats, args.warmup)
            rows.append((f"Paddle Inference, {mode} attention" + (", oneDNN" if mkldnn else ""),
                         t))

    try:
        import onnxruntime  # noqa: F401
        sys.path.insert(0, os.path.join(REPO, "deploy", "onnx"))
        import convert as onnx_convert
    except ImportError as err:
        print(f"onnxruntime row skipped: {err} (make onnx)")
    else:
        onnx_file = onnx_convert.convert(dirs["reference"], os.path.join(work, "model.onnx"))
        detector = onnx_convert.OnnxDetector(onnx_file, threads=args.threads)
        rows.append(("onnxruntime (reference export)",
                     timed(lambda: detector.run(feeds), args.repeats, args.warmup)))

    throughput = {(mkldnn, c): server_throughput(dirs["op"], image, c, args.requests,
                                                 args.pool_size, args.threads, mkldnn)
                  for mkldnn in (False, True) for c in (1, 4)}

    print(f"\nimage {os.path.relpath(image, REPO)} -> input {size}, {args.threads} thread(s), "
          f"median of {args.repeats} runs (after {args.warmup} warm-up)\n")
    print("| path | wall (ms) | ratio to dygraph (op), wall | CPU time (ms) | ratio, CPU time |")
    print("|---|---|---|---|---|")
    for name, (wall, cpu) in rows:
        print(f"| {name} | {wall * 1000:.0f} | {wall / dygraph_wall:.2f} | {cpu * 1000:.0f} | "
              f"{cpu / dygraph_cpu:.2f} |")
    print(f"\nHTTP server (op attention, pool {args.pool_size}, {args.threads} thread(s) per "
          f"predictor), requests/s:\n")
    print("| server | concurrency 1 | concurrency 4 |")
    print("|---|---|---|")
    for mkldnn in (False, True):
        print(f"| {'--enable_mkldnn' if mkldnn else 'default (no oneDNN)'} | "
              f"{throughput[(mkldnn, 1)]:.2f} | {throughput[(mkldnn, 4)]:.2f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
