"""tools/train.py under paddle.distributed.launch, recording what each rank computed.

    python -m paddle.distributed.launch --nproc_per_node 2 tests/engine/_dist_probe.py OUT_DIR \\
        -c CONFIG [train.py flags]

Each rank writes OUT_DIR/rank<r>.pdparams (its final parameters) and OUT_DIR/rank<r>.json:
per training step the largest GT count of its own images, the number of denoising groups G and
DN slots it built, the #GT normaliser, the step's local and logged (rank-averaged) total loss, and the epoch's mean
loss.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools"))

import train  # noqa: E402  (tools/train.py: imports ppdet_dac first)

import paddle  # noqa: E402
import paddle.distributed as dist  # noqa: E402
from ppdet_dac.modeling import criterion, transformer  # noqa: E402

from ppdet_dac.engine.trainer import DACTrainer  # noqa: E402

record = {"dn": [], "num_boxes": [], "loss": []}
_build_cdn_queries, _average_num_boxes = transformer.build_cdn_queries, criterion.average_num_boxes


def build_cdn_queries(*args, **kwargs):
    result = _build_cdn_queries(*args, **kwargs)
    meta = result[3]
    record["dn"].append(
        {
            "max_gt": meta["max_gt"],
            "num_dn_group": meta["num_dn_group"],
            "pad_size": meta["pad_size"],
        }
    )
    return result


def average_num_boxes(gt_labels):
    value = _average_num_boxes(gt_labels)
    record["num_boxes"].append(value)
    return value


_check_finite = DACTrainer._check_finite


def check_finite(self, outputs, epoch_id, step_id):
    logged = _check_finite(self, outputs, epoch_id, step_id)
    record["loss"].append({"local": float(outputs["loss"]), "logged": logged["loss"]})
    return logged


transformer.build_cdn_queries = build_cdn_queries
DACTrainer._check_finite = check_finite
criterion.average_num_boxes = average_num_boxes

out_dir = sys.argv[1]
trainer = train.main(sys.argv[2:])
rank = dist.get_rank()
record["epoch_loss"] = [h["loss"] for h in trainer.history]
record["grad_clip"] = type(trainer.optimizer._grad_clip).__name__
paddle.save(trainer.model.state_dict(), os.path.join(out_dir, f"rank{rank}.pdparams"))
with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
    json.dump(record, handle)
