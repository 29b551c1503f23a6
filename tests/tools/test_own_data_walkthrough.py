"""docs/own_data.md's walkthrough for large images, run as its commands are written (each tool in
a fresh process from a user's folder): raw Pascal-VOC folders whose XML files name `Dead`/`Alive`
where the label list has `tree` (one val image a TIFF) -> tools/slice_image.py with --label_map
-> tools/train.py --eval on the tiles (the doc's configs/aerial_tiles.yml on the demo model, tiny
sizes) -> tools/infer.py --slice_infer on the whole images -> tools/export_model.py ->
deploy/python/infer.py --slice_infer -> deploy/serving/server.py --slice_infer and client.py.

The only code a user would not write is this file's: the images, XML files and lists it paints,
the config and the checks."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest

from _common import REPO

sys.path.insert(0, os.path.join(REPO, "tests", "deploy"))
from _deploy_helpers import run_process  # noqa: E402

pytestmark = pytest.mark.long

PYTHON = sys.executable
TILE, OVERLAP = 160, 0.25
STRIDE = TILE - int(OVERLAP * TILE)  # the doc's grid: one tile every 160 - 40 = 120 px
LABELS = ["tree", "car"]
# (file, height, width, split, XML names of the trees): 400-520 px images, one val image a TIFF
IMAGES = [
    ("0001.jpg", 400, 520, "train", ("Dead", "Alive")),
    ("0002.jpg", 520, 460, "train", ("tree",)),
    ("0003.jpg", 448, 400, "train", ("Alive", "Dead")),
    ("0004.jpg", 480, 512, "train", ("tree",)),
    ("0005.jpg", 416, 500, "val", ("Dead", "Alive")),
    ("0006.tif", 460, 440, "val", ("tree",)),
]
SLICE_FLAGS = ["--slice_size", str(TILE), "--overlap_ratio", str(OVERLAP)]
INFER_SLICE_FLAGS = ["--slice_infer", "--slice_size", str(TILE), str(TILE)]
INFER_SLICE_FLAGS += ["--overlap_ratio", str(OVERLAP), str(OVERLAP)]
SERVER_START_S = 180
# client.py prints the detections scoring >= this (its default 0.3 would leave a model of one
# short epoch few to compare)
CLIENT_THRESHOLD = 0.2

# The doc's configs/aerial_tiles.yml with the demo model as base: 2 classes, the tiles read at
# their own size, one epoch (the train tiles make two dozen steps of the demo's 2 images).
CONFIG = """_BASE_: ['{base}']
num_classes: 2
epoch: 1
DACDETR: {{class_id_mode: contiguous}}
TrainDataset: {{dataset_dir: dataset/aerial_tiles/train, image_dir: images, anno_path: annotations.json}}
EvalDataset: {{dataset_dir: dataset/aerial_tiles/val, image_dir: images, anno_path: annotations.json}}
TestDataset: {{dataset_dir: dataset/aerial_tiles/val, anno_path: annotations.json}}
train_sizes: [128, 144, 160]
train_max_size: {tile}
eval_size: {tile}
eval_max_size: {tile}
"""


def _run(root, *args):
    """``python args...`` in the user's folder ``root``, as the doc's commands are typed there;
    the CompletedProcess (asserts exit status 0)."""
    return run_process([str(a) for a in args], env={"OMP_NUM_THREADS": "2"}, cwd=root)


def _tool(path):
    return os.path.join(REPO, path)


def _objects(rng, height, width, tree_names):
    """[(name, [xmin, ymin, xmax, ymax] VOC 1-based inclusive)]: one object of 14-36 px per cell
    of an 80 px grid but in the bottom-right quarter, every third one a car, the trees named in
    turn by ``tree_names``. Objects are at most 40 px (the overlap), so each lies whole in at
    least one tile."""
    objects = []
    for top in range(8, height - 64, 80):
        for left in range(8, width - 64, 80):
            if top > height // 2 and left > width // 2:
                continue  # bare ground: tiles without objects
            w, h = (int(v) for v in rng.integers(14, 37, 2))
            x, y = left + int(rng.integers(0, 30)), top + int(rng.integers(0, 30))
            name = "car" if len(objects) % 3 == 2 else tree_names[len(objects) % len(tree_names)]
            objects.append((name, [x + 1, y + 1, x + w, y + h]))
    return objects


def _paint(path, height, width, objects, rng):
    """Noisy ground; trees as filled green ellipses, cars as filled grey-red rectangles."""
    image = rng.integers(60, 110, (height, width, 3)).astype(np.uint8)
    for name, (x1, y1, x2, y2) in objects:
        x1, y1 = x1 - 1, y1 - 1  # 0-based pixels x1..x2-1
        if name == "car":
            cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), (70, 70, 200), -1)
        else:
            centre = ((x1 + x2 - 1) // 2, (y1 + y2 - 1) // 2)
            cv2.ellipse(
                image, centre, ((x2 - x1) // 2, (y2 - y1) // 2), 0, 0, 360, (40, 170, 50), -1
            )
    assert cv2.imwrite(str(path), image)


def _write_voc_folder(root):
    """dataset/aerial_voc as the doc lays it out; {image file: (height, width, objects)}."""
    from ppdet_dac.data.voc_files import write_voc_xml

    voc = root / "dataset" / "aerial_voc"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "Annotations").mkdir()
    rng = np.random.default_rng(26)
    sources, lists = {}, {"train": [], "val": []}
    for name, height, width, split, tree_names in IMAGES:
        objects = _objects(rng, height, width, tree_names)
        _paint(voc / "JPEGImages" / name, height, width, objects, rng)
        stem = os.path.splitext(name)[0]
        write_voc_xml(
            str(voc / "Annotations" / f"{stem}.xml"),
            name,
            width,
            height,
            [(label, box, 0) for label, box in objects],
        )
        lists[split].append(f"JPEGImages/{name} Annotations/{stem}.xml\n")
        sources[name] = (height, width, objects)
    for split, lines in lists.items():
        (voc / f"{split}.txt").write_text("".join(lines))
    (voc / "label_list.txt").write_text("".join(f"{label}\n" for label in LABELS))
    return sources


def _grid_starts(length):
    """Tile starts along a side, by the doc's rule: every STRIDE px while a tile ends inside the
    image, then one last tile ending at the edge (one tile when the side is not larger)."""
    if length <= TILE:
        return [0]
    count = 1 + math.ceil((length - TILE) / STRIDE)
    return [k * STRIDE for k in range(count - 1)] + [length - TILE]


def _grid(height, width):
    return {(x, y, x + TILE, y + TILE) for y in _grid_starts(height) for x in _grid_starts(width)}


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """The user's folder with the raw VOC set; {image file: (height, width, objects)}."""
    root = tmp_path_factory.mktemp("walkthrough")
    return root, _write_voc_folder(root)


