"""Comparison and analysis: raw outputs / losses / gradients of a model on fixed inputs
(``dump``, its inputs read and checked by ``dump_inputs``, for checks against the official
code) and query affinity (``queries``)."""
