"""The optimiser and schedule a config builds: the official lrs, decay, clip and drop
(docs/algorithm.md#9-optimiser-and-schedule); one parameter group and one gradient clip over
all parameters, as ``clip_grad_norm_`` officially."""

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
    from ppdet_dac.engine.optimizer import use_official_clip
    steps = 10
    lr = create('LearningRate')(steps)
    opt = use_official_clip(create('OptimizerBuilder')(lr, model))   # as DACTrainer does
    groups = {}
    for name, p in model.named_parameters():
        if p.stop_gradient:
            continue
        mult = float(p.optimize_attr['learning_rate'])
        kind = ('backbone' if name.startswith('backbone.') else
                'sampling_offsets' if 'sampling_offsets' in name else
                'reference_points' if 'reference_points' in name else 'other')
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
        'single_group': not isinstance(opt._param_groups[0], dict),
        'clip': type(opt._grad_clip).__name__, 'clip_norm': float(opt._grad_clip.clip_norm),
        'base_lr': lrs[0], 'lrs': lrs, 'epochs': cfg.epoch}))
""")


def _probe(config):
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, config],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


@pytest.mark.parametrize(
    "config,epochs,drop_epoch,groups",
    [
        ("configs/dac_cdn_ice_r50.yml", 12, 11, {"backbone": [0.1], "sampling_offsets": [0.1]}),
        ("configs/dac_cdn_r50_2x.yml", 24, 20, {"backbone": [0.1], "sampling_offsets": [0.1]}),
        (
            "configs/dac_cdn_ice_swin_l_2x.yml",
            24,
            20,
            {"backbone": [0.1], "sampling_offsets": [0.1]},
        ),
        # one-stage: the learned reference points also learn at 0.1x (official lr_linear_proj_names)
        (
            "configs/dac_deformable_detr_r50.yml",
            12,
            11,
            {"backbone": [0.1], "sampling_offsets": [0.1], "reference_points": [0.1]},
        ),
    ],
)
def test_official_optimizer_and_schedule(config, epochs, drop_epoch, groups):
    r = _probe(config)
    assert r["optimizer"] == "AdamW" and r["all_trainable_in_optimizer"] and r["single_group"]
    # backbone and sampling offsets (and reference points) at 0.1x (2e-5), everything else 2e-4
    assert r["groups"] == dict(groups, other=[1.0])
    assert r["base_lr"] == pytest.approx(2e-4)
    # weight decay on every parameter (no exclusion function): 1e-4, 0.05 for Swin-L 24 epochs
    wd = 0.05 if "swin_l_2x" in config else 1e-4
    assert r["weight_decay"] == pytest.approx(wd) and not r["apply_decay_param_fun"]
    assert r["clip"] == "GlobalNormClip" and r["clip_norm"] == pytest.approx(0.1)
    # x0.1 from the first iteration of epoch `drop_epoch` (10 iterations per epoch), no warm-up
    assert r["epochs"] == epochs
    lrs = r["lrs"]
    assert lrs[: drop_epoch * 10] == pytest.approx([2e-4] * (drop_epoch * 10))
    assert lrs[drop_epoch * 10 :] == pytest.approx([2e-5] * ((epochs - drop_epoch) * 10))


# One AdamW step with known gradients g = r (the gradient of sum(p * r)): the optimizer's first
# moment is (1 - beta1) * clipped g, so m1 / (0.1 * r) is the clip factor each parameter got;
# Adam's first update is lr_p * g / (|g| + eps) ~ lr_p * sign(g), which shows each lr.
CLIP_PROBE = textwrap.dedent("""
    import json, sys
    import numpy as np
    import ppdet_dac
    import paddle
    from ppdet.core.workspace import create
    from ppdet_dac.engine import load_checked_config
    from ppdet_dac.engine.optimizer import use_official_clip
    paddle.seed(0)
    cfg = load_checked_config(sys.argv[1])
    model = create(cfg.architecture)
    opt = use_official_clip(create('OptimizerBuilder')(create('LearningRate')(1), model))
    rng = np.random.default_rng(0)
    params = [(n, p) for n, p in model.named_parameters() if not p.stop_gradient]
    square_sum, loss, checked = 0.0, 0.0, {}
    for i, (name, p) in enumerate(params):
        r = (rng.uniform(0.5, 1.0, p.shape) * rng.choice([-1.0, 1.0], p.shape)).astype('float32')
        square_sum += float((r.astype('float64') ** 2).sum())
        loss = loss + (p * paddle.to_tensor(r)).sum()
        kind = ('backbone' if name.startswith('backbone.') else
                'sampling_offsets' if 'sampling_offsets' in name else 'other')
        if i % 7 == 0 or kind not in [k for k, *_ in checked.values()]:
            checked[name] = (kind, r.reshape(-1)[:2000], p.numpy().reshape(-1)[:2000].copy())
    loss.backward()
    opt.step()
    out = {'norm': square_sum ** 0.5, 'params': {}}
    m1 = opt._accumulators['moment1']
    for name, p in params:
        if name not in checked:
            continue
        kind, r, before = checked[name]
        moment = m1[p.name].numpy().reshape(-1)[:2000]
        factor = moment / (0.1 * r)
        lr = 2e-4 * float(p.optimize_attr['learning_rate'])
        decayed = before * (1 - lr * float(opt._weight_decay))
        step = (p.numpy().reshape(-1)[:2000] - decayed) * -np.sign(r)
        out['params'][name] = {'kind': kind, 'factor': [float(factor.min()), float(factor.max())],
                               'step': [float(step.min()), float(step.max())]}
    print('RESULT', json.dumps(out))
