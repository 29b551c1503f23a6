"""The ``pretrain_weights`` of a training config: checked before anything is built, then fetched.

ppdet's convention: ``pretrain_weights`` names ImageNet backbone weights, a URL (cached in
ppdet's ``WEIGHTS_HOME``, ``~/.cache/paddle/weights``) or a local ``.pdparams``, which
``Trainer.load_weights`` matches to the model's ``backbone.*`` parameters by name suffix. Here a
training config must say what it wants, so a backbone never starts from random weights by
accident:

* missing or empty: ``ValueError`` naming the config file (``check_pretrain_weights``);
* ``none`` (any case): train from scratch on purpose, said in one INFO line; a ``ValueError``
  when the backbone's section keeps ``freeze_norm: true`` (ppdet's ResNet default): frozen
  BatchNorm layers that never saw pretrained statistics stay the identity, so the backbone would
  train without any normalisation (slowly: the demo model reached half its AP that way);
* a URL: ``WEIGHTS_HOME/<file name>`` when it is there, with no network access at all (ppdet
  would ask the server for the file's MD5 first); otherwise one process per node (local rank 0)
  downloads it with bounded timeouts, and one all-reduce tells every rank whether that worked, so
  a failed download ends every rank with ``PretrainWeightsError`` (ppdet's ``_download_dist``
  leaves the other ranks polling a lock file that nobody removes);
* a local path: ``FileNotFoundError`` naming it when neither it nor ``<it>.pdparams`` exists.

The file (local or downloaded) is read without running code (``load_pretrain_weights``): a
pickle that asks for any object besides arrays and containers is refused, naming it.
"""

import base64
import binascii
import hashlib
import os

from ppdet.utils.logger import setup_logger

from ppdet_dac.utils.atomic import atomic_open
from ppdet_dac.utils.cli import UserError

logger = setup_logger(__name__)

__all__ = [
    "DEFAULT_URLS",
    "PretrainWeightsError",
    "check_pretrain_weights",
    "fetch_pretrain_weights",
    "cache_path",
    "load_pretrain_weights",
]

# ppdet's ImageNet weights, as its own configs use them (Deformable-DETR / DETR for ResNet-50,
# swin_L_384 for Swin-L).
DEFAULT_URLS = {
    "ResNet": "https://paddledet.bj.bcebos.com/models/pretrained/"
    "ResNet50_vb_normal_pretrained.pdparams",
    "SwinTransformer": "https://bj.bcebos.com/v1/paddledet/models/pretrained/"
    "swin_large_patch4_window12_384_22kto1k_pretrained.pdparams",
}
SCRATCH = "none"
CONNECT_TIMEOUT_S = 30  # a server that does not answer at all
READ_TIMEOUT_S = 120  # a stalled transfer
_CHUNK = 1 << 20


class PretrainWeightsError(UserError, RuntimeError):
    """A ``pretrain_weights`` URL that could not be fetched; the message names the URL, the cache
    file ppdet looks for and the local-file alternative."""


def check_pretrain_weights(cfg, config_path):
    """The config's ``pretrain_weights`` as given (a URL or a path), or None for ``none``.

    Cheap (no file or network access), so a training run stops here before reading its dataset.
    Raises ValueError naming ``config_path`` when the key is missing or empty.
    """
    value = cfg.get("pretrain_weights")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(
            f"{config_path}: `pretrain_weights` is missing or empty, so the backbone would "
            f"start from random weights. Set `pretrain_weights` to ppdet's ImageNet weights "
            f"({_suggestion(cfg)}), or to a local .pdparams file "
            "(tools/convert_backbone.py converts the official torchvision / Swin checkpoints), or "
            "write `pretrain_weights: none` to train the backbone from scratch on purpose."
        )
    if not isinstance(value, str):
        raise ValueError(
            f"{config_path}: `pretrain_weights` must be a URL, a .pdparams path or "
            f"`none`, got {value!r}"
        )
    value = value.strip()
    if value.lower() == SCRATCH:
        frozen = _backbone_with_frozen_norm(cfg)
        if frozen:
            raise ValueError(
                f"{config_path}: `pretrain_weights: none` with `{frozen}.freeze_norm: true`: "
                "frozen BatchNorm layers keep their initial statistics (mean 0, variance 1) and "
                "affine (1, 0), so a backbone trained from scratch would have no normalisation "
                f"at all. Set `{frozen}.freeze_norm: false` (as configs/demo/dac_demo.yml does), "
                "or give ImageNet weights in `pretrain_weights`."
            )
        logger.info(
            f"{config_path}: pretrain_weights is `none`: the backbone trains from scratch "
            "(random initial weights)"
        )
        return None
    return value


def _backbone_name(cfg):
    architecture = cfg.get("architecture")
    section = cfg.get(architecture) if architecture else None
    return section.get("backbone") if hasattr(section, "get") else None


def _backbone_with_frozen_norm(cfg):
    """The backbone's name when its config section freezes its norms (``freeze_norm`` is True,
    set or as the class default), else None."""
    name = _backbone_name(cfg)
    section = cfg.get(name) if name else None
    if not hasattr(section, "__getitem__"):
        return None
    try:
        value = section["freeze_norm"]  # a ppdet SchemaDict answers with the class default
    except KeyError:
        return None
    return name if value is True else None


