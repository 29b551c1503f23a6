"""The tools start without Paddle's and ppdet's known-harmless import notices, and nothing else
is hidden: a thread count the user chose keeps Paddle's warning, other lines pass through."""

import io
import os
import subprocess
import sys

from _common import REPO

from ppdet_dac._notices import _LineFilter, known_patterns

NOTICES = ("No ccache found", "OMP_NUM_THREADS WISELY", "Unable to use numba")
START = "import sys; sys.path.insert(0, 'tools'); import _threads; import ppdet_dac; print('READY')"


def _start(env_threads):
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("PPDET_DAC_SET_THREADS", None)
    env.pop("OMP_NUM_THREADS", None)
    if env_threads:
        env["OMP_NUM_THREADS"] = env_threads
    proc = subprocess.run(
        [sys.executable, "-c", START],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout + proc.stderr


def test_tool_start_is_quiet():
    output = _start(None)
    assert "READY" in output
    assert [n for n in NOTICES if n in output] == []


def test_a_thread_count_the_user_chose_keeps_paddles_warning():
    output = _start("2")  # _threads.py leaves it alone, so the notice is Paddle's to give
    assert "PLEASE USE OMP_NUM_THREADS WISELY" in output
    assert "Unable to use numba" not in output


def test_line_filter_drops_only_whole_matching_lines():
    sink = io.StringIO()
    stream = _LineFilter(sink, known_patterns({"PPDET_DAC_SET_THREADS": "1"}))
    stream.write("keep this\nWARNING: OMP_NUM_THREADS set to 8, not 1. The computation")
    stream.write(" speed ...\nPLEASE USE OMP_NUM_THREADS WISELY.\npartial")
    stream.flush()
    assert sink.getvalue() == "keep this\npartial"
    assert len(known_patterns({})) == 1  # without the marker only the numba notice is dropped


def test_c_level_stderr_lines_are_filtered(capfd):
    """C++ logs reach file descriptor 2 directly: matching lines are dropped, others kept."""
    import re
    from ppdet_dac._notices import c_stderr_dropped

    with c_stderr_dropped([re.compile(r"not support input out tensor")]):
        os.write(
            2,
            b"W1203 eager_utils.cc:3584] Paddle static graph(PIR) not support input out "
            b"tensor for now!!!!!\nE1203 a real error\n",
        )
    assert capfd.readouterr().err == "E1203 a real error\n"


def test_export_prints_only_its_own_log(tmp_path):
    """tools/export_model.py: no PIR tracing notices, no pycocotools prints, no warnings."""
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "export_model.py"),
            "-c",
            os.path.join(REPO, "configs", "demo", "dac_demo.yml"),
            "-o",
            "weights=",
            "label_list=[a,b,c]",
            f"TestDataset.dataset_dir={tmp_path}",
            "--output_dir",
            str(tmp_path / "out"),
        ],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [l for l in (proc.stdout + proc.stderr).splitlines() if l.strip()]
    foreign = [l for l in lines if not l.startswith("[") and not l.startswith("exported to ")]
    assert foreign == []
    assert any("exported DACDETR" in l for l in lines)


def test_flags_banner_of_paddles_own_flag_alone_is_dropped():
    from ppdet_dac._notices import drop_paddle_flags_banner

    head = "======================= Modified FLAGS detected ======================="
    foot = "=" * 71
    own = "FLAGS(name='FLAGS_enable_pir_in_executor', current_value=True, default_value=False)"
    user = "FLAGS(name='FLAGS_use_mkldnn', current_value=False, default_value=True)"
    text = f"before\n{head}\n{own}\n{foot}\nafter\n"
    assert drop_paddle_flags_banner(text) == "before\nafter\n"
    kept = f"{head}\n{own}\n{user}\n{foot}\n"  # a flag the user set: the whole banner stays
    assert drop_paddle_flags_banner(kept) == kept
    assert drop_paddle_flags_banner("no banner\n") == "no banner\n"
