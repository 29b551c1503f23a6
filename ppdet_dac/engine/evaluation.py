"""Evaluation over one or several ranks, with the numbers kept (ppdet's own loop resets them).

Sharded evaluation: the val set is cut into the batches one process would run (images
0..B-1, B..2B-1, ... for EvalReader.batch_size B, zero-padded within a batch), and batch k goes
to rank k mod W. Each batch is therefore composed and padded exactly as in a single-process
run, so every image gets the same detections; the ranks run their batches without any
collective, then one gather brings the outputs to rank 0, which feeds them to the metric in
batch order (the bbox.json of one process, byte for byte) and runs pycocotools once. No sample
is duplicated to even out the ranks (they differ by at most one batch), so none counts twice.
A rank whose batches fail (a data error) tells the others at that gather: every rank raises
``EvaluationError`` together (the failing rank's error as its cause).

COCO metric (``DACCOCOMetric``): ``bbox.json`` and the per-class precision/recall curves
(``bbox_pr_curve/``) are written to the metric's ``output_eval`` folder, never the working
directory, and pycocotools' prints are replaced by one summary line and the per-class AP table
(``verbose`` shows them). An annotation file with duplicated image ids, image files or
annotation ids is refused (one ValueError naming them, ``ppdet_dac.data.duplicates``):
pycocotools would silently keep one of each in its index and the AP would be wrong.
"""

import contextlib
import io
import itertools
import json
import os
import time

import numpy as np
import paddle
from ppdet.metrics import COCOMetric, VOCMetric
from ppdet.utils.logger import setup_logger

from ppdet_dac.data.duplicates import check_no_duplicates
from ppdet_dac.utils.atomic import atomic_open

from .distributed import all_gather_objects, world

logger = setup_logger(__name__)

__all__ = [
    "ShardedBatches",
    "evaluate_metrics",
    "fresh_iterator",
    "EvaluationError",
    "DACCOCOMetric",
    "DACVOCMetric",
    "coco_box_eval",
    "PR_CURVE_DIR",
]

PR_CURVE_DIR = "bbox_pr_curve"


class EvaluationError(RuntimeError):
    """The evaluation failed on some rank of a run over several ranks; every rank raises it."""


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
    loader.batch_sampler = batch_sampler  # read once, when the iterator is created
    try:
        return iter(loader)
    finally:
        loader.batch_sampler = own


# batch fields a metric other than COCO reads besides im_id (ppdet's VOCMetric: the ground truth
# in the resized image, and the scale back to the original)
METRIC_INPUTS = ("gt_bbox", "gt_class", "difficult", "scale_factor")


def _to_host(value):
    if isinstance(value, (list, tuple)):
        return [_to_host(v) for v in value]
    return value.numpy() if isinstance(value, paddle.Tensor) else value


def _host(outputs):
    return {k: _to_host(v) for k, v in outputs.items()}


