"""The Triton kernels against the reference: output, lse, every statistic and dq/dk/dv.

On CPU the kernels run under the Triton interpreter (``TRITON_INTERPRET=1``, set in conftest.py), fp32 and fp16
(the interpreter's bf16 ``tl.dot`` is wrong); on a CUDA machine the same cases run compiled, plus bf16 and longer
sequences. The reference runs in float64 on the same (already rounded) inputs, so every difference is the kernel's.
"""

import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from explorer.kernels import attention_reference, fused_attention, triton_available
from explorer.kernels import fused as fused_module

from .conftest import CASES_RUN, MAX_ERRORS, MAX_RELATIVE

# Without CUDA these always run (tests/conftest.py switches the interpreter on); a wrong TRITON_INTERPRET fails them
needs_interpreter = pytest.mark.skipif(
    torch.cuda.is_available(), reason="runs the Triton interpreter on CPU (CUDA machines run the cuda-marked tests)"
)
needs_cuda = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
import triton  # noqa: E402,F401  -- installed by the test extra: a missing triton must fail, not skip

KINDS = [
    "none", "causal", "window_causal", "window_centred", "padding", "padding_causal", "padding_window",
    "cross", "cross_padding",
]  # fmt: skip
SIZES = [1, 7, 16, 33, 65, 100, 130, 257, 500]  # irregular: most are not a multiple of any block size
HEAD_DIMS = [16, 32, 64, 128]


@dataclass(frozen=True)
class Case:
    kind: str
    b: int
    h: int
    n_q: int
    n_k: int
    d: int
    window: int | None
    n_buckets: int
    scale: float | None
    transposed: bool  # q, k, v as [B, N, H, D].transpose(1, 2): strided, not contiguous
    seed: int

    def __str__(self):
        w = f"-w{self.window}" if self.window else ""
        t = "-T" if self.transposed else ""
        return f"{self.kind}{w}-{self.b}x{self.h}x{self.n_q}x{self.n_k}-d{self.d}-nb{self.n_buckets}{t}"


