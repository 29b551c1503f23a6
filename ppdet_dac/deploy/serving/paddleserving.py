"""PaddleServing's own files for a model directory: ``serving_server_conf.prototxt`` (feed and
fetch variables) and a pipeline ``config.yml``, so that the directory can also be served by a
PaddleServing install (optional; see deploy/serving/README.md)."""

import json
import logging
import os

from ppdet_dac.utils.atomic import write_text

from .protocol import SERVICE

logger = logging.getLogger("dac_detr_server")

_FEED_DIMS = {"image": [3, -1, -1], "im_shape": [2], "scale_factor": [2], "pad_mask": [-1, -1]}
# (alias, is_lod_tensor, fetch_type: 1 float32 / 2 int32, shape) of the two outputs
_FETCH = (("bbox", "true", 1, [6]), ("bbox_num", "false", 2, [1]))


def _prototxt_var(kind, name, alias, lod, dtype, dims):
    return (
        [
            f"{kind}_var {{",
            f'  name: "{name}"',
            f'  alias_name: "{alias}"',
            f"  is_lod_tensor: {lod}",
            f"  {kind}_type: {dtype}",
        ]
        + [f"  shape: {d}" for d in dims]
        + ["}"]
    )


def serving_files(model_dir, predictor, port):
    """{file name: text} of PaddleServing's serving_server_conf.prototxt and pipeline
    config.yml."""
    lines = []
    for name in predictor.input_names:
        lines += _prototxt_var("feed", name, name, "false", 1, _FEED_DIMS.get(name, [-1]))
    for name, (alias, lod, dtype, dims) in zip(predictor.output_names, _FETCH):
        lines += _prototxt_var("fetch", name, alias, lod, dtype, dims)
    config = f"""# PaddleServing pipeline config of this model (by deploy/serving/server.py).
# Optional: only for a PaddleServing install (see deploy/serving/README.md).
dag:
  is_thread_op: true
http_port: {port}
rpc_port: {port + 1}
worker_num: 4
op:
  {SERVICE}:
    concurrency: 1
    local_service_conf:
      client_type: local_predictor
      device_type: 0
      devices: ""
      model_config: {os.path.abspath(model_dir)}
      fetch_list: {json.dumps(predictor.output_names[:2])}
      ir_optim: true
      mem_optim: false
"""
    return {"serving_server_conf.prototxt": "\n".join(lines) + "\n", "config.yml": config}


def write_serving_files(model_dir, predictor, port):
    """Write serving_files() into model_dir (atomically); a read-only directory only logs a
    warning."""
    written = []
    for name, text in serving_files(model_dir, predictor, port).items():
        path = os.path.join(model_dir, name)
        try:
            written.append(write_text(path, text))
        except OSError as err:
            logger.warning(f"could not write {path} ({err}); serving continues without it")
    return written
