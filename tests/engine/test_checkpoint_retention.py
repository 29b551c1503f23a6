"""Retention of the epoch checkpoints: ``max_epoch_checkpoints`` keeps the newest N numbered
epoch checkpoints, ``epoch_checkpoint_weights_only`` leaves the older ones (all of them once
``model_final`` is written) with their ``.pdparams`` alone; ``best_model`` and ``model_final``
stay whole; bad values are one config error. A training run with these keys:
test_training_end.py."""

import os
import types

import pytest

from ppdet_dac.engine.config_keys import check_config_file
from ppdet_dac.engine.trainer_checkpoints import TrainerCheckpoints

DEMO = "configs/demo/dac_demo.yml"
SUFFIXES = (".pdparams", ".pdopt", ".pdstate")


def _files(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(SUFFIXES))


def _fake_epochs(folder, order):
    """Empty checkpoint files for the epochs of ``order``, written in that order (mtimes 1 s
    apart), plus a best_model and an iter_7 that retention must not touch."""
    for rank, epoch in enumerate(order):
        for suffix in SUFFIXES:
            path = os.path.join(folder, f"{epoch}{suffix}")
            open(path, "wb").close()
            os.utime(path, ns=(rank * 10**9, rank * 10**9))
    for name in ("best_model", "iter_7"):
        for suffix in SUFFIXES:
            open(os.path.join(folder, name + suffix), "wb").close()


def _retain(folder, final=False, **cfg):
    trainer = types.SimpleNamespace(cfg=cfg, save_dir=folder, _nranks=1, _local_rank=0)
    TrainerCheckpoints._retain_epoch_checkpoints(trainer, final=final)


def test_newest_written_epochs_are_kept_not_the_highest_numbers(tmp_path):
    # a resume from epoch 1 after an abandoned run that reached epoch 4: the new run's 2 is newest
    _fake_epochs(str(tmp_path), [0, 1, 3, 4, 2])
    _retain(str(tmp_path), max_epoch_checkpoints=2)
    kept = {name.split(".")[0] for name in _files(tmp_path)}
    assert kept == {"4", "2", "best_model", "iter_7"}


def test_weights_only_keeps_the_newest_epoch_whole_until_the_final_one(tmp_path):
    _fake_epochs(str(tmp_path), [0, 1, 2])
    _retain(str(tmp_path), epoch_checkpoint_weights_only=True)
    names = _files(tmp_path)
    assert [n for n in names if n[0].isdigit()] == [
        "0.pdparams",
        "1.pdparams",
        "2.pdopt",
        "2.pdparams",
        "2.pdstate",
    ]
    _retain(str(tmp_path), final=True, max_epoch_checkpoints=0, epoch_checkpoint_weights_only=True)
    assert [n for n in _files(tmp_path) if n[0].isdigit()] == [
        "0.pdparams",
        "1.pdparams",
        "2.pdparams",
    ]
    assert {n for n in _files(tmp_path) if n.startswith("best")} == {
        "best_model" + s for s in SUFFIXES
    }


def test_default_keeps_every_epoch_checkpoint(tmp_path):
    _fake_epochs(str(tmp_path), [0, 1, 2, 3])
    _retain(str(tmp_path))
    assert len(_files(tmp_path)) == 4 * 3 + 2 * 3


@pytest.mark.parametrize("value", [-3, "two", 1.5])
def test_bad_number_of_epoch_checkpoints_is_one_config_error(value):
    with pytest.raises(ValueError) as err:
        check_config_file(DEMO, {"max_epoch_checkpoints": value})
    assert str(err.value) == (
        f"{DEMO} with -o max_epoch_checkpoints={value}: max_epoch_checkpoints must be an "
        f"integer >= 0, got {value!r}"
    )


def test_weights_only_flag_must_be_a_boolean():
    with pytest.raises(ValueError, match="epoch_checkpoint_weights_only must be true or false"):
        check_config_file(DEMO, {"epoch_checkpoint_weights_only": "yes please"})
