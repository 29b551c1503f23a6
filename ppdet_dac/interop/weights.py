"""Weights files mapped onto a model: the one loader behind ``weights=`` (tools/eval.py,
tools/infer.py, tools/export_model.py, tools/dump_outputs.py, tools/analyze_queries.py) and
``pretrain_weights`` (tools/train.py, tools/demo.py).

Every file is read by the restricted reader (``paddle_files.read_file``: no code from a file is
run, downloaded files included). Names are matched as ppdet's ``match_state_dict`` matches them:
a model tensor takes the file's longest name that equals it or ends its name after a dot
(``backbone.res2.res2a.branch2a.conv.weight`` <- ``res2.res2a.branch2a.conv.weight``), a file
name ``backbone.res5.*`` also stands for ``res5.*``.

* ``load_model_weights`` (``weights=``): every model tensor must be found with its shape, else
  one ValueError naming the file, the counts and the first names of each kind; a ``.pdopt`` /
  ``.pdstate`` (by suffix or by content) is named as the optimizer / training state it is.
* ``load_pretrained`` (``pretrain_weights``): tensors found with their shape are loaded, the
  others keep the model's initialisation; a ValueError when no backbone tensor was found, one
  warning line (counts, first names) when some backbone tensors were not.

File names the model does not use are summarised (count and first names) in one log line.
"""

import numpy as np
import paddle

from ppdet.utils.logger import setup_logger

from ppdet_dac.interop.paddle_files import load_weights_file, read_file, weights_only

logger = setup_logger(__name__)

__all__ = [
    "SHOWN",
    "match_names",
    "fit_weights",
    "load_model_weights",
    "load_pretrained",
    "summarise",
]

SHOWN = 5  # names shown per kind in a message
BACKBONE_PREFIX = "backbone."
# keys only an optimizer state (.pdopt: Paddle's optimizer state_dict + ppdet's last_epoch) or
# a ppdet_dac training state (.pdstate) holds
_OPTIMIZER_KEYS = ("LR_Scheduler", "last_epoch", "master_weights")
_OPTIMIZER_ENDINGS = ("_moment1_0", "_moment2_0", "_pow_acc_0", "_velocity_0")
_TRAINING_STATE_KEYS = ("epochs_done", "global_iter", "rank_rng")


def summarise(names, shown=SHOWN):
    """'N (a, b, ... )': the count and the first ``shown`` names, for one-line messages."""
    names = list(names)
    if not names:
        return "0"
    more = ", ..." if len(names) > shown else ""
    return f"{len(names)} ({', '.join(names[:shown])}{more})"


def match_names(model_names, file_names):
    """{model name: file name} by ppdet's rule (see the module docstring): the longest file name
    equal to the model name or ending it after a dot. Linear in the number of names."""
    index = {}
    for name in sorted(file_names):
        index.setdefault(name, name)
    for name in sorted(file_names):
        if name.startswith("backbone.res5"):
            index.setdefault(name[len("backbone.") :], name)
    matched = {}
    for model_name in model_names:
        parts = model_name.split(".")
        for i in range(len(parts)):
            found = index.get(".".join(parts[i:]))
            if found is not None:
                matched[model_name] = found
                break
    return matched


def _shape(value):
    return [int(d) for d in value.shape]


def fit_weights(own, weights):
    """How ``weights`` ({name: array or Tensor}) fits ``own`` (a model's state_dict).

    Returns {'values': {model name: file value, shape equal}, 'missing': [model names no file
    name matches], 'mismatched': [(model name, file name, file shape, model shape)],
    'unused': [file names no model name took]}.
    """
    matched = match_names(own, weights)
    values, mismatched = {}, []
    for name, source in matched.items():
        value = weights[source]
        if not hasattr(value, "shape"):
            mismatched.append((name, source, type(value).__name__, _shape(own[name])))
        elif _shape(value) != _shape(own[name]):
            mismatched.append((name, source, _shape(value), _shape(own[name])))
        else:
            values[name] = value
    used = set(matched.values())
    return {
        "values": values,
        "missing": sorted(k for k in own if k not in matched),
        "mismatched": sorted(mismatched),
        "unused": sorted(k for k in weights if k not in used),
    }


def _state_kind(path, state):
    """'an optimizer state (.pdopt)' / 'a training state (.pdstate)' when ``path`` or its
    content is one, else None."""
    text = str(path)
    keys = [str(k) for k in state] if isinstance(state, dict) else []
    if text.endswith(".pdstate") or any(k in _TRAINING_STATE_KEYS for k in keys):
        return "a training state (.pdstate)"
    if text.endswith(".pdopt") or any(
        k in _OPTIMIZER_KEYS or k.endswith(_OPTIMIZER_ENDINGS) for k in keys
    ):
        return "an optimizer state (.pdopt)"
    return None


