"""Deployment: export to Paddle Inference, the predictor shared by the infer tools and the
service, sliced inference, drawing. Reads models and weight files; never trains.

Modules and their public API (import them from the module; this file imports nothing, so that
``ppdet_dac.deploy.outputs`` and friends load without Paddle Inference):

* ``export``: ``export_model``, ``build_model``, ``class_names``, ``num_output_labels``,
  ``input_limits``, ``test_preprocess_steps``, ``ATTENTION_MODES`` (tools/export_model.py);
* ``infer_config``: ``InferConfig`` (infer_cfg.yml, validated), ``find_model_file``;
* ``preprocess``: ``Preprocessor`` (reader ops, batching, input-size checks), ``decode_image``,
  ``describe_image``, ``ImageShapeError``;
* ``predictor``: ``Predictor`` (Paddle Inference), ``make_inference_config``, ``DEVICES``,
  ``RUN_MODES``;
* ``postprocess``: ``reselect`` (NMS at another threshold), ``filter_scores``,
  ``clip_detections``, ``image_sizes``, ``split_detections``, ``detection_records``;
* ``slicing``: ``SliceConfig``, ``sliced_detections``, ``merge_detections``;
* ``folder_run``: ``predict_files``, ``save_results`` (the infer tools' folder runs);
* ``outputs``: output names and folder checks, ``write_json``, ``print_run_outcome``;
* ``cli_options``: the shared flags (``add_cpu_options``, ``add_detection_options``) and their
  readers;
* ``visualize``: ``draw_detections``, ``save_detections``;
* ``validation``: one-line messages of the option models' errors;
* ``serving``: the HTTP service (its own ``__init__`` lists its API).
"""
