"""Use every CPU core for Paddle's CPU kernels unless the user chose (or a launcher runs several
processes per machine). Imported by the tools before Paddle."""

import os

if "OMP_NUM_THREADS" not in os.environ and int(os.environ.get("PADDLE_TRAINERS_NUM", "1")) <= 1:
    os.environ["OMP_NUM_THREADS"] = str(os.cpu_count() or 1)
    os.environ["PPDET_DAC_SET_THREADS"] = "1"  # ppdet_dac drops Paddle's notice about it
