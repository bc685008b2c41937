"""graphc/types.py: shape and axis rules shared by the ops."""

import numpy as np
import pytest

import graphc as gc


@pytest.mark.parametrize("axis", [1.0, "1", {0}, True])
def test_an_axis_that_is_not_an_int_is_a_shape_error(axis):
    with pytest.raises(gc.ShapeError, match="sum: axis must be an int"):
        gc.sum(gc.placeholder("m", (2, 3)), axis=axis)


@pytest.mark.parametrize(("axis", "shape"), [(np.int64(1), (2,)), ([0, 1], ()), ((-1,), (2,)), (None, ())])
def test_ints_lists_and_tuples_of_axes(axis, shape):
    assert gc.sum(gc.placeholder("m", (2, 3)), axis=axis).shape == shape
