"""Deployment test helpers: the demo config with seeded random weights exported in both attention
modes (built once per session by the ``exported`` fixture), fresh-process runs, the dygraph
reference."""

import contextlib
import copy
import os
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import paddle

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEMO_CONFIG = os.path.join(REPO, "configs", "demo", "dac_demo.yml")
EXPORT_SIZE, EXPORT_MAX_SIZE = 192, 256  # the exported test reader's resize (see Exported)
# -o entries giving tools/infer.py on DEMO_CONFIG the exported model's test reader
SIZE_OPTS = [f"eval_size={EXPORT_SIZE}", f"eval_max_size={EXPORT_MAX_SIZE}"]
PYTHON = sys.executable


def run_python(args, timeout=300, env=None, returncode=0):
    """Run ``python args...`` in a fresh process from the repo root; its stdout (asserts the
    exit status is ``returncode``)."""
    return run_process(args, timeout, env, returncode).stdout


def run_process(args, timeout=300, env=None, returncode=0, cwd=REPO):
    """As run_python (in ``cwd``, the repo root unless given), the CompletedProcess (stdout and
    stderr as text)."""
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join([REPO, full_env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [PYTHON] + list(args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    assert proc.returncode == returncode, (
        f"{args}: exit status {proc.returncode}, expected {returncode}:\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    )
    return proc


def png_bomb(width, height):
    """A valid 1-bit grayscale PNG of width x height black pixels: a few hundred KB that decode
    to width x height x 3 bytes (cv2.IMREAD_COLOR)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    comp = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


def encoded_image(height, width, ext=".png", value=128):
    """The bytes of a height x width uniform image file."""
    ok, data = cv2.imencode(ext, np.full((height, width, 3), value, np.uint8))
    assert ok
    return data.tobytes()


def measure_batch_norm(backbone, data_dir, size=160):
    """Give the BatchNorm layers of a randomly initialised ``backbone`` the statistics of the
    demo val images (as training would), so the model computes on normalised activations like a
    trained one: one forward pass in training mode with momentum 0 (each layer's running mean and
    variance become those of its input in this batch), then eval mode again. Without it every
    BatchNorm is the identity and the activations of the random network grow layer by layer."""
    val = os.path.join(data_dir, "val")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    images = [
        (cv2.resize(cv2.imread(os.path.join(val, name))[:, :, ::-1], (size, size)) / 255.0 - mean)
        / std
        for name in sorted(os.listdir(val))
    ]
    batch = paddle.to_tensor(np.stack(images).transpose(0, 3, 1, 2).astype("float32"))
    norms = [layer for layer in backbone.sublayers() if isinstance(layer, paddle.nn.BatchNorm2D)]
    assert norms, "the backbone has no BatchNorm2D layer"
    momenta = [layer._momentum for layer in norms]
    backbone.train()
    try:
        for layer in norms:
            layer._momentum = 0.0
        with paddle.no_grad():
            backbone({"image": batch})
    finally:
        for layer, momentum in zip(norms, momenta):
            layer._momentum = momentum
        backbone.eval()


class Exported:
    """Paths of the session's export: weights, the two model dirs, the demo data and images."""

    def __init__(self, root):
        from ppdet_dac.data.demo_data import make_demo_data
        from ppdet_dac.engine import load_checked_config
        from ppdet_dac.deploy.export import build_model, export_model

        self.root = root
        self.data_dir = os.path.join(root, "demo")
        make_demo_data(self.data_dir, num_train=2, num_val=4, num_empty_train=0)
        # the test reader at short side 192, long side <= 256: the sizes the hand-worked numbers
        # of the deployment tests (thin-image limits, slicing windows) are computed for
        cfg = load_checked_config(
            DEMO_CONFIG,
            {
                "TestDataset": {"dataset_dir": self.data_dir},
                "EvalDataset": {"dataset_dir": self.data_dir},
                "eval_size": EXPORT_SIZE,
                "eval_max_size": EXPORT_MAX_SIZE,
            },
        )
        # ppdet's create() reads the one global config, which any later load_config (a test of
        # another room, in any order) merges into: the demo config is kept to be reinstated
        self._config = snapshot_global_config()
        paddle.seed(7)
        model = build_model(cfg, None)
        measure_batch_norm(model.backbone, self.data_dir)
        self.weights = os.path.join(root, "random_weights.pdparams")
        paddle.save(model.state_dict(), self.weights)
        self.model_dirs = {
            mode: export_model(cfg, self.weights, os.path.join(root, f"model_{mode}"), mode)
            for mode in ("op", "reference")
        }
        # two images whose resized sizes differ in both H and W (landscape and portrait)
        val = sorted(
            os.path.join(self.data_dir, "val", f)
            for f in os.listdir(os.path.join(self.data_dir, "val"))
        )
        self.images = []
        for i, (h, w) in enumerate([(240, 320), (300, 200)]):
            path = os.path.join(root, f"image_{h}x{w}.jpg")
            cv2.imwrite(path, cv2.resize(cv2.imread(val[i]), (w, h)))
            self.images.append(path)

    @property
    def cfg(self):
        """The session's demo config as loaded (a copy: sections as plain dicts)."""
        return self._config

    def dygraph_model(self):
        """The exported weights in a dygraph model built from the demo config, whatever config
        was loaded since (the global config is restored afterwards)."""
        from ppdet.core import workspace

        from ppdet_dac.deploy.export import build_model

        with global_config_restored():
            reinstate_global_config(self._config)
            return build_model(workspace.global_config, self.weights)


def dygraph_detections(model, feeds, attention):
    """The dygraph model's (bbox, bbox_num) on the predictor's feed dict."""
    from ppdet_dac import ops

    previous = ops.force_reference(attention == "reference")
    try:
        with paddle.no_grad():
            out = model({k: paddle.to_tensor(v) for k, v in feeds.items()})
    finally:
        ops.force_reference(previous)
    return out["bbox"].numpy(), out["bbox_num"].numpy()


TILE_H, TILE_W = 240, 320  # the grid's cells, and the slice size that cuts it back into them
GRID_ROWS, GRID_COLS = 2, 2


def demo_grid(data_dir, path):
    """Write to ``path`` a GRID_ROWS x GRID_COLS grid of the demo val images of ``data_dir``,
    each resized to TILE_H x TILE_W; returns the cells (BGR arrays, row-major)."""
    val = os.path.join(data_dir, "val")
    names = sorted(os.listdir(val))[: GRID_ROWS * GRID_COLS]
    cells = [cv2.resize(cv2.imread(os.path.join(val, n)), (TILE_W, TILE_H)) for n in names]
    rows = [
        np.concatenate(cells[r * GRID_COLS : (r + 1) * GRID_COLS], axis=1) for r in range(GRID_ROWS)
    ]
    assert cv2.imwrite(path, np.concatenate(rows, axis=0))
    return cells


def top_detection_boxes(detections, k=3):
    """The k highest-scoring rows of a [N, 6] array."""
    return detections[np.argsort(-detections[:, 1], kind="stable")[:k]]


@contextlib.contextmanager
def global_config_restored():
    """ppdet keeps one global config that every load_config merges into: code that loads
    another config (or -o options) inside this block gets it restored afterwards, so the
    session's export and later tests see the demo config again."""
    saved = snapshot_global_config()
    try:
        yield
    finally:
        reinstate_global_config(saved)


def snapshot_global_config():
    """A copy of ppdet's global config: plain sections in depth, registered class schemas one
    level deep."""
    from ppdet.core import workspace

    return {key: _copy_section(value) for key, value in workspace.global_config.items()}


def reinstate_global_config(saved):
    """Make ppdet's global config hold exactly the sections of ``saved`` (copies of them)."""
    from ppdet.core import workspace

    workspace.global_config.clear()
    workspace.global_config.update({key: _copy_section(value) for key, value in saved.items()})


def _copy_section(value):
    """Plain sections (dict, list) copied in depth; registered class schemas one level deep."""
    if type(value) in (dict, list):
        return copy.deepcopy(value)
    return copy.copy(value)