def _not_weights(path, kind):
    text = str(path)
    base = text.rsplit(".", 1)[0] if text.endswith((".pdopt", ".pdstate")) else None
    hint = (
        f"use {base}.pdparams"
        if base
        else "use the .pdparams file of the checkpoint (e.g. model_final.pdparams)"
    )
    return ValueError(f"{path} is {kind}, not model weights; {hint}")


def _to_model_dtype(value, like):
    value = value if isinstance(value, paddle.Tensor) else paddle.to_tensor(np.asarray(value))
    return value if value.dtype == like.dtype else value.astype(like.dtype)


def _mismatch_text(mismatched):
    return summarise([f"{name}: file {got} vs model {want}" for name, _, got, want in mismatched])


def _log_unused(path, unused, log):
    if unused:
        log(f"{path}: {summarise(unused)} tensor(s) of the file are not used by the model")


def load_model_weights(model, weights):
    """Load ``weights`` (a .pdparams path with or without the suffix, or a URL downloaded as
    ppdet does) into ``model`` when every model tensor is found with its shape; returns the
    file read.

    Raises FileNotFoundError naming the file when there is none, ValueError naming a
    ``.pdopt`` / ``.pdstate`` as such, and one ValueError with the counts (found / expected /
    missing / other shape / unused) and the first names of each kind when the file does not
    fit. Unused file names are logged in one warning line.
    """
    text = str(weights)
    if text.endswith((".pdopt", ".pdstate")):
        raise _not_weights(text, _state_kind(text, None))
    path, state = load_weights_file(text)
    own = model.state_dict()
    fit = fit_weights(own, state)
    if not fit["values"] and _state_kind(path, state):
        raise _not_weights(path, _state_kind(path, state))
    if fit["missing"] or fit["mismatched"]:
        raise ValueError(
            f"{path}: the weights do not fit the model (another config?): "
            f"{len(fit['values'])} of {len(own)} model tensors found with their shape; "
            f"missing {summarise(fit['missing'])}; other shape {_mismatch_text(fit['mismatched'])}"
            f"; unused in the file {summarise(fit['unused'])}"
        )
    _log_unused(path, fit["unused"], logger.warning)
    model.set_dict({k: _to_model_dtype(v, own[k]) for k, v in fit["values"].items()})
    logger.info(f"loaded weights from {path} (all {len(own)} tensors)")
    return path


def load_pretrained(model, path):
    """Load the ``pretrain_weights`` file ``path`` into ``model``: each model tensor found with
    its shape takes the file's value, the others keep the model's initialisation (fine-tuning
    a converted COCO model on K classes re-starts the class heads).

    Raises ValueError naming the file when no backbone tensor (``backbone.*``; every tensor for
    a model without one) was loaded; one warning line with counts and first names when some
    backbone tensors were not. Returns {'loaded': [model names], 'reinitialised': [names whose
    shape differs], 'absent': [model names the file does not have], 'unused': [file names]}.
    """
    state = weights_only(read_file(path), path)
    own = model.state_dict()
    fit = fit_weights(own, state)
    backbone = [k for k in own if k.startswith(BACKBONE_PREFIX)] or list(own)
    loaded = [k for k in backbone if k in fit["values"]]
    if not loaded:
        kind = _state_kind(path, state)
        if kind:
            raise _not_weights(path, kind)
        raise ValueError(
            f"{path}: pretrain_weights fit no backbone tensor of the model (0 of "
            f"{len(backbone)} found with their shape; the model's names, e.g. "
            f"{summarise(backbone)}; the file's names, e.g. {summarise(sorted(state))}; "
            f"other shape {_mismatch_text(fit['mismatched'])}): weights of another backbone? "
            "tools/convert_backbone.py converts the official torchvision / Swin checkpoints"
        )
    short = sorted(k for k in backbone if k not in fit["values"])
    other = [m for m in fit["mismatched"] if m[0] in set(short)]
    if short:
        logger.warning(
            f"{path}: pretrain_weights fill {len(loaded)} of {len(backbone)} backbone tensors; "
            f"missing {summarise([k for k in short if k in set(fit['missing'])])}; other shape "
            f"{_mismatch_text(other)}; these keep their random initialisation"
        )
    model.set_dict(
        {
            k: _to_model_dtype(fit["values"][k], v) if k in fit["values"] else v
            for k, v in own.items()
        }
    )  # every key given: no per-key "skip" warnings
    summary = {
        "loaded": sorted(fit["values"]),
        "reinitialised": sorted(m[0] for m in fit["mismatched"]),
        "absent": fit["missing"],
        "unused": fit["unused"],
    }
    logger.info(
        f"{path}: loaded {len(summary['loaded'])} of {len(own)} tensors"
        + (
            f"; kept the initialisation of {summarise(summary['reinitialised'])} whose "
            "shape differs (e.g. the class heads for another class count)"
            if summary["reinitialised"]
            else ""
        )
        + (f"; {len(summary['absent'])} not in the file" if summary["absent"] else "")
    )
    _log_unused(path, fit["unused"], logger.info)
    return summary