def random_cases(count: int, seed: int, sizes=SIZES, max_rows: int = 520) -> list[Case]:
    """``count`` cases cycling through the mask kinds; sizes and head dims drawn evenly from shuffled lists.

    ``max_rows`` bounds B·H·N so each case stays around a second under the interpreter.
    """
    rng = np.random.default_rng(seed)
    rounds = count // len(sizes) + 1
    ns = np.concatenate([rng.permutation(sizes) for _ in range(rounds)])  # every size equally often
    ds = np.concatenate([rng.permutation(HEAD_DIMS) for _ in range(count // len(HEAD_DIMS) + 1)])
    cases = []
    for i in range(count):
        kind = KINDS[(i + i // len(KINDS)) % len(KINDS)]  # shifted each round: kinds meet different sizes
        n_q = int(ns[i])
        n_k = n_q
        if kind.startswith("cross"):
            n_k = int(rng.choice([s for s in sizes if s != n_q]))
        b = 2 if "padding" in kind else int(rng.integers(1, 3))  # padding: sample 1 is fully padded
        h = int(rng.integers(1, 4))
        while b * h * max(n_q, n_k) > max_rows and h > 1:
            h -= 1
        window = None
        if kind.startswith("window") or kind == "padding_window":
            window = int(rng.choice([1, 2, int(rng.integers(3, 20)), int(rng.integers(3, 2 * n_q + 2))]))
        cases.append(
            Case(
                kind=kind, b=b, h=h, n_q=n_q, n_k=n_k, d=int(ds[i]), window=window,
                n_buckets=int(rng.integers(2, 33)), scale=float(rng.choice([0.5, 1.0])) if rng.random() < 0.3 else None,
                transposed=bool(rng.random() < 0.2), seed=int(rng.integers(2**31)),
            )
        )  # fmt: skip
    return cases


def make_inputs(case: Case, dtype: torch.dtype, device: str):
    gen = torch.Generator().manual_seed(case.seed)

    def tensor(n):
        if case.transposed:
            return torch.randn(case.b, n, case.h, case.d, generator=gen).to(device, dtype).transpose(1, 2)
        return torch.randn(case.b, case.h, n, case.d, generator=gen).to(device, dtype)

    q, k, v = tensor(case.n_q), tensor(case.n_k), tensor(case.n_k)
    pad = None
    if "padding" in case.kind:
        pad = torch.rand(case.b, case.n_k, generator=gen) < 0.3  # random keys, leading ones included
        pad[1] = True  # a fully padded sample: every row fully masked
        pad = pad.to(device)
    grad_out = torch.randn(case.b, case.h, case.n_q, case.d, generator=gen).to(device, dtype)
    return q, k, v, pad, grad_out


# Tolerances: max|kernel - reference| <= atol + rtol * max|reference|, per dtype and quantity.
TOLERANCES = {
    # fp32: the kernel accumulates in fp32 (the reference in fp64); differences are summation order (online
    # softmax, blocked matmuls) over <= 500 keys, a few fp32 ulps of the largest value. The exponent argument
    # s·log2(e) (|.| up to ~20) is rounded to fp32 before exp2: ~1e-6 relative error in each P, hence rtol 1e-5 on
    # the mean distance (values up to 500). Gradients: dS = P∘(dP - Δ) cancels when a row is nearly one-hot
    # (window 1), leaving fp32 rounding of |dP| ~ 10: atol 5e-5, plus the same 1e-5 relative as the outputs
    # (measured: 2.8e-6 of max|ref|).
    torch.float32: dict(out=(1e-5, 1e-5), lse=(1e-5, 1e-6), entropy=(2e-5, 1e-5), mean_distance=(1e-5, 1e-5),
                        histogram=(1e-5, 0), dq=(5e-5, 1e-5), dk=(5e-5, 1e-5), dv=(5e-5, 1e-5)),
    # fp16: the scores and statistics still come from exact fp16 products accumulated in fp32, so lse and the
    # statistics keep fp32 tolerances; P (and dS) are rounded to fp16 (2^-11 relative) before the matmuls with
    # V (and Q, K), and out/grads are stored in fp16: a few fp16 ulps of the largest value
    torch.float16: dict(out=(2e-3, 2e-3), lse=(1e-5, 1e-6), entropy=(2e-5, 1e-5), mean_distance=(1e-5, 1e-5),
                        histogram=(1e-5, 0), dq=(5e-3, 5e-3), dk=(5e-3, 5e-3), dv=(5e-3, 5e-3)),
    # bf16 (CUDA only): 8 mantissa bits, 2^-8 relative rounding of P, dS and the stored results
    torch.bfloat16: dict(out=(2e-2, 2e-2), lse=(1e-5, 1e-6), entropy=(2e-5, 1e-5), mean_distance=(1e-5, 1e-5),
                         histogram=(1e-5, 0), dq=(4e-2, 4e-2), dk=(4e-2, 4e-2), dv=(4e-2, 4e-2)),
}  # fmt: skip


def check_case(case: Case, dtype: torch.dtype, device: str) -> None:
    q, k, v, pad, grad_out = make_inputs(case, dtype, device)
    kw = dict(causal="causal" in case.kind, window=case.window, key_padding_mask=pad, scale=case.scale,
              n_buckets=case.n_buckets)  # fmt: skip
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    got = fused_attention(q, k, v, return_stats=True, backend="triton", **kw)
    got_grads = torch.autograd.grad(got.out, (q, k, v), grad_out)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = attention_reference(q64, k64, v64, return_stats=True, **kw)
    ref_grads = torch.autograd.grad(ref.out, (q64, k64, v64), grad_out.double())

    assert got.out.dtype == dtype and got.out.shape == q.shape
    assert got.lse.dtype == torch.float32 and not any(t.requires_grad for t in (got.lse, *got.stats))
    masked_rows = ref.lse == float("-inf")
    assert torch.equal(got.lse == float("-inf"), masked_rows), "fully masked rows must have lse = -inf"
    quantities = dict(
        out=(got.out, ref.out),
        lse=(got.lse[~masked_rows], ref.lse[~masked_rows]),
        entropy=(got.stats.entropy, ref.stats.entropy),
        mean_distance=(got.stats.mean_distance, ref.stats.mean_distance),
        histogram=(got.stats.histogram, ref.stats.histogram),
        dq=(got_grads[0], ref_grads[0]),
        dk=(got_grads[1], ref_grads[1]),
        dv=(got_grads[2], ref_grads[2]),
    )
    key = (device, str(dtype).removeprefix("torch."))
    CASES_RUN[key] += 1
    for name, (a, e) in quantities.items():
        assert torch.isfinite(a).all(), f"{name} has NaN/inf"
        if e.numel() == 0:
            continue
        err = (a.double() - e.double()).abs().max().item()
        scale = e.abs().max().item()
        MAX_ERRORS[key][name] = max(MAX_ERRORS[key][name], err)
        if scale > 1e-3:  # relative error of a quantity that is ~0 everywhere (entropy at window 1) means nothing
            MAX_RELATIVE[key][name] = max(MAX_RELATIVE[key][name], err / scale)
        atol, rtol = TOLERANCES[dtype][name]
        bound = atol + rtol * scale
        assert err <= bound, f"{name}: max error {err:.3g} > {bound:.3g} ({case}, {dtype})"
    if masked_rows.any():  # fully masked rows: output, statistics and the query gradient are exactly 0
        assert (got.out[masked_rows] == 0).all() and (got_grads[0][masked_rows] == 0).all()
        assert (got.stats.entropy[masked_rows] == 0).all() and (got.stats.histogram[masked_rows] == 0).all()


CPU_CASES = {torch.float32: random_cases(36, seed=1), torch.float16: random_cases(36, seed=2)}


@needs_interpreter
@pytest.mark.parametrize(
    "dtype,case",
    [pytest.param(dt, c, id=f"{str(dt)[6:]}-{c}") for dt, cases in CPU_CASES.items() for c in cases],
)
def test_interpreter_matches_reference(dtype, case):
    check_case(case, dtype, "cpu")


@needs_interpreter
def test_interpreter_without_stats_gives_the_same_output():
    q, k, v = (torch.randn(2, 2, 70, 32) for _ in range(3))
    a = fused_attention(q, k, v, causal=True, backend="triton")
    b = fused_attention(q, k, v, causal=True, backend="triton", return_stats=True)
    assert a.stats is None
    assert torch.equal(a.out, b.out) and torch.equal(a.lse, b.lse)  # STATS only adds accumulators


@needs_interpreter
def test_auto_picks_the_kernel_when_it_can(monkeypatch):
    assert triton_available()
    calls = []
    real = fused_module.attention_reference
    monkeypatch.setattr(fused_module, "attention_reference", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    q = torch.randn(1, 1, 9, 16)
    fused_attention(q, q, q)  # D=16, fp32 on CPU under the interpreter: the kernel
    assert calls == []
    fused_attention(q[..., :12], q[..., :12], q[..., :12])  # D=12: only the reference can
    fused_attention(q.double(), q.double(), q.double())  # float64: only the reference can
    assert len(calls) == 2


@needs_interpreter
def test_triton_backend_errors(monkeypatch):
    q = torch.randn(1, 1, 9, 24)
    with pytest.raises(ValueError, match="D in"):
        fused_attention(q, q, q, backend="triton")
    q = torch.randn(1, 1, 9, 16, dtype=torch.float64)
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        fused_attention(q, q, q, backend="triton")
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not triton_available()
    q = torch.randn(1, 1, 9, 16)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        fused_attention(q, q, q, backend="triton")
    assert fused_attention(q, q, q).out.shape == q.shape  # auto: the reference


@needs_interpreter
def test_triton_imported_before_the_interpreter_was_asked_for(monkeypatch):
    class CompiledModeLanguage:  # what triton.language looks like when imported without TRITON_INTERPRET
        zeros = object()

    monkeypatch.setitem(sys.modules, "triton.language", CompiledModeLanguage)
    assert not triton_available()
    q = torch.randn(1, 1, 9, 16)
    with pytest.raises(RuntimeError, match="set it before the first import of triton"):
        fused_attention(q, q, q, backend="triton")
    assert fused_attention(q, q, q).out.shape == q.shape  # auto: the reference


# ----------------------------------------------------------------------------------------------------------------
# CUDA: compiled kernels, bf16 and longer sequences

CUDA_CASES = {
    torch.float32: random_cases(36, seed=1),
    torch.float16: random_cases(36, seed=2) + random_cases(18, seed=3, sizes=[1000, 1537, 2048, 4099], max_rows=8200),
    torch.bfloat16: random_cases(27, seed=4) + random_cases(18, seed=5, sizes=[1000, 1537, 2048, 4099], max_rows=8200),
}


@pytest.mark.parametrize(
    "dtype,case",
    [pytest.param(dt, c, id=f"{str(dt)[6:]}-{c}", marks=needs_cuda) for dt, cases in CUDA_CASES.items() for c in cases],
)
def test_cuda_matches_reference(dtype, case):
    check_case(case, dtype, "cuda")


# ----------------------------------------------------------------------------------------------------------------
# Without a GPU: the kernels still compile for one (the interpreter does not check GPU lowering)

COMPILE_FOR_SM90 = """
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from explorer.kernels import attention_triton as at

def compile_(fn, dtype, head_dim, pass_, pointers, stats):
    cfg = at.launch_config(head_dim, dtype, True, pass_)
    ty = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    consts = dict(HEAD_DIM=head_dim, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], HAS_BAND=True, HAS_PAD=True,
                  DOT_PREC=at._dot_precision(dtype))
    if stats:
        consts.update(STATS=True, NB=16, NB_PAD=16)
    signature = {}
    for name in fn.arg_names:
        if name in consts:
            signature[name] = "constexpr"
        elif name in pointers:
            signature[name] = "*" + (ty if pointers[name] is None else pointers[name])
        else:
            signature[name] = "fp32" if name in ("qk_scale", "sm_scale") else "i32"
    src = ASTSource(fn=fn, signature=signature, constexprs=consts)
    triton.compile(src, target=GPUTarget("cuda", 90, 32),
                   options=dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"]))

stats_ptrs = dict(Q=None, K=None, V=None, O=None, PAD="u8", LSE="fp32", ENT="fp32", DIST="fp32", CUM="fp32")
grad_ptrs = dict(Q=None, K=None, V=None, DO=None, PAD="u8", LSE="fp32", DELTA="fp32")
compile_(at._fwd_kernel, torch.float16, 64, "fwd", stats_ptrs, True)
compile_(at._fwd_kernel, torch.float32, 128, "fwd", stats_ptrs, True)
compile_(at._bwd_dkdv_kernel, torch.bfloat16, 64, "bwd", dict(grad_ptrs, DK=None, DV=None), False)
compile_(at._bwd_dq_kernel, torch.float16, 128, "bwd", dict(grad_ptrs, DQ=None), False)
print("compiled")
"""


def test_kernels_compile_for_a_gpu_target():
    """Lower the kernels to a Hopper cubin (triton ships ptxas): catches what only the GPU compiler rejects."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    result = subprocess.run([sys.executable, "-c", COMPILE_FOR_SM90], capture_output=True, text=True, env=env,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0 and "compiled" in result.stdout, result.stderr[-3000:]
