"""retrieval.core.distributed without a process group: the single-process meaning of each helper (the
two-process behaviour is tested end to end in tests/reliability/test_distributed_training.py)."""
import numpy as np
import torch

from retrieval.core import distributed


def test_single_process_is_rank_zero_of_one():
    assert not distributed.is_distributed()
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    assert distributed.init_from_env() is False          # no WORLD_SIZE: stays single-process


def test_shard_keeps_the_whole_batch_and_weight_one():
    idx = np.array([7, 3, 9])
    np.testing.assert_array_equal(distributed.shard(idx), idx)
    assert distributed.loss_weight(5, 5) == 1.0


def test_all_gather_rows_places_rows_at_their_positions():
    got = distributed.all_gather_rows(np.array([[1, 1], [2, 2]]), np.array([2, 0]), 3)
    np.testing.assert_array_equal(got[[0, 2]], [[2, 2], [1, 1]])
    t = distributed.all_gather_rows(torch.tensor([5.0, 6.0]), np.array([1, 0]), 2)
    assert t.tolist() == [6.0, 5.0]


def test_runner_calls_the_function_on_the_model():
    model = torch.nn.Linear(2, 1)
    runner = distributed.wrap(model)
    assert runner.ddp is None
    assert runner(lambda m, x: m is model and x, 4) == 4


def test_finish_is_a_no_op_when_single_process():
    distributed.finish()                                   # would os._exit if it did anything