def _suggestion(cfg):
    backbone = _backbone_name(cfg)
    if backbone in DEFAULT_URLS:
        return f"{backbone}: {DEFAULT_URLS[backbone]}"
    return "; ".join(f"{name}: {url}" for name, url in DEFAULT_URLS.items())


def cache_path(url):
    """Where ppdet keeps the download of ``url``: ``WEIGHTS_HOME/<file name>``."""
    from ppdet.utils import download

    url = download.parse_url(url)
    return os.path.join(download.WEIGHTS_HOME, os.path.split(url)[-1])


def fetch_pretrain_weights(value, config_path=None):
    """A local .pdparams path for ``value`` (from ``check_pretrain_weights``).

    A URL resolves to its cache file, downloaded when missing (see the module docstring); in a
    run of several processes every rank must call this (it holds one collective for URLs).
    Raises PretrainWeightsError (URL), FileNotFoundError / ValueError (local path).
    """
    from ppdet.utils.checkpoint import is_url

    where = f"{config_path}: " if config_path else ""
    if is_url(value):
        return _fetch_url(value, where)
    path = os.path.expanduser(value)
    stem, ext = os.path.splitext(path)
    if ext not in ("", ".pdparams"):
        raise ValueError(f"{where}pretrain_weights {value}: expected a .pdparams file")
    if os.path.isfile(stem + ".pdparams"):
        return stem + ".pdparams"
    raise FileNotFoundError(f"{where}pretrain_weights file not found: {stem + '.pdparams'}")


def _fetch_url(url, where):
    from ppdet.utils.download import parse_url

    url = parse_url(url)
    dest = cache_path(url)
    failure = None
    if _downloads_on_this_node() and not os.path.isfile(dest):
        failure = _download(url, dest)
    if _on_any_rank(failure is not None):
        reason = failure or "the download failed on another process of this run (see its log)"
    elif not os.path.isfile(dest):
        reason = f"{dest} is missing after the download (is {os.path.dirname(dest)} shared?)"
    else:
        return dest
    raise PretrainWeightsError(
        f"{where}cannot download pretrain_weights {url}: {reason}. ppdet looks for this file at "
        f"{dest}: copy it there, or give a local file with "
        "-o pretrain_weights=/path/file.pdparams"
    )


def _downloads_on_this_node():
    """Local rank 0 downloads (one download per node, as ppdet); a single process always does."""
    local = os.environ.get("PADDLE_RANK_IN_NODE", os.environ.get("PADDLE_LOCAL_RANK"))
    if local is not None:
        return int(local) == 0
    import paddle.distributed as dist

    return dist.get_rank() == 0


def _on_any_rank(flag):
    """True when ``flag`` is true on any rank: one all-reduce (MAX) when several run."""
    import paddle
    import paddle.distributed as dist

    if dist.get_world_size() <= 1:
        return bool(flag)
    value = paddle.to_tensor([int(flag)], dtype="int64")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(int(value.numpy()[0]))


class _Mismatch(Exception):
    """The download's MD5 is not the server's Content-MD5 (the file is not kept)."""


def _download(url, dest):
    """Download ``url`` to ``dest`` (through a temporary file, renamed into place when complete
    and its Content-MD5, when the server sends one, matches). Returns None, or why it failed."""
    import requests

    os.makedirs(os.path.dirname(dest), exist_ok=True)
    logger.info(f"downloading {url} to {dest}")
    try:
        with requests.get(
            url, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
        ) as response:
            if response.status_code != 200:
                return f"HTTP status {response.status_code}"
            md5 = hashlib.md5()
            with atomic_open(dest, "wb") as handle:  # moved to dest only when the MD5 fits
                for chunk in response.iter_content(_CHUNK):
                    handle.write(chunk)
                    md5.update(chunk)
                expected = _content_md5(response.headers.get("content-md5"))
                if expected and expected != md5.hexdigest():
                    raise _Mismatch(
                        f"MD5 {md5.hexdigest()} of the download differs from the "
                        f"server's {expected}"
                    )
    except _Mismatch as exc:
        return str(exc)
    except (requests.RequestException, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    logger.info(f"downloaded {dest} ({os.path.getsize(dest) / 2**20:.1f} MiB)")
    return None


def _content_md5(header):
    """The hex MD5 of a Content-MD5 header (base64, as bcebos sends it), or None."""
    if not header:
        return None
    try:
        return binascii.hexlify(base64.b64decode(header.strip('"'), validate=True)).decode()
    except binascii.Error:
        return None


def load_pretrain_weights(model, path):
    """Load the .pdparams ``path`` (from ``fetch_pretrain_weights``: a local file or a URL's
    download) into ``model`` the ppdet way (names matched by suffix, so an ImageNet backbone file
    fills ``backbone.*``), through the restricted reader (a crafted file runs no code), keeping
    the model's own initialisation for every tensor whose shape differs: fine-tuning a converted
    COCO model on K classes re-starts the class heads and the denoising label embedding.

    ValueError naming the file when no backbone tensor was loaded; one warning line (counts,
    first names) when some were not. Returns {'loaded', 'reinitialised', 'absent', 'unused'}
    (lists of names, see ``ppdet_dac.interop.weights.load_pretrained``).
    """
    from ppdet_dac.interop.weights import load_pretrained

    return load_pretrained(model, path)