@pytest.fixture(scope="module")
def tiles(walk):
    """The doc's two slice_image.py commands (train with --keep_empty, so every grid tile is
    written); {split: annotations.json}."""
    root, _ = walk
    out = {}
    for split, extra in (("train", ["--keep_empty"]), ("val", [])):
        _run(
            root,
            _tool("tools/slice_image.py"),
            "--voc_anno_dir",
            "dataset/aerial_voc",
            "--voc_anno_list",
            f"dataset/aerial_voc/{split}.txt",
            "--voc_label_list",
            "dataset/aerial_voc/label_list.txt",
            "--label_map",
            "Dead=tree,Alive=tree",
            "--output_dir",
            f"dataset/aerial_tiles/{split}",
            *SLICE_FLAGS,
            *extra,
        )
        with open(root / "dataset" / "aerial_tiles" / split / "annotations.json") as f:
            out[split] = json.load(f)
    return out


@pytest.fixture(scope="module")
def trained(walk, tiles):
    """configs/aerial_tiles.yml written, tools/train.py -c it --eval; the CompletedProcess."""
    root, _ = walk
    (root / "configs").mkdir()
    base = os.path.join(REPO, "configs", "demo", "dac_demo.yml")
    (root / "configs" / "aerial_tiles.yml").write_text(CONFIG.format(base=base, tile=TILE))
    return _run(root, _tool("tools/train.py"), "-c", "configs/aerial_tiles.yml", "--eval")


def _detections(path):
    """{image file name: [N, 6] class id, score, x1, y1, x2, y2} of a detections.json."""
    with open(path) as f:
        records = json.load(f)
    return {
        os.path.basename(image): np.array(
            [[r["class_id"], r["score"]] + r["bbox"] for r in rows], np.float64
        ).reshape(-1, 6)
        for image, rows in records.items()
    }


def _check_run(root, output_dir, sources):
    """summary.json of a folder run: every image answered, none failed; the detections, every
    box inside its image."""
    with open(root / output_dir / "summary.json") as f:
        summary = json.load(f)
    assert (summary["images"], summary["succeeded"]) == (len(IMAGES), len(IMAGES))
    assert summary["failed"] == [] and summary["unsupported"] == []
    dets = _detections(root / output_dir / "detections.json")
    assert sorted(dets) == sorted(sources)
    for name, rows in dets.items():
        height, width, _ = sources[name]
        assert len(rows) > 0, name
        assert set(rows[:, 0].astype(int)) <= {0, 1}
        assert rows[:, 2:].min() >= 0 and rows[:, [2, 4]].max() <= width, name
        assert rows[:, [3, 5]].max() <= height, name
    return dets


