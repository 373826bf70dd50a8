"""Fused attention in Triton: output, log-sum-exp and attention statistics in O(n) memory, with a backward pass.

Imported lazily by :func:`explorer.kernels.fused_attention` (``triton.jit`` chooses GPU or interpreter when this
module is imported). The derivations are in ``kernels/README.md``; in short, for one query row and the key tiles
seen so far, with running max ``m`` (base-2 scores ``s2 = scale·log2(e)·q·k``) the kernel keeps

* ``l = Σ 2^(s2 - m)``                    -- softmax denominator,
* ``acc = Σ 2^(s2 - m) v``                 -- unnormalised output,
* ``A = Σ 2^(s2 - m) (s2 - m)``            -- for the entropy ``H = ln2 · (log2 l - A / l)``,
* ``dist = Σ 2^(s2 - m) |i - j|``          -- for the mean distance ``dist / l``,
* ``cum[t] = Σ 2^(s2 - m) [|i - j| >= 2^t]`` -- cumulative bucket masses, histogram = differences,

and when a tile raises the max to ``m'`` every sum is multiplied by ``α = 2^(m - m')``; ``A`` also gains
``α (m - m') l`` because its summand is measured from the max. Nothing of size ``Nq × Nk`` is ever stored.

Reference for the structure: FlashAttention-2 (Dao 2023, https://arxiv.org/abs/2307.08691), Algorithms 1 and 2.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .reference import AttentionResult, AttentionStats, band_offsets

__all__ = ["triton_attention", "launch_config"]

LOG2E = 1.4426950408889634  # the kernels work in base 2 (exp2/log2); inside them the literals are ln 2 and log2 e


# ----------------------------------------------------------------------------------------------------------------
# Launch configurations: fixed (no autotune -- it needs a GPU driver). GPU tuning can replace this table, e.g.
# with @triton.autotune over a few entries when q.is_cuda.


def launch_config(head_dim: int, dtype: torch.dtype, on_gpu: bool, pass_: str) -> dict:
    """Tile sizes and launch parameters for one pass (``"fwd"`` or ``"bwd"``).

    On the interpreter every Triton op is a NumPy call, so fewer, larger tiles are faster; on a GPU the tiles are
    bounded by registers / shared memory: smaller for fp32 (twice the bytes) and for ``head_dim = 128``.
    """
    if not on_gpu:
        return dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=1)
    wide = dtype == torch.float32 or head_dim == 128
    if pass_ == "fwd":
        if wide:
            return dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2)
        return dict(BLOCK_M=128, BLOCK_N=64, num_warps=4, num_stages=3)
    if wide:
        return dict(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=2)
    return dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2)


# ----------------------------------------------------------------------------------------------------------------
# Kernels


@triton.jit
def _band_mask(
    offs_m, offs_n, N_K, PAD_row,  # query / key positions of the tile; padding row pointer of this batch
    LO_OFF, HI_OFF,  # allowed key - query offsets: LO_OFF <= j - i <= HI_OFF
    HAS_BAND: tl.constexpr, HAS_PAD: tl.constexpr,
):
    """[BLOCK_M, BLOCK_N] bool: key exists, lies in the causal/window band and is not padding."""
    valid = (offs_n < N_K)[None, :] & (offs_m >= 0)[:, None]
    if HAS_BAND:
        rel = offs_n[None, :] - offs_m[:, None]
        valid = valid & (rel >= LO_OFF) & (rel <= HI_OFF)
    if HAS_PAD:
        pad = tl.load(PAD_row + offs_n, mask=offs_n < N_K, other=1)
        valid = valid & (pad == 0)[None, :]
    return valid


@triton.jit
def _fwd_kernel(
    # tensors
    Q, K, V, PAD, O, LSE,  # q [B,H,Nq,D], k/v [B,H,Nk,D], pad uint8 [B,Nk], out like q, lse fp32 [B,H,Nq]
    ENT, DIST, CUM,  # stats: fp32 [B,H,Nq], [B,H,Nq], [B,H,Nq,NB_PAD]; contiguous
    # strides (batch, head, seq, channel)
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_pb,
    # sizes and mask
    H, N_Q, N_K,
    qk_scale,  # scale * log2(e): scores in base 2
    LO_OFF, HI_OFF,  # band of allowed offsets j - i (huge when there is no band)
    # meta-parameters
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_BAND: tl.constexpr, HAS_PAD: tl.constexpr,
    STATS: tl.constexpr, NB: tl.constexpr, NB_PAD: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    start_m = tl.program_id(0)
    off_hb = tl.program_id(1)
    off_b = (off_hb // H).to(tl.int64)
    off_h = (off_hb % H).to(tl.int64)
    row0 = start_m * BLOCK_M
    offs_m = row0 + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q_base = Q + off_b * stride_qb + off_h * stride_qh
    k_base = K + off_b * stride_kb + off_h * stride_kh
    v_base = V + off_b * stride_vb + off_h * stride_vh
    pad_row = PAD + off_b * stride_pb

    q = tl.load(q_base + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=(offs_m < N_Q)[:, None], other=0.0)  # [BLOCK_M, D]

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running max of base-2 scores
    l_i = tl.zeros([BLOCK_M], tl.float32)  # Σ 2^(s2 - m)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)  # Σ 2^(s2 - m) v
    a_i = tl.zeros([BLOCK_M], tl.float32)  # Σ 2^(s2 - m) (s2 - m)
    dist_i = tl.zeros([BLOCK_M], tl.float32)  # Σ 2^(s2 - m) |i - j|
    cum = tl.zeros([BLOCK_M, NB_PAD], tl.float32)  # cum[:, t] = Σ 2^(s2 - m) [|i - j| >= 2^t]
    cols = tl.arange(0, NB_PAD)

    # Key blocks that can meet the band of this query block; those outside are never visited.
    lo = tl.maximum(row0 + LO_OFF, 0)
    lo = (lo // BLOCK_N) * BLOCK_N
    hi = tl.minimum(row0 + BLOCK_M + HI_OFF, N_K)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        k = tl.load(k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                    mask=(offs_n < N_K)[:, None], other=0.0)  # [BLOCK_N, D]
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale  # [BLOCK_M, BLOCK_N], base 2
        valid = _band_mask(offs_m, offs_n, N_K, pad_row, LO_OFF, HI_OFF, HAS_BAND, HAS_PAD)
        s = tl.where(valid, s, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing allowed yet: keep sums at 0
        alpha = tl.exp2(m_i - m_safe)  # rescales everything accumulated so far
        p = tl.exp2(s - m_safe[:, None])  # [BLOCK_M, BLOCK_N]; 0 where masked
        p_sum = tl.sum(p, 1)
        v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                    mask=(offs_n < N_K)[:, None], other=0.0)  # [BLOCK_N, D]
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)

        if STATS:
            # A is measured from the max: moving the max from m to m' adds (m - m') to every summand.
            shift = tl.where(m_i == float("-inf"), 0.0, m_i - m_safe)
            a_i = alpha * (a_i + shift * l_i) + tl.sum(p * tl.where(valid, s - m_safe[:, None], 0.0), 1)
            abs_rel = tl.abs(offs_n[None, :] - offs_m[:, None])  # [BLOCK_M, BLOCK_N] distances |i - j|
            dist_i = alpha * dist_i + tl.sum(p * abs_rel.to(tl.float32), 1)
            # Distance range of the whole tile: thresholds below it take the full row sum, above it nothing,
            # so only thresholds inside (at most ~log2(BLOCK_M + BLOCK_N) of them) need a pass over the tile.
            rel_min = start_n - (row0 + BLOCK_M - 1)
            rel_max = start_n + BLOCK_N - 1 - row0
            d_min = tl.maximum(tl.maximum(rel_min, -rel_max), 0)
            d_max = tl.maximum(rel_max, -rel_min)
            cum = cum * alpha[:, None]
            for t in tl.static_range(NB - 1):
                if (1 << t) > d_min:
                    if (1 << t) <= d_max:
                        c_t = tl.sum(tl.where(abs_rel >= (1 << t), p, 0.0), 1)
                        cum += tl.where(cols[None, :] == t, c_t[:, None], 0.0)
                else:
                    cum += tl.where(cols[None, :] == t, p_sum[:, None], 0.0)

        l_i = l_i * alpha + p_sum
        m_i = m_new

    has_keys = l_i > 0  # False on fully masked rows: output 0, lse -inf, statistics 0
    l_safe = tl.where(has_keys, l_i, 1.0)
    out = acc / l_safe[:, None]
    row_ok = offs_m < N_Q
    o_base = O + off_b * stride_ob + off_h * stride_oh
    tl.store(o_base + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od, out.to(O.dtype.element_ty),
             mask=row_ok[:, None])
    row_ptr = off_hb.to(tl.int64) * N_Q + offs_m  # index into [B*H, Nq]
    lse = tl.where(has_keys, (m_i + tl.log2(l_safe)) * 0.6931471805599453, float("-inf"))  # x ln 2: natural log
    tl.store(LSE + row_ptr, lse, mask=row_ok)
    if STATS:
        ent = tl.where(has_keys, (tl.log2(l_safe) - a_i / l_safe) * 0.6931471805599453, 0.0)
        tl.store(ENT + row_ptr, ent, mask=row_ok)
        tl.store(DIST + row_ptr, dist_i / l_safe, mask=row_ok)
        tl.store(CUM + row_ptr[:, None] * NB_PAD + cols[None, :], cum / l_safe[:, None], mask=row_ok[:, None])


@triton.jit
def _bwd_dkdv_kernel(
    Q, K, V, PAD, DO, LSE, DELTA, DK, DV,  # lse, delta fp32 [B,H,Nq]; dk, dv like k (contiguous layout below)
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,  # shared by dk and dv
    stride_pb,
    H, N_Q, N_K, qk_scale, sm_scale, LO_OFF, HI_OFF,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_BAND: tl.constexpr, HAS_PAD: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """One key block: dV = Σ_i Pᵀ dO, dK = scale · Σ_i dSᵀ Q, over the query blocks that can see it."""
    start_n = tl.program_id(0)
    off_hb = tl.program_id(1)
    off_b = (off_hb // H).to(tl.int64)
    off_h = (off_hb % H).to(tl.int64)
    col0 = start_n * BLOCK_N
    offs_n = col0 + tl.arange(0, BLOCK_N)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    key_ok = (offs_n < N_K)[:, None]
    k = tl.load(K + off_b * stride_kb + off_h * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                mask=key_ok, other=0.0)  # [BLOCK_N, D]
    v = tl.load(V + off_b * stride_vb + off_h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                mask=key_ok, other=0.0)  # [BLOCK_N, D]
    q_base = Q + off_b * stride_qb + off_h * stride_qh
    do_base = DO + off_b * stride_dob + off_h * stride_doh
    pad_row = PAD + off_b * stride_pb
    row_base = off_hb.to(tl.int64) * N_Q

    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    # Queries i that can see a key j satisfy j - HI_OFF <= i <= j - LO_OFF.
    lo = tl.maximum(col0 - HI_OFF, 0)
    lo = (lo // BLOCK_M) * BLOCK_M
    hi = tl.minimum(col0 + BLOCK_N - LO_OFF, N_Q)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + offs_m0
        row_ok = offs_m < N_Q
        q = tl.load(q_base + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                    mask=row_ok[:, None], other=0.0)  # [BLOCK_M, D]
        do = tl.load(do_base + offs_m[:, None] * stride_dom + offs_d[None, :] * stride_dod,
                     mask=row_ok[:, None], other=0.0)  # [BLOCK_M, D]
        lse = tl.load(LSE + row_base + offs_m, mask=row_ok, other=float("inf"))
        lse2 = tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)  # fully masked row: P = 0
        delta = tl.load(DELTA + row_base + offs_m, mask=row_ok, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale  # [BLOCK_M, BLOCK_N], base 2
        valid = _band_mask(offs_m, offs_n, N_K, pad_row, LO_OFF, HI_OFF, HAS_BAND, HAS_PAD)
        p = tl.where(valid & row_ok[:, None], tl.exp2(s - lse2[:, None]), 0.0)  # recomputed softmax
        dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=DOT_PREC)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)  # [BLOCK_M, BLOCK_N]
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=DOT_PREC)

    dk = dk * sm_scale
    out_off = off_b * stride_dkb + off_h * stride_dkh + offs_n[:, None] * stride_dkn + offs_d[None, :] * stride_dkd
    tl.store(DK + out_off, dk.to(DK.dtype.element_ty), mask=key_ok)
    tl.store(DV + out_off, dv.to(DV.dtype.element_ty), mask=key_ok)


@triton.jit
def _bwd_dq_kernel(
    Q, K, V, PAD, DO, LSE, DELTA, DQ,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    stride_pb,
    H, N_Q, N_K, qk_scale, sm_scale, LO_OFF, HI_OFF,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_BAND: tl.constexpr, HAS_PAD: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """One query block: dQ = scale · Σ_j dS K with dS = P ∘ (dO Vᵀ - Δ), over the key blocks it can see."""
    start_m = tl.program_id(0)
    off_hb = tl.program_id(1)
    off_b = (off_hb // H).to(tl.int64)
    off_h = (off_hb % H).to(tl.int64)
    row0 = start_m * BLOCK_M
    offs_m = row0 + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < N_Q
    q = tl.load(Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=row_ok[:, None], other=0.0)  # [BLOCK_M, D]
    do = tl.load(DO + off_b * stride_dob + off_h * stride_doh + offs_m[:, None] * stride_dom
                 + offs_d[None, :] * stride_dod, mask=row_ok[:, None], other=0.0)  # [BLOCK_M, D]
    row_ptr = off_hb.to(tl.int64) * N_Q + offs_m
    lse = tl.load(LSE + row_ptr, mask=row_ok, other=float("inf"))
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)  # fully masked row: P = 0
    delta = tl.load(DELTA + row_ptr, mask=row_ok, other=0.0)
    k_base = K + off_b * stride_kb + off_h * stride_kh
    v_base = V + off_b * stride_vb + off_h * stride_vh
    pad_row = PAD + off_b * stride_pb

    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    lo = tl.maximum(row0 + LO_OFF, 0)
    lo = (lo // BLOCK_N) * BLOCK_N
    hi = tl.minimum(row0 + BLOCK_M + HI_OFF, N_K)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        key_ok = (offs_n < N_K)[:, None]
        k = tl.load(k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=key_ok, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=key_ok, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale  # [BLOCK_M, BLOCK_N], base 2
        valid = _band_mask(offs_m, offs_n, N_K, pad_row, LO_OFF, HI_OFF, HAS_BAND, HAS_PAD)
        p = tl.where(valid & row_ok[:, None], tl.exp2(s - lse2[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)

    dq = dq * sm_scale
    tl.store(DQ + off_b * stride_dqb + off_h * stride_dqh + offs_m[:, None] * stride_dqm + offs_d[None, :] * stride_dqd,
             dq.to(DQ.dtype.element_ty), mask=row_ok[:, None])


# ----------------------------------------------------------------------------------------------------------------
# Wrappers: (1) derive the band (reference.band_offsets: the mask's own offsets), (2) allocate, (3) launch


def _dot_precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"  # fp32 inputs: no TF32 rounding; ignored for fp16/bf16


def _pad_arg(q: Tensor, key_padding_mask: Tensor | None) -> tuple[Tensor, int]:
    if key_padding_mask is None:
        return q, 0  # never read (HAS_PAD=False)
    pad = key_padding_mask.to(torch.uint8).contiguous()  # [B, Nk]
    return pad, pad.stride(0)


def _forward(q, k, v, pad, causal, window, scale, return_stats, n_buckets):
    b, h, n_q, d = q.shape
    n_k = k.shape[2]
    lo_off, hi_off, has_band = band_offsets(n_q, n_k, causal, window)
    cfg = launch_config(d, q.dtype, q.is_cuda, "fwd")
    out = torch.empty_like(q)  # [B, H, Nq, D]
    lse = torch.empty((b, h, n_q), dtype=torch.float32, device=q.device)
    nb_pad = max(2, triton.next_power_of_2(n_buckets - 1))
    if return_stats:
        ent = torch.empty((b, h, n_q), dtype=torch.float32, device=q.device)
        dist = torch.empty_like(ent)
        cum = torch.empty((b, h, n_q, nb_pad), dtype=torch.float32, device=q.device)
    else:
        ent = dist = cum = lse  # never written (STATS=False)
    pad_t, stride_pb = _pad_arg(q, pad)
    grid = (triton.cdiv(n_q, cfg["BLOCK_M"]), b * h)
    _fwd_kernel[grid](
        q, k, v, pad_t, out, lse, ent, dist, cum,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), stride_pb,
        h, n_q, n_k, scale * LOG2E, lo_off, hi_off,
        HEAD_DIM=d, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
        HAS_BAND=has_band, HAS_PAD=pad is not None,
        STATS=return_stats, NB=n_buckets, NB_PAD=nb_pad, DOT_PREC=_dot_precision(q.dtype),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    if not return_stats:
        return out, lse, None
    # cum[..., t] = mass at distance >= 2^t (t < n_buckets - 1); bucket b = cum[b-1] - cum[b], cum[-1] = total
    cum = cum[..., : n_buckets - 1]
    total = (lse > float("-inf")).float()[..., None]  # 1, or 0 on fully masked rows
    edges = torch.cat([total, cum, torch.zeros_like(total)], dim=-1)  # [B, H, Nq, n_buckets + 1]
    histogram = (edges[..., :-1] - edges[..., 1:]).clamp_min_(0.0)
    return out, lse, AttentionStats(ent, dist, histogram)


def _backward(q, k, v, pad, out, lse, dout, causal, window, scale):
    b, h, n_q, d = q.shape
    n_k = k.shape[2]
    lo_off, hi_off, has_band = band_offsets(n_q, n_k, causal, window)
    cfg = launch_config(d, q.dtype, q.is_cuda, "bwd")
    delta = (dout.float() * out.float()).sum(-1).contiguous()  # D_i = rowsum(dO ∘ O), [B, H, Nq]
    dq = torch.empty_like(q)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(k.shape, dtype=v.dtype, device=v.device)  # same layout as dk (shared strides)
    pad_t, stride_pb = _pad_arg(q, pad)
    meta = dict(
        HEAD_DIM=d, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], HAS_BAND=has_band, HAS_PAD=pad is not None,
        DOT_PREC=_dot_precision(q.dtype), num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    sizes = (h, n_q, n_k, scale * LOG2E, scale, lo_off, hi_off)
    _bwd_dkdv_kernel[(triton.cdiv(n_k, cfg["BLOCK_N"]), b * h)](
        q, k, v, pad_t, dout, lse, delta, dk, dv,
        *q.stride(), *k.stride(), *v.stride(), *dout.stride(), *dk.stride(), stride_pb, *sizes, **meta,
    )
    _bwd_dq_kernel[(triton.cdiv(n_q, cfg["BLOCK_M"]), b * h)](
        q, k, v, pad_t, dout, lse, delta, dq,
        *q.stride(), *k.stride(), *v.stride(), *dout.stride(), *dq.stride(), stride_pb, *sizes, **meta,
    )
    return dq, dk, dv


class _FusedAttentionFunction(torch.autograd.Function):
    """Triton forward and backward; ``lse`` and the statistics are outputs without gradient."""

    @staticmethod
    def forward(ctx, q, k, v, pad, causal, window, scale, return_stats, n_buckets):
        out, lse, stats = _forward(q, k, v, pad, causal, window, scale, return_stats, n_buckets)
        ctx.save_for_backward(q, k, v, pad, out, lse)
        ctx.args = (causal, window, scale)
        extra = tuple(stats) if stats is not None else ()
        ctx.mark_non_differentiable(lse, *extra)
        return (out, lse) + extra

    @staticmethod
    def backward(ctx, dout, *unused):
        q, k, v, pad, out, lse = ctx.saved_tensors
        dq, dk, dv = _backward(q, k, v, pad, out, lse, dout, *ctx.args)
        return dq, dk, dv, None, None, None, None, None, None


def triton_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool,
    window: int | None,
    key_padding_mask: Tensor | None,
    scale: float,
    return_stats: bool,
    n_buckets: int,
) -> AttentionResult:
    """The Triton path of :func:`explorer.kernels.fused_attention` (arguments already checked there)."""
    res = _FusedAttentionFunction.apply(q, k, v, key_padding_mask, causal, window, scale, return_stats, n_buckets)
    stats = AttentionStats(*res[2:]) if return_stats else None
    return AttentionResult(res[0], res[1], stats)

