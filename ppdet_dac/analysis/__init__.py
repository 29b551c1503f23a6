"""Comparison and analysis: raw outputs / losses / gradients of a model on fixed inputs
(``dump``, for checks against the official code) and query affinity (``queries``)."""
