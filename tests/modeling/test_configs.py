"""Every shipped R50 config builds the official model size; bad configs fail with one clear error."""

import os
import subprocess
import sys
import textwrap

import pytest

from _common import REPO

COUNT_SCRIPT = textwrap.dedent("""
    import sys
    import ppdet_dac
    from ppdet.core.workspace import create
    from ppdet_dac.engine import load_checked_config
    cfg = load_checked_config(sys.argv[1], {k: v for k, v in (a.split('=') for a in sys.argv[2:])})
    model = create(cfg.architecture)
    print('TRAINABLE', sum(int(p.size) for p in model.parameters() if not p.stop_gradient))
""")


def _run(args):
    return subprocess.run(
        [sys.executable, "-c", COUNT_SCRIPT] + args,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "config", ["configs/dac_cdn_ice_r50.yml", "configs/dac_cdn_r50.yml", "configs/dino_cdn_r50.yml"]
)
def test_r50_configs_have_official_parameter_count(config):
    result = _run([config])
    assert result.returncode == 0, result.stderr[-2000:]
    counts = [line for line in result.stdout.splitlines() if line.startswith("TRAINABLE")]
    assert counts == ["TRAINABLE 47516825"]


def test_unknown_key_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        f"_BASE_: ['{os.path.join(REPO, 'configs/dac_cdn_ice_r50.yml')}']\n"
        "DACTransformer:\n  num_querys: 300\n"
    )
    result = _run([str(bad)])
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError")
    assert "num_querys" in last and "DACTransformer" in last and str(bad) in last
