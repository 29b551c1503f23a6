"""The debug switch of the input checks that need tensor values on the host."""

import numpy as np
import paddle
import pytest

from ppdet_dac.modeling.debug_checks import (
    ENV_VAR,
    check_class_ids,
    debug_checks,
    debug_checks_enabled,
)


@pytest.mark.parametrize("value,enabled", [(None, False), ("", False), ("0", False), ("1", True)])
def test_environment_variable(monkeypatch, value, enabled):
    if value is None:
        monkeypatch.delenv(ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(ENV_VAR, value)
    assert debug_checks_enabled() is enabled
    with debug_checks(not enabled):  # a block overrides the variable, and nests
        assert debug_checks_enabled() is (not enabled)
        with debug_checks(enabled):
            assert debug_checks_enabled() is enabled
    assert debug_checks_enabled() is enabled


def test_class_ids_host_always_tensor_with_debug(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    message = r"gt_labels must lie in \[0, 3\), got min -1, max 2"
    with pytest.raises(ValueError, match=message):
        check_class_ids(np.array([2, -1]), 3)
    bad = paddle.to_tensor(np.array([2, -1], dtype="int64"))
    check_class_ids(bad, 3)  # not checked: its values are on the device
    with debug_checks(), pytest.raises(ValueError, match=message):
        check_class_ids(bad, 3)
    with debug_checks():
        check_class_ids(paddle.to_tensor(np.array([0, 2], dtype="int64")), 3)
