"""Every shipped model config builds and runs one optimizer step on CPU (one small image).

In `make test` the model is the config's own except for its number of queries, cut to 300 so
that a 128 x 128 image is enough (the two-stage encoder proposes queries from its tokens: 16x16 +
8x8 + 4x4 + 2x2 = 340 >= 300): every layer, level, loss and parameter stays as shipped. The
configs exactly as shipped (900 queries, a 256 x 256 image: 1360 tokens) run in `make test-long`.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from _common import REPO

STEP_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import ppdet_dac
    import paddle
    from ppdet.core.workspace import create
    from ppdet_dac.engine import load_checked_config
    paddle.seed(0)
    cfg = load_checked_config(sys.argv[1])
    size, queries = int(sys.argv[2]), int(sys.argv[3])
    cfg['DACTransformer']['num_queries'] = min(cfg['DACTransformer']['num_queries'], queries)
    model = create(cfg.architecture)
    model.train()
    opt = create('OptimizerBuilder')(create('LearningRate')(1), model)
    rng = np.random.default_rng(0)
    batch = {'image': paddle.to_tensor(rng.standard_normal((1, 3, size, size)).astype('float32')),
             'im_shape': paddle.to_tensor([[size, size]], dtype='float32'),
             'scale_factor': paddle.to_tensor([[1.0, 1.0]], dtype='float32'),
             'pad_mask': paddle.ones([1, size, size], dtype='float32'),
             'gt_bbox': [paddle.to_tensor([[0.4, 0.5, 0.3, 0.4], [0.7, 0.3, 0.2, 0.2]],
                                          dtype='float32')],
             'gt_class': [paddle.to_tensor([[0], [5]], dtype='int32')]}
    before = {n: p.numpy().copy() for n, p in model.named_parameters() if not p.stop_gradient}
    losses = model(batch)
    losses['loss'].backward()
    opt.step()
    unchanged = [n for n, p in model.named_parameters()
                 if n in before and np.array_equal(before[n], p.numpy())]
    print('RESULT', json.dumps({'keys': sorted(losses), 'loss': float(losses['loss']),
                                'unchanged': unchanged, 'trainable': len(before)}))
""")

# The *_2x configs build the same models as their 12-epoch bases (their schedules are checked in
# tests/engine/test_optimizer.py), so one step of each base covers them.
CONFIGS = sorted(
    f"configs/{name}"
    for name in os.listdir(os.path.join(REPO, "configs"))
    if name.endswith(".yml") and not name.endswith("_2x.yml")
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "size, queries",
    [
        (128, 300),
        pytest.param(256, 900, marks=pytest.mark.long),  # every config's own query count
    ],
    ids=["128px", "256px-as-shipped"],
)
@pytest.mark.parametrize("config", CONFIGS)
def test_config_runs_a_training_step(config, size, queries):
    proc = subprocess.run(
        [sys.executable, "-c", STEP_SCRIPT, config, str(size), str(queries)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])
    assert result["loss"] > 0 and result["loss"] < 1e4
    terms = [k for k in result["keys"] if k != "loss"]
    # 6 decoder layers with DN: O-decoder 36 + encoder 3, plus the C-decoder's 36 with DAC
    use_dac = "dac_" in os.path.basename(config)
    one_stage = "deformable_detr" in config  # no denoising, no encoder proposals
    assert len(terms) == (36 if one_stage else 75 if use_dac else 39)
    assert all(k.endswith("_one2one") or k.endswith("_enc") or use_dac for k in terms)
    # Every trainable parameter moved except those whose first gradient is zero by the official
    # initialisation: box-head hidden layers (the last layer starts at 0) and level_embed (it
    # only reaches the loss through sampling offsets / attention weights, whose weights start
    # at 0); weight decay alone moves them less than float32 resolves. Swin's stochastic depth
    # drops whole blocks of a step, so Swin blocks may sit out this one step.
    assert result["trainable"] > 100
    for name in result["unchanged"]:
        assert (
            name == "transformer.level_embed"
            or (
                name.startswith(("transformer.box_heads.", "transformer.box_head."))
                and ".layers.2." not in name
            )
            or ("swin" in config and name.startswith("backbone.layers."))
        ), name
