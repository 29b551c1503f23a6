"""The session's exported demo model (both attention modes), shared by the deploy tests."""
import pytest

from _deploy_helpers import Exported


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    from ppdet_dac import ops
    if not ops.op_available():
        pytest.skip("the ms_deform_attn op library is not built "
                    "(pip install --no-build-isolation -e .)")
    return Exported(str(tmp_path_factory.mktemp("deploy")))


@pytest.fixture
def restore_global_config():
    """ppdet keeps one global config that every load_config merges into: a test that loads
    another config (or -o options) gets it restored afterwards, so the session's export and
    later tests see the demo config again."""
    import copy

    from ppdet.core import workspace

    def snapshot(value):  # plain sections in depth; registered class schemas one level deep
        if type(value) in (dict, list):
            return copy.deepcopy(value)
        return copy.copy(value)

    saved = {key: snapshot(value) for key, value in workspace.global_config.items()}
    yield
    workspace.global_config.clear()
    workspace.global_config.update(saved)
