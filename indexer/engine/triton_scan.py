"""The fused scan kernel in Triton (the ``gpu`` extra; imported only where Triton is).

One program scores a tile of ``BLOCK_N`` rows against ``BLOCK_Q`` queries for every layer of a
shape group (all layers with the same d1, d2): per layer and factor c it loads the tile's
R (BLOCK_N, d2) and L (BLOCK_N, d1) once, multiplies R by the queries' P_q^T side by side
(d2, BLOCK_Q * d1) with ``tl.dot`` (tensor cores, fp32 accumulation), multiplies by L and sums
over d1: s(q, n) = sum_layers sum_c l_nc^T P_q r_nc, the exact path of ``kernels.score_rows``.
The tile's scores are written once per query; top-k is a second pass (``RunningTopK``).

Rows come packed per shape group (``storage/packed.py``): L (G, N, c, d1) and R (G, N, c, d2)
in the storage dtype, so nothing is decoded before the kernel. Dimensions need not be powers
of two (masked), N need not be a multiple of the tile. ``triton.autotune`` picks the tile on
the card it runs on. Under ``TRITON_INTERPRET=1`` the same kernel runs on CPU tensors (the
tests compare it with the torch path there).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_CONFIGS = (
    [triton.Config({"BLOCK_N": 16}, num_warps=1)]
    if INTERPRET
    else [
        triton.Config({"BLOCK_N": n}, num_warps=w, num_stages=s)
        for n, w, s in ((32, 4, 2), (64, 4, 2), (64, 8, 3), (128, 8, 3))
    ]
)


@triton.autotune(configs=_CONFIGS, key=["G", "C", "D1", "D2", "BLOCK_Q"])
@triton.jit
def _exact_kernel(  # type: ignore[no-untyped-def]
    L, R, P, OUT,  # packed left (G,N,C,D1), right (G,N,C,D2); P (G,Q,D1,D2) f32; OUT (Q,N) f32
    N, Q,
    s_lg, s_ln, s_lc,  # strides of L (the last one is 1)
    s_rg, s_rn, s_rc,
    s_pg, s_pq, s_pi,  # strides of P (the last one is 1)
    s_oq,
    G: tl.constexpr, C: tl.constexpr,  # layers in the group, factors per row
    D1: tl.constexpr, D2: tl.constexpr,  # the layers' d1, d2
    D1P: tl.constexpr, D2P: tl.constexpr,  # padded to powers of two (>= 16)
    BLOCK_Q: tl.constexpr, PRECISION: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    # one axis, query blocks fastest: the programs of one row tile run side by side and read
    # it from L2 (a 2-D grid also caps the row axis at 65,535 tiles)
    n_qb = tl.cdiv(Q, BLOCK_Q)
    pid_n, pid_q = tl.program_id(0) // n_qb, tl.program_id(0) % n_qb
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    j = tl.arange(0, D2P)  # d2 index
    k = tl.arange(0, BLOCK_Q * D1P)  # (query in block, d1 index) side by side
    q = pid_q * BLOCK_Q + k // D1P
    i = k % D1P
    col_ok = (q < Q) & (i < D1)
    acc = tl.zeros((BLOCK_N, BLOCK_Q), dtype=tl.float32)
    for g in range(G):
        # P_q^T of the block's queries: (D2P, BLOCK_Q * D1P)
        pt = tl.load(
            P + g * s_pg + q[None, :] * s_pq + i[None, :] * s_pi + j[:, None],
            mask=col_ok[None, :] & (j[:, None] < D2),
            other=0.0,
        )
        for c in range(C):
            r = tl.load(
                R + g * s_rg + rows[:, None] * s_rn + c * s_rc + j[None, :],
                mask=row_ok[:, None] & (j[None, :] < D2),
                other=0.0,
            ).to(tl.float32)
            left = tl.load(  # L repeated once per query of the block (from cache)
                L + g * s_lg + rows[:, None] * s_ln + c * s_lc + i[None, :],
                mask=row_ok[:, None] & (i[None, :] < D1),
                other=0.0,
            ).to(tl.float32)
            t = tl.dot(r, pt, input_precision=PRECISION)  # (BLOCK_N, BLOCK_Q * D1P)
            acc += tl.sum(tl.reshape(t * left, (BLOCK_N, BLOCK_Q, D1P)), axis=2)
    qs = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    out = OUT + qs[None, :] * s_oq + rows[:, None]
    tl.store(out, acc, mask=row_ok[:, None] & (qs[None, :] < Q))


@triton.autotune(configs=_CONFIGS, key=["G", "C", "D1", "D2", "K", "BLOCK_Q"])
@triton.jit
def _lowrank_kernel(  # type: ignore[no-untyped-def]
    L, R, A, B, OUT,  # packs as above; A (G,D1,Q*K), B (G,D2,Q*K) f32: [A_1..A_Q], [B_1..B_Q]
    N, Q,
    s_lg, s_ln, s_lc,
    s_rg, s_rn, s_rc,
    s_ag, s_ai, s_bg, s_bj,  # strides of A and B (the last one is 1)
    s_oq,
    G: tl.constexpr, C: tl.constexpr, K: tl.constexpr,  # K: the queries' rank
    D1: tl.constexpr, D2: tl.constexpr, D1P: tl.constexpr, D2P: tl.constexpr,
    KP: tl.constexpr, BLOCK_Q: tl.constexpr, PRECISION: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """s(q, n) = sum_layers sum_c (A_q^T l_nc) . (B_q^T r_nc): two dots per tile, no d1 x d2."""
    # one axis, query blocks fastest: the programs of one row tile run side by side and read
    # it from L2 (a 2-D grid also caps the row axis at 65,535 tiles)
    n_qb = tl.cdiv(Q, BLOCK_Q)
    pid_n, pid_q = tl.program_id(0) // n_qb, tl.program_id(0) % n_qb
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    i, j = tl.arange(0, D1P), tl.arange(0, D2P)
    m = tl.arange(0, BLOCK_Q * KP)  # (query in block, rank index) side by side
    q, r = pid_q * BLOCK_Q + m // KP, m % KP
    col_ok = (q < Q) & (r < K)
    acc = tl.zeros((BLOCK_N, BLOCK_Q), dtype=tl.float32)
    for g in range(G):
        a = tl.load(
            A + g * s_ag + i[:, None] * s_ai + (q * K + r)[None, :],
            mask=(i[:, None] < D1) & col_ok[None, :],
            other=0.0,
        )
        b = tl.load(
            B + g * s_bg + j[:, None] * s_bj + (q * K + r)[None, :],
            mask=(j[:, None] < D2) & col_ok[None, :],
            other=0.0,
        )
        for c in range(C):
            left = tl.load(
                L + g * s_lg + rows[:, None] * s_ln + c * s_lc + i[None, :],
                mask=row_ok[:, None] & (i[None, :] < D1),
                other=0.0,
            ).to(tl.float32)
            right = tl.load(
                R + g * s_rg + rows[:, None] * s_rn + c * s_rc + j[None, :],
                mask=row_ok[:, None] & (j[None, :] < D2),
                other=0.0,
            ).to(tl.float32)
            la = tl.dot(left, a, input_precision=PRECISION)  # (BLOCK_N, BLOCK_Q * KP)
            rb = tl.dot(right, b, input_precision=PRECISION)
            acc += tl.sum(tl.reshape(la * rb, (BLOCK_N, BLOCK_Q, KP)), axis=2)
    qs = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    out = OUT + qs[None, :] * s_oq + rows[:, None]
    tl.store(out, acc, mask=row_ok[:, None] & (qs[None, :] < Q))


def _pow2(n: int) -> int:
    return max(16, int(triton.next_power_of_2(n)))


def block_queries(d1: int, q: int) -> int:
    """Queries per program: their P_q^T side by side stay about 256 columns wide."""
    return max(1, min(int(triton.next_power_of_2(q)), 256 // _pow2(d1)))


def score_group(
    left: torch.Tensor, right: torch.Tensor, p: torch.Tensor, out: torch.Tensor
) -> None:
    """``out`` (Q, N) float32 += exact scores of one shape group: ``left`` (G, N, C, d1) and
    ``right`` (G, N, C, d2) packed rows (any float dtype), ``p`` (G, Q, d1, d2) float32."""
    g, n, c, d1 = left.shape
    d2, nq = right.shape[3], p.shape[1]
    if n == 0 or nq == 0:
        return
    bq, p = block_queries(d1, nq), p.contiguous()
    part = torch.empty_like(out)
    precision = "ieee" if INTERPRET or p.device.type != "cuda" else "tf32"

    def grid(meta: dict[str, int]) -> tuple[int]:
        return (triton.cdiv(n, meta["BLOCK_N"]) * triton.cdiv(nq, bq),)

    _exact_kernel[grid](
        left, right, p, part, n, nq,
        left.stride(0), left.stride(1), left.stride(2),
        right.stride(0), right.stride(1), right.stride(2),
        p.stride(0), p.stride(1), p.stride(2), part.stride(0),
        G=g, C=c, D1=d1, D2=d2, D1P=_pow2(d1), D2P=_pow2(d2), BLOCK_Q=bq, PRECISION=precision,
    )  # fmt: skip
    out += part


def score_group_lowrank(
    left: torch.Tensor, right: torch.Tensor, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor
) -> None:
    """``out`` (Q, N) float32 += low-rank scores of one shape group: packs as in
    ``score_group``; ``a`` (G, d1, Q*K), ``b`` (G, d2, Q*K) float32 (``LowRankQueries``)."""
    g, n, c, d1 = left.shape
    d2, nq = right.shape[3], out.shape[0]
    k = a.shape[2] // nq
    if n == 0 or nq == 0 or k == 0:
        return
    kp = max(1, int(triton.next_power_of_2(k)))
    bq = max(16 // kp, min(int(triton.next_power_of_2(nq)), max(1, 64 // kp)))
    a, b, part = a.contiguous(), b.contiguous(), torch.empty_like(out)
    precision = "ieee" if INTERPRET or a.device.type != "cuda" else "tf32"

    def grid(meta: dict[str, int]) -> tuple[int]:
        return (triton.cdiv(n, meta["BLOCK_N"]) * triton.cdiv(nq, bq),)

    _lowrank_kernel[grid](
        left, right, a, b, part, n, nq,
        left.stride(0), left.stride(1), left.stride(2),
        right.stride(0), right.stride(1), right.stride(2),
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), part.stride(0),
        G=g, C=c, K=k, D1=d1, D2=d2, D1P=_pow2(d1), D2P=_pow2(d2), KP=kp, BLOCK_Q=bq,
        PRECISION=precision,
    )  # fmt: skip
    out += part
