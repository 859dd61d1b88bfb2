"""Definition 1 per pair, and the (runs x pairs) matrices that rmlib.analysis.stats takes."""

import numpy as np
import pytest

from rmlib.metrics import accuracy, correctness, seed_matrix


def _record(seed, rc, rr):
    return {"spec": {"seed": seed}, "evals": {"test": {"reward_chosen": rc, "reward_rejected": rr}}}


def test_correctness_and_seed_matrix_by_hand():
    assert correctness([2.0, 1.0, 0.0], [1.0, 1.0, 3.0]).tolist() == [1.0, 0.5, 0.0]
    assert accuracy([2.0, 1.0, 0.0], [1.0, 1.0, 3.0]) == pytest.approx(0.5)
    records = [_record(1, [0.0, 0.0], [1.0, 0.0]), _record(0, [1.0, 2.0], [0.0, 3.0])]
    assert seed_matrix(records, "test").tolist() == [[1.0, 0.0], [0.0, 0.5]]  # rows in seed order
    with pytest.raises(ValueError, match="different numbers of pairs"):
        seed_matrix([_record(0, [1.0], [0.0]), _record(1, [1.0, 1.0], [0.0, 0.0])], "test")
    with pytest.raises(ValueError, match="equal-length"):
        correctness([1.0], [1.0, 2.0])
