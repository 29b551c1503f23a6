"""Loading a ppdet YAML config with ppdet_dac's classes registered, and checking its keys."""
import os

from ppdet.core.config.schema import SchemaDict
from ppdet.core.workspace import global_config, load_config, merge_config


def check_section_keys(cfg, source):
    """Raise one ValueError naming ``source`` and the key when a registered class's section sets
    an argument that class does not take (a typo would otherwise be silently ignored)."""
    for section, value in cfg.items():
        if not isinstance(value, SchemaDict) or not value.strict:
            continue
        extra = sorted(value.find_extra_keys())
        if extra:
            known = ", ".join(sorted(value.schema))
            raise ValueError(f"{source}: unknown key(s) {extra} in section '{section}'; "
                             f"{section} takes: {known}")


def load_checked_config(path, opts=None):
    """load_config(path) + the -o overrides, with every registered section's keys checked.

    Raises FileNotFoundError naming ``path`` when it does not exist.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    cfg = load_config(path)
    check_section_keys(cfg, path)
    if opts:
        merge_config(opts)
        check_section_keys(global_config, f"{path} with -o {opts}")
    return cfg


def config_from_args(args, device=None):
    """The tools' common start: the checked config of ``args.config`` with ``-o`` overrides and
    every other flag merged in (ppdet's ``merge_args``), and Paddle's device set from
    ``use_gpu`` (or ``device`` when given)."""
    import paddle
    from ppdet.utils.cli import merge_args
    cfg = load_checked_config(args.config, args.opt)
    merge_args(cfg, args)
    paddle.set_device(device or ("gpu" if cfg.get("use_gpu", False) else "cpu"))
    return cfg
