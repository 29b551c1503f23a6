r"""Convert an official DAC-DETR checkpoint (PyTorch .pth) into ppdet_dac weights. No torch needed.

    python tools/convert_official.py --src checkpoint0023.pth \
        --dst output/weights/dac_r50.pdparams [-c configs/dac_cdn_ice_r50.yml] [-o key=value ...]

The model is built from the config to learn the target names and shapes; every official tensor is
renamed (Linear weights transposed, the decoder's packed q/k/v attention projection split), and
any missing, unexpected or mis-shaped key stops the conversion with one error listing them all.
Evaluate with `tools/eval.py -c <config> -o weights=<dst>`.
"""

import os

import ppdet_dac  # noqa: F401  (registers ppdet_dac's classes before the config is loaded)

import paddle
from ppdet.core.workspace import create
from ppdet.utils.cli import ArgsParser

from ppdet_dac.engine import load_checked_config
from ppdet_dac.interop import read_pth
from ppdet_dac.interop.mapping import convert_official, find_state_dict, load_and_save, state_specs
from ppdet_dac.utils.cli import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_model(config, opts=None):
    """The architecture of ``config`` (with ``-o`` overrides), on CPU."""
    paddle.set_device("cpu")
    cfg = load_checked_config(config, opts or {})
    return create(cfg.architecture)


def main(argv=None):
    parser = ArgsParser()
    parser.description = __doc__
    parser.add_argument("--src", required=True, help="official checkpoint (.pth, torch.save)")
    parser.add_argument("--dst", required=True, help="output weights (.pdparams)")
    parser.set_defaults(config=os.path.join(REPO, "configs", "dac_cdn_ice_r50.yml"))
    args = parser.parse_args(argv)

    source = find_state_dict(read_pth(args.src), args.src, keys=("model",))
    model = build_model(args.config, args.opt)
    state = convert_official(source, state_specs(model), source_name=args.src)
    return load_and_save(model, state, args.dst)


if __name__ == "__main__":
    run_cli(main)
