"""GPU architectures the CUDA kernels are built for by setup.py (standard library only).

Paddle's ``CUDAExtension`` passes no ``-gencode`` of its own unless ``PADDLE_CUDA_ARCH_LIST`` is
set, so nvcc would use its default architecture: sm_52 for CUDA 11 / 12, where ``atomicAdd`` on
double (the float64 backward) does not exist, and the build fails. setup.py therefore asks the
nvcc it builds with which architectures it knows (``nvcc --list-gpu-arch``) and builds for those
of ``PROJECT_ARCHS`` (Volta to Blackwell), plus PTX of the newest for later GPUs. CUDA 13 knows
sm_75 and newer, so a V100 (sm_70) needs a CUDA 11.x / 12.x toolkit.
"""

import re
import subprocess

PROJECT_ARCHS = (70, 75, 80, 86, 89, 90, 100, 120)


def parse_arch_list(text):
    """Architecture numbers in ``nvcc --list-gpu-arch`` output ("compute_75" lines -> 75)."""
    return sorted({int(m) for m in re.findall(r"^compute_(\d+)$", text, flags=re.MULTILINE)})


def gencode_flags(known, source="nvcc"):
    """nvcc -gencode flags for PROJECT_ARCHS that nvcc knows, plus PTX of the newest one.

    ``known``: architecture numbers nvcc accepts; ``source`` names that nvcc in the error raised
    when none of PROJECT_ARCHS is among them.
    """
    archs = [a for a in PROJECT_ARCHS if a in set(known)]
    if not archs:
        raise RuntimeError(
            f"{source} supports none of the architectures this project builds for "
            f"(sm_{', sm_'.join(map(str, PROJECT_ARCHS))}); it lists "
            f"{sorted(known)}"
        )
    flags = []
    for arch in archs:
        flags += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    return flags + ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]


def nvcc_gencode(nvcc):
    """gencode_flags for the architectures the nvcc at path ``nvcc`` lists."""
    try:
        listed = subprocess.run(
            [nvcc, "--list-gpu-arch"], capture_output=True, text=True, check=True, timeout=120
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(
            f"cannot ask {nvcc} for its GPU architectures ({exc}); set CUDA_HOME "
            "to a CUDA toolkit, or PADDLE_CUDA_ARCH_LIST (e.g. '8.0 9.0')"
        ) from exc
    return gencode_flags(parse_arch_list(listed), source=nvcc)
