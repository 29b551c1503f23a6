"""Which checkpoint ``-r auto`` takes, how the eval batches are dealt to the ranks, and the
checks of the iteration-checkpoint keys (no training)."""

import os

import paddle
import pytest

from ppdet_dac.engine.checkpoint import latest_checkpoint, remove_checkpoint, save_checkpoint
from ppdet_dac.engine.evaluation import ShardedBatches
from ppdet_dac.engine.run_settings import whole_number as _whole_number


def _write(folder, name, global_iter, mtime_ns):
    model = paddle.nn.Linear(2, 2)
    opt = paddle.optimizer.AdamW(parameters=model.parameters())
    base = os.path.join(folder, name)
    save_checkpoint(base, model, opt, 1, global_iter)
    for suffix in (".pdparams", ".pdopt", ".pdstate"):
        os.utime(base + suffix, ns=(mtime_ns, mtime_ns))
    return base


def test_latest_complete_checkpoint_by_write_time(tmp_path):
    folder = str(tmp_path)
    assert latest_checkpoint(folder) is None  # fresh start
    assert latest_checkpoint(str(tmp_path / "absent")) is None
    _write(folder, "0", 4, 1_000)
    newest = _write(folder, "iter_6", 6, 2_000)
    assert latest_checkpoint(folder) == newest
    # written later but from an abandoned, longer run: the write time decides, not the number
    _write(folder, "iter_9", 9, 1_500)
    assert latest_checkpoint(folder) == newest
    # best_model is never taken (a copy kept for its AP)
    _write(folder, "best_model", 7, 3_000)
    assert latest_checkpoint(folder) == newest
    # the same write time: the higher iteration
    tied = _write(folder, "iter_7", 7, 2_000)
    assert latest_checkpoint(folder) == tied
    # an incomplete newest checkpoint (.pdopt lost) is skipped
    broken = _write(folder, "iter_8", 8, 4_000)
    os.remove(broken + ".pdopt")
    assert latest_checkpoint(folder) == tied
    # a mixed one (.pdopt of another write) too
    mixed = _write(folder, "iter_10", 10, 5_000)
    os.replace(os.path.join(folder, "iter_9.pdopt"), mixed + ".pdopt")
    os.utime(mixed + ".pdstate", ns=(5_000, 5_000))
    assert latest_checkpoint(folder) == tied
    remove_checkpoint(tied)
    assert not any(n.startswith("iter_7.") for n in os.listdir(folder))
    assert latest_checkpoint(folder) == newest


@pytest.mark.parametrize(
    "num_samples,batch_size,nranks", [(7, 2, 2), (60, 2, 3), (5, 1, 8), (1, 2, 2)]
)
def test_eval_batches_of_the_ranks_are_those_of_one_process(num_samples, batch_size, nranks):
    one = list(ShardedBatches(num_samples, batch_size))
    assert one == [
        list(range(i, min(i + batch_size, num_samples))) for i in range(0, num_samples, batch_size)
    ]
    shards = [ShardedBatches(num_samples, batch_size, r, nranks) for r in range(nranks)]
    dealt = {k: batch for s in shards for k, batch in zip(s.batch_ids, s)}
    assert sorted(dealt) == list(range(len(one)))  # each batch once
    assert [dealt[k] for k in sorted(dealt)] == one  # composed identically
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_iteration_checkpoint_keys_are_checked():
    cfg = {"filename": "dac_demo", "snapshot_iter": -5}
    with pytest.raises(
        ValueError,
        match=r"dac_demo: snapshot_iter must be a whole number "
        r">= 0, got -5",
    ):
        _whole_number(cfg, "snapshot_iter", 0, 0)
    with pytest.raises(ValueError, match=r"max_checkpoints must be a whole number >= 1, got 0"):
        _whole_number({"max_checkpoints": 0}, "max_checkpoints", 2, 1)
    with pytest.raises(ValueError, match="got '10'"):
        _whole_number({"snapshot_iter": "10"}, "snapshot_iter", 0, 0)
    assert _whole_number({}, "max_checkpoints", 2, 1) == 2
    assert _whole_number({"snapshot_iter": 500}, "snapshot_iter", 0, 0) == 500


def test_schedule_mismatch_names_what_does_not_fit_the_epochs():
    from ppdet.optimizer.optimizer import CosineDecay, LinearWarmup, PiecewiseDecay
    from ppdet_dac.engine.trainer import schedule_mismatch

    def cfg(epoch, *schedulers):
        return {"filename": "r50_2x", "epoch": epoch, "LearningRate": {"schedulers": schedulers}}

    # the official 1x (12 epochs, drop at 11) and 2x (24, drop at 20) recipes fit
    assert schedule_mismatch(cfg(12, PiecewiseDecay(milestones=[11]))) is None
    assert schedule_mismatch(cfg(24, PiecewiseDecay(milestones=[20]))) is None
    # the 2x schedule on a 12-epoch run (-o epoch=12): the drop never comes
    text = schedule_mismatch(cfg(12, PiecewiseDecay(milestones=[8, 20])))
    assert text.startswith(
        "r50_2x: the LearningRate schedule does not fit epoch: 12: "
        "PiecewiseDecay milestones [20] lie at or after the end of training "
        "(epochs 0-11): the learning rate never decays there. Nothing is "
        "rescaled"
    )
    assert '-o epoch=12 "LearningRate.schedulers=[!PiecewiseDecay {milestones: [11], ' in text
    assert "[8]" not in text and "[8, 20]" not in text
    assert "milestones [11] lie" in schedule_mismatch(cfg(11, PiecewiseDecay(milestones=[11])))
    text = schedule_mismatch(cfg(12, LinearWarmup(epochs=12), CosineDecay(max_epochs=24)))
    assert (
        "LinearWarmup warms up for 12 epochs, the whole run; CosineDecay max_epochs is 24, "
        "not 12" in text
    )
    assert schedule_mismatch(cfg(12, LinearWarmup(epochs=1), CosineDecay(max_epochs=12))) is None


def test_query_analysis_numbers_epochs_as_the_checkpoints(tmp_path):
    """N.pdparams is epoch N, model_final the epoch its .pdstate records (here 5 with snapshots
    every 2 epochs, not the 4 after the highest number); best_model and iter_* are no epochs."""
    from ppdet_dac.analysis.queries import checkpoint_epochs

    for name, epochs_done, step in (
        ("1", 2, 0),
        ("3", 4, 0),
        ("iter_9", 4, 1),
        ("best_model", 2, 0),
        ("model_final", 6, 0),
    ):
        model = paddle.nn.Linear(2, 2)
        save_checkpoint(
            os.path.join(str(tmp_path), name),
            model,
            paddle.optimizer.AdamW(parameters=model.parameters()),
            epochs_done,
            epochs_done * 2 + step,
            epoch_step=step,
        )
    assert checkpoint_epochs(str(tmp_path)) == [
        (1, str(tmp_path / "1.pdparams")),
        (3, str(tmp_path / "3.pdparams")),
        (5, str(tmp_path / "model_final.pdparams")),
    ]
    os.remove(tmp_path / "model_final.pdstate")  # a ppdet checkpoint: the one after the last
    assert checkpoint_epochs(str(tmp_path))[-1] == (4, str(tmp_path / "model_final.pdparams"))
