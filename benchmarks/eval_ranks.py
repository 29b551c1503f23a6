"""COCO evaluation of the demo val set in one process vs sharded over 2 processes, side by side.

    python benchmarks/eval_ranks.py [-c configs/demo/dac_demo.yml] [--weights W] [--repeats 3]
        [-o key=value ...]

Runs ``tools/eval.py`` alone (all CPU cores to Paddle's math threads, as the tool does) and
under ``paddle.distributed.launch --nproc_per_node 2`` (one thread per process, gloo), in
alternating order, and prints per setting the median command wall time (start-up included) and
the median evaluation time that rank 0 logs (inference on every rank + the gather of the
detections), their ratios, and the box AP of each (they must be equal). The weights default to
the demo model (``python tools/demo.py`` trains it).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
EVAL_LINE = re.compile(
    r"evaluated (\d+) images \((\d+) batches\) on (\d+) process\(es\): "
    r"inference and gather ([0-9.]+) s"
)
AP_LINE = re.compile(
    r"Average Precision +\(AP\) @\[ IoU=0\.50:0\.95 \| area= +all \| "
    r"maxDets=100 \] = ([0-9.]+)"
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "-c", "--config", default=os.path.join(REPO, "configs", "demo", "dac_demo.yml")
    )
    parser.add_argument(
        "--weights", default=os.path.join(REPO, "output", "dac_demo", "model_final")
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("-o", "--opt", nargs="*", default=[], help="passed to tools/eval.py")
    return parser.parse_args(argv)


def run_eval(args, nproc, work):
    """(command wall s, logged eval s, images, AP) of one tools/eval.py run."""
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("OMP_NUM_THREADS", None)
    env.pop("PADDLE_TRAINERS_NUM", None)
    tool = [
        os.path.join(REPO, "tools", "eval.py"),
        "-c",
        args.config,
        "--output_eval",
        work,
        "-o",
        f"weights={args.weights}",
        *args.opt,
    ]
    if nproc == 1:
        cmd = [sys.executable, *tool]
    else:
        env["OMP_NUM_THREADS"] = "1"  # the launcher's processes share the cores
        cmd = [
            sys.executable,
            "-m",
            "paddle.distributed.launch",
            "--nproc_per_node",
            str(nproc),
            "--log_dir",
            os.path.join(work, "log"),
            *tool,
        ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    if nproc > 1 and os.path.isdir(os.path.join(work, "log")):
        with open(os.path.join(work, "log", "workerlog.0")) as handle:
            log = handle.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{log[-3000:]}")
    found, ap = EVAL_LINE.search(log), AP_LINE.search(log)
    if not found or not ap or int(found.group(3)) != nproc:
        raise RuntimeError(f"no evaluation line for {nproc} process(es) in the log:\n{log[-3000:]}")
    return wall, float(found.group(4)), int(found.group(1)), float(ap.group(1))


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isfile(args.weights + ".pdparams"):
        raise FileNotFoundError(
            f"{args.weights}.pdparams not found: train the demo model with "
            "`python tools/demo.py` or pass --weights"
        )
    runs = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for nproc in (1, 2) if repeat % 2 == 0 else (2, 1):
                work = os.path.join(tmp, f"{nproc}_{repeat}")
                os.makedirs(work)
                runs[nproc].append(run_eval(args, nproc, work))
                print(
                    f"repeat {repeat}, {nproc} process(es): wall {runs[nproc][-1][0]:.2f} s, "
                    f"eval {runs[nproc][-1][1]:.2f} s",
                    flush=True,
                )

    def median(nproc, i):
        values = sorted(r[i] for r in runs[nproc])
        return values[len(values) // 2]

    print(
        f"\n{runs[1][0][2]} images, weights {args.weights}, {os.cpu_count()} CPU cores, "
        f"median of {args.repeats}\n"
    )
    print("| setting | command wall | evaluation (inference + gather) | box AP |")
    print("|---|---|---|---|")
    for nproc, name in ((1, "1 process, all cores"), (2, "2 processes x 1 thread")):
        print(
            f"| {name} | {median(nproc, 0):.2f} s | {median(nproc, 1):.2f} s | "
            f"{runs[nproc][0][3]:.4f} |"
        )
    print(
        f"\nratio 1 / 2 processes: command wall {median(1, 0) / median(2, 0):.2f}x, "
        f"evaluation {median(1, 1) / median(2, 1):.2f}x"
    )
    aps = {r[3] for rs in runs.values() for r in rs}
    print(json.dumps({"same_ap": len(aps) == 1, "ap": sorted(aps)}))


if __name__ == "__main__":
    main()
