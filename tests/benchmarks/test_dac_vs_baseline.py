"""benchmarks/dac_vs_baseline.py: the statistics against hand-computed values, the report of
hand-made rows, and a smoke run (2 arms x 2 seeds x 1 epoch on tiny data) whose printed table
is recomputed from its CSV files."""

import csv
import math
import os
import re
import subprocess
import sys

import cv2
import pytest

from _common import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from _dac_report import format_report, metric_rows  # noqa: E402
from _stats import mean_sd, paired_differences, t_interval  # noqa: E402

# Student's t quantiles t_{0.975, df}, from a table (df = n - 1)
T_975 = {1: 12.706205, 2: 4.302653}


def test_mean_and_sample_sd():
    mean, sd = mean_sd([1, 2, 4])
    assert mean == pytest.approx(7 / 3)
    # deviations -4/3, -1/3, 5/3: squares sum to 42/9, over n - 1 = 2
    assert sd == pytest.approx(math.sqrt(21 / 9))
    mean, sd = mean_sd([0.5])
    assert mean == 0.5 and math.isnan(sd)
    with pytest.raises(ValueError, match="AP: no values"):
        mean_sd([], what="AP")
    with pytest.raises(ValueError, match="non-finite"):
        mean_sd([1.0, float("nan")])


def test_paired_differences_match_seeds():
    diffs = paired_differences({2: 0.32, 0: 0.30, 1: 0.35, 7: 0.9}, {0: 0.28, 1: 0.30, 2: 0.33})
    assert [s for s, _ in diffs] == [0, 1, 2]  # seed 7 has no partner
    assert [d for _, d in diffs] == pytest.approx([0.02, 0.05, -0.01])
    with pytest.raises(ValueError, match="no seed in common"):
        paired_differences({0: 1.0}, {1: 1.0})


def test_t_interval_three_and_two_values():
    # d = 0.02, 0.05, -0.01: mean 0.02, sd 0.03; half width t_{.975,2} * 0.03 / sqrt(3)
    mean, low, high = t_interval([0.02, 0.05, -0.01])
    half = T_975[2] * 0.03 / math.sqrt(3)  # 0.074524
    assert mean == pytest.approx(0.02)
    assert (low, high) == pytest.approx((0.02 - half, 0.02 + half), abs=1e-6)
    assert (low, high) == pytest.approx((-0.054524, 0.094524), abs=1e-6)
    # d = 0.1, 0.3: mean 0.2, sd sqrt(0.02); half width t_{.975,1} * sd / sqrt(2) = 1.270621
    mean, low, high = t_interval([0.1, 0.3])
    assert (mean, low, high) == pytest.approx((0.2, -1.070621, 1.470621), abs=1e-6)
    mean, low, high = t_interval([0.4])
    assert mean == 0.4 and math.isnan(low) and math.isnan(high)


def _history(final_ap, final_ap50):
    epoch0 = {"epoch": 0, "stats": [0.01] * 12, "seconds": 10.0, "steps": 5}
    stats = [final_ap, final_ap50, 0.2] + [0.0] * 5 + [0.6, 0.0, 0.0, 0.0]
    return [epoch0, {"epoch": 1, "stats": stats, "seconds": 12.0, "steps": 4}]


def test_metric_rows_and_report_of_hand_made_runs():
    rows = metric_rows("dac", 0, _history(0.30, 0.5))
    assert rows[1] == {
        "arm": "dac",
        "seed": 0,
        "epoch": 1,
        "AP": 0.30,
        "AP50": 0.5,
        "AP75": 0.2,
        "AR100": 0.6,  # pycocotools' stats[8]
        "sec_per_step": 3.0,
    }
    with pytest.raises(ValueError, match="dino seed 4: epoch 0 has no COCO stats"):
        metric_rows("dino", 4, [{"epoch": 0, "stats": None, "seconds": 1, "steps": 1}])
    metrics = []
    for seed, (dac, dino) in enumerate([(0.30, 0.28), (0.35, 0.30), (0.32, 0.33)]):
        metrics += metric_rows("dac", seed, _history(dac, 0.5))
        metrics += metric_rows("dino", seed, _history(dino, 0.5 + seed / 10))
    report = format_report(metrics, [], reference="dac")
    # dac final AP 0.30, 0.35, 0.32: mean 0.323333, sd sqrt(0.0012667 / 2) = 0.025166
    assert re.search(r"^dac\s+0,1,2\s+0\.3233 \+- 0\.0252 ", report, re.M)
    # dino - dac: -0.02, -0.05, +0.01: mean -0.02, sd 0.03, interval -0.02 -+ 0.074524
    line = "0:-0.0200 1:-0.0500 2:+0.0100"
    assert re.search(
        rf"^dino\s+AP\s+{re.escape(line)}\s+-0\.0200\s+\[-0\.0945, \+0\.0545\]", report, re.M
    )
    # AP50: 0, 0.1, 0.2 over dac: mean 0.1, sd 0.1, half width 4.302653 * 0.1 / sqrt(3)
    assert re.search(r"^dino\s+AP50\s+.*\+0\.1000\s+\[-0\.1484, \+0\.3484\]", report, re.M)
    # the same step times in both arms: mean (2 + 3) / 2 = 2.5 s, ratio 1
    assert re.search(r"^dino\s+.*2\.500\s+1\.00x$", report, re.M)
    one_seed = format_report([r for r in metrics if r["seed"] == 0], [], reference="dac")
    assert re.search(r"^dino\s+AP\s+0:-0\.0200\s+-0\.0200\s+n/a \(n=1\)$", one_seed, re.M)


