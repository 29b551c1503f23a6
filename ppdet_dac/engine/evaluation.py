"""Evaluation over one or several ranks, with the numbers kept (ppdet's own loop resets them).

Sharded evaluation: the val set is cut into the batches one process would run (images
0..B-1, B..2B-1, ... for EvalReader.batch_size B, zero-padded within a batch), and batch k goes
to rank k mod W. Each batch is therefore composed and padded exactly as in a single-process
run, so every image gets the same detections; the ranks run their batches without any
collective, then one gather brings the outputs to rank 0, which feeds them to the metric in
batch order (the bbox.json of one process, byte for byte) and runs pycocotools once. No sample
is duplicated to even out the ranks (they differ by at most one batch), so none counts twice.
"""
import time

import numpy as np
import paddle
from ppdet.utils.logger import setup_logger

from .distributed import all_gather_objects, world

logger = setup_logger(__name__)

__all__ = ["ShardedBatches", "evaluate_metrics", "fresh_iterator"]


class ShardedBatches:
    """Batch sampler: this rank's whole batches of the single-process order (batch k of
    ``range(num_samples)`` in batches of ``batch_size`` goes to rank ``k % nranks``)."""

    def __init__(self, num_samples, batch_size, rank=0, nranks=1):
        self.num_batches = -(-num_samples // batch_size)
        self.batch_size = batch_size
        self.num_samples = num_samples
        self.batch_ids = list(range(rank, self.num_batches, nranks))

    def indices(self, k):
        return list(range(k * self.batch_size, min((k + 1) * self.batch_size, self.num_samples)))

    def __iter__(self):
        return (self.indices(k) for k in self.batch_ids)

    def __len__(self):
        return len(self.batch_ids)


def fresh_iterator(reader, batch_sampler=None):
    """A new iterator over a ppdet reader's DataLoader, with ``batch_sampler`` for this pass.

    ppdet's reader starts an iterator at construction that reads ahead (and, with workers, starts
    processes); it is shut down first. The reader's own batch sampler is left in place."""
    ahead = getattr(reader, "loader", None)
    if ahead is not None and hasattr(ahead, "_try_shutdown_all"):
        ahead._try_shutdown_all()
    reader.loader = None
    loader = reader.dataloader
    if batch_sampler is None:
        return iter(loader)
    own = loader.batch_sampler
    loader.batch_sampler = batch_sampler   # read once, when the iterator is created
    try:
        return iter(loader)
    finally:
        loader.batch_sampler = own


def _host(outputs):
    return {k: v.numpy() if isinstance(v, paddle.Tensor) else v for k, v in outputs.items()}


def evaluate_metrics(trainer, loader=None, source="config", use_amp=False):
    """Evaluate ``trainer.model`` with ``trainer._metrics`` on ``loader`` (a ppdet reader;
    default ``trainer.loader``), sharded over the ranks as the module docstring says.

    Returns {metric class name: its get_results()} on rank 0 (for COCO: {'bbox': [12 COCO
    stats]}), after logging the usual tables; {} on the other ranks. A plain iterable of
    batches is evaluated as it comes (one process only). ``source`` names the config in errors;
    ``use_amp``: the forward under ``auto_cast`` on GPU/NPU/MLU, as ppdet's ``evaluate``.
    """
    reader = trainer.loader if loader is None else loader
    nranks, rank = world()
    metric = trainer.cfg.get("metric", "COCO")
    if nranks > 1 and metric != "COCO":
        raise ValueError(f"{source}: evaluation over {nranks} processes supports metric: COCO "
                         f"(its detections are gathered to rank 0), not {metric!r}; evaluate "
                         "with one process")
    if hasattr(reader, "dataloader"):
        sampler = ShardedBatches(len(reader.dataset), reader.dataloader.batch_sampler.batch_size,
                                 rank, nranks)
        batches, batch_ids, num_batches = fresh_iterator(reader, sampler), sampler.batch_ids, \
            sampler.num_batches
    elif nranks > 1:
        raise ValueError("sharded evaluation needs a ppdet reader (with .dataloader), "
                         f"got {type(reader).__name__}")
    else:
        batches, batch_ids, num_batches = reader, None, None
    tic = time.time()
    model = trainer.model
    model.eval()
    records = []
    cfg = trainer.cfg
    amp = dict(enable=bool(use_amp) and bool(
        cfg.get("use_gpu", False) or cfg.get("use_npu", False) or cfg.get("use_mlu", False)),
        level=getattr(trainer, "amp_level", "O1"),
        custom_white_list=getattr(trainer, "custom_white_list", None),
        custom_black_list=getattr(trainer, "custom_black_list", None))
    with paddle.no_grad():
        for i, data in enumerate(batches):
            with paddle.amp.auto_cast(**amp):
                outs = model(data)
            im_id = data["im_id"]
            records.append((batch_ids[i] if batch_ids is not None else i,
                            im_id.numpy() if isinstance(im_id, paddle.Tensor) else im_id,
                            _host(outs)))
    shares = [(len(records), time.time() - tic)]
    if nranks > 1:
        parts = all_gather_objects((records, shares[0]))
        records = [r for part, _ in parts for r in part]
        shares = [share for _, share in parts]
    infer_s = time.time() - tic   # until every rank's outputs are on rank 0
    if rank != 0:
        return {}
    records.sort(key=lambda r: r[0])
    ids = [r[0] for r in records]
    expected = list(range(num_batches if num_batches is not None else len(records)))
    if ids != expected:
        raise RuntimeError(f"sharded evaluation lost or repeated batches: got {ids}, expected "
                           f"{expected}")
    num_images = sum(int(np.asarray(r[1]).shape[0]) for r in records)
    tic = time.time()
    for _, im_id, outs in records:
        for m in trainer._metrics:
            m.update({"im_id": im_id}, outs)
    results = {}
    for m in trainer._metrics:
        m.accumulate()
        m.log()
        results[type(m).__name__] = m.get_results()
        m.reset()
    logger.info(f"evaluated {num_images} images ({len(records)} batches) on {nranks} "
                f"process(es): inference and gather {infer_s:.2f} s, metric "
                f"{time.time() - tic:.2f} s; batches per rank {[n for n, _ in shares]}, "
                f"inference seconds per rank {[round(t, 2) for _, t in shares]}")
    return results
