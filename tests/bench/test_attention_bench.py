"""explorer.bench.attention: the FLOP formula against hand counts, and the CPU run of the CLI end to end."""

import json

import pytest
import torch

from explorer.bench import attention as bench
from explorer.masks import causal, full, sliding_window


@pytest.mark.parametrize("n", [1, 2, 7, 64, 100])
def test_pairs_full_and_causal_match_dense_masks(n):
    assert bench.attention_pairs(n, "full") == n * n == int(full().dense(n, n).sum())
    assert bench.attention_pairs(n, "causal") == n * (n + 1) // 2 == int(causal().dense(n, n).sum())


@pytest.mark.parametrize("n, window", [(1, 1), (5, 1), (5, 5), (5, 9), (64, 16), (100, 17), (300, 512)])
def test_pairs_window_match_dense_mask(n, window):
    # the benchmark's window is causal: query i sees keys i - window + 1 .. i
    assert bench.attention_pairs(n, "window", window) == int(sliding_window(window, causal=True).dense(n, n).sum())


def test_flops_hand_count():
    # forward: two matmuls over the allowed pairs, 2 FLOPs per multiply-add -> 4 * pairs * d per head and sample
    assert bench.attention_flops(8, 16, heads=2, batch=3, mask="full") == 4 * 64 * 16 * 2 * 3
    assert bench.attention_flops(8, 16, heads=2, batch=3, mask="causal") == 4 * 36 * 16 * 2 * 3  # 36 = 8 * 9 / 2
    # window 3 over 8 positions: 1 + 2 + 3 * 6 = 21 pairs
    assert bench.attention_flops(8, 16, heads=2, batch=3, mask="window", window=3) == 4 * 21 * 16 * 2 * 3
    # forward + backward = 3.5 x forward
    assert bench.attention_flops(8, 16, 2, 3, "causal", backward=True) == 3.5 * 4 * 36 * 16 * 2 * 3


def test_pairs_invalid_arguments():
    with pytest.raises(ValueError, match="mask"):
        bench.attention_pairs(8, "dilated")
    with pytest.raises(ValueError, match="window"):
        bench.attention_pairs(8, "window")
    with pytest.raises(ValueError, match="n must be"):
        bench.attention_pairs(0, "full")


def test_device_tag_cpu():
    assert bench.device_tag(torch.device("cpu")) == "cpu"


def test_cli_quick_cpu(tmp_path, capsys):
    out = tmp_path / "attention.json"
    payload = bench.main(["--quick", "--cpu", "--backward", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))  # what was written is what was returned
    assert set(payload) == {"metadata", "config", "records", "ratios"}
    meta = payload["metadata"]
    assert {"date", "torch", "triton", "python", "device"} <= set(meta) and meta["device"] == "cpu"
    assert payload["config"]["dtype"] == "float32" and payload["config"]["backward_factor"] == 2.5

    records = payload["records"]
    keys = {"backend", "mask", "window", "n", "d", "heads", "batch", "dtype", "device", "mode", "flops", "ms",
            "tflops", "peak_bytes", "max_abs_diff", "error"}
    assert all(set(r) == keys for r in records)
    # quick CPU grid: 3 masks x N in (64, 128) x d = 16, 3 backends, 2 modes each
    assert len(records) == 3 * 2 * 1 * 3 * 2
    forward = [r for r in records if r["mode"] == "fwd"]
    for r in forward:
        assert r["error"] is None, r
        assert r["ms"] > 0 and r["tflops"] > 0 and r["peak_bytes"] > 0
        assert r["flops"] == bench.attention_flops(r["n"], r["d"], r["heads"], r["batch"], r["mask"], r["window"])
        # sanity check recorded by the script: every backend agrees with the reference (the first backend)
        assert r["max_abs_diff"] < 1e-5, r  # fp32
    assert {r["backend"] for r in forward} == {"reference", "sdpa", "reference_chunked"}
    backward = {r["backend"]: r for r in records if r["mode"] == "fwd+bwd" and r["n"] == 64 and r["mask"] == "causal"}
    assert backward["sdpa"]["error"] is None and backward["reference"]["error"] is None
    heads = backward["sdpa"]["heads"]
    assert backward["sdpa"]["flops"] == 3.5 * 4 * (64 * 65 // 2) * 16 * heads * 1  # 3.5 x causal forward
    assert "does not require grad" in backward["reference_chunked"]["error"]  # no gradients: an error string

    ratios = payload["ratios"]
    assert set(ratios) == {"sdpa_vs_reference", "chunked_vs_reference"}
    assert len(ratios["sdpa_vs_reference"]["values"]) == 3 * 2 * 2  # masks x n x modes
    assert ratios["sdpa_vs_reference"]["geomean"] > 0
    printed = capsys.readouterr().out
    assert "TFLOP/s" in printed and "wrote" in printed


def test_unsupported_backend_is_recorded_not_raised():
    records = bench.measure_config(["sdpa", "nope"], n=16, d=8, heads=1, batch=1, mask="full", window=4,
                                   dtype=torch.float32, device=torch.device("cpu"), backward=False, repeats=1)
    assert records[0]["error"] is None and records[0]["max_abs_diff"] == 0.0
    assert records[1]["ms"] is None and "unknown backend" in records[1]["error"]


def test_ratios_from_hand_records():
    def rec(backend, ms, mask="full", n=1024):
        return {"backend": backend, "mask": mask, "n": n, "d": 64, "mode": "fwd", "ms": ms}

    ratios = bench.compute_ratios([rec("ours", 1.0), rec("sdpa_flash", 2.0), rec("sdpa_cudnn", None),
                                   rec("ours_stats", 1.25), rec("ours", 4.0, "window", 65536),
                                   rec("flex", 6.0, "window", 65536), rec("flex", 9.0, "window", 2048)])
    assert ratios["ours_vs_flash"]["values"] == [{"mask": "full", "n": 1024, "d": 64, "mode": "fwd", "ratio": 2.0}]
    assert ratios["ours_vs_cudnn"]["values"] == [] and ratios["ours_vs_cudnn"]["geomean"] is None  # it failed
    assert ratios["stats_on_vs_off"]["geomean"] == pytest.approx(1.25)
    assert [v["ratio"] for v in ratios["window_vs_flex_65536"]["values"]] == [1.5]  # only N = 65536 counts
