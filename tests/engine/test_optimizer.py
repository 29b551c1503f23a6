"""The optimiser and schedule a config builds: spec §4.1's groups, lrs, decay, clip and drop."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from _engine_helpers import REPO

PROBE = textwrap.dedent("""
    import json, sys
    import ppdet_dac
    import paddle
    from ppdet.core.workspace import create
    from ppdet_dac.engine import load_checked_config
    cfg = load_checked_config(sys.argv[1])
    model = create(cfg.architecture)
    steps = 10
    lr = create('LearningRate')(steps)
    opt = create('OptimizerBuilder')(lr, model)
    groups = {}
    for name, p in model.named_parameters():
        if p.stop_gradient:
            continue
        mult = float(p.optimize_attr['learning_rate'])
        kind = ('backbone' if name.startswith('backbone.') else
                'sampling_offsets' if 'sampling_offsets' in name else 'other')
        groups.setdefault(kind, set()).add(mult)
    in_opt = {id(p) for p in opt._parameter_list}
    trainable = [p for p in model.parameters() if not p.stop_gradient]
    lrs = []
    for step in range(cfg.epoch * steps):
        lrs.append(opt.get_lr())
        lr.step()
    print('RESULT', json.dumps({
        'groups': {k: sorted(v) for k, v in groups.items()},
        'all_trainable_in_optimizer': all(id(p) in in_opt for p in trainable),
        'optimizer': type(opt).__name__, 'weight_decay': float(opt._weight_decay),
        'apply_decay_param_fun': opt._apply_decay_param_fun is not None,
        'clip': type(opt._grad_clip).__name__, 'clip_norm': float(opt._grad_clip.clip_norm),
        'base_lr': lrs[0], 'lrs': lrs, 'epochs': cfg.epoch}))
""")


def _probe(config):
    proc = subprocess.run([sys.executable, "-c", PROBE, config], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.mark.parametrize("config,epochs,drop_epoch", [
    ("configs/dac_cdn_ice_r50.yml", 12, 11),
    ("configs/dac_cdn_r50_2x.yml", 24, 20),
])
def test_official_optimizer_and_schedule(config, epochs, drop_epoch):
    r = _probe(config)
    assert r["optimizer"] == "AdamW" and r["all_trainable_in_optimizer"]
    # backbone convs and sampling offsets at 0.1x (2e-5), everything else at 2e-4
    assert r["groups"] == {"backbone": [0.1], "sampling_offsets": [0.1], "other": [1.0]}
    assert r["base_lr"] == pytest.approx(2e-4)
    # weight decay 1e-4 on every parameter (no exclusion function), global-norm clip 0.1
    assert r["weight_decay"] == pytest.approx(1e-4) and not r["apply_decay_param_fun"]
    assert r["clip"] == "ClipGradByGlobalNorm" and r["clip_norm"] == pytest.approx(0.1)
    # x0.1 from the first iteration of epoch `drop_epoch` (10 iterations per epoch), no warm-up
    assert r["epochs"] == epochs
    lrs = r["lrs"]
    assert lrs[:drop_epoch * 10] == pytest.approx([2e-4] * (drop_epoch * 10))
    assert lrs[drop_epoch * 10:] == pytest.approx([2e-5] * ((epochs - drop_epoch) * 10))
