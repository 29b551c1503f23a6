"""The config keys that no registered class's signature declares, each with what reads it
(``config_keys`` checks every key of a config against these and the classes' arguments)."""

__all__ = [
    "TOP_LEVEL_KEYS",
    "NESTED_KEYS",
    "READER_KEYS",
    "TEST_READER_KEYS",
    "TRANSFORM_LISTS",
    "SET_BY_OPTIMIZER_BUILDER",
]

# Top-level keys that are neither a registered class's section nor a `__shared__` argument of
# one, each with what reads it. Only keys that something on the tools' code paths reads belong
# here: ppdet's Trainer (__init__, evaluate, predict, export) as DACTrainer runs it (DACTrainer
# replaces ppdet's training loop and callbacks), our trainer, tools/ and ppdet_dac.engine.
# A tool's own option (train's --amp, eval's --classwise, ...) replaces the config value for
# that tool (ppdet's merge_args), so config_from_args refuses such a key in -o (eval's
# --output_eval only replaces the config's output_eval when given); `classwise` (an
# eval option, always on in training) and `filename` (set by load_config) are no config keys.
TOP_LEVEL_KEYS = {
    "architecture": "ppdet create(): the model class",
    "weights": "tools/eval, infer, export_model, dump_outputs, analyze_queries, demo",
    "pretrain_weights": "tools/train.py, tools/demo.py (ppdet_dac.engine.pretrained)",
    "epoch": "DACTrainer.train, ppdet LogPrinter (ETA)",
    "snapshot_epoch": "DACTrainer: checkpoint / evaluation period",
    "snapshot_iter": "DACTrainer: iteration checkpoint period (0: none)",
    "max_checkpoints": "DACTrainer: iteration checkpoints kept",
    "max_epoch_checkpoints": "DACTrainer: numbered epoch checkpoints kept (0: all)",
    "epoch_checkpoint_weights_only": "DACTrainer: older epoch checkpoints keep only .pdparams",
    "log_iter": "DACTrainer, ppdet LogPrinter",
    "save_dir": "DACTrainer: checkpoint folder",
    "worker_num": "ppdet Trainer: data loader workers",
    "use_gpu": "config_from_args (device), DACTrainer, ppdet Trainer",
    "use_npu": "config_from_args (device), ppdet Trainer (AMP)",
    "use_xpu": "config_from_args (device)",
    "use_mlu": "config_from_args (device), ppdet Trainer (AMP)",
    "amp": "ppdet Trainer (evaluate: AMP); tools/train.py: --amp",
    "amp_level": "ppdet Trainer -> DACTrainer auto_cast",
    "custom_white_list": "ppdet Trainer -> DACTrainer auto_cast",
    "custom_black_list": "ppdet Trainer -> DACTrainer auto_cast",
    "init_loss_scaling": "DACTrainer GradScaler (AMP)",
    "find_unused_parameters": "DACTrainer: DataParallel",
    "use_vdl": "DACTrainer, ppdet Trainer (test mode): VisualDL; tools/train.py: --use_vdl",
    "vdl_log_dir": "ppdet VisualDLWriter; tools/train.py: --vdl_log_dir",
    "use_ema": "ppdet Trainer: ModelEMA",
    "ema_decay": "ppdet Trainer: ModelEMA",
    "ema_decay_type": "ppdet Trainer: ModelEMA",
    "cycle_epoch": "ppdet Trainer: ModelEMA",
    "ema_black_list": "ppdet Trainer: ModelEMA",
    "ema_filter_no_grad": "ppdet Trainer: ModelEMA",
    "print_params": "ppdet Trainer.__init__",
    "print_flops": "ppdet Trainer.evaluate / predict",
    "save_prediction_only": "ppdet Trainer: COCO metric",
    "output_eval": "DACTrainer: evaluation outputs folder (bbox.json, bbox_pr_curve/; default "
    "save_dir/<config name>); tools/eval.py: --output_eval",
    "bias": "ppdet Trainer: COCO metric",
    "IouType": "ppdet Trainer: COCO metric",
    "draw_threshold": "ppdet_dac.deploy.export (infer_cfg.yml)",
    "label_list": "ppdet_dac.deploy.export.class_names: class names of tools/export_model.py "
    "(infer_cfg.yml) and tools/infer.py",
    "export": "ppdet Trainer.export (not tools/export_model.py)",
    "map_type": "ppdet Trainer: VOC metric (metric: VOC), '11point' or 'integral'",
    "train_sizes": "ppdet_dac.data.image_sizes via load_checked_config: TrainReader short sides",
    "train_max_size": "ppdet_dac.data.image_sizes via load_checked_config: TrainReader long-side "
    "cap",
    "eval_size": "ppdet_dac.data.image_sizes via load_checked_config: EvalReader / TestReader "
    "short side",
    "eval_max_size": "ppdet_dac.data.image_sizes via load_checked_config: EvalReader / "
    "TestReader long-side cap",
}
# Keys inside a top-level mapping of TOP_LEVEL_KEYS.
NESTED_KEYS = {"export": {"post_process", "nms", "benchmark", "fuse_conv_bn"}}
# Reader keys besides the reader classes' arguments: ppdet's DetDataset.set_kwargs reads the
# *_epoch keys (the reader passes its **kwargs on); TestReader.inputs_def.image_shape is read by
# ppdet_dac.deploy.export and ppdet's Trainer.export.
READER_KEYS = {"mixup_epoch", "cutmix_epoch", "mosaic_epoch", "pre_img_epoch"}
TEST_READER_KEYS = {"inputs_def": {"image_shape"}}
TRANSFORM_LISTS = ("sample_transforms", "batch_transforms")
# OptimizerBuilder passes these to the optimizer itself.
SET_BY_OPTIMIZER_BUILDER = {
    "learning_rate": "from LearningRate",
    "parameters": "from the model",
    "grad_clip": "from clip_grad_by_norm / clip_grad_by_value",
}
