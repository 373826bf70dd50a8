"""MultiheadAttention backend="triton": parity with the math backend (outputs and parameter gradients), the
fully-masked-row policy, the per-call choice of backend="auto", and clear errors for what the fused path cannot do.

On CPU every parity case runs twice: under the Triton interpreter (``TRITON_INTERPRET=1``, the real kernel) and
without it (``fused_attention`` falls back to its pure-PyTorch reference). ``explorer.kernels.fused`` reads the
variable on every call, but ``triton.jit`` reads it when triton is imported -- and torch imports triton by itself
(``torch._dynamo`` does, e.g. under a ``TorchDispatchMode``). So, as tests/kernels/conftest.py does, the variable
is set before collection, on machines without CUDA (tests/conftest.py); the ``reference`` runs unset it per test.
"""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from explorer import HookPoint, record
from explorer.layers import MultiheadAttention, alibi_bias
from tests.layers.conftest import spy_on
from explorer.masks import block_sparse, causal, dilated_window, full, sliding_window

import explorer.kernels as kernels
import explorer.kernels.fused as fused_module

# fp32 on CPU: the kernel's online softmax sums in another order than the math path's softmax
ATOL, RTOL = 1e-4, 1e-4
GRAD_ATOL, GRAD_RTOL = 2e-4, 2e-4

# name -> sizes, mask, padding, cross-attention key width. Sizes stay <= 130 (the interpreter is slow) but cross the
# interpreter's 64-row tiles, so several query and key blocks, skipped blocks of a band and padded tails are hit.
CASES = {
    "self_no_mask": dict(n_query=37, n_key=37, mask=None),
    "self_full_mask": dict(n_query=70, n_key=70, mask=full()),
    "causal": dict(n_query=130, n_key=130, mask=causal()),
    "window_causal": dict(n_query=130, n_key=130, mask=sliding_window(20, causal=True)),
    "window_centred": dict(n_query=100, n_key=100, mask=sliding_window(7)),
    "window_even_centred": dict(n_query=33, n_key=33, mask=sliding_window(6)),
    "padding": dict(n_query=90, n_key=90, mask=None, padding=True),
    "padding_causal": dict(n_query=70, n_key=70, mask=causal(), padding=True),
    "padding_window": dict(n_query=30, n_key=30, mask=sliding_window(5), padding=True),
    "cross": dict(n_query=19, n_key=130, mask=None, kdim=24),
    "cross_padding": dict(n_query=70, n_key=41, mask=None, kdim=24, padding=True),
}


def padding_mask(batch: int, n_key: int) -> torch.Tensor:
    """BoolTensor [batch, key], True = padding: sample 0 keeps every key, sample 1 is all padding, sample 2 keeps
    its first 7 keys."""
    keep = torch.tensor([n_key, 0, 7])[:batch]  # (batch,)
    return torch.arange(n_key)[None, :] >= keep[:, None]