@pytest.fixture(scope="module")
def dygraph(walk, trained):
    """The doc's tools/infer.py --slice_infer over dataset/aerial_voc/JPEGImages."""
    root, sources = walk
    _run(
        root,
        _tool("tools/infer.py"),
        "-c",
        "configs/aerial_tiles.yml",
        "-o",
        "weights=output/aerial_tiles/model_final",
        "--infer_dir",
        "dataset/aerial_voc/JPEGImages",
        "--output_dir",
        "output/aerial_infer",
        *INFER_SLICE_FLAGS,
    )
    return _check_run(root, "output/aerial_infer", sources)


@pytest.fixture(scope="module")
def deployed(walk, trained):
    """tools/export_model.py as the doc, then deploy/python/infer.py --slice_infer over the same
    folder; the detections."""
    root, sources = walk
    _run(
        root,
        _tool("tools/export_model.py"),
        "-c",
        "configs/aerial_tiles.yml",
        "-o",
        "weights=output/aerial_tiles/model_final",
        "--output_dir",
        "output_inference",
    )
    _run(
        root,
        _tool("deploy/python/infer.py"),
        "--model_dir",
        "output_inference/aerial_tiles",
        "--image_dir",
        "dataset/aerial_voc/JPEGImages",
        "--output_dir",
        "output/aerial_deploy",
        *INFER_SLICE_FLAGS,
    )
    return _check_run(root, "output/aerial_deploy", sources)


def _tile_boxes(anno):
    """{source file: [(class name, (x1, y1, x2, y2) in the source image)]} of a tile set."""
    names = {c["id"]: c["name"] for c in anno["categories"]}
    images = {im["id"]: im for im in anno["images"]}
    boxes = {os.path.basename(im["source_file_name"]): [] for im in anno["images"]}
    for a in anno["annotations"]:
        im = images[a["image_id"]]
        x, y, w, h = a["bbox"]
        x, y = x + im["window"][0], y + im["window"][1]
        boxes[os.path.basename(im["source_file_name"])].append(
            (names[a["category_id"]], (x, y, x + w, y + h))
        )
    return boxes


def test_slice_image_maps_labels_and_cuts_the_documented_grid(walk, tiles):
    """Train tiles (--keep_empty): exactly the grid computed by hand per image; val tiles: a
    part of it. Each tile box is a piece of at least half of one source object, of its class
    after the label map (tree or car); every object, Dead and Alive included, is whole in some
    tile, so the tree boxes count every Dead, Alive and tree object."""
    _, sources = walk
    for split, anno in tiles.items():
        assert [c["name"] for c in anno["categories"]] == LABELS
        windows = {}
        for im in anno["images"]:
            source = os.path.basename(im["source_file_name"])
            windows.setdefault(source, set()).add(tuple(im["window"]))
        boxes = _tile_boxes(anno)
        in_split = [(n, h, w) for n, h, w, s, _ in IMAGES if s == split]
        assert sorted(windows) == sorted(boxes) == sorted(n for n, _, _ in in_split)
        trees, renamed = 0, 0
        for name, height, width in in_split:
            if split == "train":
                assert windows[name] == _grid(height, width), name
            else:
                assert windows[name] and windows[name] <= _grid(height, width), name
            # the XML objects in 0-based corners, classes mapped: Dead=tree, Alive=tree
            objects = [
                ("car" if label == "car" else "tree", (x1 - 1, y1 - 1, x2, y2))
                for label, (x1, y1, x2, y2) in sources[name][2]
            ]
            renamed += sum(label in ("Dead", "Alive") for label, _ in sources[name][2])
            trees += sum(label == "tree" for label, _ in objects)
            for label, (x1, y1, x2, y2) in boxes[name]:
                assert any(
                    label == obj_label
                    and ox1 <= x1 < x2 <= ox2
                    and oy1 <= y1 < y2 <= oy2
                    and (x2 - x1) * (y2 - y1) >= 0.5 * (ox2 - ox1) * (oy2 - oy1)
                    for obj_label, (ox1, oy1, ox2, oy2) in objects
                ), (name, label, (x1, y1, x2, y2))
            found = {(label, box) for label, box in boxes[name]}
            assert all((label, box) in found for label, box in objects), name
        assert 0 < renamed < trees
        assert sum(label == "tree" for b in boxes.values() for label, _ in b) >= trees


