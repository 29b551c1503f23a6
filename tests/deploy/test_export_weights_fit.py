"""tools/export_model.py's weights must fit the config's model: no half-random export."""

import os

import numpy as np
import paddle
import pytest

from _deploy_helpers import DEMO_CONFIG


@pytest.fixture
def demo_cfg(restore_global_config):
    from ppdet_dac.engine import load_checked_config

    return load_checked_config(DEMO_CONFIG)


def test_export_refuses_weights_missing_or_misshaped_tensors(demo_cfg, tmp_path):
    from ppdet_dac.deploy.export import build_model, export_model

    state = {k: v.numpy() for k, v in build_model(demo_cfg, None).state_dict().items()}
    names = sorted(state)
    dropped, reshaped = names[0], names[-1]
    del state[dropped]
    state[reshaped] = np.zeros(state[reshaped].shape + (2,), state[reshaped].dtype)
    weights = str(tmp_path / "bad.pdparams")
    paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, weights)
    out = tmp_path / "exported"
    with pytest.raises(ValueError) as info:
        export_model(demo_cfg, weights, str(out), attention="reference")
    message = str(info.value)
    assert message.startswith(
        f"{weights}: the weights do not fit the model (another config?): "
        f"{len(names) - 2} of {len(names)} model tensors found with their "
        f"shape; missing 1 ({dropped}); other shape 1 ({reshaped}: file "
    )
    assert not out.exists()


def test_export_names_an_optimizer_state_given_as_weights(demo_cfg, tmp_path):
    from ppdet_dac.deploy.export import export_model

    weights = tmp_path / "model_final.pdopt"
    weights.write_bytes(b"not read")  # refused by its suffix before reading
    with pytest.raises(ValueError) as info:
        export_model(demo_cfg, str(weights), str(tmp_path / "exported"), attention="reference")
    assert str(info.value) == (
        f"{weights} is an optimizer state (.pdopt), not model weights; "
        f"use {tmp_path / 'model_final'}.pdparams"
    )
    assert not os.path.exists(tmp_path / "exported")
