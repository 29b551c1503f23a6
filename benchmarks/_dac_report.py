"""Rows, table and plot of ``benchmarks/dac_vs_baseline.py``: the per-epoch metrics of each
(arm, seed) run, the summary over seeds (``_stats``) and the AP-against-epoch plot.

Every number of the table is computed from the rows as they are written to the CSV files
(``format_report`` reads them back as floats), so the table can be recomputed from the CSV."""

import csv
import io
import math
import os

from _stats import mean_sd, paired_differences, t_interval

__all__ = [
    "METRIC_FIELDS",
    "QUERY_FIELDS",
    "metric_rows",
    "query_rows",
    "write_rows",
    "final_rows",
    "format_report",
    "plot_ap",
]

METRIC_FIELDS = ("arm", "seed", "epoch", "AP", "AP50", "AP75", "AR100", "sec_per_step")
QUERY_FIELDS = ("arm", "seed", "stream", "iou", "mean_queries_per_object", "num_objects")
SUMMARY_METRICS = ("AP", "AP50", "AP75", "AR100")
PAIRED_METRICS = ("AP", "AP50")
COCO_INDEX = {"AP": 0, "AP50": 1, "AP75": 2, "AR100": 8}  # in pycocotools' 12 stats
STREAM_NAMES = {"o": "O", "c": "C"}


def metric_rows(arm, seed, history):
    """CSV rows (dicts of METRIC_FIELDS) of one run's trainer history (tools/train.py
    --history): one per evaluated epoch. ValueError when an epoch has no COCO numbers."""
    rows = []
    for record in history:
        stats = record.get("stats")
        if not stats or len(stats) < 12:
            raise ValueError(
                f"{arm} seed {seed}: epoch {record.get('epoch')} has no COCO stats in its "
                f"history ({stats!r}); was it trained with --eval?"
            )
        row = {"arm": arm, "seed": int(seed), "epoch": int(record["epoch"])}
        row.update({name: float(stats[i]) for name, i in COCO_INDEX.items()})
        row["sec_per_step"] = float(record["seconds"]) / int(record["steps"])
        rows.append(row)
    return rows


def query_rows(arm, seed, rows):
    """QUERY_FIELDS rows from the rows of tools/analyze_queries.py's CSV of one run."""
    return [{"arm": arm, "seed": int(seed), **{k: r[k] for k in QUERY_FIELDS[2:]}} for r in rows]


def write_rows(path, fields, rows):
    """Write ``rows`` (dicts) as a CSV file with columns ``fields`` (atomically)."""
    from ppdet_dac.utils.atomic import write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def _by_arm(rows):
    arms = {}
    for row in rows:
        arms.setdefault(row["arm"], []).append(row)
    return arms


def final_rows(rows):
    """{arm: {seed: the row of the run's last epoch}} (values as floats)."""
    out = {}
    for arm, arm_rows in _by_arm(rows).items():
        runs = {}
        for row in arm_rows:
            seed = int(row["seed"])
            if seed not in runs or int(row["epoch"]) > int(runs[seed]["epoch"]):
                runs[seed] = row
        out[arm] = {
            seed: {k: float(v) for k, v in row.items() if k != "arm"} for seed, row in runs.items()
        }
    return out


def _pm(values, digits=4):
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f} +- {sd:.{digits}f}"


