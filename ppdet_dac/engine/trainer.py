"""DACTrainer: ppdet's Trainer with the training loop DAC-DETR users need.

ppdet's ``Trainer`` builds everything (datasets, readers, model, LR schedule, optimizer, EMA,
metrics, log/VisualDL callbacks); this subclass keeps that and replaces the loop, which adds:

* checkpoints written atomically with the full training state (``checkpoint.py``) every
  ``snapshot_epoch`` epochs plus ``model_final``, and every ``snapshot_iter`` iterations
  (``iter_<n>``, the last ``max_checkpoints`` kept); ``resume`` continues exactly where one left
  off, also in the middle of an epoch (the batches already trained are skipped unread), and
  ``auto_resume_checkpoint`` finds the newest complete checkpoint for ``-r auto``;
* a NaN/inf guard: a non-finite loss stops training with a ``FloatingPointError`` that names the
  epoch, iteration and loss terms, before the step is applied, so the last checkpoint is the last
  good state (all ranks stop together);
* a log line per ``log_iter`` iterations with epoch, iteration, lr, the last-layer loss terms
  (averaged over the ranks, as the official code logs them), speed and ETA (ppdet's
  LogPrinter), VisualDL scalars with ``use_vdl``; the terms reach the host only on those
  iterations, the other steps copy their total loss alone (``loss_log.py``);
* the official gradient clip: one norm over all gradients (``optimizer.py``);
* AMP on GPU (``--amp``; the attention op itself runs in float32), ignored with a warning on CPU;
* COCO evaluation after snapshot epochs with ``--eval`` (per-class AP table), ``best_model`` kept,
  sharded over the ranks (``evaluation.py``); ``evaluate`` does the same in eval mode. Its
  outputs (``bbox.json``, ``bbox_pr_curve/``) go to ``output_eval``, by default the checkpoint
  folder; pycocotools' prints are summarised unless ``verbose`` (tools' ``-v``). An evaluation
  that fails after an epoch still leaves that epoch's checkpoint;
* a warning at the start when the LR schedule does not fit ``epoch`` (``schedule_mismatch``);
  nothing is rescaled.

Epochs are numbered from 0 everywhere, as ppdet does (``Epoch: [0]``, ``0.pdparams``): the log
lines, the checkpoint names, the "best" lines, ``history`` and the query analysis CSV.

The evaluation methods live in ``trainer_eval.py`` (``TrainerEvaluation``), the checkpoint
writing in ``trainer_checkpoints.py`` (``TrainerCheckpoints``), the settings read from the config
(checkpoint folder, ``-r auto``, the schedule check) in ``run_settings.py``.

Several ranks: rank 0 writes the checkpoints, holding the random states of every rank (one
gather at each checkpoint); every rank reads them on resume, so ``save_dir`` must be on a file
system all machines share.
"""

import math
import os
import re
import time

import numpy as np
import paddle
from ppdet.engine import Trainer
from ppdet.engine.callbacks import ComposeCallback, LogPrinter, VisualDLWriter
from ppdet.utils import stats
from ppdet.utils.logger import setup_logger

from ppdet_dac.interop.weights import load_model_weights

from .checkpoint import load_checkpoint
from .evaluation import EvaluationError, fresh_iterator
from .loss_log import LossLog, host_loss_terms
from .optimizer import use_official_clip
from .run_settings import (
    AUTO_RESUME,
    DEFAULT_MAX_CHECKPOINTS,
    auto_resume_checkpoint,
    checkpoint_dir,
    schedule_mismatch,
    whole_number,
)
from .trainer_checkpoints import TrainerCheckpoints
from .trainer_eval import TrainerEvaluation, require_annotations

logger = setup_logger(__name__)

__all__ = [
    "DACTrainer",
    "AUTO_RESUME",
    "auto_resume_checkpoint",
    "checkpoint_dir",
    "schedule_mismatch",
]


class _SkipBatches:
    """A batch sampler without the first ``skip`` batches of ``sampler`` (their indices are
    computed, their samples never read)."""

    def __init__(self, sampler, skip):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        batches = iter(self.sampler)
        for _ in range(self.skip):
            next(batches, None)
        return batches

    def __len__(self):
        return max(len(self.sampler) - self.skip, 0)


_AUX_SUFFIX = re.compile(r"_\d+(_one2one)?$")


