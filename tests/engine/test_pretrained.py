"""`pretrain_weights`: no silent random backbone, ppdet's ImageNet weights by default, read from
ppdet's weights cache without network access, and a clear error in bounded time (on every rank)
when a URL cannot be downloaded."""

import base64
import glob
import hashlib
import http.server
import json
import logging
import os
import re
import subprocess
import textwrap
import threading
import time

import numpy as np
import paddle
import pytest

from _engine_helpers import PYTHON, REPO, child_env

from ppdet_dac.engine import pretrained
from ppdet_dac.engine.pretrained import (
    PretrainWeightsError,
    check_pretrain_weights,
    fetch_pretrain_weights,
)

R50_URL = "https://paddledet.bj.bcebos.com/models/pretrained/ResNet50_vb_normal_pretrained.pdparams"
SWIN_L_URL = (
    "https://bj.bcebos.com/v1/paddledet/models/pretrained/"
    "swin_large_patch4_window12_384_22kto1k_pretrained.pdparams"
)
REFUSED = "http://127.0.0.1:9/x.pdparams"  # the discard port: connection refused


def _cfg(backbone="ResNet", **keys):
    return dict({"architecture": "DACDETR", "DACDETR": {"backbone": backbone}}, **keys)


@pytest.fixture
def weights_home(tmp_path, monkeypatch):
    from ppdet.utils import download

    home = tmp_path / "weights"
    monkeypatch.setattr(download, "WEIGHTS_HOME", str(home))
    for name in (
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def pretrained_log(caplog):
    """Records of ppdet_dac.engine.pretrained (ppdet loggers do not propagate to root)."""
    logger = logging.getLogger("ppdet_dac.engine.pretrained")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)


# ------------------------------------------------------------------ the config value
@pytest.mark.parametrize(
    "keys", [{}, {"pretrain_weights": None}, {"pretrain_weights": ""}, {"pretrain_weights": "  "}]
)
@pytest.mark.parametrize("backbone,url", [("ResNet", R50_URL), ("SwinTransformer", SWIN_L_URL)])
def test_missing_or_empty_value_is_one_error_naming_the_config(keys, backbone, url):
    with pytest.raises(ValueError) as info:
        check_pretrain_weights(_cfg(backbone, **keys), "configs/some.yml")
    message = str(info.value)
    assert message.startswith("configs/some.yml: `pretrain_weights` is missing or empty")
    for part in (
        "random weights",
        url,
        "local .pdparams",
        "convert_backbone",
        "`pretrain_weights: none`",
    ):
        assert part in message


@pytest.mark.parametrize("value", ["none", "None", "NONE"])
def test_none_means_from_scratch_said_in_one_info_line(value, pretrained_log):
    assert check_pretrain_weights(_cfg(pretrain_weights=value), "cfg.yml") is None
    lines = [r for r in pretrained_log.records if r.name == "ppdet_dac.engine.pretrained"]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert "cfg.yml" in lines[0].getMessage() and "from scratch" in lines[0].getMessage()


@pytest.mark.parametrize(
    "section,refused",
    [
        ({"depth": 18, "freeze_norm": True}, True),
        ({"depth": 18, "freeze_norm": False}, False),
        ({"depth": 18}, False),  # a plain dict without the key: nothing said
    ],
)
def test_from_scratch_with_frozen_norms_is_refused_by_name(section, refused):
    cfg = _cfg(pretrain_weights="none", ResNet=section)
    if not refused:
        assert check_pretrain_weights(cfg, "cfg.yml") is None
        return
    with pytest.raises(ValueError) as info:
        check_pretrain_weights(cfg, "configs/mine.yml")
    assert str(info.value).startswith(
        "configs/mine.yml: `pretrain_weights: none` with `ResNet.freeze_norm: true`"
    )
    assert "`ResNet.freeze_norm: false`" in str(info.value)
    # with ImageNet weights frozen norms are the recipe: the value is passed on
    assert check_pretrain_weights(dict(cfg, pretrain_weights=R50_URL), "c.yml") == R50_URL


def test_from_scratch_frozen_norm_default_of_ppdet_resnet_is_seen():
    # ppdet's ResNet freezes its norms by default: a config that leaves the key out is refused
    from ppdet.core.workspace import global_config

    schema = global_config["ResNet"]
    section = schema.copy()
    section.pop("freeze_norm", None)
    assert section["freeze_norm"] is True  # the class default, through the SchemaDict
    with pytest.raises(ValueError, match=r"^c\.yml: `pretrain_weights: none` with `ResNet"):
        check_pretrain_weights(_cfg(pretrain_weights="none", ResNet=section), "c.yml")


