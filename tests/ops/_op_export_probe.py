"""Run exported models with Paddle Inference in a fresh process (used by test_op_export.py).

    python _op_export_probe.py OUT.npz [--register] PREFIX INPUTS.npz [[--register] PREFIX ...]

Each PREFIX (``PREFIX.json`` + ``PREFIX.pdiparams``) runs on the arrays of INPUTS.npz, stored as
``<run>/<input name>`` for runs 0, 1, ...; outputs go to OUT.npz as ``<PREFIX basename>/<run>``.
``--register`` registers the ms_deform_attn op library (``ppdet_dac.ops.register_op_library()``)
before that model's predictor is created; models listed before it run in a process without the op.
"""

import os
import sys

import numpy as np
import paddle.inference as paddle_infer


def run_model(prefix, inputs):
    """{run: first output} of a predictor for ``prefix`` fed each run of ``inputs`` by name."""
    config = paddle_infer.Config(prefix + ".json", prefix + ".pdiparams")
    config.disable_gpu()
    config.disable_glog_info()
    predictor = paddle_infer.create_predictor(config)  # no enable_memory_optim (breaks on 3.3.1)
    runs = sorted({key.split("/")[0] for key in inputs.files}, key=int)
    outputs = {}
    for run in runs:
        for name in predictor.get_input_names():
            predictor.get_input_handle(name).copy_from_cpu(inputs[f"{run}/{name}"])
        predictor.run()
        out_name = predictor.get_output_names()[0]
        outputs[run] = predictor.get_output_handle(out_name).copy_to_cpu()
    return outputs


def main(argv):
    out_path, rest = argv[0], list(argv[1:])
    results = {}
    while rest:
        if rest[0] == "--register":
            rest.pop(0)
            from ppdet_dac.ops import register_op_library

            print("registered", register_op_library(), flush=True)
        prefix, inputs_path = rest.pop(0), rest.pop(0)
        with np.load(inputs_path) as inputs:
            for run, out in run_model(prefix, inputs).items():
                results[f"{os.path.basename(prefix)}/{run}"] = out
    np.savez(out_path, **results)


if __name__ == "__main__":
    main(sys.argv[1:])
