"""Training checkpoints that survive a crash at any moment and resume a run exactly.

A checkpoint named ``<dir>/<name>`` is three files, each written to a temporary file and renamed
into place (``os.replace`` is atomic), so a reader never sees half a file:

* ``<name>.pdparams`` model weights (EMA weights when EMA is on), as ppdet writes them;
* ``<name>.pdopt``    optimizer + LR scheduler state and ``last_epoch``, as ppdet writes them
  (so ppdet's own ``load_weight`` reads our checkpoints);
* ``<name>.pdstate``  what an exact resume needs beyond that: the data position (epoch, batches
  of that epoch done), global iteration, the Python / NumPy / Paddle random states and the
  one-to-many sampler's generator of every rank, the raw weights when EMA is on, the best AP so
  far. It is written last.

Each of the three files holds the same token (key ``ppdet_dac_token``), new at every write. A
checkpoint whose files do not all hold the token of its ``.pdstate`` (a crash between the
renames of two runs writing the same name) or whose ``.pdstate`` is missing is refused with a
message naming the files (a checkpoint of the earlier layout, whose ``.pdparams`` holds no
token, resumes with a warning). Loaders of ``.pdparams`` leave the token out
(``load_weights_file``, ``weights_only``); ppdet's ``load_weight`` never reads it, its
``load_pretrain_weight`` logs it as an unused key.

A checkpoint is *complete* when its three files are there and the tokens match;
``latest_checkpoint`` finds the newest complete one of a folder (``-r auto``). A temporary file
left by a process killed while writing is deleted (logged) at the next save into, or resume
from, that folder.

Reading: the three files are Python pickles; they are read with the restricted reader of
``ppdet_dac/interop/paddle_files.py`` (``read_file``), which runs no code from a file.
"""

import glob
import os
import random
import uuid

import numpy as np
import paddle

from ppdet.utils.logger import setup_logger

from ppdet_dac.interop.paddle_files import TOKEN_KEY, read_file, weights_only
from ppdet_dac.utils.atomic import TEMPORARY, write_with

logger = setup_logger(__name__)

__all__ = [
    "atomic_save",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_base",
    "rng_state",
    "set_rng_state",
    "read_checkpoint",
    "latest_checkpoint",
    "remove_checkpoint",
    "keep_weights_only",
    "remove_stale_temporaries",
    "NOT_RESUMABLE",
    "ITER_PREFIX",
]

_LEGACY_TOKEN_KEY = "token"  # .pdstate key of checkpoints whose .pdparams held no token
_SUFFIXES = (".pdparams", ".pdopt", ".pdstate")
# Checkpoints that ``latest_checkpoint`` leaves out: best_model is a copy of an epoch's state
# kept for its AP, written before that epoch's own checkpoint.
NOT_RESUMABLE = ("best_model",)
ITER_PREFIX = "iter_"  # the iteration checkpoints (snapshot_iter): iter_<global iteration>


def checkpoint_base(path):
    """``path`` without a checkpoint suffix (``out/3.pdparams`` -> ``out/3``)."""
    for suffix in _SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def atomic_save(obj, path):
    """paddle.save ``obj`` to ``path`` through a temporary file in the same folder + rename
    (``ppdet_dac.utils.atomic.write_with``)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_with(path, lambda tmp: paddle.save(obj, tmp))


def remove_stale_temporaries(folder):
    """Delete the temporary files of ``atomic_save`` in ``folder`` (left by a process killed
    while writing; nothing else writes there while a run saves or resumes); returns them."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(folder), ".*.tmp")):
        if not TEMPORARY.match(os.path.basename(path)):
            continue
        try:
            size = os.path.getsize(path)
            os.remove(path)
        except FileNotFoundError:  # another rank removed it first
            continue
        removed.append(path)
        logger.info(
            f"removed {path} ({size} bytes), a partial checkpoint file of a process "
            "stopped while writing it"
        )
    return removed