def format_report(metrics, queries, reference="dac"):
    """The benchmark's table (a str) from the metric and query rows (dicts of METRIC_FIELDS and
    QUERY_FIELDS, numbers or the CSV's strings)."""
    final = final_rows(metrics)
    if reference not in final:
        raise ValueError(f"no runs of the reference arm {reference!r} (arms: {sorted(final)})")
    arms = [reference] + sorted(a for a in final if a != reference)
    step = {a: mean_sd([float(r["sec_per_step"]) for r in _by_arm(metrics)[a]])[0] for a in arms}
    epochs = sorted({int(r["epoch"]) for runs in final.values() for r in runs.values()})
    lines = [
        f"final epoch {', '.join(map(str, epochs))} (counted from 0); mean +- sd over seeds",
        f"{'arm':<14}{'seeds':<10}"
        + "".join(f"{m:<18}" for m in SUMMARY_METRICS)
        + f"{'s/step':<10}{'vs ' + reference}",
    ]
    for arm in arms:
        runs = final[arm]
        lines.append(
            f"{arm:<14}{','.join(str(s) for s in sorted(runs)):<10}"
            + "".join(f"{_pm([r[m] for r in runs.values()]):<18}" for m in SUMMARY_METRICS)
            + f"{step[arm]:<10.3f}{step[arm] / step[reference]:.2f}x"
        )
    lines += ["", f"paired difference (arm - {reference}) of the final value per seed:"]
    lines.append(f"{'arm':<14}{'metric':<8}{'per seed':<36}{'mean':<10}95 % t interval")
    for arm in arms[1:]:
        for m in PAIRED_METRICS:
            diffs = paired_differences(
                {s: r[m] for s, r in final[arm].items()},
                {s: r[m] for s, r in final[reference].items()},
                what=f"{arm} {m}",
            )
            mean, low, high = t_interval([d for _, d in diffs], what=f"{arm} - {reference} {m}")
            seeds = " ".join(f"{s}:{d:+.4f}" for s, d in diffs)
            interval = "n/a" if math.isnan(low) else f"[{low:+.4f}, {high:+.4f}]"
            lines.append(f"{arm:<14}{m:<8}{seeds:<36}{mean:<+10.4f}{interval} (n={len(diffs)})")
    lines += ["", _query_table(queries, arms)]
    return "\n".join(lines) + "\n"


def _query_table(queries, arms):
    """Mean +- sd over seeds of the queries per val object above each IoU, per arm and stream."""
    ious = sorted({str(r["iou"]) for r in queries}, key=float)
    lines = [
        "query affinity of the final models: queries per val object with IoU > t, "
        "mean +- sd over seeds (O: O-stream; C: C-stream, DAC arms only)",
        f"{'arm':<14}{'stream':<8}" + "".join(f"{'IoU>' + t:<18}" for t in ious),
    ]
    for arm in arms:
        rows = [r for r in queries if r["arm"] == arm]
        for stream in sorted({r["stream"] for r in rows}, key=lambda s: s != "o"):
            cells = []
            for t in ious:
                values = [
                    float(r["mean_queries_per_object"])
                    for r in rows
                    if r["stream"] == stream and str(r["iou"]) == t
                ]
                cells.append(_pm(values, 3) if values else "n/a")
            name = STREAM_NAMES.get(stream, stream)
            lines.append(f"{arm:<14}{name:<8}" + "".join(f"{c:<18}" for c in cells))
    return "\n".join(lines)


def plot_ap(metrics, path):
    """AP and AP50 against epoch: per arm the mean over seeds, the band from the lowest to the
    highest seed. Writes a PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not metrics:
        raise ValueError("no metric rows to plot")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for arm, rows in sorted(_by_arm(metrics).items()):
        epochs = sorted({int(r["epoch"]) for r in rows})
        for ax, m in zip(axes, ("AP", "AP50")):
            per_epoch = [[float(r[m]) for r in rows if int(r["epoch"]) == e] for e in epochs]
            means = [sum(v) / len(v) for v in per_epoch]
            seeds = len({int(r["seed"]) for r in rows})
            (line,) = ax.plot(epochs, means, marker="o", label=f"{arm} ({seeds} seeds)")
            ax.fill_between(
                epochs,
                [min(v) for v in per_epoch],
                [max(v) for v in per_epoch],
                color=line.get_color(),
                alpha=0.2,
            )
    for ax, m in zip(axes, ("AP", "AP50")):
        ax.set_xlabel("epoch (from 0)")
        ax.set_ylabel(f"COCO {m} (val)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("mean over seeds; band: lowest to highest seed")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    from ppdet_dac.utils.atomic import write_with

    write_with(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
