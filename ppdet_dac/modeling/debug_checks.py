"""Input checks that need tensor values on the host, behind a switch.

Inside the training step every ``.numpy()`` of a tensor is a device-to-host copy, and on a GPU a
synchronisation that stalls the pipeline. The model therefore copies to the host only what the
algorithm needs there (the matching cost and one-to-many score matrices; docs/training.md, "Host
synchronisations"). Value checks of arguments that are device tensors (class ids in range, index
vectors in range) run only with the debug checks on:

* the environment variable ``PPDET_DAC_DEBUG_CHECKS=1`` (any value but empty or ``0``), or
* ``with debug_checks(): ...`` (or ``debug_checks(False)`` to switch them off in a block).

Arguments given as NumPy arrays or lists are on the host already and are always checked. The
error messages are the same with either source.
"""

import contextlib
import os

import numpy as np
import paddle

__all__ = ["ENV_VAR", "debug_checks", "debug_checks_enabled", "check_class_ids", "host_ints"]

ENV_VAR = "PPDET_DAC_DEBUG_CHECKS"
_override = []  # stack of debug_checks(...) blocks; the innermost one wins over ENV_VAR


def debug_checks_enabled():
    """True when tensor values are to be checked on the host (see the module docstring)."""
    if _override:
        return _override[-1]
    return os.environ.get(ENV_VAR, "").strip() not in ("", "0")


@contextlib.contextmanager
def debug_checks(enabled=True):
    """Switch the debug checks on (or off) inside a ``with`` block, whatever ``ENV_VAR`` says."""
    _override.append(bool(enabled))
    try:
        yield
    finally:
        _override.pop()


def host_ints(values):
    """int64 NumPy vector of ``values`` when they are to be checked: host values always, a
    tensor only with the debug checks on (a host copy); None otherwise."""
    if isinstance(values, paddle.Tensor):
        if not debug_checks_enabled():
            return None
        values = values.numpy()
    return np.asarray(values, dtype=np.int64).reshape([-1])


def check_class_ids(gt_labels, num_classes):
    """Raise ValueError unless the class ids ``gt_labels`` (a tensor or array) lie in
    [0, num_classes); a tensor is only checked with the debug checks on."""
    labels = host_ints(gt_labels)
    if labels is not None and labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"gt_labels must lie in [0, {num_classes}), got min {labels.min()}, max {labels.max()}"
        )
