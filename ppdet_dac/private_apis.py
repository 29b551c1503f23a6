"""Every private API of a third-party package that ppdet_dac relies on, in one table.

Each entry names the package (its distribution name and the version the use was written and
tested against, equal to the pin in requirements*.txt), the module and attribute used, the
instance attributes read or written on its objects (``self.<name>`` set in the class's source),
where ppdet_dac uses it and why no public API does the job. ``tests/test_private_apis.py`` fails,
naming the entry, when an installed version differs from ``version``, when ``version`` differs
from the pin, or when an attribute is gone: re-check the listed use against the new version,
then update the entry and the pin together.

Not listed: names inside files the readers parse (``torch._utils._rebuild_tensor_v2`` in a .pth
pickle, ``numpy.core.multiarray._reconstruct`` in a .pdparams pickle) are part of those file
formats, matched as strings (torch is never imported; numpy's rebuilder is taken from the
public pickle protocol, ``ndarray.__reduce__``); ``os._exit`` is documented Python.
"""

from dataclasses import dataclass

__all__ = ["PrivateUse", "PRIVATE_USES", "DIST_NAMES"]


@dataclass(frozen=True)
class PrivateUse:
    """One private API: ``module.name`` of distribution ``dist`` at ``version``; ``attrs`` are
    instance attributes of that class used by ppdet_dac (found as ``self.<attr>`` in the source
    of the class or one of its bases)."""

    dist: str
    version: str
    module: str
    name: str
    used_in: str
    why: str
    attrs: tuple = ()

    @property
    def label(self):
        return f"{self.module}.{self.name}"


# a distribution that is installed under another name on some machines (the CUDA wheel)
DIST_NAMES = {"paddlepaddle": ("paddlepaddle", "paddlepaddle-gpu")}

_LOADER = "ppdet_dac/engine/loader.py"
_LIMITS = "ppdet_dac/deploy/serving/connection_limits.py"

PRIVATE_USES = (
    # Paddle: the DataLoader's iterators have no hook for the reading thread's exception
    PrivateUse(
        "paddlepaddle",
        "3.3.1",
        "paddle.io.dataloader.dataloader_iter",
        "_DataLoaderIterSingleProcess",
        _LOADER + " (_SingleProcessIter)",
        "the reader thread's exception is kept and raised in the main thread instead of a hang "
        "(worker_num: 0): overrides _thread_loop, calls _exit_thread_unexpectedly and "
        "_try_shutdown_all",
        attrs=("_thread_loop", "_exit_thread_unexpectedly", "_try_shutdown_all"),
    ),
    PrivateUse(
        "paddlepaddle",
        "3.3.1",
        "paddle.io.dataloader.dataloader_iter",
        "_DataLoaderIterMultiProcess",
        _LOADER + " (_MultiProcessIter)",
        "the same with workers (instead of 'Blocking queue is killed'); _reset for persistent "
        "workers",
        attrs=("_thread_loop", "_exit_thread_unexpectedly", "_try_shutdown_all", "_reset"),
    ),
    PrivateUse(
        "paddlepaddle",
        "3.3.1",
        "paddle.io",
        "DataLoader",
        _LOADER + " (ReportingDataLoader.__iter__)",
        "__iter__ builds the iterators above as DataLoader.__iter__ does (persistent workers)",
        attrs=("_persistent_workers", "_iterator"),
    ),
    PrivateUse(
        "paddlepaddle",
        "3.3.1",
        "paddle.optimizer",
        "Optimizer",
        "ppdet_dac/engine/optimizer.py",
        "the official recipe's one global-norm clip over every "
        "parameter: the optimizer's clip is replaced, its parameter groups checked",
        attrs=("_grad_clip", "_param_groups"),
    ),
    PrivateUse(
        "paddlepaddle",
        "3.3.1",
        "paddle._C_ops",
        "multiclass_nms3",
        "ppdet_dac/modeling/post_process.py",
        "class-wise NMS that also returns the kept rows' "
        "indices (paddle.vision.ops.nms has no per-class index output); same kernel as ppdet",
    ),
    PrivateUse(
        "paddlepaddle",
        "3.3.1",
        "paddle._C_ops",
        "_run_custom_op",
        "ppdet_dac/ops/_library.py",
        "calls the compiled multi-scale deformable attention op by name (the loaded library's "
        "Python wrapper is generated at build time)",
    ),
    PrivateUse(
        "paddlepaddle",
        "3.3.1",
        "paddle.framework.io",
        "_parse_load_result",
        "ppdet_dac/interop/paddle_files.py",
        "turns the restricted unpickler's result into what "
        "paddle.load returns (paddle.load itself unpickles without limits)",
    ),
    PrivateUse(
        "paddlepaddle",
        "3.3.1",
        "paddle.framework.io_utils",
        "_pack_loaded_dict",
        "ppdet_dac/interop/paddle_files.py",
        "the same (large tensors saved in slices)",
    ),
    # ppdet: the Trainer and reader keep these without accessors
    PrivateUse(
        "paddledet",
        "2.6.0",
        "ppdet.data.source.dataset",
        "ImageFolder",
        "ppdet_dac/data/image_folder.py (tools/infer.py)",
        "AcceptedFormatsImageFolder overrides _parse, whose file filter (.jpg/.jpeg/.png/.bmp) "
        "has no setting, so that tools/infer.py reads TIFF too",
        attrs=("_parse",),
    ),
    PrivateUse(
        "paddledet",
        "2.6.0",
        "ppdet.engine.trainer",
        "Trainer",
        "ppdet_dac/engine/trainer_eval.py, evaluation.py",
        "DACTrainer overrides _init_metrics and evaluates with the metrics it sets in _metrics",
        attrs=("_init_metrics", "_metrics"),
    ),
    PrivateUse(
        "paddledet",
        "2.6.0",
        "ppdet.data.reader",
        "BaseDataLoader",
        "ppdet_dac/engine/trainer.py",
        "the reader's batch sampler gets the epoch (set_epoch) "
        "before each epoch's iterator is built",
        attrs=("_batch_sampler",),
    ),
    # uvicorn: no header timeout, no way to end one request of a connection at shutdown
    PrivateUse(
        "uvicorn",
        "0.54.0",
        "uvicorn.protocols.http.h11_impl",
        "H11Protocol",
        _LIMITS + " (ServingProtocol)",
        "the connection cap that answers, the header timeout and "
        "the shutdown that does not wait for uploads (see that module's docstring)",
        attrs=(
            "connections",
            "config",
            "app",
            "loop",
            "timeout_keep_alive",
            "timeout_keep_alive_handler",
            "conn",
            "transport",
            "cycle",
        ),
    ),
    PrivateUse(
        "uvicorn",
        "0.54.0",
        "uvicorn.protocols.http.h11_impl",
        "RequestResponseCycle",
        _LIMITS + " (ServingProtocol.shutdown)",
        "an upload cut off at shutdown is marked "
        "answered and disconnected so the app's own answer is dropped",
        attrs=("scope", "response_started", "response_complete", "disconnected", "message_event"),
    ),
)
