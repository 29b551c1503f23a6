"""Inference latency side by side: dygraph eval, the evaluation through the model exported in
memory (tools/eval.py --engine inference), Paddle Inference (default: oneDNN; and with oneDNN
off, --disable_mkldnn), onnxruntime (when installed), and the HTTP server's requests/s.

    python benchmarks/inference.py [-c configs/demo/dac_demo.yml] [--weights W]
        [--image IMG | --size 800x1066] [--attention op,reference] [--threads 1]
        [--repeats 20] [--warmup 3] [--requests 40] [--no_onnx] [--no_server]

The same image (preprocessed once by the predictor's preprocessing) goes through every path.
``--size HxW`` makes the image by resizing the first demo val image to H x W (the R-50 config's
reader keeps 800 x 1066 as it is). Without --weights the model has seeded random weights (speed
does not depend on them; random weights give low scores, so the NMS keeps its full load).
Prints Markdown tables with the ratios to dygraph (op attention) of each path, measured in this
one run.
"""

import argparse
import os
import shutil
import tempfile
import time

from _timing import run_timed  # benchmarks/ is on sys.path when a script here runs

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ATTENTIONS = ("op", "reference")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "-c", "--config", default=os.path.join(REPO, "configs", "demo", "dac_demo.yml")
    )
    parser.add_argument("--weights", default=None, help="default: seeded random weights")
    parser.add_argument("--image", default=None, help="default: the first demo val image")
    parser.add_argument(
        "--size", default=None, help="HxW: the first demo val image resized to H x W"
    )
    parser.add_argument(
        "--attention",
        default="op,reference",
        help="comma-separated attention modes to export and time",
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU math threads everywhere")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--requests", type=int, default=40, help="per server concurrency level")
    parser.add_argument("--pool_size", type=int, default=2, help="server predictors")
    parser.add_argument("--no_onnx", action="store_true", help="leave out the onnxruntime row")
    parser.add_argument("--no_server", action="store_true", help="leave out the server table")
    args = parser.parse_args(argv)
    args.attention = [a.strip() for a in args.attention.split(",") if a.strip()]
    if not args.attention or set(args.attention) - set(ATTENTIONS) or "op" not in args.attention:
        parser.error(f"--attention: 'op' plus optionally 'reference', got {args.attention}")
    if args.size:
        try:
            args.size = tuple(int(v) for v in args.size.lower().split("x"))
            assert len(args.size) == 2 and min(args.size) > 0
        except (ValueError, AssertionError):
            parser.error(f"--size must be HxW, e.g. 800x1066, got {args.size!r}")
    return args


def timed(fn, repeats, warmup):
    """(median wall seconds, median process CPU seconds) per call of fn() after warmup calls."""
    walls, cpus = run_timed(fn, repeats, warmup)
    return sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]


def server_throughput(
    model_dir, image_path, concurrency, requests, pool_size, threads, enable_mkldnn
):
    """Requests/s of the HTTP server (uvicorn thread of this process, loopback) at a client
    concurrency."""
    import base64
    import json
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    from ppdet_dac.deploy import serving as server_mod

    options = server_mod.ServingOptions(
        model_dir,
        pool_size=pool_size,
        cpu_threads=threads,
        enable_mkldnn=enable_mkldnn,
        request_timeout=600,
        max_queue=max(concurrency, 8),
    )
    app = server_mod.build_app(server_mod.build_service(options), options)
    server = server_mod.InProcessServer(app, port=0).start()
    url = f"http://127.0.0.1:{server.port}/dac_detr/prediction"
    with open(image_path, "rb") as f:
        body = json.dumps({"key": ["image"], "value": [base64.b64encode(f.read()).decode()]})
    body = body.encode()

    def one(_):
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as reply:
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
        server.stop()


