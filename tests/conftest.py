"""Shared fixtures: a tiny DAC-DETR on CPU built directly from its classes (no global config)."""

import os

import paddle
import pytest

import ppdet_dac  # noqa: F401  (registers classes before any config is loaded)

paddle.set_device("cpu")

from _common import REPO, build_tiny_detector, make_batch  # noqa: E402,F401


@pytest.fixture
def tiny_detector():
    return build_tiny_detector


def _capture(caplog, names):
    """Add caplog's handler to the loggers ``names`` (ppdet loggers do not propagate to root);
    a generator for a fixture: yields caplog, then removes the handler."""
    import logging

    loggers = [logging.getLogger(n) for n in names]
    for lg in loggers:
        lg.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    yield caplog
    for lg in loggers:
        lg.removeHandler(caplog.handler)


@pytest.fixture
def dataset_log(caplog):
    """Capture records of ppdet_dac's data loggers."""
    names = [
        "ppdet_dac.data.dataset",
        "ppdet_dac.data.decode_errors",
        "ppdet_dac.data.annotations",
        "ppdet_dac.data.transforms",
        "ppdet_dac.data.demo_data",
        "ppdet_dac.data.label_map",
    ]
    yield from _capture(caplog, names)


@pytest.fixture
def slicing_log(caplog):
    """Capture records of ppdet_dac.deploy.slicing (the big-image hint)."""
    yield from _capture(caplog, ["ppdet_dac.deploy.slicing"])


def pytest_sessionstart(session):
    """`make setup` builds the attention op; on CI a missing op is an error, not a skip."""
    from ppdet_dac import ops

    if os.environ.get("CI") == "true" and not ops.op_available():
        from ppdet_dac.ops import _library

        raise RuntimeError(f"CI: the ms_deform_attn op is not available: {_library.load_error()}")
