"""custom_ops/ms_deform_attn/cuda_archs.py: the -gencode flags setup.py gives nvcc when Paddle
has CUDA (nvcc's own default, sm_52 for CUDA 11/12, cannot build the float64 backward)."""

import importlib.util
import os
import re

import pytest

from _common import REPO

OP_DIR = os.path.join(REPO, "custom_ops", "ms_deform_attn")
NVCC = os.path.join(REPO, ".venv", "cuda", "bin", "nvcc")


def _archs():
    spec = importlib.util.spec_from_file_location(
        "cuda_archs", os.path.join(OP_DIR, "cuda_archs.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CUDA_12_6_LIST = (
    "\n".join(f"compute_{a}" for a in (50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90))
    + "\n"
)


def test_cuda_12_list_builds_volta_to_hopper_with_hopper_ptx():
    archs = _archs()
    assert archs.parse_arch_list(CUDA_12_6_LIST + "compute_90a\n")[-1] == 90
    flags = archs.gencode_flags(archs.parse_arch_list(CUDA_12_6_LIST))
    pairs = [flags[i + 1] for i in range(0, len(flags), 2)]
    assert set(flags[0::2]) == {"-gencode"}
    assert pairs == [f"arch=compute_{a},code=sm_{a}" for a in (70, 75, 80, 86, 89, 90)] + [
        "arch=compute_90,code=compute_90"
    ]


def test_no_project_arch_is_a_clear_error():
    with pytest.raises(
        RuntimeError,
        match=r"old/nvcc supports none of the architectures this "
        r"project builds for \(sm_70, sm_75.*it lists \[50, 52\]",
    ):
        _archs().gencode_flags([50, 52], source="old/nvcc")


def test_pip_nvcc_matches_the_makefile_archs():
    """The CUDA 13 nvcc of requirements-cuda-build.txt knows sm_75+ (not sm_70): setup.py would
    build for exactly the architectures `make cuda-build` compiles by default."""
    if not os.path.exists(NVCC):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI: {NVCC} missing (make cuda-build installs it)")
        pytest.skip(f"{NVCC} not installed; run `make cuda-build`")
    flags = _archs().nvcc_gencode(NVCC)
    sms = [int(m) for m in re.findall(r"code=sm_(\d+)", " ".join(flags))]
    with open(os.path.join(REPO, "Makefile")) as handle:
        default = re.search(r"^CUDA_ARCHS\s*\?=\s*(.+)$", handle.read(), re.MULTILINE).group(1)
    assert sms == [int(a) for a in default.split()]
    assert sms[0] == 75 and flags[-1] == f"arch=compute_{sms[-1]},code=compute_{sms[-1]}"


def test_missing_nvcc_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="cannot ask .*nvcc for its GPU architectures"):
        _archs().nvcc_gencode(str(tmp_path / "nvcc"))
