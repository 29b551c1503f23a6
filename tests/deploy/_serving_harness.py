"""Stand-in predictors for the service's tests: the real app, pool and uvicorn server around a
predictor that needs no model (one detection per image)."""

import threading
import time

import numpy as np

GATE_TIMEOUT = 60  # the gated stand-in never waits longer than this for its gate


class InstantPredictor:
    """One detection per image, at once."""

    label_list = ["thing"]

    def clone(self):
        return self

    def check_size(self, h, w, what="the image"):
        return h, w

    def load(self, image):
        return np.zeros((2, 2, 3), np.uint8)

    def detect(self, image):
        return np.array([[0, 0.9, 1, 2, 3, 4]], np.float32)


class GatedPredictor(InstantPredictor):
    """Answers one detection per image once ``gate`` is set; counts the runs it started."""

    def __init__(self, gate=None, started=None):
        self.gate = gate or threading.Event()
        self.started = started if started is not None else []

    def clone(self):
        return GatedPredictor(self.gate, self.started)

    def detect(self, image):
        self.started.append(time.monotonic())
        assert self.gate.wait(GATE_TIMEOUT), "test gate never opened"
        return super().detect(image)
