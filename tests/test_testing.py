import pytest
import torch

from vlp import _checks
from vlp.testing import assert_close, mismatch_report


def test_assert_close_passes_within_dtype_tolerance():
    x = torch.randn(5, 7, dtype=torch.float64)
    assert_close(x + 1e-12, x)
    assert_close(x.float(), x)  # float32 tolerance applies


def test_report_names_count_worst_index_and_values():
    x = torch.zeros(3, 4, dtype=torch.float64)
    y = x.clone()
    y[1, 2] = 1.0
    y[2, 3] = 0.5
    with pytest.raises(AssertionError) as info:
        assert_close(x, y, msg="loss")
    text = str(info.value)
    assert text.startswith("loss: 2 of 12 elements differ")
    assert "worst at index (1, 2)" in text


def test_report_nan_and_inf():
    x = torch.tensor([1.0, float("nan"), float("inf")])
    assert mismatch_report(x, x.clone(), 1e-6, 1e-6) is None
    y = torch.tensor([1.0, 2.0, float("inf")])
    assert "1 NaN" in mismatch_report(x, y, 1e-6, 1e-6)
    z = torch.tensor([1.0, float("nan"), -float("inf")])
    assert "non-finite values differ" in mismatch_report(x, z, 1e-6, 1e-6)


def test_shape_mismatch_reported():
    assert "shape mismatch" in mismatch_report(torch.zeros(2), torch.zeros(3), 0, 0)


def test_checks_messages():
    with pytest.raises(ValueError, match=r"x must have shape \(N, D\) \(2 dims\), got \(3,\)"):
        _checks.check_matrix("x", torch.zeros(3))
    with pytest.raises(ValueError, match="x must not be empty"):
        _checks.check_matrix("x", torch.zeros(0, 3))
    with pytest.raises(TypeError, match="floating-point"):
        _checks.check_matrix("x", torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="scale must be a finite number > 0, got -1.0"):
        _checks.check_positive("scale", -1.0)
    with pytest.raises(ValueError, match="got nan"):
        _checks.check_positive("scale", torch.tensor(float("nan")))
    with pytest.raises(ValueError, match=r"ratio must lie in \[0, 1\), got 1.0"):
        _checks.check_probability("ratio", 1.0)
    with pytest.raises(ValueError, match="2 NaN/inf"):
        _checks.check_finite("f", torch.tensor([1.0, float("nan"), float("inf")]))
    with pytest.raises(TypeError, match="torch.bool"):
        _checks.check_bool_mask("m", torch.zeros(2, 3), ("B", "N"))
