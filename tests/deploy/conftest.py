"""The session's exported demo model (both attention modes), shared by the deploy tests."""

import pytest

from _deploy_helpers import Exported, global_config_restored


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    from ppdet_dac import ops

    if not ops.op_available():
        pytest.skip(
            "the ms_deform_attn op library is not built (pip install --no-build-isolation -e .)"
        )
    return Exported(str(tmp_path_factory.mktemp("deploy")))


@pytest.fixture
def restore_global_config():
    """``global_config_restored`` around one test."""
    with global_config_restored():
        yield