SMOKE = [
    "--arms", "dac", "dino", "--seeds", "2", "--epochs", "1", "--num-train", "4",
    "--num-val", "2", "--threads", "1", "-o", "train_sizes=[64]", "train_max_size=80",
    "eval_size=64", "eval_max_size=80", "TrainReader.batch_size=2",
]  # fmt: skip


def _csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def _numbers(text):
    return [float(v) for v in re.findall(r"[-+]?\d+\.\d+", text)]


@pytest.mark.long  # ~60 s idle; the statistics and report tests above cover its code in make test
def test_smoke_run_table_matches_its_csv(tmp_path, capsys):
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, "benchmarks/dac_vs_baseline.py", *SMOKE, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    fields, rows = _csv(out / "metrics.csv")
    assert fields == ["arm", "seed", "epoch", "AP", "AP50", "AP75", "AR100", "sec_per_step"]
    assert sorted((r["arm"], r["seed"], r["epoch"]) for r in rows) == [
        ("dac", "0", "0"), ("dac", "1", "0"), ("dino", "0", "0"), ("dino", "1", "0"),
    ]  # fmt: skip
    for r in rows:
        assert all(0 <= float(r[m]) <= 1 for m in ("AP", "AP50", "AP75", "AR100"))
        assert float(r["sec_per_step"]) > 0
        log = (out / "runs" / r["arm"] / f"seed{r['seed']}" / "train.log").read_text()
        logged_ap = float(re.search(r"epoch 0: mean loss \S+, box AP (\S+)", log).group(1))
        assert float(r["AP"]) == pytest.approx(logged_ap, abs=5e-5)  # the trainer's own AP

    table = done.stdout[done.stdout.index("final epoch") :]
    by_arm = {a: [r for r in rows if r["arm"] == a] for a in ("dac", "dino")}
    step = {a: mean_sd([float(r["sec_per_step"]) for r in by_arm[a]])[0] for a in by_arm}
    for arm, arm_rows in by_arm.items():
        line = re.search(rf"^{arm}\s+0,1\s+(.*)$", table, re.M).group(1)
        expected = []
        for m in ("AP", "AP50", "AP75", "AR100"):
            expected += mean_sd([float(r[m]) for r in arm_rows])
        printed = _numbers(line)  # 4 decimals, s/step 3, the ratio 2
        assert printed[:8] == pytest.approx(expected, abs=6e-5)
        assert printed[8] == pytest.approx(step[arm], abs=6e-4)
        assert printed[9] == pytest.approx(step[arm] / step["dac"], abs=6e-3)
    for m in ("AP", "AP50"):
        line = re.search(rf"^dino\s+{m}\s+(.*)$", table, re.M).group(1)
        diffs = [
            float(next(r[m] for r in by_arm["dino"] if r["seed"] == s))
            - float(next(r[m] for r in by_arm["dac"] if r["seed"] == s))
            for s in ("0", "1")
        ]
        printed = _numbers(line)
        assert printed[:2] == pytest.approx(diffs, abs=6e-5)
        assert printed[2:5] == pytest.approx(list(t_interval(diffs)), abs=6e-5)

    fields, queries = _csv(out / "queries.csv")
    assert fields == ["arm", "seed", "stream", "iou", "mean_queries_per_object", "num_objects"]
    kinds = sorted({(r["arm"], r["stream"], r["iou"]) for r in queries})
    assert kinds == [(a, s, t) for a, s in (("dac", "c"), ("dac", "o"), ("dino", "o"))
                     for t in ("0.6", "0.7")]  # fmt: skip
    assert len(queries) == 2 * len(kinds)
    for arm, stream, name in (("dac", "o", "O"), ("dac", "c", "C"), ("dino", "o", "O")):
        line = re.search(rf"^{arm}\s+{name}\s+(.*)$", table, re.M).group(1)
        expected = []
        for t in ("0.6", "0.7"):
            values = [
                float(r["mean_queries_per_object"])
                for r in queries
                if (r["arm"], r["stream"], r["iou"]) == (arm, stream, t)
            ]
            expected += mean_sd(values)
        assert _numbers(line) == pytest.approx(expected, abs=6e-4)

    png = out / "ap_vs_epoch.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cv2.imread(str(png)).shape[:2] == (380, 1000)

    # a second run with the same settings reuses every run: the same report, nothing trained
    import dac_vs_baseline

    report = dac_vs_baseline.main([*SMOKE, "--out", str(out)])
    assert "training" not in capsys.readouterr().out
    assert report == table[: table.index("\nwall time")]
