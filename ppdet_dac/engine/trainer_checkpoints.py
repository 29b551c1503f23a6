"""The checkpoint writing of ``DACTrainer``: the checkpoints of an epoch or iteration with the
full training state and the random states of every rank (``_save``, rank 0 writes), the
``snapshot_iter`` checkpoints with only the ``max_checkpoints`` newest kept (``_save_iteration``),
the retention of the numbered epoch checkpoints (``_retain_epoch_checkpoints``:
``max_epoch_checkpoints``, ``epoch_checkpoint_weights_only``) and which epochs are snapshot
epochs (``_snapshot_epoch``)."""

import glob
import os

from ppdet.utils.logger import setup_logger

from .checkpoint import (
    ITER_PREFIX,
    keep_weights_only,
    remove_checkpoint,
    rng_state,
    save_checkpoint,
)
from .distributed import all_gather_objects, no_interrupt
from .run_settings import whole_number

logger = setup_logger(__name__)

__all__ = ["TrainerCheckpoints"]


class TrainerCheckpoints:
    """The checkpoint-saving methods of ``DACTrainer`` (a ppdet ``Trainer``: ``self.cfg``,
    ``self.model``, ``self.optimizer``, ... are the Trainer's; ``save_dir``, ``global_iter``,
    ``best_ap``, ``max_checkpoints`` are DACTrainer's)."""

    def _save(self, names, epochs_done, epoch_step=0):
        """Rank 0 writes the checkpoints ``names`` with the random states of every rank (every
        rank calls this: one gather)."""
        rank_rng = all_gather_objects(rng_state(self.criterion))
        if self._nranks > 1 and self._local_rank != 0:
            return
        extra = {
            "best_ap": self.best_ap,
            "best_epoch": self.best_epoch,
            "nranks": self._nranks,
            "steps_per_epoch": len(self.loader),
            "epoch_losses": list(self._epoch_losses) if epoch_step else [],
        }
        with no_interrupt():
            for name in names:
                save_checkpoint(
                    os.path.join(self.save_dir, name),
                    self.model,
                    self.optimizer,
                    epochs_done,
                    self.global_iter,
                    self.criterion,
                    self.ema if self.use_ema else None,
                    extra=extra,
                    epoch_step=epoch_step,
                    rank_rng=rank_rng,
                )

    def _save_iteration(self, epoch_id, steps_done, steps_per_epoch):
        """The ``snapshot_iter`` checkpoint after ``steps_done`` batches of ``epoch_id``; only the
        ``max_checkpoints`` newest iteration checkpoints are kept."""
        position = (epoch_id + 1, 0) if steps_done == steps_per_epoch else (epoch_id, steps_done)
        self._save([f"{ITER_PREFIX}{self.global_iter}"], *position)
        if self._nranks > 1 and self._local_rank != 0:
            return
        written = sorted(
            glob.glob(os.path.join(glob.escape(self.save_dir), f"{ITER_PREFIX}*.pdstate")),
            key=lambda p: os.stat(p).st_mtime_ns,
        )
        for path in written[: -self.max_checkpoints]:
            remove_checkpoint(path[: -len(".pdstate")])

    def _retain_epoch_checkpoints(self, final=False):
        """Rank 0, after an epoch's checkpoints are written: of the numbered epoch checkpoints
        (``<epoch>.pdparams`` ...; not ``best_model``, ``model_final``, ``iter_<n>``) keep the
        ``max_epoch_checkpoints`` newest (0: all), newest by the write time of the
        ``.pdparams`` as ``-r auto`` counts it, so that after a resume from an older checkpoint
        the abandoned run's epochs go first. With ``epoch_checkpoint_weights_only`` every kept
        one but the newest loses its ``.pdopt`` and ``.pdstate``; the newest stays whole, so
        ``-r auto`` still has an epoch to resume from, until ``final`` (``model_final``, whole,
        was just written): then every numbered one keeps only its weights."""
        if self._nranks > 1 and self._local_rank != 0:
            return
        keep = whole_number(self.cfg, "max_epoch_checkpoints", 0, 0)
        weights_only = self.cfg.get("epoch_checkpoint_weights_only", False)
        if not isinstance(weights_only, bool):
            raise ValueError(
                f"{self.cfg.get('filename', 'config')}: epoch_checkpoint_weights_only must be "
                f"true or false, got {weights_only!r}"
            )
        pattern = os.path.join(glob.escape(self.save_dir), "*.pdparams")
        bases = [p[: -len(".pdparams")] for p in glob.glob(pattern)]
        epochs = sorted(
            (b for b in bases if os.path.basename(b).isdigit()),
            key=lambda b: (os.stat(b + ".pdparams").st_mtime_ns, int(os.path.basename(b))),
        )
        dropped = epochs[:-keep] if keep else []
        for base in dropped:
            remove_checkpoint(base)
        if dropped:
            names = ", ".join(os.path.basename(b) for b in dropped)
            logger.info(f"removed epoch checkpoint(s) {names} (max_epoch_checkpoints: {keep})")
        if weights_only:
            for base in epochs[len(dropped) :] if final else epochs[len(dropped) : -1]:
                keep_weights_only(base)

    def _log_summary(self, seconds, validate):
        """Rank 0, at the end of ``train``: one line with the time this run took, the best
        epoch and its box AP (with ``validate``) and where the final and best weights are."""
        if self._nranks > 1 and self._local_rank != 0:
            return
        minutes, secs = divmod(round(seconds), 60)
        took = f"{minutes} min {secs} s" if minutes else f"{seconds:.1f} s"
        final = os.path.join(self.save_dir, "model_final")
        text = f"training done in {took}: final weights {final}"
        if validate and self.best_epoch is not None:
            best = os.path.join(self.save_dir, "best_model")
            text += f"; best box AP {self.best_ap:.4f} at epoch {self.best_epoch}: {best}"
        elif validate:
            text += "; no epoch was evaluated with a box AP"
        logger.info(text)

    def _snapshot_epoch(self, epoch_id, end_epoch):
        return (
            epoch_id == end_epoch - 1
            or (epoch_id + 1) % int(self.cfg.get("snapshot_epoch", 1)) == 0
        )