def test_train_on_tiles_ends_with_weights_and_summary(walk, tiles, trained):
    root, _ = walk
    log = trained.stdout + trained.stderr
    assert (root / "output" / "aerial_tiles" / "model_final.pdparams").is_file()
    summary = re.search(r"training done in [^:]+: final weights ([^;\s]+)", log)
    assert summary, log[-3000:]
    assert summary.group(1) == os.path.join("output", "aerial_tiles", "model_final")
    assert re.search(r"best box AP \d\.\d{4} at epoch 0", log), log[-3000:]
    # every train tile, the empty ones too (the demo's TrainDataset has allow_empty: true)
    train = tiles["train"]
    empty = len(train["images"]) - len({a["image_id"] for a in train["annotations"]})
    path = os.path.join("dataset", "aerial_tiles", "train", "annotations.json")
    assert (
        f"{path}: loaded {len(train['images'])} images ({empty} without boxes: {empty} of them "
        "kept (allow_empty)"
    ) in log, log[-3000:]


def _agree(a, b, top=20, min_score=0.0, margin=0.02):
    """Detections a and b of one image ([N, 6] class id, score, box), from two runs of the same
    weights (dygraph and Paddle Inference: scores and boxes differ by ~1e-4 at most): each of the
    ``top`` best of one that score >= ``min_score`` has a detection in the other of its class,
    its score within ``margin`` and its box within 1 px. The other run is searched whole, so a
    near-tie of ranks or a score near ``min_score`` (the margin keeps those >= min_score - margin
    in the other) cannot fail it by chance; only an NMS decision at an overlap within ~1e-4 of
    its threshold could, for one of the best detections (in practice never)."""
    for one, other in ((a, b), (b, a)):
        best = one[np.argsort(-one[:, 1], kind="stable")[:top]]
        for row in best[best[:, 1] >= min_score]:
            same = other[(other[:, 0] == row[0]) & (np.abs(other[:, 1] - row[1]) <= margin)]
            assert np.any(np.abs(same[:, 2:] - row[2:]).max(axis=1) <= 1.0), row


def test_sliced_inference_dygraph_and_exported_agree(dygraph, deployed):
    """Both tools answered every image (TIFF included) with boxes inside it (checked by the
    fixtures); the exported model's detections are the dygraph ones."""
    assert sorted(dygraph) == sorted(deployed)
    for name in dygraph:
        _agree(dygraph[name], deployed[name])


def test_server_and_client_answer_as_the_exported_model(walk, deployed):
    """server.py --slice_infer as the doc (on a free port), client.py on the val JPEG: exit 0
    (err_no 0) and the detections scoring >= CLIENT_THRESHOLD of deploy/python/infer.py."""
    root, _ = walk
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    server = subprocess.Popen(
        [PYTHON, _tool("deploy/serving/server.py"), "--model_dir", "output_inference/aerial_tiles"]
        + INFER_SLICE_FLAGS
        + ["--port", "0", "--pool_size", "1"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines, ready = [], threading.Event()

    def read():
        for line in server.stdout:
            lines.append(line)
            if "serving on http://" in line:
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        ready.wait(SERVER_START_S)
        url = [ln.split("serving on ")[1].split()[0] for ln in lines if "serving on http" in ln]
        assert url, "server did not start:\n" + "".join(lines[-40:])
        image = "dataset/aerial_voc/JPEGImages/0005.jpg"
        out = _run(
            root,
            _tool("deploy/serving/client.py"),
            "--image_file",
            image,
            "--url",
            url[0],
            "--threshold",
            CLIENT_THRESHOLD,
        )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    threshold = re.escape(str(CLIENT_THRESHOLD))
    head = re.match(
        rf"{re.escape(image)}: (\d+) of \d+ detections with score >= {threshold}\n", out.stdout
    )
    assert head, out.stdout
    answered = [
        [LABELS.index(label), float(score)] + [float(v) for v in box.split(", ")]
        for label, score, box in re.findall(r"^  (\S+) +(\S+)  \[(.*)\]$", out.stdout, re.M)
    ]
    assert len(answered) == int(head.group(1)) > 0
    # the service runs the exported model as deploy/python/infer.py does: the printed detections
    # (score >= T) are deploy's, and deploy's scoring >= T + margin are printed
    rows, margin = deployed["0005.jpg"], 0.02
    answered = np.array(answered).reshape(-1, 6)
    _agree(answered, rows, top=len(rows), min_score=CLIENT_THRESHOLD + margin, margin=margin)
    # as many as deploy's >= T, up to the detections within the margin of T
    low, high = ((rows[:, 1] >= CLIENT_THRESHOLD + d).sum() for d in (margin, -margin))
    assert low <= len(answered) <= high, (out.stdout, rows[:, 1][:20])
