"""The CUDA build checks (`make cuda-build`) and the standalone GPU check program
(build/cuda/msda_gpu_check) on a machine without a GPU: its --cpu-reference-only mode (the same
comparison, determinism and report code as the GPU mode, CPU kernels vs a naive float64
reference), a deliberately injected mismatch, the no-GPU message, warnings as build errors, and
the ptxas register/spill summary.

`make test` builds the program first (target cuda-build); run alone, these tests skip when it is
missing, except on CI (CI=true), where a missing build is an error.
"""

import importlib.util
import os
import re
import shutil
import subprocess

import pytest

from _common import REPO

BUILD = os.path.join(REPO, "build", "cuda")
PROGRAM = os.path.join(BUILD, "msda_gpu_check")
NVCC = os.path.join(REPO, ".venv", "cuda", "bin", "nvcc")
OP_DIR = os.path.join(REPO, "custom_ops", "ms_deform_attn")
TENSORS = ("out", "grad_value", "grad_sampling_locations", "grad_attention_weights")
# The cases of msda_gpu_check.cu (make_cases), each in float32 and float64.
CASES = (
    "dac-encoder",
    "dac-decoder",
    "outside-and-borders",
    "h1-w1-levels",
    "one-query-odd-d7",
    "d1",
    "d16",
    "d33-partial-warp",
    "d64",
    "non-finite-locations",
    "contention",
)
ROW = re.compile(r"^(float32|float64)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(ok|MISMATCH)\b")


def _require(path, what):
    if os.path.exists(path):
        return
    message = f"{what} not built ({path}); run `make cuda-build`"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI: {message}")
    pytest.skip(message)