def test_a_url_or_path_is_passed_on():
    assert check_pretrain_weights(_cfg(pretrain_weights=f" {R50_URL} "), "c.yml") == R50_URL
    assert (
        check_pretrain_weights(_cfg(pretrain_weights="w/r50.pdparams"), "c.yml") == "w/r50.pdparams"
    )


def test_train_stops_before_reading_the_dataset_when_the_value_is_empty():
    # dac_cdn_r50 reads dataset/coco, which is not there: the error must come first (reading
    # the dataset would end with another error). The run takes ~9 s on an idle 2-core machine;
    # the timeout only guards against a hang (>= 10x that under load).
    proc = subprocess.run(
        [
            PYTHON,
            os.path.join(REPO, "tools", "train.py"),
            "-c",
            "configs/dac_cdn_r50.yml",
            "-o",
            "pretrain_weights=",
        ],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "train.py: error: configs/dac_cdn_r50.yml: `pretrain_weights` is missing or empty"
    ), last
    assert R50_URL in last


# ------------------------------------------------------------------ local files
def test_local_path_with_or_without_suffix(tmp_path):
    weights = tmp_path / "r50.pdparams"
    weights.write_bytes(b"x")
    assert fetch_pretrain_weights(str(weights)) == str(weights)
    assert fetch_pretrain_weights(str(tmp_path / "r50")) == str(weights)


def test_missing_local_file_is_named(tmp_path):
    missing = tmp_path / "nothere.pdparams"
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"c.yml: pretrain_weights file not found: {missing}")
    ):
        fetch_pretrain_weights(str(missing), "c.yml")
    with pytest.raises(ValueError, match=r"r50\.pth: expected a \.pdparams file"):
        fetch_pretrain_weights(str(tmp_path / "r50.pth"))


# ------------------------------------------------------------------ URLs
class _Server:
    """A loopback HTTP server answering every GET with ``body`` and a Content-MD5 header."""

    def __init__(self, body, md5_of=None):
        self.body, self.hits = body, 0
        digest = hashlib.md5(body if md5_of is None else md5_of).digest()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.body)))
                self.send_header("Content-MD5", base64.b64encode(digest).decode())
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/models/r50_test.pdparams"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_url_is_downloaded_once_into_the_cache(weights_home):
    body = os.urandom(3 * (1 << 20) + 17)  # more than one chunk
    server = _Server(body)
    try:
        path = fetch_pretrain_weights(server.url)
        assert path == str(weights_home / "r50_test.pdparams")
        assert open(path, "rb").read() == body
        assert fetch_pretrain_weights(server.url) == path  # cached: no second request
        assert server.hits == 1
    finally:
        server.close()
    assert sorted(os.listdir(weights_home)) == ["r50_test.pdparams"]  # no temporary file left


def test_download_with_wrong_md5_is_refused_and_not_cached(weights_home):
    server = _Server(b"truncated or corrupt", md5_of=b"the real file")
    try:
        with pytest.raises(PretrainWeightsError, match="MD5 .* differs from the server's"):
            fetch_pretrain_weights(server.url)
    finally:
        server.close()
    assert not weights_home.exists() or os.listdir(weights_home) == []


def test_unreachable_url_is_a_clear_error_in_bounded_time(weights_home, monkeypatch):
    """The bound on time is the timeouts the request is made with (a server that accepts and
    never answers is cut off after them); a refused connection fails at once (~0.02 s: the
    30 s limit below only guards against a hang)."""
    import requests

    timeouts = []
    get = requests.get
    monkeypatch.setattr(
        requests, "get", lambda *a, **k: timeouts.append(k.get("timeout")) or get(*a, **k)
    )
    start = time.monotonic()
    with pytest.raises(PretrainWeightsError) as info:
        fetch_pretrain_weights(REFUSED, "configs/x.yml")
    assert time.monotonic() - start < 30
    assert timeouts == [(pretrained.CONNECT_TIMEOUT_S, pretrained.READ_TIMEOUT_S)]
    message = str(info.value)
    assert message.startswith(f"configs/x.yml: cannot download pretrain_weights {REFUSED}: ")
    assert f"ppdet looks for this file at {weights_home / 'x.pdparams'}" in message
    assert "-o pretrain_weights=/path/file.pdparams" in message


