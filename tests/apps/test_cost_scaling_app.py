"""The cost-scaling app without a browser: guarded sweeps, exponents from the measurements, the fits calculator."""

import numpy as np
import pytest

from explorer.analysis.cost import cost
from explorer.apps import CostScalingApp
from explorer.bench.scaling import fit_exponent


@pytest.fixture(scope="module")
def app():
    app = CostScalingApp(ops=("attention_math", "conv1d"), min_log2=6, max_log2=8, d=16)
    app.run_button.click()
    return app


def test_sweep_measures_every_point_and_fits(app):
    assert "data-points='6'" in app.status.value
    ns = [m.n for m in app.measurements if m.op == "attention_math"]
    peaks = [m.peak_bytes for m in app.measurements if m.op == "attention_math"]
    assert ns == [64, 128, 256]
    slope, ci = fit_exponent(ns, peaks)  # independent refit of the same points
    assert app.exponents["attention_math"]["memory"][0] == pytest.approx(slope, abs=1e-12)
    assert 1.7 < slope < 2.1  # n^2 scores dominate the peak: exponent near 2 (scores + probabilities + O(n) terms)


def test_analytic_memory_curve_is_unscaled_model(app):
    line = next(t for t in app.figure.data if t.name == "attention_math analytic")
    expected = [cost("attention_math", int(n), 16, window=min(128, int(n)), block=min(64, int(n))).peak_memory
                for n in line.x]
    np.testing.assert_allclose(line.y, expected, rtol=1e-12)


def test_guard_refuses_huge_sizes_without_running():
    app = CostScalingApp(ops=("attention_math",), min_log2=15, max_log2=16)
    app.run_button.click()
    assert "data-points='0'" in app.status.value and "cost-refused" in app.status.value
    assert app.measurements == []


def test_calculator(app):
    app.calc_op.value, app.calc_n.value = "attention_math", 65_536
    app.calc_button.click()
    assert "cost-refused" in app.calc_result.value and "34.4 GB" in app.calc_result.value
    app.calc_op.value = "attention_fused"
    app.calc_button.click()
    assert "cost-fits" in app.calc_result.value


def test_empty_selection_message(app):
    app.ops.value = ()
    app.run_button.click()
    assert "select at least one operation" in app.status.value


def test_unknown_op():
    with pytest.raises(ValueError, match="ops"):
        CostScalingApp(ops=("attention_magic",))


def test_gpu_benchmarks_read_both_files_and_skip_cpu_and_errors(tmp_path):
    """Hand-made files in both schemas; the attention time is per (batch * head), the unit of this app's sweep."""
    import json

    from explorer.apps.cost_scaling import gpu_benchmarks

    (tmp_path / "scaling_h100.json").write_text(json.dumps({
        "metadata": {"device": "NVIDIA H100"}, "records": [{"op": "attention_math", "n": 1024, "median_s": 2e-4}]}))
    (tmp_path / "scaling_cpu.json").write_text(json.dumps({
        "metadata": {"device": "cpu"}, "records": [{"op": "conv1d", "n": 1024, "median_s": 1e-3}]}))
    base = {"mask": "full", "mode": "fwd", "device": "cuda:0", "batch": 4, "heads": 16, "d": 64, "dtype": "bfloat16",
            "error": None}
    (tmp_path / "attention_h100.json").write_text(json.dumps({"metadata": {"device": "NVIDIA H100"}, "records": [
        {**base, "backend": "ours", "n": 4096, "ms": 1.28},
        {**base, "backend": "sdpa_cudnn", "n": 4096, "ms": None, "error": "unsupported"},  # could not run
        {**base, "backend": "ours", "n": 4096, "ms": 3.0, "mask": "causal"},  # only the unmasked op is plotted
        {**base, "backend": "reference", "n": 64, "ms": 1.0, "device": "cpu"},  # CPU runs are not GPU results
    ]}))
    (tmp_path / "attention_broken.json").write_text("{not json")
    records = gpu_benchmarks(tmp_path)
    assert [(r["op"], r["n"], r["label"], r["device_name"]) for r in records] == [
        ("attention_math", 1024, "attention_math", "NVIDIA H100"),
        ("attention_fused", 4096, "ours d=64 bfloat16", "NVIDIA H100")]
    assert records[1]["median_s"] == pytest.approx(1.28e-3 / (4 * 16), rel=1e-12)
