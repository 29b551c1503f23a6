"""Loading a ppdet YAML config with ppdet_dac's classes registered, and checking its keys."""

import os

from ppdet.core.workspace import load_config, merge_config

from ppdet.utils.logger import setup_logger

from ppdet_dac.data.image_sizes import apply_image_sizes, describe_image_sizes

from .config_keys import check_config_file, check_config_keys

logger = setup_logger(__name__)

# ppdet's own tools pick the device from these flags, in this order.
DEVICE_FLAGS = (("use_gpu", "gpu"), ("use_npu", "npu"), ("use_xpu", "xpu"), ("use_mlu", "mlu"))


def check_section_keys(cfg, source):
    """Raise one ValueError naming ``source`` and the key when any key of the merged config
    ``cfg`` is unknown (``config_keys.check_config_keys``; a typo would otherwise be ignored)."""
    check_config_keys(cfg, source)


def load_checked_config(path, opts=None):
    """load_config(path) + the -o overrides ``opts``, after every key and value of both was
    checked (``config_keys.check_config_file``, ``config_values``; a ``_BASE_`` cycle is
    named before ppdet's loader would recurse into it), with the image-size keys (``train_sizes``,
    ``train_max_size``, ``eval_size``, ``eval_max_size``) filled into the readers
    (``ppdet_dac.data.image_sizes``; the sizes are logged in one line).

    Raises FileNotFoundError naming ``path`` (or a missing ``_BASE_`` file) when it does not
    exist, ValueError naming the file or ``-o`` entry and the unknown key or bad value or size,
    or the files of a ``_BASE_`` cycle.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    check_config_file(path, opts)
    cfg = load_config(path)
    if opts:
        merge_config(opts)

    def where(key):
        return f"{path} with -o {key}={opts[key]}" if opts and key in opts else path

    apply_image_sizes(cfg, where)
    sizes = describe_image_sizes(cfg)
    if sizes:
        logger.info(
            f"image sizes: {sizes} (-o train_sizes=[...] train_max_size=N "
            "eval_size=N eval_max_size=N)"
        )
    return cfg


def config_from_args(args, device=None):
    """The tools' common start: the checked config of ``args.config`` with ``-o`` overrides and
    every other flag merged in (ppdet's ``merge_args``), and Paddle's device set from
    ``use_gpu`` / ``use_npu`` / ``use_xpu`` / ``use_mlu`` as ppdet's tools do (or ``device``
    when given).

    Raises ValueError when ``-o`` sets one of the tool's own options (merge_args would replace
    the ``-o`` value by the option's), or when the device a flag asks for is not built in.
    """
    import paddle
    from ppdet.utils.cli import merge_args

    options = sorted(set(vars(args)) - {"config", "opt", "slim_config"})
    for key in options:
        if key in (args.opt or {}):
            raise ValueError(
                f"{args.config} with -o {key}={args.opt[key]}: {key!r} is an option "
                f"of this tool, whose value replaces the -o one; pass --{key} "
                f"instead"
            )
    cfg = load_checked_config(args.config, args.opt)
    merge_args(cfg, args)
    paddle.set_device(device or _device(cfg, args.config))
    return cfg


def _device(cfg, path):
    """The device of the first true flag of DEVICE_FLAGS ('cpu' when none is); ValueError
    naming ``path`` and the flag when this Paddle build lacks that device."""
    import paddle

    for flag, name in DEVICE_FLAGS:
        if cfg.get(flag, False):
            if name == "gpu":
                built = paddle.is_compiled_with_cuda()
            elif name == "xpu":
                built = paddle.is_compiled_with_xpu()
            else:
                built = name in paddle.device.get_all_custom_device_type()
            if not built:
                raise ValueError(
                    f"{path}: {flag} is true, but this Paddle build has no {name.upper()} support"
                )
            return name
    return "cpu"
