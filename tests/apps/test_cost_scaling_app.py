"""The cost-scaling app without a browser: guarded sweeps, exponents from the measurements, the fits calculator."""

import numpy as np
import pytest

from explorer.analysis.cost import OPS, cost
from explorer.apps import CostScalingApp
from explorer.apps.cost_scaling import COLOURS, _op_kwargs
from explorer.bench.scaling import fit_exponent

# every op but conv2d, whose n is an image side: at 2^10..2^11 the time guard refuses it
SWEEP_OPS = tuple(op for op in OPS if op != "conv2d")


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
    assert app.exponents["attention_math"]["memory"] == pytest.approx(slope, abs=1e-12)
    assert app.exponents["attention_math"]["memory_ci"] == pytest.approx(ci, abs=1e-12)
    assert 1.7 < slope < 2.1  # n^2 scores dominate the peak: exponent near 2 (scores + probabilities + O(n) terms)


@pytest.fixture(scope="module")
def wide_sweep():
    app = CostScalingApp(ops=SWEEP_OPS, min_log2=8, max_log2=11, d=64)
    app.run_button.click()
    return app


@pytest.mark.parametrize("op", SWEEP_OPS)
def test_measured_memory_exponent_matches_analytic(wide_sweep, op):
    """The claim the memory plot makes: measured peak memory grows with the analytic model's exponent.

    Heights differ (the measured peak leaves out the inputs; the sliding-window and block-sparse benchmark ops
    store their chunked scores), so only the log-log slopes over n = 2^8 .. 2^11 are compared.
    """
    assert f"data-points='{4 * len(SWEEP_OPS)}'" in wide_sweep.status.value  # 9 ops x n = 2^8 .. 2^11
    ns = [m.n for m in wide_sweep.measurements if m.op == op]
    assert ns == [256, 512, 1024, 2048]
    analytic, _ = fit_exponent(ns, [cost(op, n, **_op_kwargs(n, 64)).peak_memory for n in ns])
    measured = wide_sweep.exponents[op]["memory"]
    assert abs(measured - analytic) < 0.15, (op, measured, analytic)


def test_analytic_memory_curve_goes_through_middle_point_with_model_shape(wide_sweep):
    for op in SWEEP_OPS:
        measured = next(t for t in wide_sweep.figure.figure.data if t.name == f"{op} memory")
        line = next(t for t in wide_sweep.figure.figure.data if t.name == f"{op} analytic")
        model = np.array([cost(op, int(n), **_op_kwargs(int(n), 64)).peak_memory for n in line.x])
        mid = len(line.x) // 2
        assert line.y[mid] == pytest.approx(measured.y[mid], rel=1e-12), op
        np.testing.assert_allclose(np.array(line.y) / line.y[mid], model / model[mid], rtol=1e-12, err_msg=op)


def test_every_op_has_its_own_colour_on_every_trace(wide_sweep):
    """Ten ops, ten colours (lsh_attention's comes after the shared nine-colour palette); each op's measured,
    memory and analytic traces -- live and shipped -- are drawn in its colour."""
    assert list(COLOURS) == list(OPS) and len(set(COLOURS.values())) == len(OPS) == 10
    seen = set()
    for trace in wide_sweep.figure.figure.data:
        op = trace.legendgroup
        if op in COLOURS:
            colour = trace.marker.color if trace.mode == "markers" else trace.line.color
            assert colour == COLOURS[op], (trace.name, colour)
            seen.add(op)
    assert set(SWEEP_OPS) <= seen and "lsh_attention" in seen


def test_lsh_attention_is_in_the_shipped_sweep_and_the_selectors(wide_sweep):
    shipped = {m.op for m in wide_sweep.shipped}
    assert "lsh_attention" in shipped and "lsh_attention (shipped)" in {t.name for t in wide_sweep.figure.figure.data}
    assert "lsh_attention" in wide_sweep.ops.options and "lsh_attention" in wide_sweep.calc_op.options
    assert "lsh_attention" in wide_sweep.shipped_exponents  # fitted like the others


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


def test_calculator_lsh_attention(app):
    """LSH attention at n = 65 536 (defaults: 8 buckets, 2 rounds, chunks of 64) fits where the n x n map does not;
    the message shows the analytic model's peak and FLOPs."""
    from explorer.guard import human_bytes

    app.calc_op.value, app.calc_n.value = "lsh_attention", 65_536
    app.calc_button.click()
    need = cost("lsh_attention", 65_536, **_op_kwargs(65_536, app.d.value))
    assert "cost-fits" in app.calc_result.value
    assert human_bytes(need.peak_memory) in app.calc_result.value and f"{need.flops:.3g}" in app.calc_result.value


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

    # the metadata names the CUDA device whenever one exists, so each record's own device decides
    (tmp_path / "scaling_h100.json").write_text(json.dumps({"metadata": {"device": "NVIDIA H100"}, "records": [
        {"op": "attention_math", "n": 1024, "median_s": 2e-4, "device": "cuda", "batch": 2, "heads": 4},
        {"op": "conv1d", "n": 1024, "median_s": 1e-3, "device": "cpu", "batch": 1, "heads": 1}]}))
    (tmp_path / "scaling_cpu.json").write_text(json.dumps({
        "metadata": {"device": "cpu"}, "records": [{"op": "conv1d", "n": 1024, "median_s": 1e-3, "device": "cpu"}]}))
    (tmp_path / "scaling_old.json").write_text(json.dumps({  # no "metadata": the record alone decides
        "meta": {"device": "cpu"}, "records": [{"op": "linear_attention", "n": 512, "median_s": 1e-4,
                                                "device": "cuda:1"}]}))
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
        ("linear_attention", 512, "linear_attention", "cuda:1"),
        ("attention_fused", 4096, "ours d=64 bfloat16", "NVIDIA H100")]
    assert records[0]["median_s"] == pytest.approx(2e-4 / (2 * 4), rel=1e-12)  # per sequence and head
    assert records[1]["median_s"] == pytest.approx(1e-4, rel=1e-12)  # batch and heads default to 1
    assert records[2]["median_s"] == pytest.approx(1.28e-3 / (4 * 16), rel=1e-12)


def test_a_whole_sweep_is_bounded_in_time(monkeypatch):
    """One click never blocks the kernel for long: points whose estimated times would push the sweep past its budget
    are refused by name, before anything runs (a 1 ms budget here: every point exceeds it)."""
    import explorer.apps.cost_scaling as module

    monkeypatch.setattr(module, "SWEEP_TIME_BUDGET_S", 1e-3)
    monkeypatch.setattr(module, "measure", lambda *a, **k: pytest.fail("nothing may run over budget"))
    app = CostScalingApp(ops=("attention_math",), min_log2=12, max_log2=13)
    app.run_button.click()
    assert "data-points='0'" in app.status.value and "would exceed" in app.status.value
