"""tools/train.py (or tools/eval.py) with a fault injected on one rank, for the launcher tests.

    python -m paddle.distributed.launch ... tests/engine/_fault_probe.py FAULT TOOL [tool flags]

TOOL is ``train`` or ``eval``. FAULT is one of

* ``none``;
* ``raise:RANK:ITER``: that rank raises a ValueError when it reaches global iteration ITER;
* ``hold:RANK:ITER``: the same, then the process stays alive for 10 minutes (as a rank whose
  peers would wait in NCCL until its timeout);
* ``kill:RANK:ITER:MARKER``: that rank creates the file MARKER and kills itself with SIGKILL at
  global iteration ITER; nothing happens when MARKER exists, so the same command run again
  completes;
* ``dump:PATH``: no fault; rank 0 writes what the tool's main returned (eval's {metric:
  results}) to PATH as JSON.
"""

import json
import os
import signal
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools"))

fault, tool = sys.argv[1].split(":"), sys.argv[2]
module = __import__(tool)  # tools/train.py or tools/eval.py: imports ppdet_dac first

import paddle.distributed as dist  # noqa: E402
from ppdet_dac.engine.trainer import DACTrainer  # noqa: E402

_check_finite = DACTrainer._check_finite


def check_finite(self, outputs, epoch_id, step_id):
    if (
        fault[0] not in ("none", "dump")
        and dist.get_rank() == int(fault[1])
        and self.global_iter == int(fault[2])
    ):
        if fault[0] in ("raise", "hold"):
            raise ValueError(f"probe: rank {fault[1]} fails at iteration {fault[2]}")
        if fault[0] == "kill" and not os.path.exists(fault[3]):
            open(fault[3], "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
    return _check_finite(self, outputs, epoch_id, step_id)


DACTrainer._check_finite = check_finite
try:
    returned = module.main(sys.argv[3:])
    if fault[0] == "dump" and dist.get_rank() == 0:
        with open(fault[1], "w") as handle:
            json.dump(returned, handle, default=lambda a: a.tolist())
except ValueError:
    if fault[0] != "hold":
        raise
    traceback.print_exc()
    sys.stderr.flush()
    time.sleep(600)
    raise
