"""DAC-DETR against its baselines at the same budget: same data, schedule and seeds, several seeds.

    python benchmarks/dac_vs_baseline.py [--arms dac dac_nodac dino] [--seeds 3 | --seeds 0 5 9]
        [--epochs 4] [--data demo|crowded] [--out output/dac_vs_baseline] [--threads N]
        [--num-train 240 --num-val 60] [--force] [-o key=value ...]

Arms (``--arms``; every one trains the demo model of configs/demo/ on the same data, with the
same schedule and the same seeds, so that the runs of one seed are paired):

* ``dac``: configs/demo/dac_demo.yml, DAC-DETR as ``make demo`` trains it (O- and C-stream,
  IA-BCE classification loss);
* ``dac_nodac``: the same config with ``use_dac: false`` (no C-stream, no one-to-many terms),
  the same loss: the clean ablation of DAC;
* ``dino``: configs/demo/dino_demo.yml, ``use_dac: false`` *and* ``loss_class_type: focal``:
  the DINO-style baseline of the paper's tables (two changes against ``dac``);
* optional: ``dac_no_iabce`` (DAC with focal loss), ``dac_flat_o2m`` (DAC with the C-stream's
  one-to-many rank weights exp(-rank / 1.5) flattened to 1: ``rank_tau`` 1e9).

Each (arm, seed) runs ``tools/train.py --eval --seed S`` in a subprocess (COCO evaluation of the
val split after every epoch; the 12 COCO numbers and the training seconds of each epoch come
from the trainer's history, ``--history``), then ``tools/analyze_queries.py`` on its final
weights (queries per val object above IoU 0.6 and 0.7, O-stream, and C-stream for the DAC
arms). ``-o key=value`` is passed to every arm alike (e.g. image sizes for a quick run). A run
whose outputs exist with the same settings is reused (``--force`` reruns it); only each run's
``model_final`` checkpoint is kept. Written to ``--out``:

* ``metrics.csv``: arm, seed, epoch, AP, AP50, AP75, AR100, sec_per_step (training steps of the
  epoch only: no evaluation, no checkpoint writing);
* ``queries.csv``: arm, seed, stream, iou, mean_queries_per_object, num_objects;
* ``report.txt`` (also printed): per arm mean +- sd over seeds of the final AP / AP50 / AP75 /
  AR@100, each other arm minus ``dac`` per seed with the mean and its 95 % t interval, the step
  time against ``dac``, and the query affinity per arm (``benchmarks/_dac_report.py``);
* ``ap_vs_epoch.png``: AP and AP50 against epoch, the mean over seeds per arm, the band from the
  lowest to the highest seed;
* ``runs/<arm>/seed<S>/``: each run's log, history, checkpoint and query CSV.

Wall time on 2 cores (measured 2026-12-06, docs/benchmarks.md; the VM's step time varies
from day to day, 1.3-1.8 s for the demo's DAC step):

* default (3 arms x 3 seeds, the demo schedule: 4 epochs of 120 steps of 2 images at 128-160
  px, COCO evaluation of the 60 val images after each epoch): about 69 min (each run alone
  7.3-8.4 min, measured when the demo read 4 images a step: 240 steps at 1.6-1.8 s, 4
  evaluations, the query analysis; 2 images a step take half as long); each extra seed adds
  about 23 min, each extra DAC arm (``dac_no_iabce``, ``dac_flat_o2m``) about 24 min;
* ``--data crowded``: the same image count and sizes, a few per cent more per step (more
  objects to match; not measured);
* smoke (2 arms x 2 seeds x 1 epoch on 8 train / 4 val images at 64 px: ``--arms dac dino
  --seeds 2 --epochs 1 --num-train 8 --num-val 4 -o train_sizes=[64] train_max_size=80
  eval_size=64 eval_max_size=80 TrainReader.batch_size=2``): about 1.2 min (measured, busy
  machine), nearly all of it process start-up.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

from _dac_report import (  # noqa: E402
    METRIC_FIELDS,
    QUERY_FIELDS,
    format_report,
    metric_rows,
    plot_ap,
    query_rows,
    write_rows,
)

DAC_DEMO = "configs/demo/dac_demo.yml"
ARMS = {
    "dac": (DAC_DEMO, {}),
    "dac_nodac": (DAC_DEMO, {"use_dac": "false"}),
    "dino": ("configs/demo/dino_demo.yml", {}),
    "dac_no_iabce": (DAC_DEMO, {"DACCriterion.loss_class_type": "focal"}),
    "dac_flat_o2m": (DAC_DEMO, {"DACCriterion.rank_tau": "1.0e+9"}),
}
DEFAULT_ARMS = ["dac", "dac_nodac", "dino"]
DATA_ROOTS = {"demo": "dataset/demo", "crowded": "dataset/demo_crowded"}
DEFAULT_COUNTS = (240, 60)
QUERY_IOUS = ("0.6", "0.7")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, choices=sorted(ARMS))
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[3],
        help="one number N: the seeds 0..N-1; several numbers: those seeds (default 3)",
    )
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (the demo's 4)")
    parser.add_argument("--data", choices=sorted(DATA_ROOTS), default="demo")
    parser.add_argument(
        "--data-root",
        default=None,
        help="dataset folder (default dataset/demo or dataset/demo_crowded; "
        "with other image counts <out>/data_<data>)",
    )
    parser.add_argument("--num-train", type=int, default=DEFAULT_COUNTS[0])
    parser.add_argument("--num-val", type=int, default=DEFAULT_COUNTS[1])
    parser.add_argument("--out", default="output/dac_vs_baseline", help="output folder")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="OMP_NUM_THREADS of each run"
    )
    parser.add_argument("--force", action="store_true", help="rerun runs whose outputs exist")
    parser.add_argument(
        "-o", "--opt", nargs="*", default=[], help="key=value config overrides for every arm"
    )
    args = parser.parse_args(argv)
    if "dac" not in args.arms:
        parser.error("--arms must include 'dac' (the other arms are compared with it)")
    if len(set(args.arms)) != len(args.arms):
        parser.error(f"--arms lists an arm twice: {args.arms}")
    if len(args.seeds) == 1:
        if args.seeds[0] < 1:
            parser.error(f"--seeds N needs N >= 1, got {args.seeds[0]}")
        args.seeds = list(range(args.seeds[0]))
    elif len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds lists a seed twice: {args.seeds}")
    for name in ("epochs", "threads", "num_train", "num_val"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    bad = [item for item in args.opt if "=" not in item]
    if bad:
        parser.error(f"-o takes key=value items, got {bad}")
    if args.data_root is None:
        default = (args.num_train, args.num_val) == DEFAULT_COUNTS
        args.data_root = (
            DATA_ROOTS[args.data] if default else os.path.join(args.out, f"data_{args.data}")
        )
    return args


def prepare_data(args):
    """Generate the dataset under ``args.data_root`` unless it is complete (in this process:
    plain numpy and OpenCV)."""
    from ppdet_dac.data.crowding import Crowding
    from ppdet_dac.data.demo_data import make_demo_data

    make_demo_data(
        args.data_root,
        num_train=args.num_train,
        num_val=args.num_val,
        num_empty_train=min(8, args.num_train // 4),
        crowding=Crowding() if args.data == "crowded" else None,
    )


def run_settings(args, arm, seed):
    """The config, its -o overrides and the settings recorded with a run."""
    config, arm_opts = ARMS[arm]
    root = os.path.abspath(args.data_root)
    opts = {f"{s}.dataset_dir": root for s in ("TrainDataset", "EvalDataset", "TestDataset")}
    opts.update(arm_opts)
    opts.update(dict(item.split("=", 1) for item in args.opt))
    settings = {"config": config, "seed": seed, "epochs": args.epochs, "opts": opts}
    return config, opts, settings


def _run_logged(cmd, log_path, env):
    """Run ``cmd`` with its output in ``log_path``; RuntimeError with the log's tail on failure."""
    with open(log_path, "w") as log:
        done = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        with open(log_path) as log:
            tail = "".join(log.readlines()[-25:])
        raise RuntimeError(
            f"{' '.join(cmd)} failed (exit {done.returncode}); log {log_path}:\n{tail}"
        )