""")


@pytest.mark.slow
@pytest.mark.parametrize("config", ["configs/dac_cdn_r50.yml", "configs/dac_cdn_swin_l.yml"])
def test_one_clip_factor_from_the_norm_of_all_gradients(config):
    proc = subprocess.run(
        [sys.executable, "-c", CLIP_PROBE, config],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])
    # the official clip_grad_norm_(model.parameters(), 0.1): one factor for every parameter
    factor = 0.1 / (r["norm"] + 1e-6)
    assert r["norm"] > 1e3  # far above 0.1: the clip is active
    kinds = {p["kind"] for p in r["params"].values()}
    assert kinds == {"backbone", "sampling_offsets", "other"}
    for name, p in r["params"].items():
        assert p["factor"] == pytest.approx([factor, factor], rel=1e-4), name
        # first Adam step: lr_p * sign(g) (eps = 1e-8 is small next to the clipped |g|)
        lr = 2e-5 if p["kind"] in ("backbone", "sampling_offsets") else 2e-4
        assert p["step"] == pytest.approx([lr, lr], rel=2e-2), name


def test_global_norm_clip_is_torchs_clip_grad_norm():
    """factor = min(1, max_norm / (||g|| + 1e-6)) over all clipped gradients; need_clip=False
    gradients are neither counted nor scaled."""
    import numpy as np
    import paddle
    from ppdet_dac.engine.optimizer import GlobalNormClip

    def pair(values, need_clip=True):
        p = paddle.create_parameter([len(values)], "float32")
        p.need_clip = need_clip
        return p, paddle.to_tensor(np.asarray(values, dtype="float32"))

    grads = [pair([3.0, 0.0]), pair([0.0, 4.0]), pair([100.0, 100.0], need_clip=False)]
    clipped = GlobalNormClip(0.1)(grads)
    factor = 0.1 / (5.0 + 1e-6)  # ||(3, 4)|| = 5
    np.testing.assert_allclose(clipped[0][1].numpy(), [3 * factor, 0.0], rtol=1e-6)
    np.testing.assert_allclose(clipped[1][1].numpy(), [0.0, 4 * factor], rtol=1e-6)
    np.testing.assert_array_equal(clipped[2][1].numpy(), [100.0, 100.0])
    small = GlobalNormClip(10.0)(grads[:2])  # norm below max_norm: factor 1
    np.testing.assert_array_equal(small[0][1].numpy(), [3.0, 0.0])


def test_parameter_groups_are_refused():
    import paddle
    from ppdet_dac.engine.optimizer import use_official_clip

    a, b = paddle.nn.Linear(2, 2), paddle.nn.Linear(2, 2)
    opt = paddle.optimizer.AdamW(
        parameters=[{"params": a.parameters(), "learning_rate": 0.1}, {"params": b.parameters()}],
        grad_clip=paddle.nn.ClipGradByGlobalNorm(0.1),
    )
    with pytest.raises(
        ValueError,
        match=r"cfg\.yml: OptimizerBuilder\.optimizer\.param_groups: "
        r"Paddle clips .* \(2 groups\)",
    ):
        use_official_clip(opt, "cfg.yml: OptimizerBuilder")
