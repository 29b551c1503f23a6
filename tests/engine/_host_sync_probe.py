"""Counts the device-to-host copies of each training step of a DACTrainer run.

    python tests/engine/_host_sync_probe.py CONFIG OUT_JSON

Every Tensor method that hands tensor values to Python (``COPYING``) is wrapped; a call made
between ``on_step_begin`` and ``on_step_end`` of a training step is recorded with the module that
made it (the first ppdet_dac frame on the stack) and the number of values copied (nested calls,
e.g. ``tolist`` calling ``numpy``, count once). OUT_JSON gets, per step, those copies, the GT
count of each image, and the number of steps whose loss terms TrainingStats holds at the end of
the step; plus the config values the expected count follows from.
"""

import json
import os
import sys
import traceback

import paddle

paddle.set_device("cpu")

import ppdet_dac  # noqa: E402,F401  (registers the classes)
from ppdet.core.workspace import load_config  # noqa: E402
from ppdet.engine.callbacks import ComposeCallback  # noqa: E402

from ppdet_dac.engine import DACTrainer  # noqa: E402
from ppdet_dac.modeling.detector import DACDETR  # noqa: E402

COPYING = (
    "numpy",
    "item",
    "tolist",
    "__float__",
    "__int__",
    "__bool__",
    "__nonzero__",
    "__index__",
    "__array__",
    "__complex__",
    "__format__",
)
PACKAGE = os.path.dirname(os.path.abspath(ppdet_dac.__file__))

steps = []
state = {"in_step": False, "depth": 0}


def _caller():
    """'modeling/matcher.py'-style name of the innermost ppdet_dac frame, else the file."""
    frames = traceback.extract_stack()[:-2]
    for frame in reversed(frames):
        path = os.path.abspath(frame.filename)
        if path.startswith(PACKAGE + os.sep):
            return os.path.relpath(path, PACKAGE).replace(os.sep, "/")
    return os.path.basename(frames[-1].filename)


def _wrap(name):
    original = getattr(paddle.Tensor, name)

    def counted(self, *args, **kwargs):
        if state["in_step"] and state["depth"] == 0:
            steps[-1]["copies"].append({"method": name, "by": _caller(), "size": int(self.size)})
        state["depth"] += 1
        try:
            return original(self, *args, **kwargs)
        finally:
            state["depth"] -= 1

    setattr(paddle.Tensor, name, counted)


def _record_steps():
    begin, end = ComposeCallback.on_step_begin, ComposeCallback.on_step_end

    def on_step_begin(self, status):
        steps.append({"copies": [], "gt_per_image": [], "logged_steps": None})
        state["in_step"] = True
        return begin(self, status)

    def on_step_end(self, status):
        state["in_step"] = False
        meters = status["training_staus"].meters
        steps[-1]["logged_steps"] = meters["loss"].count if meters else 0
        return end(self, status)

    ComposeCallback.on_step_begin, ComposeCallback.on_step_end = on_step_begin, on_step_end
    targets = DACDETR.targets

    def recorded_targets(self):
        labels, boxes = targets(self)
        steps[-1]["gt_per_image"] = [int(label.shape[0]) for label in labels]
        return labels, boxes

    DACDETR.targets = recorded_targets


def main(config, out_path):
    cfg = load_config(config)
    trainer = DACTrainer(cfg, mode="train")
    trainer.set_seed(0)
    for name in COPYING:
        _wrap(name)
    _record_steps()
    trainer._end_epoch = lambda *args: None  # no checkpoint: the steps are all that counts
    trainer.train()
    model = trainer.model
    result = {
        "steps": steps,
        "log_iter": int(cfg.log_iter),
        "batch_size": int(cfg.TrainReader["batch_size"]),
        "num_decoder_layers": int(cfg.DACTransformer["num_decoder_layers"]),
        "use_dac": bool(cfg.use_dac),
        "two_stage": bool(model.transformer.two_stage),
    }
    with open(out_path, "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(*sys.argv[1:])