def evaluate_metrics(trainer, loader=None, source="config", use_amp=False, model=None):
    """Evaluate ``trainer.model`` with ``trainer._metrics`` on ``loader`` (a ppdet reader;
    default ``trainer.loader``), sharded over the ranks as the module docstring says.

    Returns {metric class name: its get_results()} on rank 0 (COCO, also DACCOCOMetric, under
    'COCOMetric': {'bbox': [12 COCO stats]}), after logging the usual tables; {} on the other
    ranks. A plain iterable of
    batches is evaluated as it comes (one process only). ``source`` names the config in errors;
    ``use_amp``: the forward under ``auto_cast`` on GPU/NPU/MLU, as ppdet's ``evaluate``.
    ``model``: what maps a batch to the outputs instead of ``trainer.model`` (an
    ``ppdet_dac.deploy.exported_eval.ExportedModel``).
    """
    reader = trainer.loader if loader is None else loader
    nranks, rank = world()
    metric = trainer.cfg.get("metric", "COCO")
    if nranks > 1 and metric != "COCO":
        raise ValueError(
            f"{source}: evaluation over {nranks} processes supports metric: COCO "
            f"(its detections are gathered to rank 0), not {metric!r}; evaluate "
            "with one process"
        )
    if hasattr(reader, "dataloader"):
        sampler = ShardedBatches(
            len(reader.dataset), reader.dataloader.batch_sampler.batch_size, rank, nranks
        )
        batches, batch_ids, num_batches = (
            fresh_iterator(reader, sampler),
            sampler.batch_ids,
            sampler.num_batches,
        )
    elif nranks > 1:
        raise ValueError(
            "sharded evaluation needs a ppdet reader (with .dataloader), "
            f"got {type(reader).__name__}"
        )
    else:
        batches, batch_ids, num_batches = reader, None, None
    tic = time.time()
    model = trainer.model if model is None else model
    model.eval()
    records = []
    cfg = trainer.cfg
    amp = dict(
        enable=bool(use_amp)
        and bool(
            cfg.get("use_gpu", False) or cfg.get("use_npu", False) or cfg.get("use_mlu", False)
        ),
        level=getattr(trainer, "amp_level", "O1"),
        custom_white_list=getattr(trainer, "custom_white_list", None),
        custom_black_list=getattr(trainer, "custom_black_list", None),
    )
    failure = None
    with paddle.no_grad():
        try:
            for i, data in enumerate(batches):
                with paddle.amp.auto_cast(**amp):
                    outs = model(data)
                inputs = (
                    {}
                    if metric == "COCO"
                    else {k: _to_host(data[k]) for k in METRIC_INPUTS if k in data}
                )
                inputs["im_id"] = _to_host(data["im_id"])
                records.append((batch_ids[i] if batch_ids is not None else i, inputs, _host(outs)))
        except Exception as err:  # several ranks: raised on every rank after the gather
            if nranks < 2:
                raise
            failure = err
    shares = [(len(records), time.time() - tic)]
    if nranks > 1:
        said = None if failure is None else f"{type(failure).__name__}: {failure}"
        parts = all_gather_objects((records, shares[0], said))
        failed = [f"rank {r}: {text}" for r, (_, _, text) in enumerate(parts) if text]
        if failed:
            raise EvaluationError(
                f"{source}: evaluation failed on {len(failed)} of {nranks} "
                f"ranks: {'; '.join(failed)}"
            ) from failure
        records = [r for part, _, _ in parts for r in part]
        shares = [share for _, share, _ in parts]
    infer_s = time.time() - tic  # until every rank's outputs are on rank 0
    if rank != 0:
        return {}
    records.sort(key=lambda r: r[0])
    ids = [r[0] for r in records]
    expected = list(range(num_batches if num_batches is not None else len(records)))
    if ids != expected:
        raise RuntimeError(
            f"sharded evaluation lost or repeated batches: got {ids}, expected {expected}"
        )
    num_images = sum(int(np.asarray(r[1]["im_id"]).shape[0]) for r in records)
    tic = time.time()
    for _, inputs, outs in records:
        for m in trainer._metrics:
            m.update(inputs, outs)
    results = {}
    for m in trainer._metrics:
        m.accumulate()
        m.log()
        results["COCOMetric" if isinstance(m, COCOMetric) else type(m).__name__] = m.get_results()
        m.reset()
    logger.info(
        f"evaluated {num_images} images ({len(records)} batches) on {nranks} "
        f"process(es): inference and gather {infer_s:.2f} s, metric "
        f"{time.time() - tic:.2f} s; batches per rank {[n for n, _ in shares]}, "
        f"inference seconds per rank {[round(t, 2) for _, t in shares]}"
    )
    return results


def _stat(value):
    return "n/a" if value < 0 else f"{value:.3f}"


