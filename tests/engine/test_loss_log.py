"""LossLog: one host copy per training step, the loss terms only on log iterations, and the
same values TrainingStats got when every step's terms were copied."""

import numpy as np
import paddle
import pytest

from ppdet_dac.engine.loss_log import LossLog, host_loss_terms

NAMES = ("loss_ce", "loss_bbox", "loss")


def _outputs(step):
    """A loss dict whose values differ per step (float32, as the model's)."""
    ce, bbox = np.float32(0.1 * step + 0.3), np.float32(1.0 / (step + 3))
    values = {"loss_ce": ce, "loss_bbox": bbox, "loss": np.float32(ce + bbox)}
    return {k: paddle.to_tensor(v) for k, v in values.items()}


@pytest.fixture
def copies(monkeypatch):
    """Sizes of the tensors copied to the host by ``numpy`` (what LossLog uses)."""
    sizes = []
    numpy = paddle.Tensor.numpy

    def counted(self, *args, **kwargs):
        sizes.append(int(self.size))
        return numpy(self, *args, **kwargs)

    monkeypatch.setattr(paddle.Tensor, "numpy", counted)
    return sizes


def test_only_log_iterations_copy_the_terms(copies):
    log = LossLog(log_iter=3)
    returned, per_step = [], []
    for step_id in range(7):
        outputs = _outputs(step_id)
        expected = {k: float(v.numpy()) for k, v in outputs.items()}
        del copies[:]  # the reference copies above are not LossLog's
        values, rows = log.step(outputs, log.due(step_id))
        per_step.append(list(copies))
        returned.append((values, rows, expected))
    # step 0 (first, and 0 % 3 == 0): its 3 terms; 1, 2: the total alone; 3: steps 1-3; ...
    assert per_step == [[3], [1], [1], [9], [1], [1], [9]]
    for step_id, (values, rows, expected) in enumerate(returned):
        assert values["loss"] == expected["loss"]
        if len(rows) == 0:
            assert values == {"loss": expected["loss"]}
    # the rows of each log iteration are the exact values of the steps since the last one
    logged = [row for _, rows, _ in returned for row in rows]
    assert logged == [expected for _, _, expected in returned]


def test_first_step_logs_also_in_the_middle_of_an_epoch():
    log = LossLog(log_iter=20)
    assert log.due(7)  # a resumed epoch starts at batch 7: the log printer needs values
    log.step(_outputs(0), True)
    assert not log.due(8) and log.due(20)
    assert LossLog(log_iter=20, every_step=True).due(8)


def test_host_loss_terms_one_copy(copies):
    terms = host_loss_terms(_outputs(2))
    assert copies == [3]
    assert list(terms) == list(NAMES)
    assert terms["loss_ce"] == float(np.float32(0.5))