def _run(*args, env=None, timeout=300):
    _require(PROGRAM, "msda_gpu_check")
    return subprocess.run(
        [PROGRAM, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def _rows(stdout):
    """{(dtype, case, tensor): (max_abs, threshold, result)} from the comparison table."""
    rows = {}
    for line in stdout.splitlines():
        match = ROW.match(line)
        if match:
            dtype, case, tensor, max_abs, _, threshold, result = match.groups()
            rows[(dtype, case, tensor)] = (float(max_abs), float(threshold), result)
    return rows


def test_cpu_reference_only_compares_every_tensor_and_passes():
    proc = _run("--cpu-reference-only", "--reduced", "--repeat", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    rows = _rows(proc.stdout)
    expected = {(d, c, t) for d in ("float32", "float64") for c in CASES for t in TENSORS}
    assert set(rows) == expected
    for key, (max_abs, threshold, result) in rows.items():
        assert result == "ok" and max_abs <= threshold, key
    # float64: the CPU kernels agree with the naive float64 transcription to rounding.
    assert max(v[0] for k, v in rows.items() if k[0] == "float64") < 1e-11
    lines = proc.stdout.splitlines()
    assert (
        lines[-1] == f"RESULT: PASS: {len(expected)} comparisons within their thresholds "
        "(CPU kernels vs naive float64 reference)"
    )
    # The CPU kernels are deterministic, and the DAC shapes are timed (forward and backward).
    for dtype in ("float32", "float64"):
        assert f"repeat {dtype}: backward bitwise deterministic in every case (2 runs)" in lines
        for case in ("dac-encoder", "dac-decoder"):
            timed = [l for l in lines if l.startswith(f"  time {dtype} {case} ")]
            assert len(timed) == 1 and re.search(
                r"forward \d+\.\d+ ms, .* backward \d+\.\d+ ms", timed[0]
            ), timed
    # The borders case puts locations exactly on kinks: their location gradient is left out.
    assert re.search(
        r"outside-and-borders +grad_sampling_locations .* ok \(\d+ on kinks left out\)", proc.stdout
    )


def test_injected_mismatch_fails_and_names_the_tensor():
    proc = _run("--cpu-reference-only", "--reduced", "--repeat", "1", "--inject-mismatch")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    rows = _rows(proc.stdout)
    for (dtype, case, tensor), (max_abs, threshold, result) in rows.items():
        if tensor == "grad_sampling_locations":
            assert result == "MISMATCH" and max_abs > threshold, (dtype, case)
        else:
            assert result == "ok", (dtype, case, tensor)
    last = proc.stdout.splitlines()[-1]
    assert last.startswith(f"RESULT: FAIL: {2 * len(CASES)} of {8 * len(CASES)} comparisons")
    assert "float32/dac-encoder/grad_sampling_locations" in last


def test_no_gpu_stops_with_one_line():
    """No visible device (also on a GPU machine: CUDA_VISIBLE_DEVICES is empty) -> exit 2 and
    one line on stderr, nothing on stdout."""
    proc = _run(env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.match(
        r"msda_gpu_check: no usable CUDA GPU: (no CUDA driver found|the driver "
        r"supports CUDA|cudaGetDeviceCount: ).*; nothing was checked",
        lines[0],
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["--bogus"], "unknown argument '--bogus'"),
        (["--repeat", "0"], "--repeat needs a positive integer, got '0'"),
    ],
)
def test_bad_arguments_exit_2(args, message):
    proc = _run(*args)
    assert proc.returncode == 2 and message in proc.stderr


def _make_kernel_object(tmp_path, source_text):
    """`make <tmp>/out/msda_cuda.o` for a copy of the op sources whose msda_cuda.cu is
    `source_text`, with the pip nvcc and one architecture. CompletedProcess."""
    _require(NVCC, "pip nvcc (requirements-cuda-build.txt)")
    src = tmp_path / "src"
    shutil.copytree(OP_DIR, src)
    (src / "msda_cuda.cu").write_text(source_text)
    out = tmp_path / "out"
    # NVCC given explicitly: no install stamps are involved, only the compile rule.
    cmd = [
        "make",
        "--no-print-directory",
        "-C",
        REPO,
        str(out / "msda_cuda.o"),
        f"OP_DIR={src}",
        f"CUDA_OUT={out}",
        f"NVCC={NVCC}",
        "CUDA_ARCHS=75",
        "CUDA_LDFLAGS=",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


def test_kernel_compiles_and_prints_register_summary(tmp_path):
    with open(os.path.join(OP_DIR, "msda_cuda.cu")) as handle:
        proc = _make_kernel_object(tmp_path, handle.read())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = proc.stdout[proc.stdout.index("ptxas: registers") :].splitlines()
    assert summary[1].split() == [
        "arch",
        "forward<float>",
        "forward<double>",
        "backward<float>",
        "backward<double>",
    ]
    assert summary[2].startswith("sm_75 ") and summary[2].count("regs, spill") == 4
    assert len(summary) == 4 and summary[3].startswith("spills: ")


@pytest.mark.parametrize(
    "anchor",
    [
        "int launch_blocks(int64_t items) {",  # host code (host compiler's -Wall)
        "__device__ __forceinline__ T warp_sum(T v) {",  # device code (nvcc's own diagnostics)
    ],
)
def test_a_compiler_warning_fails_the_build(tmp_path, anchor):
    """Warnings are errors: an unused variable in host or device code stops the build."""
    with open(os.path.join(OP_DIR, "msda_cuda.cu")) as handle:
        text = handle.read()
    assert anchor in text
    text = text.replace(anchor, anchor + "\n  int never_used = 3;", 1)
    proc = _make_kernel_object(tmp_path, text)
    assert proc.returncode != 0
    assert "never_used" in proc.stdout + proc.stderr
    assert not (tmp_path / "out" / "msda_cuda.o").exists()


def _ptxas_summary():
    spec = importlib.util.spec_from_file_location(
        "ptxas_summary", os.path.join(OP_DIR, "ptxas_summary.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PTXAS_LOG = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_ZN4msda12_GLOBAL__N_114forward_kernelIfEEvPKT_l' for 'sm_80'
ptxas info    : Function properties for _ZN4msda12_GLOBAL__N_114forward_kernelIfEEvPKT_l
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 56 registers, used 0 barriers, 464 bytes cmem[0]
ptxas info    : Compiling entry function '_ZN4msda12_GLOBAL__N_115backward_kernelIdEEvPKT_l' for 'sm_80'
ptxas info    : Function properties for _ZN4msda12_GLOBAL__N_115backward_kernelIdEEvPKT_l
    8 bytes stack frame, 12 bytes spill stores, 16 bytes spill loads
ptxas info    : Used 255 registers, used 0 barriers, 464 bytes cmem[0]
ptxas info    : Compiling entry function '_ZN4msda12_GLOBAL__N_114forward_kernelIfEEvPKT_l' for 'sm_100'
ptxas info    : Function properties for _ZN4msda12_GLOBAL__N_114forward_kernelIfEEvPKT_l
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 48 registers, used 0 barriers
"""


def test_ptxas_summary_reads_registers_and_spills():
    module = _ptxas_summary()
    table = module.parse(PTXAS_LOG)
    assert table == {
        ("sm_80", "forward<float>"): {"stack": 0, "stores": 0, "loads": 0, "registers": 56},
        ("sm_80", "backward<double>"): {"stack": 8, "stores": 12, "loads": 16, "registers": 255},
        ("sm_100", "forward<float>"): {"stack": 0, "stores": 0, "loads": 0, "registers": 48},
    }
    lines = module.format_table(table)
    assert lines[1].split() == ["arch", "forward<float>", "backward<double>"]
    assert lines[2].split() == [
        "sm_80",
        "56",
        "regs,",
        "spill",
        "0/0",
        "255",
        "regs,",
        "spill",
        "12/16",
    ]
    assert lines[3].split() == ["sm_100", "48", "regs,", "spill", "0/0", "-"]
    assert lines[4] == "spills: sm_80 backward<double>"


def test_ptxas_summary_refuses_a_log_without_kernels(tmp_path, capsys):
    log = tmp_path / "ptxas.log"
    log.write_text("ptxas info    : 0 bytes gmem\n")
    assert _ptxas_summary().main([str(log)]) == 1
    assert f"no ms_deform_attn kernel found in {log}" in capsys.readouterr().err