def test_each_rank_learns_a_failed_download(weights_home, monkeypatch):
    """Local rank 0 downloads and tells the others (one all-reduce, replaced here)."""
    sent = []
    monkeypatch.setattr(pretrained, "_on_any_rank", lambda flag: sent.append(flag) or True)
    monkeypatch.setenv("PADDLE_RANK_IN_NODE", "0")
    with pytest.raises(PretrainWeightsError, match="ConnectionError"):
        fetch_pretrain_weights(REFUSED)
    assert sent == [True]

    def no_download(url, dest):
        raise AssertionError("only local rank 0 downloads")

    monkeypatch.setattr(pretrained, "_download", no_download)
    monkeypatch.setenv("PADDLE_RANK_IN_NODE", "1")
    with pytest.raises(PretrainWeightsError, match="failed on another process of this run"):
        fetch_pretrain_weights(REFUSED)
    assert sent == [True, False]


# the lines Paddle writes when a signal ends the process (C++ traceback, then the signal)
_PADDLE_SIGNAL_MARKS = (
    "C++ Traceback",
    "Error Message Summary",
    "FatalError:",
    "[TimeInfo:",
    "[SignalInfo:",
)


def test_two_ranks_both_stop_when_the_download_fails(tmp_path):
    """ppdet's _download_dist would leave rank 1 polling a lock file; here both ranks raise."""
    env = dict(child_env(), HOME=str(tmp_path))
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(name, None)
    cmd = [
        PYTHON,
        "-m",
        "paddle.distributed.launch",
        "--nproc_per_node",
        "2",
        "--log_dir",
        str(tmp_path / "log"),
        os.path.join(REPO, "tools", "train.py"),
        "-c",
        "configs/demo/dac_demo.yml",
        "-o",
        f"pretrain_weights={REFUSED}",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    cache = tmp_path / ".cache" / "paddle" / "weights" / "x.pdparams"
    reasons = {0: "ConnectionError", 1: "the download failed on another process of this run"}
    for rank, reason in reasons.items():
        # the error is the last line a rank writes itself; the launcher's SIGTERM, sent when the
        # other rank has failed, may still reach a rank while it exits and add Paddle's
        # "[SignalInfo: *** SIGTERM ..." lines after it
        lines = open(tmp_path / "log" / f"workerlog.{rank}").read().strip().splitlines()
        signal_block = [
            i for i, line in enumerate(lines) if any(mark in line for mark in _PADDLE_SIGNAL_MARKS)
        ]
        lines = lines[: signal_block[0]] if signal_block else lines
        last = [line for line in lines if line.strip() and not set(line.strip()) <= {"-"}][-1]
        assert last.startswith(
            "train.py: error: "
            f"configs/demo/dac_demo.yml: cannot download pretrain_weights "
            f"{REFUSED}: "
        ), last
        assert reason in last and f"ppdet looks for this file at {cache}" in last


# ------------------------------------------------------------------ the shipped configs
RESOLVE_AND_LOAD = textwrap.dedent("""
    import json, socket, sys
    import numpy as np
    import paddle
    import ppdet_dac
    from ppdet.core.workspace import create
    from ppdet.utils.checkpoint import load_pretrain_weight
    from ppdet_dac.engine import check_pretrain_weights, fetch_pretrain_weights, load_checked_config
    from ppdet_dac.engine.pretrained import cache_path

    config, opts = sys.argv[1], json.loads(sys.argv[2])
    cfg = load_checked_config(config, opts)
    url = check_pretrain_weights(cfg, config)
    print('URL', url)

    # ImageNet-style weights: the standalone backbone's names (no 'backbone.' prefix), values
    # unlike any initialisation
    paddle.seed(1)
    rng = np.random.default_rng(0)
    backbone = create(cfg[cfg.architecture]['backbone'])
    weights = {k: rng.standard_normal(v.shape).astype('float32')
               for k, v in backbone.state_dict().items() if v.dtype == paddle.float32}
    paddle.save({k: paddle.to_tensor(v) for k, v in weights.items()}, cache_path(url))

    def no_network(*args, **kwargs):
        raise AssertionError('network access')
    socket.socket.connect = socket.create_connection = socket.getaddrinfo = no_network
    path = fetch_pretrain_weights(url, config)
    print('PATH', path)

    paddle.seed(2)
    model = create(cfg.architecture)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    load_pretrain_weight(model, path)
    after = {k: v.numpy() for k, v in model.state_dict().items()}
    for name, value in weights.items():
        np.testing.assert_array_equal(after['backbone.' + name], value, err_msg=name)
    changed = sorted(k for k in after if not np.array_equal(before[k], after[k]))
    assert changed == sorted('backbone.' + k for k in weights), changed[:5]
    print('LOADED', len(weights))
""")

# Swin-L's names at smaller widths (24..192 channels: none equals the transformer's 256, so a
# per-output norm of the backbone cannot match a transformer norm by name suffix and shape)
SMALL_SWIN = {
    "SwinTransformer": {"embed_dim": 24, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 4, 8]}
}