def rng_state(criterion=None):
    """The random states that decide the data order/augmentation, DN noise and o2m sampling."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    # NumPy's key array is uint32, which paddle.save cannot store: keep it as a list.
    state = {
        "python": random.getstate(),
        "numpy": (kind, keys.tolist(), pos, has_gauss, cached),
        "paddle": paddle.get_rng_state(),
    }
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


def _position(epochs_done, epoch_step):
    """The data position in the log's numbering (epochs from 0, as ppdet's ``Epoch: [0]``)."""
    if epoch_step:
        return f"epoch {epochs_done} after {epoch_step} of its batches"
    return f"end of epoch {epochs_done - 1}" if epochs_done else "before epoch 0"


def save_checkpoint(
    base,
    model,
    optimizer,
    epochs_done,
    global_iter,
    criterion=None,
    ema=None,
    extra=None,
    epoch_step=0,
    rank_rng=None,
):
    """Write the checkpoint ``base``.{pdparams,pdopt,pdstate} (see the module docstring).

    epochs_done: completed epochs (the epoch to resume at); epoch_step: batches of that epoch
    already trained (0 at an epoch end); global_iter: optimizer steps done; rank_rng: the
    ``rng_state`` of every rank, by rank (default: this process's alone).
    """
    remove_stale_temporaries(os.path.dirname(os.path.abspath(base)))
    token = uuid.uuid4().hex
    raw_weights = model.state_dict()
    params = dict(ema.apply() if ema is not None else raw_weights)
    params[TOKEN_KEY] = token
    atomic_save(params, base + ".pdparams")
    opt_state = dict(optimizer.state_dict())
    opt_state["last_epoch"] = epochs_done
    opt_state[TOKEN_KEY] = token
    atomic_save(opt_state, base + ".pdopt")
    rank_rng = list(rank_rng) if rank_rng else [rng_state(criterion)]
    state = {
        TOKEN_KEY: token,
        "epochs_done": epochs_done,
        "epoch_step": int(epoch_step),
        "global_iter": global_iter,
        "rng": rank_rng[0],
        "rank_rng": rank_rng,
        "extra": dict(extra or {}),
    }
    if ema is not None:
        state["raw_weights"] = raw_weights
        state["ema"] = {"step": ema.step, "state_dict": ema.state_dict}
    atomic_save(state, base + ".pdstate")
    logger.info(
        f"saved checkpoint {base} ({_position(epochs_done, epoch_step)}, iteration {global_iter})"
    )


def read_checkpoint(path):
    """(.pdstate dict, .pdopt dict, .pdparams weights), the tokens left out, of the complete
    checkpoint ``path`` (files read by ``read_file``).

    Raises FileNotFoundError / ValueError naming the files when one is missing, when they come
    from different writes, or when a file is refused.
    """
    base = checkpoint_base(path)
    missing = [base + s for s in _SUFFIXES if not os.path.isfile(base + s)]
    if missing:
        raise FileNotFoundError(
            f"checkpoint {base} is incomplete or missing: no {missing} "
            "(a run stopped while writing it leaves the previous checkpoint "
            "intact: resume from that one)"
        )
    state = read_file(base + ".pdstate")
    legacy = isinstance(state, dict) and _LEGACY_TOKEN_KEY in state and TOKEN_KEY not in state
    if not isinstance(state, dict) or (TOKEN_KEY not in state and not legacy):
        raise ValueError(f"{base}.pdstate is not a ppdet_dac training state")
    opt_state = read_file(base + ".pdopt")
    params = read_file(base + ".pdparams")
    token = state.pop(_LEGACY_TOKEN_KEY if legacy else TOKEN_KEY)
    tokens = {
        ".pdopt": opt_state.pop(TOKEN_KEY, None) if isinstance(opt_state, dict) else None,
        ".pdparams": params.get(TOKEN_KEY) if isinstance(params, dict) else None,
    }
    if legacy and tokens[".pdparams"] is None:
        del tokens[".pdparams"]
        logger.warning(
            f"{base} was written by an earlier ppdet_dac, whose .pdparams holds no "
            "token: its .pdopt and .pdstate are checked against each other, the "
            ".pdparams cannot be"
        )
    stray = [base + suffix for suffix, other in tokens.items() if other != token]
    if stray:
        raise ValueError(
            f"checkpoint {base} is mixed from different writes: {stray} "
            f"{'does' if len(stray) == 1 else 'do'} not come from the write of "
            f"{base}.pdstate (a run stopped while rewriting this checkpoint); "
            "resume from another checkpoint"
        )
    return state, opt_state, weights_only(params, base + ".pdparams")


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
            state = read_checkpoint(base)[0]
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


def keep_weights_only(base):
    """Delete the ``.pdstate`` (first) and ``.pdopt`` of the checkpoint ``base``: its
    ``.pdparams`` stays for evaluation, export and analysis; it can no longer be resumed."""
    for suffix in (".pdstate", ".pdopt"):
        if os.path.exists(base + suffix):
            os.remove(base + suffix)


def load_checkpoint(path, model, optimizer=None, criterion=None, ema=None, rank=0, nranks=1):
    """Load a checkpoint written by ``save_checkpoint``; returns its ``.pdstate`` dict.

    Restores model (raw weights), optimizer + scheduler, EMA and the random states of ``rank``
    (those of rank 0, with a warning, when the checkpoint was written by another number of
    ranks). Raises FileNotFoundError / ValueError naming the file when the checkpoint is
    missing, incomplete or mixed from two writes, or does not fit the model. Rank 0 deletes the
    temporary files a killed write left in the checkpoint's folder.
    """
    base = checkpoint_base(path)
    if rank == 0:
        remove_stale_temporaries(os.path.dirname(os.path.abspath(base)))
    state, opt_state, params = read_checkpoint(base)
    opt_state.pop("last_epoch", None)
    weights = state.get("raw_weights") or params
    model_keys = set(model.state_dict())
    unknown = sorted(set(weights) - model_keys)
    absent = sorted(model_keys - set(weights))
    if unknown or absent:
        raise ValueError(
            f"{base}.pdparams does not fit the model: missing {absent[:10]}, "
            f"unexpected {unknown[:10]}"
        )
    model.set_state_dict(weights)
    if optimizer is not None:
        optimizer.set_state_dict(opt_state)
    if ema is not None and "ema" in state:
        ema.step = state["ema"]["step"]
        for key, value in state["ema"]["state_dict"].items():
            ema.state_dict[key] = value
    rank_rng = state.get("rank_rng") or [state["rng"]]
    if len(rank_rng) != nranks:
        logger.warning(
            f"{base} was written by {len(rank_rng)} rank(s), this run has {nranks}: "
            "every rank takes rank 0's random states, so the run continues but is "
            "not the one an uninterrupted run would have been"
        )
    set_rng_state(rank_rng[rank] if len(rank_rng) == nranks else rank_rng[0], criterion)
    logger.info(
        f"resumed from {base}: "
        f"{_position(int(state['epochs_done']), int(state.get('epoch_step', 0)))}, "
        f"{state['global_iter']} iterations done"
    )
    return state
