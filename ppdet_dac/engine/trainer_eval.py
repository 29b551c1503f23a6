"""The evaluation side of ``DACTrainer``: its metrics (``DACCOCOMetric`` / ``DACVOCMetric``,
outputs in ``eval_output_dir``), the evaluation after snapshot epochs (``_validate``, of the EMA
weights with EMA) and eval mode's ``evaluate``; both shard the images over the ranks
(``evaluation.evaluate_metrics``)."""

import copy

import paddle

from .evaluation import DACCOCOMetric, DACVOCMetric, evaluate_metrics
from .run_settings import checkpoint_dir

__all__ = ["TrainerEvaluation", "require_annotations"]


def require_annotations(dataset, section):
    """A COCO file without an 'annotations' list cannot train or evaluate (ppdet would load
    its images alone and fail later on a missing ``gt_bbox``)."""
    if getattr(dataset, "load_image_only", False):
        raise ValueError(
            f"{dataset.get_anno()}: no 'annotations' in this file, which the "
            f"{section} reads; training and evaluation need the box annotations "
            "(a file of images alone is for TestDataset)"
        )


class TrainerEvaluation:
    """The evaluation methods of ``DACTrainer`` (a ppdet ``Trainer``: ``self.cfg``,
    ``self.model``, ``self._metrics``, ... are the Trainer's)."""

    def eval_output_dir(self):
        """Where evaluation writes bbox.json and bbox_pr_curve/: ``output_eval``, else the
        checkpoint folder."""
        return self.cfg.get("output_eval") or checkpoint_dir(self.cfg)

    def _init_metrics(self, validate=False):
        """ppdet's metrics, the COCO one as DACCOCOMetric (outputs in ``eval_output_dir``,
        pycocotools' prints summarised unless ``verbose``)."""
        if (
            self.mode not in ("train", "eval")
            or (self.mode == "train" and not validate)
            or self.cfg.metric not in ("COCO", "VOC")
        ):
            super()._init_metrics(validate)
            return
        dataset = self.cfg["EvalDataset"] if self.mode == "train" else self.dataset
        if self.cfg.metric == "VOC":
            self._metrics = [
                DACVOCMetric(
                    output_dir=self.eval_output_dir(),
                    label_list=dataset.get_label_list(),
                    class_num=self.cfg.num_classes,
                    map_type=self.cfg.get("map_type", "11point"),
                    classwise=bool(self.cfg.get("classwise", False)),
                    output_eval=self.cfg.get("output_eval"),
                    save_prediction_only=self.cfg.get("save_prediction_only", False),
                )
            ]
            return
        self._metrics = [
            DACCOCOMetric(
                anno_file=dataset.get_anno(),
                output_eval=self.eval_output_dir(),
                verbose=bool(self.cfg.get("verbose", False)),
                clsid2catid={v: k for k, v in dataset.catid2clsid.items()},
                classwise=bool(self.cfg.get("classwise", False)),
                bias=1 if self.cfg.get("bias", False) else 0,
                IouType=self.cfg.get("IouType", "bbox"),
                save_prediction_only=self.cfg.get("save_prediction_only", False),
            )
        ]

    def _eval_loader(self):
        if not hasattr(self, "_val_loader"):
            from ppdet.core.workspace import create

            dataset = self.cfg["EvalDataset"] = create("EvalDataset")()
            if self.cfg.get("metric") == "VOC":  # per-image ground-truth lists, as ppdet's eval
                self.cfg["EvalReader"]["collate_batch"] = False
            sampler = paddle.io.BatchSampler(dataset, batch_size=self.cfg.EvalReader["batch_size"])
            self._val_loader = create("EvalReader")(
                dataset, self.cfg.worker_num, batch_sampler=sampler
            )
            require_annotations(dataset, "EvalDataset")
        return self._val_loader

    def _validate(self):
        """COCO evaluation of the current weights on the eval split, every rank running its
        share; returns box AP on rank 0, None on the others. All the metric's numbers (the 12
        COCO stats) are kept in ``last_eval_stats`` (None on the other ranks)."""
        loader = self._eval_loader()
        if not self._metrics and self._local_rank == 0:  # only rank 0 runs the metric
            self.cfg["classwise"] = True
            self._init_metrics(validate=True)
        results = evaluate_metrics(self, loader, source=self.cfg.get("filename", "config"))
        self.model.train()
        bbox = (results.get("COCOMetric") or results.get("VOCMetric") or {}).get("bbox")
        self.last_eval_stats = None if bbox is None else [float(v) for v in bbox]
        return float(bbox[0]) if bbox is not None else None

    def _validate_weights(self):
        """``_validate`` of the weights a checkpoint's .pdparams holds (the EMA weights with
        EMA); the raw weights are back in the model afterwards, also when it raises."""
        if not self.use_ema:
            return self._validate()
        raw = copy.deepcopy(self.model.state_dict())
        self.model.set_dict(self.ema.apply())
        try:
            return self._validate()
        finally:
            self.model.set_dict(raw)
            self.model.train()

    def evaluate(self, model=None):
        """Eval mode: COCO evaluation of the loaded weights on EvalDataset, sharded over the
        ranks of a launched run; returns the results on rank 0 ({} on the others). AMP
        (``amp``) and ``print_flops`` as in ppdet's ``evaluate``. ``model``: what runs the batches
        instead of ``self.model`` (tools/eval.py --engine inference passes the model exported
        in memory, ppdet_dac/deploy/exported_eval.py)."""
        if self.cfg.get("print_flops", False) and self._local_rank == 0:
            from ppdet.core.workspace import create

            self._flops(
                create("EvalReader")(self.dataset, self.cfg.worker_num, self._eval_batch_sampler)
            )
        return evaluate_metrics(
            self,
            self.loader,
            source=self.cfg.get("filename", "config"),
            use_amp=self.use_amp,
            model=model,
        )