def _logged_terms(values):
    """The total and the last-layer terms of {name: float} (aux-layer terms ``*_0[_one2one]`` ..
    ``*_4[_one2one]`` are left out of the log line; all of them are in the loss)."""
    return {k: _LoggedValue(v) for k, v in values.items() if not _AUX_SUFFIX.search(k)}


class _LoggedValue(float):
    """A host float that ppdet's TrainingStats can read (it calls ``.numpy()`` on each term)."""

    def numpy(self):
        return float(self)


class DACTrainer(TrainerCheckpoints, TrainerEvaluation, Trainer):
    """Trainer(cfg, mode) as in ppdet; ``train``, ``resume_weights`` and eval are ours."""

    def __init__(self, cfg, mode="train"):
        super().__init__(cfg, mode)
        self.global_iter = 0
        self.start_step = 0  # batches of start_epoch already trained (mid-epoch resume)
        self.best_ap, self.best_epoch = -math.inf, None
        # per snapshot epoch: {'epoch', 'loss' (mean over the epoch), 'ap', 'stats' (all the
        # metric's numbers, with validate), 'seconds' and 'steps' (the epoch's training steps)}
        self.history = []
        self._epoch_losses = []  # the logged loss of each step of the current epoch
        self.save_dir = checkpoint_dir(self.cfg)
        self.snapshot_iter = whole_number(self.cfg, "snapshot_iter", 0, 0)
        self.max_checkpoints = whole_number(self.cfg, "max_checkpoints", DEFAULT_MAX_CHECKPOINTS, 1)
        if self.optimizer is not None:  # train mode: one group, one clip over all gradients
            use_official_clip(
                self.optimizer, f"{self.cfg.get('filename', 'config')}: OptimizerBuilder"
            )
        if self.use_amp and not self._on_accelerator():
            logger.warning("--amp needs a GPU; training on CPU in float32")
            self.use_amp = False
        if mode in ("train", "eval"):
            require_annotations(self.dataset, f"{mode.capitalize()}Dataset")

    def load_weights(self, weights):
        """``weights=`` (eval, test): a .pdparams (path with or without the suffix, or URL) into
        the model by ``load_model_weights``: every model tensor must be in the file with its
        shape, else one ValueError naming the file and what does not fit."""
        if self.is_loaded_weights:
            return
        self.start_epoch = 0
        load_model_weights(self.model, weights)

    def _on_accelerator(self):
        return bool(self.cfg.get("use_gpu", False)) and paddle.is_compiled_with_cuda()

    def _init_callbacks(self):
        # Checkpoints are ours (atomic, full state); ppdet's printer and VisualDL writer stay.
        self._callbacks = []
        if self.mode in ("train", "eval"):
            self._callbacks.append(LogPrinter(self))
        if self.cfg.get("use_vdl", False) and self.mode in ("train", "test"):
            self._callbacks.append(VisualDLWriter(self))
        self._compose_callback = ComposeCallback(self._callbacks) if self._callbacks else None

    def set_seed(self, seed):
        """Seed what a training run draws: per-sample augmentation (a function of seed, epoch
        and sample index, see DACCOCODataSet.set_sample_seed) and the one-to-many sampler."""
        if hasattr(self.dataset, "set_sample_seed"):
            self.dataset.set_sample_seed(seed)
        else:
            logger.warning(
                f"{type(self.dataset).__name__} cannot seed its samples: the data "
                "augmentation of a resumed run will differ from an uninterrupted one"
            )
        if self.criterion is not None and hasattr(self.criterion, "rng"):
            self.criterion.rng = np.random.default_rng(seed)

    def _epoch_batches(self, epoch_id, skip=0):
        """A fresh iterator over the training batches of ``epoch_id``, without its first
        ``skip`` batches.

        ppdet's reader keeps an iterator that starts reading (and drawing random numbers) ahead,
        before the epoch is known; it is shut down here, and each epoch gets its own iterator
        created after the sampler and dataset know the epoch, so that the shuffle order and the
        augmentation depend on the epoch alone, also after a resume (in the middle of an epoch
        too: the skipped batches are never read)."""
        reader = self.loader
        reader.dataset.set_epoch(epoch_id)
        sampler = getattr(reader, "_batch_sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch_id)
        return fresh_iterator(
            reader, _SkipBatches(reader.dataloader.batch_sampler, skip) if skip else None
        )

    @property
    def criterion(self):
        return getattr(self.model, "criterion", None)

    def resume_weights(self, weights):
        """Restore a checkpoint written by this trainer (weights, optimizer, LR, this rank's
        random states, EMA, data position)."""
        try:
            state = load_checkpoint(
                weights,
                self.model,
                self.optimizer,
                self.criterion,
                self.ema if self.use_ema else None,
                rank=self._local_rank,
                nranks=self._nranks,
            )
        except FileNotFoundError as err:
            if self._nranks < 2:
                raise
            raise FileNotFoundError(
                f"rank {self._local_rank}: {err}. Every rank reads the "
                "checkpoint: save_dir must be on a file system that all "
                "machines share"
            ) from err
        extra = state["extra"]
        self.start_epoch = int(state["epochs_done"])
        self.start_step = int(state.get("epoch_step", 0))
        self.global_iter = int(state["global_iter"])
        self.best_ap, self.best_epoch = (
            float(extra.get("best_ap", -math.inf)),
            extra.get("best_epoch"),
        )
        steps = len(self.loader)
        saved = (extra.get("nranks", self._nranks), extra.get("steps_per_epoch", steps))
        if self.start_step and saved != (self._nranks, steps):
            logger.warning(
                f"{weights} was written by {saved[0]} rank(s) with {saved[1]} "
                f"iterations per epoch, this run has {self._nranks} and {steps}: it "
                f"continues at batch {self.start_step} of epoch {self.start_epoch}, "
                "not exactly as an uninterrupted run"
            )
        if self.start_step >= steps:
            self.start_epoch, self.start_step = self.start_epoch + 1, 0
        self._epoch_losses = list(extra.get("epoch_losses", [])) if self.start_step else []

    def _check_finite(self, outputs, epoch_id, step_id):
        """This step's loss values averaged over the ranks ({name: float}: every term on a
        step that logs them, else only 'loss'; ``LossLog``); the steps' terms to log go to
        ``_log_rows``. Raises FloatingPointError when the total loss is NaN/inf on any rank.

        One host copy per step (of the total, or on log steps of the terms to log): a NaN/inf
        term makes the total NaN/inf, and with several ranks the all-reduce of the values makes
        every rank see it, so that all of them stop together (the others would otherwise wait in
        the next all-reduce). Only then are this rank's terms copied, to name the bad ones."""
        values, self._log_rows = self._loss_log.step(outputs, self._loss_log.due(step_id))
        if not math.isfinite(values["loss"]):
            local = host_loss_terms(outputs)
            bad = [name for name, value in local.items() if not math.isfinite(value)]
            where = (
                f"epoch {epoch_id}, iteration {step_id} of the epoch "
                f"(global iteration {self.global_iter})"
            )
            what = f"non-finite loss terms {bad}" if bad else "a non-finite loss on another rank"
            raise FloatingPointError(
                f"training stopped at {where}: {what}. The step was not applied; the last "
                f"checkpoint in {self.save_dir} holds the last good state. Lower the learning "
                "rate or check the data of this iteration."
            )
        return values

    def train(self, validate=False):
        """Train from ``start_epoch`` to ``cfg.epoch``; see the module docstring."""
        if self.mode != "train":
            raise ValueError(f"DACTrainer.train needs mode 'train', this one is {self.mode!r}")
        model = self.model
        if self._nranks > 1:
            model = paddle.DataParallel(
                model, find_unused_parameters=self.cfg.get("find_unused_parameters", True)
            )
        scaler = (
            paddle.amp.GradScaler(init_loss_scaling=self.cfg.get("init_loss_scaling", 1024))
            if self.use_amp
            else None
        )
        steps_per_epoch = len(self.loader)
        self.status.update(
            {
                "epoch_id": self.start_epoch,
                "step_id": 0,
                "steps_per_epoch": steps_per_epoch,
                "batch_time": stats.SmoothedValue(self.cfg.log_iter, fmt="{avg:.4f}"),
                "data_time": stats.SmoothedValue(self.cfg.log_iter, fmt="{avg:.4f}"),
                "training_staus": stats.TrainingStats(self.cfg.log_iter),
            }
        )
        end_epoch, started = int(self.cfg.epoch), time.time()
        self._loss_log = LossLog(self.cfg.log_iter, self.cfg.get("use_vdl", False), self._nranks)
        mismatch = schedule_mismatch(self.cfg)
        if mismatch:
            logger.warning(mismatch)
        self._compose_callback.on_train_begin(self.status)
        for epoch_id in range(self.start_epoch, end_epoch):
            self.status.update(mode="train", epoch_id=epoch_id)
            self._compose_callback.on_epoch_begin(self.status)
            model.train()
            skip = self.start_step if epoch_id == self.start_epoch else 0
            batches = self._epoch_batches(epoch_id, skip)
            if skip:
                logger.info(
                    f"epoch {epoch_id}: resuming at batch {skip} of {steps_per_epoch} "
                    "(the batches before it are skipped unread)"
                )
            else:
                self._epoch_losses = []
            tic = epoch_start = time.time()
            for step_id, data in enumerate(batches, start=skip):
                self.status["data_time"].update(time.time() - tic)
                self.status["step_id"] = step_id
                self._compose_callback.on_step_begin(self.status)
                data["epoch_id"] = epoch_id
                with paddle.amp.auto_cast(
                    enable=self.use_amp,
                    level=self.amp_level,
                    custom_white_list=self.custom_white_list,
                    custom_black_list=self.custom_black_list,
                ):
                    outputs = model(data)
                logged = self._check_finite(outputs, epoch_id, step_id)
                self._epoch_losses.append(logged["loss"])
                loss = outputs["loss"]
                if scaler is not None:
                    scaled = scaler.scale(loss)
                    scaled.backward()
                    scaler.minimize(self.optimizer, scaled)
                else:
                    loss.backward()
                    self.optimizer.step()
                self.status["learning_rate"] = self.optimizer.get_lr()
                self.lr.step()
                self.optimizer.clear_grad()
                self.global_iter += 1
                if self.use_ema:
                    self.ema.update()
                if self._nranks < 2 or self._local_rank == 0:
                    for values in self._log_rows:
                        self.status["training_staus"].update(_logged_terms(values))
                self.status["batch_time"].update(time.time() - tic)
                self._compose_callback.on_step_end(self.status)
                if (
                    self.snapshot_iter
                    and self.global_iter % self.snapshot_iter == 0
                    and not (
                        step_id + 1 == steps_per_epoch and self._snapshot_epoch(epoch_id, end_epoch)
                    )
                ):
                    self._save_iteration(epoch_id, step_id + 1, steps_per_epoch)
                tic = time.time()
            timing = (time.time() - epoch_start, steps_per_epoch - skip)
            self._end_epoch(
                epoch_id, end_epoch, validate, float(np.mean(self._epoch_losses)), timing
            )
        self.start_step = 0
        self._compose_callback.on_train_end(self.status)
        self._log_summary(time.time() - started, validate)

    def _end_epoch(self, epoch_id, end_epoch, validate, mean_loss, timing=(None, None)):
        last = epoch_id == end_epoch - 1
        self._compose_callback.on_epoch_end(self.status)
        if not self._snapshot_epoch(epoch_id, end_epoch):
            return
        is_main = self._nranks < 2 or self._local_rank == 0
        record = {"epoch": epoch_id, "loss": mean_loss, "ap": None, "stats": None}
        record["seconds"], record["steps"] = timing
        self.history.append(record)
        names = []
        own_name = "model_final" if last else str(epoch_id)
        if validate:  # every rank evaluates its share; rank 0 gets the AP
            try:
                ap = record["ap"] = self._validate_weights()
                record["stats"] = getattr(self, "last_eval_stats", None)
            except Exception as err:
                # with several ranks only an EvaluationError is raised by all of them together
                # (any other may leave a rank inside a collective): then the checkpoint, too
                if self._nranks > 1 and not isinstance(err, EvaluationError):
                    raise
                self._save([own_name], epoch_id + 1)
                logger.error(
                    f"the evaluation after epoch {epoch_id} failed (below); the "
                    f"epoch's checkpoint {os.path.join(self.save_dir, own_name)} is "
                    "written without its AP: once the evaluation data is fixed, "
                    "resume from it with -r or evaluate it with tools/eval.py"
                )
                raise
            if is_main and ap is not None and ap >= self.best_ap:
                self.best_ap, self.best_epoch = ap, epoch_id
                names.append("best_model")
                logger.info(f"best box AP so far: {ap:.4f} (epoch {epoch_id})")
        self._save(names + [own_name], epoch_id + 1)
        self._retain_epoch_checkpoints(final=last)
        if is_main:
            ap_text = "" if record["ap"] is None else f", box AP {record['ap']:.4f}"
            logger.info(f"epoch {epoch_id}: mean loss {mean_loss:.4f}{ap_text}")
