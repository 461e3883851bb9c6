r"""Batched SVD of real matrices with at most three rows and columns, in elementwise torch ops.

3D vision (rotation fitting, point-cloud registration), graphics and physics (deformation
gradients) decompose millions of 2×2 and 3×3 matrices at a time, where a per-matrix LAPACK call
costs far more than the arithmetic. Here every matrix entry of the whole batch is one tensor of
shape (N,) ("struct of arrays"), and each step of the algorithm is a handful of elementwise torch
ops over all N matrices at once: no compiled extension, the same code on CPU and CUDA.

Algorithm (A of shape m×n, transposed first when m < n so that m ≥ n = k):

1. Scale A by a power of two so that max |a_ij| ∈ [1/2, 1) (exact; it keeps AᵀA far from overflow
   and underflow for inputs from subnormal to huge and is undone exactly on S).
2. One-sided (Hestenes) Jacobi: rotate pairs of columns of B = A V, V ← V J, with the exact
   rotation that makes them orthogonal, cyclically over the pairs (0, 1), (0, 2), (1, 2). The
   rotation is computed from the column inner products of the current B, so the columns end up
   orthogonal *relative to their own norms*, also for tiny ones: this is the accurate way to use
   the Gram matrix BᵀB (Demmel & Veselić 1992), where Jacobi on AᵀA itself leaves errors of
   eps·σ_max²/σ_i in the small singular directions.
3. Sort the columns of B (and V) by norm, descending.
4. QR of B by Givens rotations, B = Q R. Q is a product of exact rotations, hence orthogonal to
   rounding, and completes the basis where B has zero columns (rank-deficient A). R is diagonal up
   to the rounding of step 2, so U = Q[:, :k], S = diag(R) (sign moved into U).

A sweep of one-sided Jacobi is a sweep of cyclic Jacobi on BᵀB, which converges quadratically for
a 3×3 symmetric matrix, also with multiple or clustered eigenvalues (Henrici 1958; Hari 1991):
once the columns are nearly orthogonal each sweep roughly squares the largest relative column
inner product |b_pᵀ b_q| / (|b_p| |b_q|). Measured over random, graded, rank-deficient,
triangular, nearly diagonal and (nearly) tied inputs: two sweeps can leave it near 1, three
bring it below ~1e-3, four to rounding level in float32 and in float64; float64 runs a fifth as a
margin. The tests check these counts. 2×2 and tall 3×2 blocks have a single
pair, which one rotation makes orthogonal; a second rotation removes its rounding.

The backward (and forward-mode) rule is the one of the general `torchsvd.svd` (partial fractions
of 1/(σ_j² − σ_i²), the tie part masked at ``tie_rtol·σ_max``, zeros at ``max(m, n)·eps·σ_max``),
written with the same layout: each k×k or m×k product is one broadcast multiply and one sum over
a dimension of size at most 3.

References
----------
.. [1] A. McAdams, A. Selle, R. Tamstorf, J. Teran, E. Sifakis, "Computing the singular value
       decomposition of 3x3 matrices with minimal branching and elementary floating point
       operations", University of Wisconsin–Madison technical report TR1690, 2011.
.. [2] J. Demmel, K. Veselić, "Jacobi's method is more accurate than QR", SIAM J. Matrix Anal.
       Appl. 13(4), 1992.
.. [3] P. Henrici, "On the speed of convergence of cyclic and quasicyclic Jacobi methods for
       computing eigenvalues of Hermitian matrices", J. SIAM 6(2), 1958.
.. [4] V. Hari, "On sharp quadratic convergence bounds for the serial Jacobi methods",
       Numer. Math. 60, 1991.
.. [5] J. Townsend, "Differentiating the singular value decomposition", 2016.
.. [6] A. W. Paeth, "A fast algorithm for general raster rotation", Graphics Interface 1986
       (a rotation as three shears).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from torchsvd import _svd
from torchsvd._validate import eps, is_transformed, rank_rtol

__all__ = [
    "MIN_BATCH",
    "SWEEPS",
    "decompose",
    "det",
    "eligible",
    "inner",
    "rotation_map",
    "sandwich",
    "square",
    "svd",
]

#: Jacobi sweeps over the three column pairs of a 3-column block, per dtype (module docstring).
SWEEPS = {torch.float32: 4, torch.float64: 5}

#: Smallest number of matrices for which `torchsvd.svd` takes this path: every op here costs a
#: fixed dispatch time, so below this LAPACK's per-matrix loop is faster.
MIN_BATCH = 512

_PAIRS = ((0, 1), (0, 2), (1, 2))
_SORT = {1: (), 2: ((0, 1),), 3: ((0, 1), (1, 2), (0, 1))}


def eligible(A: torch.Tensor, full_matrices: bool) -> bool:
    """Whether ``svd`` below handles ``A``: real float32/float64, m, n ≤ 3, reduced, big batch."""
    m, n = A.shape[-2], A.shape[-1]
    return (
        A.dtype in SWEEPS
        and m <= 3
        and n <= 3
        and (not full_matrices or m == n)
        and A.numel() >= MIN_BATCH * m * n
    )


def _jacobi(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-3 for A of shape (N, m, n), m ≥ n: X (n, m + n, N) with X[j] = [b_j; v_j], scale."""
    N, m, n = A.shape
    amax = A.abs().amax((-2, -1))
    # 2^-e with max |a_ij| = f·2^e, f ∈ [1/2, 1); e is bounded below so that 2^-e stays finite
    # when every entry is subnormal (they are then scaled to at least 2^-51, far from underflow).
    max_exponent = math.frexp(torch.finfo(A.dtype).max)[1]
    exponent = torch.frexp(amax).exponent.clamp_min_(1 - max_exponent)
    scale = torch.ldexp(torch.ones_like(amax), -exponent)
    eye = torch.eye(n, dtype=A.dtype, device=A.device).unsqueeze(-1).expand(n, n, N)
    # Out of place, so that under torch.func.vmap X is batched like A; a copy, never A itself
    # (which `contiguous` would return for 1×1 blocks, to be scaled in place).
    columns = A.permute(2, 1, 0).clone(memory_format=torch.contiguous_format).mul_(scale)
    X = torch.cat([columns, eye], dim=1)
    tiny = torch.finfo(A.dtype).tiny
    sweeps = SWEEPS[A.dtype] if n == 3 else 2
    pairs = _PAIRS[: n * (n - 1) // 2]
    for _ in range(sweeps if pairs else 0):
        for p, q in pairs:
            P, Q = X[p], X[q]
            # d = β − α = |b_q|² − |b_p|² and 2γ = 2 b_pᵀ b_q as chains of multiply-adds over
            # the m rows (a reduction kernel over a dimension of size m is slower).
            d = P[0] * P[0]
            d.sub_(Q[0] * Q[0]).neg_()
            gamma2 = P[0] * Q[0]
            for r in range(1, m):
                d.addcmul_(Q[r], Q[r]).addcmul_(P[r], P[r], value=-1)
                gamma2.addcmul_(P[r], Q[r])
            gamma2.mul_(2)
            # tan θ of the rotation that diagonalises [[α, γ], [γ, β]], the smaller of the two
            # (|t| ≤ 1): t = 2γ / (d + sign(d)·√(d² + 4γ²)), d = β − α (Golub & Van Loan §8.5).
            den = torch.hypot(d, gamma2).add_(d.abs()).clamp_min_(tiny)
            t = gamma2.div_(torch.copysign(den, d))
            c = t.square().add_(1).rsqrt_()
            s = t.mul_(c)
            # [P, Q] ← [c P − s Q, s P + c Q] as three shears in place (Paeth 1986): P += a Q,
            # Q += s P, P += a Q with a = −tan(θ/2) = −s/(1 + c), |a| ≤ tan(π/8) for |θ| ≤ π/4.
            # Three passes over the columns instead of five, and no temporary.
            a = s.neg().div_(c.add(1))
            P.addcmul_(Q, a)
            Q.addcmul_(P, s)
            P.addcmul_(Q, a)
    norms = torch.linalg.vecdot(X[:, :m], X[:, :m], dim=1)
    # A sorting network of compare-and-swaps: cheaper than argsort and a gather of X. The swap
    # is a lerp with weight 0 or 1, which returns one of its ends exactly (x + 0·(y − x) and
    # y − (y − x)·0; the entries are bounded, so y − x is finite) and runs many times faster
    # than `torch.where` with a broadcast boolean mask on the CPU.
    for p, q in _SORT[n]:
        swap = (norms[q] > norms[p]).to(X.dtype)
        P, Q = X[p], X[q]
        larger = torch.lerp(P, Q, swap)
        Q.copy_(torch.lerp(Q, P, swap))
        P.copy_(larger)
        larger = torch.maximum(norms[p], norms[q])
        norms[q] = torch.minimum(norms[p], norms[q])
        norms[p] = larger
    return X, scale


def _givens_qr(X: torch.Tensor, m: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 4: U columns (n, m, N) and S (n, N) from the sorted X of `_jacobi`."""
    N = X.shape[-1]
    # Y[i] = [row i of B; row i of W], W the accumulated rotations: R = W B, Q = Wᵀ.
    eye = torch.eye(m, dtype=X.dtype, device=X.device).unsqueeze(-1).expand(m, m, N)
    Y = torch.cat([X[:, :m].transpose(0, 1), eye], dim=1)
    tiny = torch.finfo(X.dtype).tiny
    for j in range(n):
        for i in range(j + 1, m):
            x, y = Y[j, j], Y[i, j]
            r = torch.hypot(x, y)
            # Below the normal range x/r and y/r lose the identity c² + s² = 1: keep the rows
            # (c, s) ≈ (1, 0) there, which leaves an entry below `tiny` in R.
            zero = (r < tiny).to(X.dtype)
            r.add_(zero)  # r + 1 = 1 there
            c = (x / r).add_(zero)
            s = y / r
            P, Q = Y[j, j:], Y[i, j:]
            new_p = P * c
            new_p.addcmul_(Q, s)
            Q.mul_(c).addcmul_(P, s, value=-1)
            P.copy_(new_p)
    S = Y[:n, :n].diagonal(dim1=0, dim2=1).T  # (n, N)
    Uc = Y[:n, n:]  # row j of W is column j of U
    if n == m:
        # Every diagonal entry of R but the last is a rotation's hypot, hence ≥ 0.
        sign = torch.copysign(torch.ones((), dtype=X.dtype, device=X.device), S[-1])
        Uc[-1].mul_(sign)
    # The other entries can only be negative below `tiny` (the rows kept above), negligible
    # against σ_max ≥ max |a_ij| of the scaled A (1/2 unless every entry is subnormal).
    S = S.abs()
    # The columns of B are orthogonal to rounding, so R_jj is |b_j| to rounding, in the sorted
    # order: only rounding at a tie can break it, by ulps of σ_max, and the minimum restores it.
    smallest = [S[0]]
    for j in range(1, n):
        smallest.append(torch.minimum(S[j], smallest[-1]))
    return Uc, torch.stack(smallest)


def _decompose_tall(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U (k, m, N) columns, S (k, N), V (k, n, N) columns for A (N, m, n) with m ≥ n = k."""
    _, m, n = A.shape
    X, scale = _jacobi(A)
    Uc, S = _givens_qr(X, m, n)
    return Uc, S / scale, X[:, m:]


def decompose(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torch.linalg.svd(A, full_matrices=False)`` for real ``(..., m, n)``, m, n ≤ 3, no autograd.

    Same contract: ``S`` descending and ≥ 0, ``U`` and ``Vh`` with orthonormal columns and rows,
    ``A = U diag(S) Vh`` to rounding (relative to σ_max).

    Examples
    --------
    >>> import torch
    >>> from torchsvd._small import decompose
    >>> A = torch.tensor([[3.0, 0.0], [4.0, 5.0]], dtype=torch.float64)
    >>> U, S, Vh = decompose(A)
    >>> S
    tensor([6.7082, 2.2361], dtype=torch.float64)
    >>> torch.allclose(U @ torch.diag(S) @ Vh, A)
    True
    """
    m, n = A.shape[-2], A.shape[-1]
    flat = A.reshape(-1, m, n)
    if m >= n:
        Uc, S, Vc = _decompose_tall(flat)
    else:
        Vc, S, Uc = _decompose_tall(flat.mT)
    return _assemble(Uc, S, Vc, A.shape[:-2])


def _assemble(
    Uc: torch.Tensor, S: torch.Tensor, Vc: torch.Tensor, batch: torch.Size
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Contiguous U, S, Vh of shapes (*batch, m, k), (*batch, k), (*batch, k, n) from stacks.

    Contiguous, because batched matrix products of the results (U @ Vh, ...) are several
    times slower on the stacks' layout (batch index fastest) than the copy; and built the same
    way for the outputs and their tangents, as forward-mode AD requires.
    """
    (k, m, _), n = Uc.shape, Vc.shape[1]
    U = Uc.permute(2, 1, 0).reshape(*batch, m, k).contiguous()
    Vh = Vc.permute(2, 0, 1).reshape(*batch, k, n).contiguous()
    return U, S.T.reshape(*batch, k).contiguous(), Vh


def _keep_reciprocal(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """1/x where ``keep`` (a 0/1 float mask), else 0, for x ≥ 0 where not kept.

    keep/(x + 1 − keep): the kept entries are divided by x itself, the others by x + 1 ≥ 1, so
    that neither this value nor its derivative (−keep/(x + 1 − keep)²) is ever inf or NaN. The
    same values as `torchsvd._svd.gauge_reciprocals`' masked reciprocals, without
    `torch.where`, whose boolean-mask kernel is many times slower than arithmetic on the CPU.
    """
    return keep / (x + (1 - keep))


def _reciprocals(
    S: torch.Tensor, tie_rtol: float, zero_rtol: float, broadening: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """D (k, k, N) = 1/(σ_j − σ_i), E = 1/(σ_j + σ_i), 1/σ (k, N), masked.

    As `torchsvd._svd.gauge_reciprocals`, for S of shape (k, N): D is zero at ties
    (|σ_j − σ_i| ≤ tie_rtol·σ_max), E and 1/σ at zeros (≤ zero_rtol·σ_max).
    """
    smax = S[:1]
    diff = S.unsqueeze(0) - S.unsqueeze(1)  # [i, j] = σ_j − σ_i
    gap = diff.abs()
    separated = (gap > tie_rtol * smax).to(S.dtype)
    if broadening > 0:
        # 1/(d + ε²/d) with d = ±gap, and d = ±(gap + 1) at ties (finite, then masked).
        d = torch.copysign(gap + (1 - separated), diff)
        D = separated / (d + (broadening * smax) ** 2 / d)
    else:
        D = torch.copysign(_keep_reciprocal(gap, separated), diff)
    zero_tol = zero_rtol * smax
    total = S.unsqueeze(0) + S.unsqueeze(1)
    E = _keep_reciprocal(total, (total > zero_tol).to(S.dtype))
    inv_s = _keep_reciprocal(S, (S > zero_tol).to(S.dtype))
    return D, E, inv_s


def _dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ_r x[r] y[r] for stacks (r, N): one multiply-add per row, no reduction kernel."""
    out = x[0] * y[0]
    for r in range(1, x.shape[0]):
        out = out.addcmul(x[r], y[r])
    return out


def _pair_coefficients(
    S: torch.Tensor,
    i: int,
    j: int,
    plus: torch.Tensor,
    minus: torch.Tensor,
    level: torch.Tensor,
    tie_rtol: float,
    zero_rtol: float,
    broadening: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """D_ij = 1/(σ_j − σ_i) and E_ij = 1/(σ_i + σ_j), masked, for i < j, and the kept mask.

    The pair's entries of `_reciprocals` as (N,) vectors, with the general backward's two
    refinements (`torchsvd._svd.resolved_near_ties`, `torchsvd._svd.quiet_small_sums`): inside
    the tie tolerance a resolved gap keeps its term when the numerator ``plus`` = (J + K)_ij is
    above its rounding ``level``; a small σ_i + σ_j drops its term when ``minus`` = (J − K)_ij
    is at that level. σ_i ≥ σ_j (S is sorted), so σ_j − σ_i = −gap.
    """
    smax = S[0]
    gap = S[i] - S[j]
    resolved = (gap > _svd.RESOLVED_GAP * zero_rtol * smax) & (plus.abs() > level)
    separated = ((gap > tie_rtol * smax) | resolved).to(S.dtype)
    if broadening > 0:
        d = -(gap + (1 - separated))
        D = separated / (d + (broadening * smax) ** 2 / d)
    else:
        D = -_keep_reciprocal(gap, separated)
    total = S[i] + S[j]
    quiet = (total <= tie_rtol * smax) & (minus.abs() <= level)
    E = _keep_reciprocal(total, ((total > zero_rtol * smax) & ~quiet).to(S.dtype))
    return D, E, separated


def _warn(
    Uc: torch.Tensor,
    S: torch.Tensor,
    gUc: torch.Tensor | None,
    gVc: torch.Tensor | None,
    gS: torch.Tensor | None,
    M: list[list[torch.Tensor]] | None,
    Kh: list[list[torch.Tensor]] | None,
    kept: dict[tuple[int, int], torch.Tensor],
    level: torch.Tensor,
    zero_rtol: float,
    tall: bool,
) -> None:
    """The general backward's warnings, on the matrices of the batch that may need one.

    `torchsvd._svd._warn_gauge` checks first whether any matrix has neighbouring σ tied or its
    smallest σ at zero; that test is done here on the (N,) vectors already at hand, and only
    the matrices it selects (none in the common case) are gathered into its (..., k, k)
    layout. ``kept``: the (N,) mask of each pair i < j whose term was kept (separated or a
    resolved near tie); ``level`` (N,) the numerators' rounding level.
    """
    needs = S[-1] <= zero_rtol * S[0]
    for i in range(S.shape[0] - 1):
        needs = needs | (kept[i, i + 1] == 0)
    if not bool(needs.any()):
        return
    sel = needs.nonzero().squeeze(-1)

    def pick(X: torch.Tensor | None) -> torch.Tensor | None:
        # (..., N) -> (n_sel, ...): the batch first, as the general check expects
        return None if X is None else X[..., sel].movedim(-1, 0)

    def matrix(rows: list[list[torch.Tensor]] | None) -> torch.Tensor | None:
        # entry by entry, then stacked: only the selected matrices are copied
        if rows is None:
            return None
        return torch.stack([torch.stack([e[sel] for e in r], -1) for r in rows], -2)

    S_b = pick(S)
    assert S_b is not None
    k = S.shape[0]
    separated = torch.zeros((*S_b.shape, k), dtype=torch.bool, device=S.device)
    for (i, j), mask in kept.items():
        separated[:, i, j] = separated[:, j, i] = mask[sel] != 0
    zero = S_b <= zero_rtol * S_b[..., :1]
    G, H = matrix(M), matrix(Kh)
    U_b, gU_b, gV_b = (None if X is None else X[..., sel].permute(2, 1, 0) for X in (Uc, gUc, gVc))
    out_u = None
    if tall and gU_b is not None and U_b is not None and G is not None:
        out_u = gU_b - U_b @ G
    _svd._warn_gauge(
        S_b, separated, zero, G, H, pick(gS), out_u, None, (gU_b, gV_b), level=level[sel]
    )


def _backward_tall(
    Uc: torch.Tensor,
    S: torch.Tensor,
    Vc: torch.Tensor,
    gUc: torch.Tensor | None,
    gS: torch.Tensor | None,
    gVc: torch.Tensor | None,
    tie_rtol: float,
    zero_rtol: float,
    broadening: float,
) -> torch.Tensor:
    """Ā as (m, n, N) for m ≥ n = k, from column stacks (see `torchsvd._svd.svd_backward`).

    Ā = [U C + Ū Σ⁻¹] Vᵀ with C = ½ (J + K)∘D + ½ (J − K)∘E + diag(S̄) − (UᵀŪ) Σ⁻¹, where
    J = UᵀŪ − ŪᵀU, K = VᵀV̄ − V̄ᵀV (the last term and Ū Σ⁻¹ only for m > k). Entry by entry:
    every k×k quantity is a list of (N,) vectors, and J, K, D are antisymmetric and E
    symmetric, so C_ij = a + b and C_ji = a − b with a = ½ (J + K)_ij D_ij and
    b = ½ (J − K)_ij E_ij, for the k(k − 1)/2 pairs i < j only.
    """
    k, m, N = Uc.shape
    M = [[_dot(Uc[i], gUc[j]) for j in range(k)] for i in range(k)] if gUc is not None else None
    Kh = [[_dot(Vc[i], gVc[j]) for j in range(k)] for i in range(k)] if gVc is not None else None
    zero = torch.zeros((N,), dtype=S.dtype, device=S.device)
    C = [[zero] * k for _ in range(k)]
    if gS is not None:
        for i in range(k):
            C[i][i] = gS[i]
    kept: dict[tuple[int, int], torch.Tensor] = {}
    # With S̄ alone, C = diag(S̄): no pair terms, and nothing to warn about.
    if M is not None or Kh is not None:
        with torch.no_grad():
            # The numerators' rounding level (`torchsvd._svd.numerator_noise`): the largest
            # column norms of Ū and V̄, by multiply-adds on the (N,) rows (a reduction over
            # the middle dimension of this layout is several times slower).
            size = zero
            for g in (gUc, gVc):
                if g is not None:
                    largest = _dot(g[0], g[0])
                    for j in range(1, g.shape[0]):
                        largest = torch.maximum(largest, _dot(g[j], g[j]))
                    size = size + largest.sqrt()
            level = _svd.NUMERATOR_NOISE * eps(S.dtype) * size
        for i in range(k):
            for j in range(i + 1, k):
                J = M[i][j] - M[j][i] if M is not None else None
                K = Kh[i][j] - Kh[j][i] if Kh is not None else None
                plus = J if K is None else K if J is None else J + K
                minus = J if K is None else -K if J is None else J - K
                assert plus is not None and minus is not None
                D, E, kept[i, j] = _pair_coefficients(
                    S, i, j, plus, minus, level, tie_rtol, zero_rtol, broadening
                )
                a, b = 0.5 * plus * D, 0.5 * minus * E
                C[i][j], C[j][i] = a + b, a - b
        if not is_transformed(S):
            _warn(Uc, S, gUc, gVc, gS, M, Kh, kept, level, zero_rtol, m > k)
    columns = []  # column j of U C (+ Ū_j / σ_j for m > k), (m, N)
    for j in range(k):
        col = Uc[0] * C[0][j]
        for i in range(1, k):
            col = col.addcmul(Uc[i], C[i][j])
        columns.append(col)
    if m > k and gUc is not None and M is not None:
        inv_s = _keep_reciprocal(S, (S > zero_rtol * S[:1]).to(S.dtype))
        for j in range(k):
            # Ū_j − U (UᵀŪ)_j: the part of Ū_j outside span(U), over σ_j; dropped where it is
            # rounding at a small σ (`torchsvd._svd.quiet_small_columns`).
            out = gUc[j]
            for i in range(k):
                out = out.addcmul(Uc[i], M[i][j], value=-1)
            with torch.no_grad():
                quiet = (S[j] <= tie_rtol * S[0]) & (_dot(out, out).sqrt() <= level)
            columns[j] = columns[j].addcmul(out, inv_s[j] * (~quiet).to(S.dtype))
    # Ā_il = Σ_j (U C)_ij V_lj.
    out = columns[0][:, None] * Vc[0, None]
    for j in range(1, k):
        out = out.addcmul(columns[j][:, None], Vc[j, None])
    return out


def _mm(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """[i, j] = Σ_r X[i, r] Y[j, r] for column stacks X (a, r, N), Y (b, r, N): XᵀY per matrix."""
    # One multiply-add per r ≤ 3: no (a, b, r, N) temporary.
    out = X[:, None, 0] * Y[None, :, 0]
    for r in range(1, X.shape[1]):
        out = out.addcmul(X[:, None, r], Y[None, :, r])
    return out


def _combine(C: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Column stack of X C: [j] = Σ_i X[i] C[i, j] for X (a, r, N), C (a, b, N)."""
    out = X[0, None] * C[0, :, None]
    for i in range(1, X.shape[0]):
        out = out.addcmul(X[i, None], C[i, :, None])
    return out


def _jvp_tall(
    Uc: torch.Tensor,
    S: torch.Tensor,
    Vc: torch.Tensor,
    dA: torch.Tensor,
    tie_rtol: float,
    zero_rtol: float,
    broadening: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dU, dS, dV) as column stacks for m ≥ n = k, dA given as its columns (n, m, N).

    The forward rule of `torchsvd._svd` (the map whose adjoint is `_backward_tall`):
    dP = Uᵀ dA V, Ω_U = ½ ((dP + dPᵀ)∘D + (dP − dPᵀ)∘E), Ω_V = ½ ((dP + dPᵀ)∘D − (dP − dPᵀ)∘E),
    dU = U Ω_U + (dA V − U dP) Σ⁻¹, dV = V Ω_V, dS = diag(dP).
    """
    k, m, _ = Uc.shape
    D, E, inv_s = _reciprocals(S, _svd.forward_tie_rtol(tie_rtol, zero_rtol), zero_rtol, broadening)
    dAV = _combine(Vc.transpose(0, 1), dA)  # columns of dA V: Σ_l dA[l] V[l, j]
    dP = _mm(Uc, dAV)  # [i, j] = u_iᵀ (dA V)_j
    herm, skew = dP + dP.transpose(0, 1), dP - dP.transpose(0, 1)
    hD, sE = herm * D, skew * E
    dU = _combine(0.5 * (hD + sE), Uc)
    dV = _combine(0.5 * (hD - sE), Vc)
    if m > k:
        dU = dU + (dAV - _combine(dP, Uc)) * inv_s.unsqueeze(1)
    return dU, dP.diagonal(dim1=0, dim2=1).T, dV


def square(U: torch.Tensor, Vh: torch.Tensor) -> bool:
    """Whether the small-kernel products below apply: real, n×n with n ≤ 3, a large batch."""
    n = U.shape[-1]
    return (
        U.dtype in SWEEPS
        and U.shape[-2] == n
        and Vh.shape[-2:] == (n, n)
        and n <= 3
        and U.numel() >= MIN_BATCH * n * n
    )


def _from_columns(Y: torch.Tensor, batch: torch.Size) -> torch.Tensor:
    """(m, n, N) with [i, l] the entries → contiguous (*batch, m, n)."""
    m, n, _ = Y.shape
    return Y.permute(2, 0, 1).reshape(*batch, m, n).contiguous()


def sandwich(U: torch.Tensor, C: torch.Tensor, Vh: torch.Tensor) -> torch.Tensor:
    """U C Vh for n×n U, Vh (``square``) and C given batch-last, (n, n, N) or diagonal (n, N).

    The three-factor product of the spectral functions, entry by entry over the batch: two
    batched matrix products of 3×3 matrices cost several times more on the CPU.
    """
    n = U.shape[-1]
    if C.dim() == 2:
        entries = [[C[i] if i == j else None for j in range(n)] for i in range(n)]
    else:
        entries = [[C[i, j] for j in range(n)] for i in range(n)]
    return _sandwich(_cols(U), entries, _cols(Vh.mT), U.shape[:-2])


def _sandwich(
    Uc: torch.Tensor, C: list[list[torch.Tensor | None]], Vc: torch.Tensor, batch: torch.Size
) -> torch.Tensor:
    """U C Vᵀ, contiguous (*batch, m, n), from column stacks and the (N,) entries of C (None: 0)."""
    k = Uc.shape[0]
    columns = []  # column j of U C
    for j in range(k):
        col = None
        for i in range(k):
            c = C[i][j]
            if c is not None:
                col = Uc[i] * c if col is None else col.addcmul(Uc[i], c)
        columns.append(torch.zeros_like(Uc[0]) if col is None else col)
    out = columns[0][:, None] * Vc[0, None]
    for j in range(1, k):
        out = out.addcmul(columns[j][:, None], Vc[j, None])
    return _from_columns(out, batch)


def _combine_entries(Xc: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """Σ_i Xc[i] weights[i] for a column stack Xc (a, r, N) and (N,) weights: (r, N)."""
    out = Xc[0] * weights[0]
    for i in range(1, Xc.shape[0]):
        out = out.addcmul(Xc[i], weights[i])
    return out


def inner(U: torch.Tensor, X: torch.Tensor, Vh: torch.Tensor) -> torch.Tensor:
    """Uᵀ X V batch-last, (n, n, N), for n×n U, Vh (``square``) and X of the same shape."""
    n = U.shape[-1]
    Uc, Vc, Xc = _cols(U), _cols(Vh.mT), _cols(X)
    XV = [_combine_entries(Xc, list(Vc[j])) for j in range(n)]  # columns of X V
    return torch.stack([torch.stack([_dot(Uc[i], XV[j]) for j in range(n)]) for i in range(n)])


def rotation_map(
    U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, X: torch.Tensor, rtol: float
) -> torch.Tensor:
    """The derivative of the nearest rotation at A = U diag(S) Vh applied to X (``square``).

    S are the signed singular values of `torchsvd.polar(special=True)`. This is the map of
    the spectral functions for f = 1 (``torchsvd._spectral``): P = 0 and Q_ij = 2/(σ_i + σ_j),
    0 where |σ_i + σ_j| is at the zero level rtol·|σ_1| (σ at that level counted as 0), so
    U [½ Q∘(G − Gᵀ)] Vᵀ with G = Uᵀ X V: antisymmetric, k(k − 1)/2 entries.
    """
    n = U.shape[-1]
    Uc, Vc, Xc = _cols(U), _cols(Vh.mT), _cols(X)
    s = S.reshape(-1, n).T.contiguous()
    tol = rtol * s[0].abs()
    s = s * (s.abs() > tol).to(s.dtype)
    XV = [_combine_entries(Xc, list(Vc[j])) for j in range(n)]  # columns of X V
    C: list[list[torch.Tensor | None]] = [[None] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            total = s[i] + s[j]
            keep = (total.abs() > tol).to(s.dtype)
            # ½ Q_ij = 1/(σ_i + σ_j) where kept; |total| + 1 − keep ≥ 1 elsewhere (then × 0)
            half_q = keep / torch.copysign(total.abs() + (1 - keep), total)
            c = (_dot(Uc[i], XV[j]) - _dot(Uc[j], XV[i])) * half_q
            C[i][j], C[j][i] = c, -c
    return _sandwich(Uc, C, Vc, U.shape[:-2])


def det(M: torch.Tensor) -> torch.Tensor:
    """Determinants of real (..., n, n), n ≤ 3, by cofactors: a few elementwise products.

    For the orthogonal factors of an SVD (det = ±1 to rounding) its sign is exact, and it
    avoids the LU factorisation of `torch.linalg.det`, which costs more than the products.
    """
    n = M.shape[-1]
    if n == 1:
        return M[..., 0, 0]
    if n == 2:
        return M[..., 0, 0] * M[..., 1, 1] - M[..., 0, 1] * M[..., 1, 0]
    r0, r1, r2 = M[..., 0, :], M[..., 1, :], M[..., 2, :]
    return (r0 * torch.linalg.cross(r1, r2)).sum(-1)


class _SmallSVD(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(
        A: torch.Tensor, tie_rtol: float, broadening: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return decompose(A)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        A, tie_rtol, broadening = inputs
        ctx.tie_rtol = tie_rtol
        ctx.zero_rtol = rank_rtol(A.shape[-2], A.shape[-1], A.dtype)
        ctx.broadening = broadening
        ctx.save_for_backward(*output)
        ctx.save_for_forward(*output)
        # Callers that differentiate through their own rule (the spectral functions) leave all
        # three cotangents None: then no backward work is done at all.
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(
        ctx: Any, gU: torch.Tensor | None, gS: torch.Tensor | None, gVh: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, None, None]:
        if gU is None and gS is None and gVh is None:
            return None, None, None
        U, S, Vh = ctx.saved_tensors
        m, n = U.shape[-2], Vh.shape[-1]
        if m < n:  # Aᵀ = V S Uᵀ is tall: swap the roles of U and V
            U, Vh, gU, gVh = Vh.mT, U.mT, _t(gVh), _t(gU)
        batch, (mt, nt) = U.shape[:-2], (U.shape[-2], Vh.shape[-1])
        k = S.shape[-1]
        gA = _backward_tall(
            _cols(U),
            S.reshape(-1, k).T.contiguous(),
            _cols(Vh.mT),
            None if gU is None else _cols(gU),
            None if gS is None else gS.reshape(-1, k).T.contiguous(),
            None if gVh is None else _cols(gVh.mT),
            ctx.tie_rtol,
            ctx.zero_rtol,
            ctx.broadening,
        ).permute(2, 0, 1)
        gA = gA.reshape(*batch, mt, nt)
        return (gA.mT if m < n else gA), None, None

    @staticmethod
    def jvp(ctx: Any, dA: torch.Tensor, *_: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        U, S, Vh = ctx.saved_tensors
        m, n = U.shape[-2], Vh.shape[-1]
        wide = m < n
        if wide:
            U, Vh, dA = Vh.mT, U.mT, dA.mT
        batch, k = S.shape[:-1], S.shape[-1]
        dUc, dS, dVc = _jvp_tall(
            _cols(U),
            S.reshape(-1, k).T.contiguous(),
            _cols(Vh.mT),
            _cols(dA),
            ctx.tie_rtol,
            ctx.zero_rtol,
            ctx.broadening,
        )
        if wide:
            return _assemble(dVc, dS, dUc, batch)
        return _assemble(dUc, dS, dVc, batch)


def _cols(X: torch.Tensor) -> torch.Tensor:
    """(..., r, c) → column stack (c, r, N): [j, i] = X[..., i, j], batch flattened last.

    Copied to contiguous: every elementwise op that follows runs along the batch.
    """
    return X.reshape(-1, X.shape[-2], X.shape[-1]).permute(2, 1, 0).contiguous()


def _t(X: torch.Tensor | None) -> torch.Tensor | None:
    return None if X is None else X.mT


def svd(
    A: torch.Tensor, tie_rtol: float, broadening: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Differentiable reduced SVD of an `eligible` A (validated by the caller).

    Ties are ``|σ_i − σ_j| ≤ tie_rtol·σ_max``, zeros ``σ ≤ max(m, n)·eps·σ_max``; ``broadening``
    as in `torchsvd.svd`. The backward and forward-mode rules are those of `torchsvd.svd`.
    """
    U, S, Vh = _SmallSVD.apply(A, tie_rtol, broadening)
    return U, S, Vh
