"""Install ppdet_dac (and, from custom_ops/, its multi-scale deformable attention op).

Install with ``pip install --no-build-isolation -e .``: the op build needs the installed Paddle.

The op library is built into the package as ``ppdet_dac/ops/_ms_deform_attn_op.so`` (a Paddle
custom-op library, not a Python extension module; ``ppdet_dac.ops`` registers it with Paddle).
``CppExtension`` (CPU kernels) when Paddle has no CUDA, ``CUDAExtension`` (CPU + CUDA kernels)
when it has (for the GPU architectures of custom_ops/ms_deform_attn/cuda_archs.py that the
toolkit's nvcc knows, or those of ``PADDLE_CUDA_ARCH_LIST``). Set ``PPDET_DAC_SKIP_OP=1`` to
install the pure-Python package only (the model then uses the grid_sample reference).
"""

import os

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext as setuptools_build_ext

OP_DIR = os.path.join("custom_ops", "ms_deform_attn")
OP_MODULE = "ppdet_dac.ops._ms_deform_attn_op"
CPU_SOURCES = ["ms_deform_attn_op.cc", "msda_cpu.cc", "msda_cpu_avx2.cc"]
CUDA_SOURCES = ["msda_cuda.cu"]


def _gencode():
    """nvcc -gencode flags (custom_ops/ms_deform_attn/cuda_archs.py); none when
    PADDLE_CUDA_ARCH_LIST is set, as Paddle then adds one per listed architecture itself."""
    if os.environ.get("PADDLE_CUDA_ARCH_LIST"):
        return []
    import importlib.util
    from paddle.utils.cpp_extension.extension_utils import find_cuda_home

    spec = importlib.util.spec_from_file_location(
        "cuda_archs", os.path.join(OP_DIR, "cuda_archs.py")
    )
    archs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(archs)
    cuda_home = find_cuda_home()
    if cuda_home is None:
        raise RuntimeError(
            "Paddle has CUDA but no CUDA toolkit was found to build the op: set "
            "CUDA_HOME (nvcc in $CUDA_HOME/bin)"
        )
    return archs.nvcc_gencode(os.path.join(cuda_home, "bin", "nvcc"))


def _op_build():
    """(ext_modules, cmdclass) for the op, or empty ones when PPDET_DAC_SKIP_OP=1."""
    if os.environ.get("PPDET_DAC_SKIP_OP", "0") == "1":
        return [], {}
    try:
        import paddle
        from paddle.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except ImportError as exc:
        raise RuntimeError(
            "building the ms_deform_attn op needs the installed Paddle: install requirements.txt "
            "first and use `pip install --no-build-isolation -e .` (or set PPDET_DAC_SKIP_OP=1)"
        ) from exc

    class BuildOp(BuildExtension):
        """Paddle's BuildExtension without its generated Python stub and `_pd_` renaming: the
        library keeps its name inside the package, in editable and regular installs alike."""

        def run(self):
            setuptools_build_ext.run(self)

    with_cuda = paddle.device.is_compiled_with_cuda()
    sources = [os.path.join(OP_DIR, s) for s in CPU_SOURCES + (CUDA_SOURCES if with_cuda else [])]
    depends = [
        os.path.join(OP_DIR, h)
        for h in ("msda_common.h", "msda_cpu.h", "msda_cpu_impl.h", "msda_cuda.h")
    ]
    # PADDLE_NO_PYTHON: the op needs no pybind11, so the library has no Python symbols to resolve.
    cxx_flags = ["-O3", "-fopenmp", "-std=c++17", "-DPADDLE_NO_PYTHON"]
    if with_cuda:
        ext = CUDAExtension(
            sources=sources,
            name=OP_MODULE,
            depends=depends,
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++17", *_gencode()]},
            extra_link_args=["-fopenmp"],
        )
    else:
        # --no-undefined: a library with unresolved symbols fails here, not at its first call.
        # The custom-op API lives in libphi_core / libphi / libcommon next to libpaddle, so they are
        # named explicitly (libpaddle's own dependencies do not count for --no-undefined).
        lib_dir = os.path.join(os.path.dirname(paddle.__file__), "libs")
        paddle_libs = [
            f"-l:{name}"
            for name in ("libphi_core.so", "libphi.so", "libcommon.so")
            if os.path.isfile(os.path.join(lib_dir, name))
        ]
        ext = CppExtension(
            sources=sources,
            name=OP_MODULE,
            depends=depends,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp", "-Wl,--no-undefined", *paddle_libs],
        )
    return [ext], {"build_ext": BuildOp.with_options(no_python_abi_suffix=True)}


ext_modules, cmdclass = _op_build()

setup(
    name="ppdet_dac",
    version="0.1.0",
    description="DAC-DETR (Divide the Attention Layers and Conquer) for PaddleDetection",
    packages=find_packages(include=["ppdet_dac", "ppdet_dac.*"]),
    python_requires=">=3.11",
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
