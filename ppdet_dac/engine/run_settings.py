"""The settings of a training run that come from its config rather than from ppdet: where its
checkpoints go (``checkpoint_dir``), which one ``-r auto`` resumes (``auto_resume_checkpoint``),
whether the LR schedule fits ``epoch`` (``schedule_mismatch``), and the whole-number keys
``snapshot_iter`` / ``max_checkpoints`` (``whole_number``)."""

import os

import paddle.distributed as dist
from ppdet.utils.logger import setup_logger

from .checkpoint import latest_checkpoint
from .distributed import broadcast_from_rank0

logger = setup_logger(__name__)

__all__ = [
    "AUTO_RESUME",
    "DEFAULT_MAX_CHECKPOINTS",
    "checkpoint_dir",
    "auto_resume_checkpoint",
    "schedule_mismatch",
    "whole_number",
]

AUTO_RESUME = "auto"
DEFAULT_MAX_CHECKPOINTS = 2


def checkpoint_dir(cfg):
    """The folder of a run's checkpoints: ``save_dir/<config file name>``."""
    return os.path.join(cfg.get("save_dir", "output"), cfg.get("filename", "model"))


def auto_resume_checkpoint(cfg):
    """``-r auto``: the newest complete checkpoint in ``checkpoint_dir(cfg)`` (rank 0 looks, every
    rank gets its answer), or None for a fresh start."""
    folder = checkpoint_dir(cfg)
    found = latest_checkpoint(folder) if dist.get_rank() == 0 else None
    found = broadcast_from_rank0(found)
    if found:
        logger.info(f"-r {AUTO_RESUME}: resuming from {found}, the newest complete checkpoint")
    else:
        logger.info(f"-r {AUTO_RESUME}: no complete checkpoint in {folder}; starting a fresh run")
    return found


def schedule_mismatch(cfg):
    """One sentence on the ``LearningRate`` schedulers whose epoch settings do not fit
    ``cfg.epoch`` (a milestone at or after the end of training, a cosine over another number of
    epochs, a warm-up as long as the run), or None when they fit."""
    epoch = int(cfg["epoch"])
    found = []
    for scheduler in (cfg.get("LearningRate") or {}).get("schedulers") or []:
        name = type(scheduler).__name__
        late = [m for m in getattr(scheduler, "milestones", None) or [] if m >= epoch]
        if late:
            found.append(
                f"{name} milestones {late} lie at or after the end of training (epochs "
                f"0-{epoch - 1}): the learning rate never decays there"
            )
        max_epochs = getattr(scheduler, "max_epochs", None)
        if max_epochs is not None and max_epochs != epoch:
            found.append(f"{name} max_epochs is {max_epochs}, not {epoch}")
        warmup = getattr(scheduler, "epochs", None)
        if warmup is not None and warmup >= epoch:
            found.append(f"{name} warms up for {warmup} epochs, the whole run")
    if not found:
        return None
    example = (
        f", e.g. -o epoch={epoch} \"LearningRate.schedulers=[!PiecewiseDecay "
        f"{{milestones: [{epoch - 1}], gamma: 0.1, use_warmup: false}}]\" (the 1x recipe: "
        "the rate drops for the last epoch)"
        if epoch >= 2
        else ""
    )
    return (
        f"{cfg.get('filename', 'config')}: the LearningRate schedule does not fit epoch: "
        f"{epoch}: {'; '.join(found)}. Nothing is rescaled: give the schedule for {epoch} "
        f"epochs{example}, or use a config made for {epoch} epochs"
    )


def whole_number(cfg, key, default, minimum):
    """``cfg[key]`` (``default`` when absent); ValueError naming the config file unless it is a
    whole number >= ``minimum``."""
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"{cfg.get('filename', 'config')}: {key} must be a whole number >= "
            f"{minimum}, got {value!r}"
        )
    return value
