"""Training checkpoints that survive a crash at any moment and resume a run exactly.

A checkpoint named ``<dir>/<name>`` is three files, each written to a temporary file and renamed
into place (``os.replace`` is atomic), so a reader never sees half a file:

* ``<name>.pdparams`` model weights (EMA weights when EMA is on), as ppdet writes them;
* ``<name>.pdopt``    optimizer + LR scheduler state and ``last_epoch``, as ppdet writes them
  (so ppdet's own ``load_weight`` reads our checkpoints);
* ``<name>.pdstate``  what an exact resume needs beyond that: epochs done, global iteration, the
  Python / NumPy / Paddle random states, the one-to-many sampler's generator, the raw weights when
  EMA is on, the best AP so far. It is written last and carries a token that the ``.pdopt`` repeats:
  a checkpoint whose token pair does not match (a crash between the renames of two runs writing
  the same name) or whose ``.pdstate`` is missing is refused with a message.
"""
import os
import random
import uuid

import numpy as np
import paddle

from ppdet.utils.logger import setup_logger

logger = setup_logger(__name__)

__all__ = ["atomic_save", "save_checkpoint", "load_checkpoint", "checkpoint_base", "rng_state",
           "set_rng_state"]

_TOKEN_KEY = "ppdet_dac_token"
_SUFFIXES = (".pdparams", ".pdopt", ".pdstate")


def checkpoint_base(path):
    """``path`` without a checkpoint suffix (``out/3.pdparams`` -> ``out/3``)."""
    for suffix in _SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def atomic_save(obj, path):
    """paddle.save ``obj`` to ``path`` through a temporary file in the same folder + rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        paddle.save(obj, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def rng_state(criterion=None):
    """The random states that decide the data order/augmentation, DN noise and o2m sampling."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    # NumPy's key array is uint32, which paddle.save cannot store: keep it as a list.
    state = {"python": random.getstate(), "numpy": (kind, keys.tolist(), pos, has_gauss, cached),
             "paddle": paddle.get_rng_state()}
    rng = getattr(criterion, "rng", None)
    if rng is not None:
        state["criterion"] = rng.bit_generator.state
    return state


def set_rng_state(state, criterion=None):
    """Restore what ``rng_state`` returned."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    paddle.set_rng_state(state["paddle"])
    rng = getattr(criterion, "rng", None)
    if rng is not None and "criterion" in state:
        rng.bit_generator.state = state["criterion"]


def save_checkpoint(base, model, optimizer, epochs_done, global_iter, criterion=None, ema=None,
                    extra=None):
    """Write the checkpoint ``base``.{pdparams,pdopt,pdstate} (see the module docstring).

    epochs_done: completed epochs (the epoch to resume at); global_iter: optimizer steps done.
    """
    token = uuid.uuid4().hex
    raw_weights = model.state_dict()
    atomic_save(ema.apply() if ema is not None else raw_weights, base + ".pdparams")
    opt_state = dict(optimizer.state_dict())
    opt_state["last_epoch"] = epochs_done
    opt_state[_TOKEN_KEY] = token
    atomic_save(opt_state, base + ".pdopt")
    state = {"token": token, "epochs_done": epochs_done, "global_iter": global_iter,
             "rng": rng_state(criterion), "extra": dict(extra or {})}
    if ema is not None:
        state["raw_weights"] = raw_weights
        state["ema"] = {"step": ema.step, "state_dict": ema.state_dict}
    atomic_save(state, base + ".pdstate")
    logger.info(f"saved checkpoint {base} (epoch {epochs_done}, iteration {global_iter})")


def load_checkpoint(path, model, optimizer=None, criterion=None, ema=None):
    """Load a checkpoint written by ``save_checkpoint``; returns its ``.pdstate`` dict.

    Restores model (raw weights), optimizer + scheduler, EMA and random states. Raises
    FileNotFoundError / ValueError naming the file when the checkpoint is missing, incomplete or
    mixed from two writes.
    """
    base = checkpoint_base(path)
    missing = [base + s for s in _SUFFIXES if not os.path.isfile(base + s)]
    if missing:
        raise FileNotFoundError(f"checkpoint {base} is incomplete or missing: no {missing} "
                                "(a run stopped while writing it leaves the previous checkpoint "
                                "intact: resume from that one)")
    state = paddle.load(base + ".pdstate")
    opt_state = paddle.load(base + ".pdopt")
    if not isinstance(state, dict) or "token" not in state:
        raise ValueError(f"{base}.pdstate is not a ppdet_dac training state")
    if opt_state.pop(_TOKEN_KEY, None) != state["token"]:
        raise ValueError(f"{base}.pdopt and {base}.pdstate come from different writes; resume "
                         "from an earlier checkpoint")
    opt_state.pop("last_epoch", None)
    weights = state.get("raw_weights") or paddle.load(base + ".pdparams")
    model_keys = set(model.state_dict())
    unknown = sorted(set(weights) - model_keys)
    absent = sorted(model_keys - set(weights))
    if unknown or absent:
        raise ValueError(f"{base}.pdparams does not fit the model: missing {absent[:10]}, "
                         f"unexpected {unknown[:10]}")
    model.set_state_dict(weights)
    if optimizer is not None:
        optimizer.set_state_dict(opt_state)
    if ema is not None and "ema" in state:
        ema.step = state["ema"]["step"]
        for key, value in state["ema"]["state_dict"].items():
            ema.state_dict[key] = value
    set_rng_state(state["rng"], criterion)
    logger.info(f"resumed from {base}: {state['epochs_done']} epochs, "
                f"{state['global_iter']} iterations done")
    return state