@pytest.mark.parametrize(
    "config,url,opts",
    [
        ("configs/dac_cdn_r50.yml", R50_URL, {}),
        ("configs/dac_cdn_swin_l.yml", SWIN_L_URL, SMALL_SWIN),
    ],
)
def test_shipped_config_loads_ppdet_weights_from_the_cache_without_network(
    config, url, opts, tmp_path
):
    env = dict(child_env(), HOME=str(tmp_path))  # ppdet's WEIGHTS_HOME: ~/.cache/paddle/weights
    os.makedirs(tmp_path / ".cache" / "paddle" / "weights")
    proc = subprocess.run(
        [PYTHON, "-c", RESOLVE_AND_LOAD, config, json.dumps(opts)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(
        line.split(" ", 1)
        for line in proc.stdout.splitlines()
        if line.split(" ", 1)[0] in ("URL", "PATH", "LOADED")
    )
    assert lines["URL"] == url
    assert lines["PATH"] == str(tmp_path / ".cache" / "paddle" / "weights" / url.split("/")[-1])
    assert int(lines["LOADED"]) > 0


EVERY_CONFIG = textwrap.dedent("""
    import copy, sys
    import ppdet_dac
    from ppdet.core import workspace
    from ppdet_dac.engine import check_pretrain_weights, load_checked_config
    registered = dict(workspace.global_config)   # the class schemas, before any config
    for path in sys.argv[1:]:
        workspace.global_config.clear()          # each config on its own (the config is global)
        workspace.global_config.update({k: copy.copy(v) for k, v in registered.items()})
        cfg = load_checked_config(path)
        check_pretrain_weights(cfg, path)        # e.g. from scratch with frozen norms: refused
        print('VALUE', path, cfg.get('pretrain_weights'), cfg[cfg.architecture]['backbone'])
""")


def test_every_shipped_config_names_its_backbone_weights():
    found = glob.glob(os.path.join(REPO, "configs", "**", "*.yml"), recursive=True)
    configs = sorted(
        os.path.relpath(p, REPO)
        for p in found
        if "_base_" not in p and not os.path.basename(p).startswith("demo_data")
    )
    proc = subprocess.run(
        [PYTHON, "-c", EVERY_CONFIG, *configs],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = {
        path: (value, backbone)
        for _, path, value, backbone in (
            line.split(" ") for line in proc.stdout.splitlines() if line.startswith("VALUE ")
        )
    }
    assert sorted(found) == configs
    for path, (value, backbone) in found.items():
        if path.startswith("configs/demo/"):
            expected = ("none", "ResNet")  # ResNet-18 from scratch
        elif "swin_l" in path:
            expected = (SWIN_L_URL, "SwinTransformer")
        else:
            expected = (R50_URL, "ResNet")
        assert (value, backbone) == expected, path


def test_fine_tuning_keeps_every_tensor_but_the_class_dependent_ones(tmp_path):
    """Weights of a 3-class model loaded into a 1-class one: every tensor whose shape fits is
    the file's, the class heads and the denoising label embedding keep their initialisation."""
    from _common import build_tiny_detector
    from ppdet_dac.engine.pretrained import load_pretrain_weights

    paddle.seed(1)
    source = build_tiny_detector(num_classes=3)
    paddle.save(source.state_dict(), str(tmp_path / "three.pdparams"))
    paddle.seed(2)
    target = build_tiny_detector(num_classes=1)
    before = {k: v.numpy().copy() for k, v in target.state_dict().items()}
    summary = load_pretrain_weights(target, str(tmp_path / "three.pdparams"))
    src = {k: v.numpy() for k, v in source.state_dict().items()}
    after = {k: v.numpy() for k, v in target.state_dict().items()}
    class_dependent = sorted(k for k in after if src[k].shape != after[k].shape)
    assert class_dependent and all(
        ("class_heads" in k) or ("label_enc" in k) for k in class_dependent
    )
    assert summary["reinitialised"] == class_dependent and summary["absent"] == []
    for key, value in after.items():
        if key in class_dependent:
            np.testing.assert_array_equal(value, before[key], err_msg=key)
        else:
            np.testing.assert_array_equal(value, src[key], err_msg=key)
    moved = [k for k in after if k not in class_dependent and not np.array_equal(before[k], src[k])]
    assert len(moved) > 10  # the two models really started from different weights