def _interpreted(triton) -> bool:
    """True when triton's own jit functions were decorated for the interpreter."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(triton.language.standard.zeros, InterpretedFunction)


@pytest.fixture(params=["interpreter", "reference"])
def kernel_mode(request, monkeypatch):
    """Run the fused path with the Triton interpreter or with the reference fallback; count which one ran."""
    if request.param == "interpreter":
        if torch.cuda.is_available():
            pytest.skip("the interpreter runs CPU tensors only; the kernel module may already be compiled for CUDA")
        # triton.jit (its own tl.zeros, tl.sum ... included) picks GPU or interpreter when triton is imported
        already_imported = "triton" in sys.modules
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        import triton

        if already_imported and not _interpreted(triton):
            pytest.fail("triton was imported before TRITON_INTERPRET=1 was set in this process; tests/conftest.py "
                        "sets it before collection -- something imported triton earlier")
    else:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    return request.param, spy_on(monkeypatch, fused_module, "attention_reference")


def pair(embed_dim, num_heads, kdim=None):
    """A triton-backend layer and a math-backend layer with the same weights."""
    layer = MultiheadAttention(embed_dim, num_heads, kdim=kdim, vdim=kdim, backend="triton")
    math_layer = MultiheadAttention(embed_dim, num_heads, kdim=kdim, vdim=kdim, backend="math")
    math_layer.load_state_dict(layer.state_dict())
    return layer, math_layer


@pytest.mark.parametrize("head_dim", [16, 32])
@pytest.mark.parametrize("case", list(CASES))
def test_triton_matches_math_outputs_and_gradients(case, head_dim, kernel_mode):
    mode, calls = kernel_mode
    spec = CASES[case]
    num_heads = 2
    embed_dim = num_heads * head_dim
    batch = 3 if spec.get("padding") else 2
    layer, math_layer = pair(embed_dim, num_heads, kdim=spec.get("kdim"))
    x = torch.randn(batch, spec["n_query"], embed_dim)
    memory = torch.randn(batch, spec["n_key"], spec.get("kdim") or embed_dim) if "kdim" in spec else None
    kwargs = {"mask": spec["mask"]}
    if spec.get("padding"):
        kwargs["key_padding_mask"] = padding_mask(batch, spec["n_key"])

    outs, grads = {}, {}
    for name, module in (("triton", layer), ("math", math_layer)):
        out = module(x, memory, **kwargs)  # (batch, query, embed)
        out.pow(2).sum().backward()  # a loss that weighs every output element differently
        outs[name] = out.detach()
        grads[name] = {p_name: p.grad for p_name, p in module.named_parameters()}

    assert len(calls) == (1 if mode == "reference" else 0)  # the interpreter ran the kernel itself
    assert not outs["triton"].isnan().any()
    torch.testing.assert_close(outs["triton"], outs["math"], atol=ATOL, rtol=RTOL)  # fp32
    for p_name, math_grad in grads["math"].items():
        torch.testing.assert_close(grads["triton"][p_name], math_grad, atol=GRAD_ATOL, rtol=GRAD_RTOL,
                                   msg=lambda m: f"{p_name}: {m}")  # fp32


@pytest.mark.parametrize("mask", [None, causal(), sliding_window(4, causal=True)])
def test_fully_padded_sample_gives_zero_z_and_bias_output(mask, kernel_mode):
    layer, math_layer = pair(32, 2)
    x = torch.randn(3, 12, 32)
    kpm = padding_mask(3, 12)  # sample 1 is all padding
    with record(layer, "hook_z") as trace:
        out = layer(x, mask=mask, key_padding_mask=kpm)
    z = trace["hook_z"]  # (batch, head, query, head_dim)
    assert torch.equal(z[1], torch.zeros_like(z[1]))  # exact zeros, no NaN
    torch.testing.assert_close(out[1], layer.out_proj.bias.detach().expand(12, 32), atol=1e-6, rtol=0)  # fp32
    torch.testing.assert_close(out, math_layer(x, mask=mask, key_padding_mask=kpm), atol=ATOL, rtol=RTOL)  # fp32


def test_layer_default_mask_is_used(kernel_mode):
    layer, math_layer = pair(32, 2)
    layer.mask = math_layer.mask = sliding_window(5, causal=True)
    x = torch.randn(2, 21, 32)
    torch.testing.assert_close(layer(x), math_layer(x), atol=ATOL, rtol=RTOL)  # fp32


# --- backend choice ----------------------------------------------------------------------------------------


@pytest.fixture
def fused_calls(monkeypatch):
    """Records every explorer.kernels.fused_attention call the layer makes (the layer imports it lazily)."""
    return spy_on(monkeypatch, kernels, "fused_attention")


def test_triton_backend_passes_mask_fields_and_scale(fused_calls):
    layer = MultiheadAttention(32, 2, backend="triton")
    kpm = torch.zeros(2, 9, dtype=torch.bool)
    layer(torch.randn(2, 9, 32), mask=sliding_window(4, causal=True), key_padding_mask=kpm)
    (call,) = fused_calls
    assert call["causal"] is True and call["window"] == 4 and call["key_padding_mask"] is kpm
    assert call["scale"] == layer.scale


@pytest.mark.parametrize("interpret", [False, True])
def test_auto_uses_sdpa_on_cpu(interpret, monkeypatch, fused_calls, sdpa_calls):
    if interpret:  # even with the interpreter on, auto never sends CPU tensors to the (slow) interpreted kernel
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    else:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    layer = MultiheadAttention(32, 2)
    layer(torch.randn(2, 8, 32), mask=causal())
    assert fused_calls == [] and len(sdpa_calls) == 1


def test_auto_on_cpu_does_not_import_kernels():
    code = ("import sys, torch\n"
            "from explorer.layers import MultiheadAttention\n"
            "from explorer.masks import causal\n"
            "MultiheadAttention(16, 2)(torch.randn(1, 5, 16), mask=causal())\n"
            "assert 'explorer.kernels' not in sys.modules, 'explorer.kernels imported'\n"
            "assert 'triton' not in sys.modules, 'triton imported'\n")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_uses_triton_on_cuda(fused_calls, sdpa_calls):
    pytest.importorskip("triton")
    layer = MultiheadAttention(64, 4, device="cuda")  # head_dim 16
    x = torch.randn(2, 100, 64, device="cuda")
    out = layer(x, mask=causal())
    assert len(fused_calls) == 1 and sdpa_calls == []
    layer(x, score_bias=alibi_bias(4, 100, 100, device="cuda"))  # unsupported by the kernel: sdpa
    layer(x, mask=block_sparse(8))
    assert len(fused_calls) == 1 and len(sdpa_calls) == 2
    with record(layer, "hook_pattern"):
        recorded = layer(x, mask=causal())  # recorded: math
    assert len(fused_calls) == 1
    torch.testing.assert_close(out, recorded, atol=5e-3, rtol=5e-3)  # fp32 inputs, tf32 dots in the kernel


# --- errors ------------------------------------------------------------------------------------------------


def test_triton_refuses_score_bias():
    layer = MultiheadAttention(32, 2, backend="triton")
    with pytest.raises(ValueError, match="score_bias.*backend='math' or backend='sdpa'"):
        layer(torch.randn(1, 6, 32), score_bias=alibi_bias(2, 6, 6))


@pytest.mark.parametrize("mask", [block_sparse(4), dilated_window(3, 2), causal() & sliding_window(3),
                                  torch.ones(6, 6, dtype=torch.bool).tril()],
                         ids=["block_sparse", "dilated", "and", "dense"])
def test_triton_refuses_unsupported_masks(mask):
    layer = MultiheadAttention(32, 2, backend="triton")
    with pytest.raises(ValueError, match="mask=.*not supported by backend='triton'.*backend='math'"):
        layer(torch.randn(1, 6, 32), mask=mask)


def test_triton_refuses_causal_cross_attention():
    layer = MultiheadAttention(32, 2, backend="triton")
    with pytest.raises(ValueError, match="as many queries as keys"):
        layer(torch.randn(1, 6, 32), torch.randn(1, 9, 32), mask=causal())


@pytest.mark.parametrize("names", ["0.hook_pattern", "0.hook_scores", "*"])
def test_triton_refuses_to_record_patterns(names):
    model = nn.Sequential(MultiheadAttention(32, 2, backend="triton"))
    with pytest.raises(RuntimeError, match="backend='triton'.*hook_scores or hook_pattern"):
        with record(model, names):
            model(torch.randn(1, 5, 32))
    assert all(not hp._hooks for hp in model.modules() if isinstance(hp, HookPoint))


def test_triton_records_other_hooks():
    layer = MultiheadAttention(32, 2, backend="triton")
    with record(layer, ["hook_q", "hook_z", "hook_out"]) as trace:
        layer(torch.randn(2, 5, 32))
    assert trace["hook_z"].shape == (2, 2, 5, 16)  # (batch, head, query, head_dim)