def main(argv=None):
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before paddle: dygraph's math threads
    import ppdet_dac  # noqa: F401  (registers classes before load_config)
    import cv2
    import paddle

    from ppdet_dac import ops
    from ppdet_dac.data.demo_data import make_demo_data
    from ppdet_dac.engine import load_checked_config
    from ppdet_dac.deploy.export import build_model, export_model
    from ppdet_dac.deploy.exported_eval import ExportedModel
    from ppdet_dac.deploy.predictor import Predictor

    paddle.set_device("cpu")
    cfg = load_checked_config(args.config)
    work = tempfile.mkdtemp(prefix="dac_bench_")  # exports, the image, ONNX; removed at the end
    image = args.image
    if image is None:
        demo_dir = os.path.join(REPO, "dataset", "demo")
        make_demo_data(demo_dir)
        image = os.path.join(demo_dir, "val", "000001.jpg")
        if args.size:
            resized = os.path.join(work, f"image_{args.size[0]}x{args.size[1]}.jpg")
            cv2.imwrite(resized, cv2.resize(cv2.imread(image), args.size[::-1]))
            image = resized
    weights = args.weights
    if weights is None:
        paddle.seed(0)
        weights = os.path.join(work, "random.pdparams")
        paddle.save(build_model(cfg, None).state_dict(), weights)
    dirs = {
        mode: export_model(cfg, weights, os.path.join(work, mode), mode) for mode in args.attention
    }

    rows = []
    base = Predictor(dirs["op"], cpu_threads=args.threads)
    feeds = base.preprocessor.batch([image])
    size = "x".join(str(v) for v in feeds["image"].shape[2:])
    del base

    model = build_model(cfg, weights)
    tensors = {k: paddle.to_tensor(v) for k, v in feeds.items()}
    for mode in args.attention:
        previous = ops.force_reference(mode == "reference")
        with paddle.no_grad():
            t = timed(
                lambda m=model, x=tensors: m(dict(x))["bbox"].numpy(), args.repeats, args.warmup
            )
        ops.force_reference(previous)
        rows.append((f"dygraph eval, {mode} attention", t))
    dygraph_wall, dygraph_cpu = rows[0][1]
    exported = ExportedModel(cfg, model, args.threads)  # tools/eval.py --engine inference
    t = timed(lambda x=tensors, e=exported: e(dict(x)), args.repeats, args.warmup)
    rows.append(("eval, `--engine inference` (exported in memory, oneDNN)", t))
    print(f"--engine inference: export and predictor set-up {exported.export_seconds:.1f} s")
    exported.close()
    del model, tensors, exported

    for mode in args.attention:
        for onednn in (True, False):
            predictor = Predictor(dirs[mode], cpu_threads=args.threads, enable_mkldnn=onednn)
            assert predictor.enable_mkldnn is onednn
            t = timed(lambda p=predictor: p.run(feeds), args.repeats, args.warmup)
            rows.append(
                (
                    f"Paddle Inference, {mode} attention, "
                    + ("default (oneDNN)" if onednn else "oneDNN off (--disable_mkldnn)"),
                    t,
                )
            )
            del predictor

    if not args.no_onnx:
        try:
            import onnxruntime  # noqa: F401
            from ppdet_dac.deploy import onnx_export as onnx_convert
        except ImportError as err:
            print(f"onnxruntime row skipped: {err} (make onnx)")
        else:
            if "reference" not in dirs:
                print("onnxruntime row skipped: it needs --attention op,reference")
            else:
                onnx_file = onnx_convert.convert(
                    dirs["reference"], os.path.join(work, "model.onnx")
                )
                detector = onnx_convert.OnnxDetector(onnx_file, threads=args.threads)
                rows.append(
                    (
                        "onnxruntime (reference export)",
                        timed(lambda: detector.run(feeds), args.repeats, args.warmup),
                    )
                )

    throughput = {}
    if not args.no_server:
        throughput = {
            (onednn, c): server_throughput(
                dirs["op"], image, c, args.requests, args.pool_size, args.threads, onednn
            )
            for onednn in (True, False)
            for c in (1, 4)
        }

    print(
        f"\nconfig {os.path.relpath(args.config, REPO)}, image {os.path.basename(image)} -> "
        f"input {size}, {args.threads} thread(s), median of {args.repeats} runs (after "
        f"{args.warmup} warm-up)\n"
    )
    print("| path | wall (ms) | ratio to dygraph (op), wall | CPU time (ms) | ratio, CPU time |")
    print("|---|---|---|---|---|")
    for name, (wall, cpu) in rows:
        print(
            f"| {name} | {wall * 1000:.0f} | {wall / dygraph_wall:.2f} | {cpu * 1000:.0f} | "
            f"{cpu / dygraph_cpu:.2f} |"
        )
    if throughput:
        print(
            f"\nHTTP server (op attention, pool {args.pool_size}, {args.threads} thread(s) per "
            f"predictor), requests/s:\n"
        )
        print("| server | concurrency 1 | concurrency 4 |")
        print("|---|---|---|")
        for onednn in (True, False):
            print(
                f"| {'default (oneDNN)' if onednn else '--disable_mkldnn'} | "
                f"{throughput[(onednn, 1)]:.2f} | {throughput[(onednn, 4)]:.2f} |"
            )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
