"""Training checkpoints that survive a crash at any moment and resume a run exactly.

A checkpoint named ``<dir>/<name>`` is three files, each written to a temporary file and renamed
into place (``os.replace`` is atomic), so a reader never sees half a file:

* ``<name>.pdparams`` model weights (EMA weights when EMA is on), as ppdet writes them;
* ``<name>.pdopt``    optimizer + LR scheduler state and ``last_epoch``, as ppdet writes them
  (so ppdet's own ``load_weight`` reads our checkpoints);
* ``<name>.pdstate``  what an exact resume needs beyond that: the data position (epoch, batches
  of that epoch done), global iteration, the Python / NumPy / Paddle random states and the
  one-to-many sampler's generator of every rank, the raw weights when EMA is on, the best AP so
  far. It is written last and carries a token that the ``.pdopt`` repeats: a checkpoint whose
  token pair does not match (a crash between the renames of two runs writing the same name) or
  whose ``.pdstate`` is missing is refused with a message.

A checkpoint is *complete* when its three files are there and the tokens match;
``latest_checkpoint`` finds the newest complete one of a folder (``-r auto``).
"""
import glob
import os
import random
import uuid

import numpy as np
import paddle

from ppdet.utils.logger import setup_logger

logger = setup_logger(__name__)

__all__ = ["atomic_save", "save_checkpoint", "load_checkpoint", "checkpoint_base", "rng_state",
           "set_rng_state", "read_checkpoint", "latest_checkpoint", "remove_checkpoint",
           "NOT_RESUMABLE"]

_TOKEN_KEY = "ppdet_dac_token"
_SUFFIXES = (".pdparams", ".pdopt", ".pdstate")
# Checkpoints that ``latest_checkpoint`` leaves out: best_model is a copy of an epoch's state
# kept for its AP, written before that epoch's own checkpoint.
NOT_RESUMABLE = ("best_model",)


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
                    extra=None, epoch_step=0, rank_rng=None):
    """Write the checkpoint ``base``.{pdparams,pdopt,pdstate} (see the module docstring).

    epochs_done: completed epochs (the epoch to resume at); epoch_step: batches of that epoch
    already trained (0 at an epoch end); global_iter: optimizer steps done; rank_rng: the
    ``rng_state`` of every rank, by rank (default: this process's alone).
    """
    token = uuid.uuid4().hex
    raw_weights = model.state_dict()
    atomic_save(ema.apply() if ema is not None else raw_weights, base + ".pdparams")
    opt_state = dict(optimizer.state_dict())
    opt_state["last_epoch"] = epochs_done
    opt_state[_TOKEN_KEY] = token
    atomic_save(opt_state, base + ".pdopt")
    rank_rng = list(rank_rng) if rank_rng else [rng_state(criterion)]
    state = {"token": token, "epochs_done": epochs_done, "epoch_step": int(epoch_step),
             "global_iter": global_iter, "rng": rank_rng[0], "rank_rng": rank_rng,
             "extra": dict(extra or {})}
    if ema is not None:
        state["raw_weights"] = raw_weights
        state["ema"] = {"step": ema.step, "state_dict": ema.state_dict}
    atomic_save(state, base + ".pdstate")
    where = f"epoch {epochs_done}" + (f", batch {epoch_step} of the epoch" if epoch_step else "")
    logger.info(f"saved checkpoint {base} ({where}, iteration {global_iter})")


def read_checkpoint(path):
    """(.pdstate dict, .pdopt dict without our token) of the complete checkpoint ``path``.

    Raises FileNotFoundError / ValueError naming the file when it is missing, incomplete or
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
    return state, opt_state


def latest_checkpoint(folder):
    """The newest complete checkpoint of ``folder`` (its path without suffix), or None.

    Newest is the latest written ``.pdstate`` (written last), so after a resume from an older
    checkpoint the newer files of the abandoned run lose as soon as the run writes again; equal
    times go to the higher iteration. ``best_model`` is left out (NOT_RESUMABLE); an incomplete
    or mixed checkpoint is skipped with a warning naming it.
    """
    candidates = []
    for path in glob.glob(os.path.join(glob.escape(folder), "*.pdstate")):
        base = checkpoint_base(path)
        if os.path.basename(base) in NOT_RESUMABLE or os.path.basename(base).startswith("."):
            continue
        candidates.append((os.stat(path).st_mtime_ns, base))
    best = None
    for mtime, base in sorted(candidates, reverse=True):
        if best is not None and mtime < best[0]:
            break
        try:
            state, _ = read_checkpoint(base)
        except (FileNotFoundError, ValueError) as err:
            logger.warning(f"skipping checkpoint {base}: {err}")
            continue
        if best is None or int(state["global_iter"]) > best[1]:
            best = (mtime, int(state["global_iter"]), base)
    return best[2] if best else None


def remove_checkpoint(base):
    """Delete the checkpoint ``base``, its ``.pdstate`` first (so it is never half there and
    complete-looking)."""
    for suffix in (".pdstate", ".pdopt", ".pdparams"):
        if os.path.exists(base + suffix):
            os.remove(base + suffix)


def load_checkpoint(path, model, optimizer=None, criterion=None, ema=None, rank=0, nranks=1):
    """Load a checkpoint written by ``save_checkpoint``; returns its ``.pdstate`` dict.

    Restores model (raw weights), optimizer + scheduler, EMA and the random states of ``rank``
    (those of rank 0, with a warning, when the checkpoint was written by another number of
    ranks). Raises FileNotFoundError / ValueError naming the file when the checkpoint is
    missing, incomplete or mixed from two writes, or does not fit the model.
    """
    base = checkpoint_base(path)
    state, opt_state = read_checkpoint(base)
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
    rank_rng = state.get("rank_rng") or [state["rng"]]
    if len(rank_rng) != nranks:
        logger.warning(f"{base} was written by {len(rank_rng)} rank(s), this run has {nranks}: "
                       "every rank takes rank 0's random states, so the run continues but is "
                       "not the one an uninterrupted run would have been")
    set_rng_state(rank_rng[rank] if len(rank_rng) == nranks else rank_rng[0], criterion)
    step = int(state.get("epoch_step", 0))
    where = f", batch {step} of epoch {state['epochs_done']}" if step else ""
    logger.info(f"resumed from {base}: {state['epochs_done']} epochs{where}, "
                f"{state['global_iter']} iterations done")
    return state