def coco_box_eval(
    json_path, anno_file, classwise=False, pr_curve_dir=None, verbose=False, img_ids=None
):
    """COCO box AP of the detections ``json_path`` against ``anno_file``; returns the 12 COCO
    stats (pycocotools' ``COCOeval.stats``).

    ``img_ids``: the images that were evaluated (None: every image of the annotation file); the
    others (e.g. unreadable ones the dataset left out) do not count, their boxes are no misses.

    Logs one summary line and, with ``classwise``, the per-class AP table; with
    ``pr_curve_dir`` also draws each class's precision/recall curve (IoU 0.5) there.
    pycocotools' own prints are shown with ``verbose`` only (and when it raises).
    Raises ValueError naming ``anno_file`` and the ids when it has duplicated ids.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with open(anno_file) as handle:
        gt = json.load(handle)
    check_no_duplicates(gt, anno_file)
    printed = io.StringIO()
    try:
        with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(printed):
            coco_gt = COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            coco_eval = COCOeval(coco_gt, coco_gt.loadRes(json_path), "bbox")
            left_out = [] if img_ids is None else sorted(set(coco_gt.getImgIds()) - set(img_ids))
            if left_out:
                coco_eval.params.imgIds = sorted(set(coco_gt.getImgIds()) - set(left_out))
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
    except Exception:  # pycocotools' prints say where it stopped: shown, then the error
        logger.error(f"pycocotools on {json_path} against {anno_file}:\n{printed.getvalue()}")
        raise
    if left_out:
        logger.warning(
            f"{anno_file}: {len(left_out)} of {len(coco_gt.getImgIds())} images were "
            f"not evaluated and do not count (image ids {left_out[:5]}"
            f"{' ...' if len(left_out) > 5 else ''})"
        )
    s = coco_eval.stats
    logger.info(
        f"box AP {_stat(s[0])} (IoU 0.50:0.95), AP50 {_stat(s[1])}, AP75 "
        f"{_stat(s[2])}; AP small/medium/large {_stat(s[3])}/{_stat(s[4])}/"
        f"{_stat(s[5])}; AR@1/10/100 {_stat(s[6])}/{_stat(s[7])}/{_stat(s[8])}"
    )
    if classwise:
        _per_class(coco_eval, coco_gt, pr_curve_dir)
    return s


def _per_class(coco_eval, coco_gt, pr_curve_dir):
    """The per-class AP table (as ppdet's cocoapi_eval) and the PR curves in pr_curve_dir."""
    from ppdet.metrics.map_utils import draw_pr_curve
    from terminaltables import AsciiTable

    precisions = coco_eval.eval["precision"]  # [IoU, recall, class, area, max dets]
    rows = []
    for idx, cat_id in enumerate(coco_gt.getCatIds()):
        name = str(coco_gt.loadCats(cat_id)[0]["name"])
        precision = precisions[:, :, idx, 0, -1]
        precision = precision[precision > -1]
        rows.append((name, f"{float(np.mean(precision)) if precision.size else float('nan'):.3f}"))
        if pr_curve_dir:
            draw_pr_curve(
                precisions[0, :, idx, 0, 2],
                np.arange(0.0, 1.01, 0.01),
                out_dir=pr_curve_dir,
                file_name=f"{name}_precision_recall_curve.jpg",
            )
    columns = min(6, len(rows) * 2)
    flat = list(itertools.chain(*rows))
    table = [["category", "AP"] * (columns // 2)]
    table += list(itertools.zip_longest(*[flat[i::columns] for i in range(columns)]))
    logger.info(f"per-class box AP:\n{AsciiTable(table).table}")
    if pr_curve_dir:
        logger.info(f"per-class precision/recall curves: {pr_curve_dir}")


class DACCOCOMetric(COCOMetric):
    """ppdet's COCOMetric (box AP) with its outputs in ``output_eval``: ``bbox.json`` and, with
    ``classwise``, ``bbox_pr_curve/`` (ppdet writes the curves to the working directory), the
    paths logged; pycocotools' prints summarised unless ``verbose`` (``coco_box_eval``)."""

    def __init__(self, anno_file, output_eval, verbose=False, **kwargs):
        if anno_file and os.path.isfile(anno_file):  # duplicated ids: refused before inference
            with open(anno_file) as handle:
                check_no_duplicates(json.load(handle), anno_file)
        # ppdet's COCOMetric would create output_eval here; it is created by accumulate, so
        # that a run that fails before evaluating leaves no empty folder behind
        super().__init__(anno_file, output_eval=None, **kwargs)
        self.output_eval = output_eval
        self.verbose = verbose
        self.img_ids = set()

    def reset(self):
        super().reset()
        self.img_ids = set()

    def update(self, inputs, outputs):
        """As ppdet's, remembering the evaluated image ids: only they count in the AP."""
        im_id = inputs["im_id"]
        im_id = im_id.numpy() if isinstance(im_id, paddle.Tensor) else np.asarray(im_id)
        self.img_ids.update(int(i) for i in im_id.reshape(-1))
        super().update(inputs, outputs)

    def accumulate(self):
        detections = self.results["bbox"]
        if not detections:
            logger.warning("no detections on the evaluation images: no box AP")
            return
        path = os.path.join(self.output_eval, "bbox.json")
        os.makedirs(self.output_eval, exist_ok=True)
        with atomic_open(path, "w") as handle:
            json.dump(detections, handle)
        logger.info(f"detections of the evaluation images: {path}")
        if self.save_prediction_only:
            return
        self.eval_results["bbox"] = coco_box_eval(
            path,
            self.anno_file,
            self.classwise,
            os.path.join(self.output_eval, PR_CURVE_DIR) if self.classwise else None,
            self.verbose,
            img_ids=self.img_ids,
        )


class DACVOCMetric(VOCMetric):
    """ppdet's VOCMetric (mAP at IoU 0.5) with its per-class precision/recall curves in
    ``output_dir``/voc_pr_curve/ (ppdet draws them into the working directory)."""

    def __init__(self, output_dir, **kwargs):
        super().__init__(**kwargs)
        self.output_dir = output_dir

    def _in_output_dir(self):
        os.makedirs(self.output_dir, exist_ok=True)
        return contextlib.chdir(self.output_dir)  # ppdet's DetectionMAP writes 'voc_pr_curve/'

    def log(self):
        with self._in_output_dir():
            super().log()
        if self.detection_map.classwise:
            logger.info(
                "per-class precision/recall curves: "
                f"{os.path.join(self.output_dir, 'voc_pr_curve')}"
            )

    def get_results(self):
        with self._in_output_dir():
            return super().get_results()