def run_one(args, arm, seed, env):
    """Train and analyse one (arm, seed) unless done with the same settings; returns
    (history, query rows of analyze_queries' CSV, wall seconds or None when reused)."""
    from ppdet_dac.analysis.queries import read_csv
    from ppdet_dac.engine.checkpoint import remove_checkpoint
    from ppdet_dac.utils.atomic import write_text

    config, opts, settings = run_settings(args, arm, seed)
    run_dir = os.path.join(os.path.abspath(args.out), "runs", arm, f"seed{seed}")
    paths = {k: os.path.join(run_dir, k) for k in ("settings.json", "history.json", "queries")}
    reuse = not args.force and _same_settings(paths["settings.json"], settings)
    start = time.time()
    if not reuse:
        if os.path.isdir(run_dir):
            shutil.rmtree(run_dir)
        os.makedirs(run_dir)
        ckpt_dir = os.path.join(run_dir, os.path.splitext(os.path.basename(config))[0])
        overrides = [f"{k}={v}" for k, v in opts.items()]
        train = [sys.executable, "tools/train.py", "-c", config, "--eval", "--seed", str(seed)]
        train += ["--history", paths["history.json"], "-o", f"save_dir={run_dir}"]
        train += [f"epoch={args.epochs}", "snapshot_epoch=1"] + overrides
        print(f"[{arm} seed {seed}] training ({run_dir}/train.log)", flush=True)
        _run_logged(train, os.path.join(run_dir, "train.log"), env)
        for name in os.listdir(ckpt_dir):  # keep model_final only (each one is ~0.2 GB)
            base, ext = os.path.splitext(name)
            if ext == ".pdparams" and base != "model_final":
                remove_checkpoint(os.path.join(ckpt_dir, base))
        queries = [sys.executable, "tools/analyze_queries.py", "-c", config, "--iou", *QUERY_IOUS]
        queries += ["--label", arm, "--out", paths["queries"], "-o"]
        queries += [f"weights={os.path.join(ckpt_dir, 'model_final')}"] + overrides
        print(f"[{arm} seed {seed}] query affinity", flush=True)
        _run_logged(queries, os.path.join(run_dir, "queries.log"), env)
        write_text(paths["settings.json"], json.dumps(settings, indent=1))  # last: marks it done
    with open(paths["history.json"]) as handle:
        history = json.load(handle)
    return history, read_csv(paths["queries"] + ".csv"), None if reuse else time.time() - start


