"""tools/train.py under paddle.distributed.launch, recording what each rank computed.

    python -m paddle.distributed.launch --nproc_per_node 2 tests/engine/_dist_probe.py OUT_DIR \\
        -c CONFIG [train.py flags]

Each rank writes OUT_DIR/rank<r>.pdparams (its final parameters) and OUT_DIR/rank<r>.json:
per training step the local and the agreed largest GT count of the denoising groups, and the
#GT normaliser.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools"))

import train  # noqa: E402  (tools/train.py: imports ppdet_dac first)

import paddle  # noqa: E402
import paddle.distributed as dist  # noqa: E402
from ppdet_dac.modeling import criterion, denoising  # noqa: E402

record = {"max_gt": [], "num_boxes": []}
_max_over_ranks, _average_num_boxes = denoising._max_over_ranks, criterion.average_num_boxes


def max_over_ranks(value):
    agreed = _max_over_ranks(value)
    record["max_gt"].append([value, agreed])
    return agreed


def average_num_boxes(gt_labels):
    value = _average_num_boxes(gt_labels)
    record["num_boxes"].append(value)
    return value


denoising._max_over_ranks = max_over_ranks
criterion.average_num_boxes = average_num_boxes

out_dir = sys.argv[1]
trainer = train.main(sys.argv[2:])
rank = dist.get_rank()
paddle.save(trainer.model.state_dict(), os.path.join(out_dir, f"rank{rank}.pdparams"))
with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
    json.dump(record, handle)
