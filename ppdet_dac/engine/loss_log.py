"""The loss terms of the training steps on their way to the host: one copy per step.

Every step needs its total loss on the host (the NaN/inf guard and the epoch's mean loss); the
log line needs every term, but only on log iterations. ``LossLog.step`` therefore copies one
value per step, the total, and keeps the terms of the other steps on the device; on a log
iteration it copies the terms of every step since the last log iteration in one transfer, so that
ppdet's TrainingStats gets each step's terms in order, as if they had been copied each step (its
smoothed values are the same). With several ranks the copied values are averaged over the ranks
first (one all-reduce of the same values, in float64), as the official ``reduce_dict`` logs them.
"""

import paddle
import paddle.distributed as dist

__all__ = ["LossLog", "host_loss_terms"]


def _row(outputs, names, dtype):
    """[len(names)] ``dtype`` tensor of the loss terms (each first cast to float32)."""
    return paddle.stack([paddle.cast(outputs[n], "float32").reshape([]) for n in names]).astype(
        dtype
    )


def host_loss_terms(outputs):
    """{name: float} of one rank's loss terms, in one transfer (the guard's error message)."""
    names = list(outputs)
    return dict(zip(names, _row(outputs, names, "float32").numpy().tolist()))


class LossLog:
    """Host copies of the loss terms (see the module docstring).

    log_iter: the log line's period in steps; every_step: copy every step's terms (VisualDL
    writes them each step); nranks: ranks whose values are averaged (all of them call ``step``
    with the same sequence of ``log`` flags, so the all-reduces match).
    """

    def __init__(self, log_iter, every_step=False, nranks=1):
        self.log_iter = max(int(log_iter), 1)
        self.every_step, self.nranks = every_step, nranks
        self.dtype = "float64" if nranks > 1 else "float32"
        self._pending = []  # (names, device row) of the steps not copied yet
        self._started = False

    def due(self, step_id):
        """Whether step ``step_id`` of an epoch copies its terms: a log iteration, the first
        step of the run (the log printer needs values from then on) or every step."""
        return self.every_step or not self._started or step_id % self.log_iter == 0

    def _to_host(self, values):
        """NumPy copy of the device vector ``values``, averaged over the ranks."""
        if self.nranks > 1:
            dist.all_reduce(values)
            values = values / self.nranks
        return values.numpy()

    def step(self, outputs, log):
        """One training step's loss dict (with 'loss') -> (this step's {name: float}, the
        steps' {name: float} in order since the last copy, this one last).

        ``log`` False: only the total is copied; the first value is {'loss': total} and the
        list is empty. The values are averaged over the ranks."""
        self._started = True
        names = list(outputs)
        self._pending.append((names, _row(outputs, names, self.dtype)))
        if not log:
            total = paddle.cast(outputs["loss"], "float32").reshape([1]).astype(self.dtype)
            return {"loss": float(self._to_host(total)[0])}, []
        pending, self._pending = self._pending, []
        flat = self._to_host(paddle.concat([row for _, row in pending])).tolist()
        rows, start = [], 0
        for step_names, _ in pending:
            rows.append(dict(zip(step_names, flat[start : start + len(step_names)])))
            start += len(step_names)
        return rows[-1], rows