def _same_settings(path, settings):
    """True when ``path`` (written last by a finished run) records ``settings``."""
    if not os.path.isfile(path):
        return False
    with open(path) as handle:
        return json.load(handle) == settings


def main(argv=None):
    args = parse_args(argv)
    from ppdet_dac.utils.atomic import write_text

    os.makedirs(args.out, exist_ok=True)
    prepare_data(args)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    metrics, queries, walls = [], [], {}
    for seed in args.seeds:  # seed by seed: an interrupted benchmark has whole pairs
        for arm in args.arms:
            history, rows, wall = run_one(args, arm, seed, env)
            metrics += metric_rows(arm, seed, history)
            queries += query_rows(arm, seed, rows)
            if wall is not None:
                walls[(arm, seed)] = wall
                print(f"[{arm} seed {seed}] done in {wall / 60:.1f} min", flush=True)
    write_rows(os.path.join(args.out, "metrics.csv"), METRIC_FIELDS, metrics)
    write_rows(os.path.join(args.out, "queries.csv"), QUERY_FIELDS, queries)
    plot_ap(metrics, os.path.join(args.out, "ap_vs_epoch.png"))
    report = format_report(metrics, queries, reference="dac")
    if walls:
        total = sum(walls.values())
        per_arm = ", ".join(
            f"{arm} {sum(w for (a, _), w in walls.items() if a == arm) / 60:.1f}"
            for arm in args.arms
        )
        report += f"\nwall time of the runs made now: {total / 60:.1f} min ({per_arm} min)\n"
    write_text(os.path.join(args.out, "report.txt"), report)
    print(report, flush=True)
    return report


if __name__ == "__main__":
    main()
