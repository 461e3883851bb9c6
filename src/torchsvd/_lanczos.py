"""Top-k singular triplets by thick-restarted block Golub–Kahan–Lanczos bidiagonalization.

The forward algorithm of `svds`, matrix-free: it touches ``A`` only through `LinearOperator`
products with blocks of ``b`` vectors (one GEMM instead of ``b`` GEMVs; for a dense float32
matrix a block of 8 costs about 2.5 passes over ``A`` on one core, not 8).

Method (one block step, orthonormal bases ``V`` (n×d) and ``U`` (m×d) stored as rows: row i is
the vector itself, ``v_iᵀ``, not ``v_iᴴ``, so products and combinations never conjugate and
inner products conjugate the right factor, ``W Qᴴ``):

1. ``W = A V_new``; orthonormalize ``W`` against ``U`` (classical Gram–Schmidt, `_project_out`)
   → ``U_new``.
   ``U`` spans ``A V`` exactly, so the projected matrix ``B = Uᴴ A V`` (d×d) satisfies
   ``A V = U B``: for a Ritz triplet ``B = P Θ Qᴴ``, ``A (V q_i) = θ_i (U p_i)`` holds exactly.
2. ``Z = Aᴴ U_new``, orthogonalized against ``V``. By construction ``Aᴴ U_old ⊂ span(V)``, so the
   other residual is ``Aᴴ (U p_i) − θ_i (V q_i) = Z⊥ᵀ p_i[new rows]``: the Lanczos residual
   estimate, read off without another product. The next ``V_new`` is ``Z⊥`` normalized.
3. Thick restart when the basis reaches ``max_dim``: keep the ``p`` leading Ritz vectors,
   ``V ← V Q_p``, ``U ← U P_p``, ``B ← Θ_p``. Since ``Aᴴ U P_p = V Q_p Θ_p + Z⊥ᵀ P_p[new]``, the
   invariant of step 2 survives the restart (Wu & Simon's thick restart, in block form, as in
   Baglama & Reichel's IRLBA).

Full reorthogonalization keeps the bases orthonormal to working precision; directions that
vanish (an invariant subspace, a rank-deficient or zero matrix) are replaced by seeded random
vectors, so every batch element keeps the same basis size. When the estimates say converged, one
more product on each side checks the true residuals ``‖Aᴴu − σv‖`` and ``‖Av − σu‖`` (the
latter vanishes by construction, up to rounding and the restarts' ``B ← Θ``).

References
----------
.. [1] G. Golub, W. Kahan, "Calculating the singular values and pseudo-inverse of a matrix",
       SIAM J. Numer. Anal. 2(2), 1965.
.. [2] K. Wu, H. Simon, "Thick-restart Lanczos method for large symmetric eigenvalue problems",
       SIAM J. Matrix Anal. Appl. 22(2), 2000.
.. [3] J. Baglama, L. Reichel, "Augmented implicitly restarted Lanczos bidiagonalization
       methods", SIAM J. Sci. Comput. 27(1), 2005.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from torchsvd._errors import ConvergenceError
from torchsvd._operators import LinearOperator
from torchsvd._space import Space

__all__ = ["KrylovResult", "block_lanczos", "default_block_size", "default_max_dim"]


@dataclass
class KrylovResult:
    """Converged top-k triplets ``U (..., m, k)``, ``S (..., k)``, ``Vh (..., k, n)``.

    ``next_sigma`` ``(...,)`` is the (k+1)-th Ritz value, a lower estimate of σ_{k+1} used to
    detect a missing gap (0 when k = min(m, n)); ``residuals`` ``(..., k)`` are the true relative
    residuals ``max(‖Aᴴu_i − σ_i v_i‖, ‖A v_i − σ_i u_i‖) / σ_1``; ``steps`` counts block
    steps (one ``matmat`` and one ``rmatmat`` each).
    """

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor
    next_sigma: torch.Tensor
    residuals: torch.Tensor
    steps: int


def default_block_size(k: int) -> int:
    """Block size: k + 2 rounded up to a multiple of 4, between 8 and 32.

    At least 2 since a single vector cannot see a repeated singular value; a multiple of 4
    since MKL's skinny GEMM is slow for odd widths (3 columns cost more than 4); at least 8
    since a GEMM of 8 columns costs about as much as one of 4 and the wider block needs fewer
    block steps (measurements in docs/topk.md).
    """
    return min(max(-(-(k + 2) // 4) * 4, 8), 32)


def default_max_dim(k: int, block: int) -> int:
    """Largest basis before a thick restart: k + 10 blocks, at least 32.

    With narrow blocks (sparse operators) the orthogonalization against long basis vectors is
    the cost, and a small basis restarted more often is faster: at b = 2, k = 10, a basis of 32
    took about a fifth less time than one of 60 on a sparse 100000² matrix (ARPACK's default
    is max(2k + 1, 20)). The default dense blocks (b >= 8) give k + 10 b >= 81 anyway.
    """
    return max(k + 10 * block, 32)


_DGKS = 0.5**0.5  # repeat a Gram–Schmidt pass that kept less than this fraction of a row
_ILL_CONDITIONED = 10.0  # re-project a block whose |diag R| spread exceeds eps^(-1/4) / this


def _project_out(
    Q: torch.Tensor, W: torch.Tensor, local: int = 0, space: Space | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``W`` minus their components along the orthonormal rows of ``Q``, and ``W Qᴴ``.

    A classical Gram–Schmidt pass against all of ``Q`` reads ``Q`` twice, and with long vectors
    (a sparse 100000² matrix) those reads are the cost. One pass leaves the result orthogonal
    to ``Q`` only to about eps·‖W‖/‖result‖, so it is repeated when it kept less than 1/√2 of a
    row's norm (Daniel, Gragg, Kaufman and Stewart's criterion; otherwise one repetition is
    always enough). In Lanczos the large components of ``W`` lie along the last ``local`` rows
    of ``Q``, the previous block: removing those first, at the cost of ``local`` rows, leaves
    the full pass little to cancel, and it is rarely repeated. The returned coefficients are
    those of ``W`` itself, ``W Qᴴ``, up to rounding. ``space``: where the rows live
    (`torchsvd._space`; default: held whole).
    """
    if Q.shape[-2] == 0:
        return W, W @ Q.mH
    space = space or Space(W.shape[-1])
    local = min(local, Q.shape[-2])
    near = None
    if local:
        Q_near = Q[..., -local:, :]
        near = space.dot(W, Q_near)
        W = W - near @ Q_near
    before = space.norm(W)
    coef = space.dot(W, Q)
    W = W - coef @ Q
    if bool((space.norm(W) < _DGKS * before).any()):
        W = W - space.dot(W, Q) @ Q
    if near is not None:
        coef = torch.cat([coef[..., :-local], coef[..., -local:] + near], dim=-1)
    return W, coef


def _orthonormal_rows(
    W: torch.Tensor, space: Space | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal rows spanning the rows of ``W`` (..., p, N), and ``|diag R|`` of ``W = Rᵀ Q``.

    Cholesky QR twice (CholQR2: two Gram matrices and triangular solves, GEMM-speed) when ``W``
    is well conditioned, Householder QR otherwise. On tall blocks CholQR2 is several times faster
    than LAPACK's Householder QR (docs/topk.md), and as accurate while
    cond(W)·√eps is small, which the ratio of the first Cholesky diagonal checks.
    """
    space = space or Space(W.shape[-1])
    L, info = torch.linalg.cholesky_ex(space.dot(W, W))
    diag = L.diagonal(dim1=-2, dim2=-1)
    real = torch.finfo(diag.dtype)  # the diagonal of a Hermitian Cholesky factor is real
    ratio = diag.real.amin(dim=-1) / diag.real.amax(dim=-1).clamp_min(real.tiny)
    if bool((info != 0).any()) or bool((ratio <= real.eps**0.25).any()):
        return space.qr_rows(W)
    Q1 = _solve_lower(L, W)
    L2 = torch.linalg.cholesky(space.dot(Q1, Q1))
    rows = _solve_lower(L2, Q1)
    return rows, (diag * L2.diagonal(dim1=-2, dim2=-1)).real


def _solve_lower(L: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``L⁻¹ W`` for lower-triangular ``L`` (..., p, p) and row-major rows ``W`` (..., p, N).

    Posed as ``X Lᵀ = Wᵀ`` (solved from the right), which LAPACK takes in ``W``'s own layout:
    ``solve_triangular(L, W)`` copied ``W`` to column-major first, 5–9× slower on p = 2–10
    rows of 10⁵ (0.47 against 0.07 ms for p = 2, float32, one thread).
    """
    return torch.linalg.solve_triangular(L.mT, W.mT, upper=True, left=False).mT


def _orthonormalize(
    W: torch.Tensor,
    Q: torch.Tensor,
    gen: torch.Generator,
    size: torch.Tensor | None = None,
    space: Space | None = None,
) -> torch.Tensor:
    """Orthonormal rows spanning ``W`` projected off ``Q``; vanishing directions become random.

    ``size``: when given, ``W`` is already projected off ``Q`` (`_project_out`) and ``size``
    holds its row norms before that. ``space``: where the rows live (default: held whole).

    A remainder that is exactly zero (to eps² of the row: zero matrix, exhausted Krylov space)
    carries no direction and is replaced by a seeded random row. Any other remainder is kept,
    however small — dropping it would break ``Aᴴ U ⊂ span(V)`` by its size and with it the
    residual estimate — and, when below √eps of the row, orthogonalized once more after
    normalization, which magnifies the rounding left by the projection. One QR in the common
    case (nothing vanished).
    """
    eps = torch.finfo(W.dtype.to_real()).eps
    space = space or Space(W.shape[-1])
    if size is None:
        size = space.norm(W)
        W = _project_out(Q, W, space=space)[0]
    rows, kept = _orthonormal_rows(W, space)
    vanished = kept <= eps * eps * size
    if bool(vanished.any()):
        fresh = space.randn(W.shape[:-1], gen, W.dtype, W.device)
        W = _project_out(Q, torch.where(vanished.unsqueeze(-1), fresh, W), space=space)[0]
        size = torch.where(vanished, space.norm(W), size)
        rows, kept = _orthonormal_rows(W, space)
    # The QR of an ill-conditioned block magnifies its rounding along Q by about
    # max kept / min kept (on σ_i = 10^(-i/4) the first Gram block's 1e5 left the basis
    # orthogonal to 1e-8 only, and the true residuals stalled above tol): the rows are then
    # projected once more, to the orthogonality of eps/_ILL_CONDITIONED ≈ 0.1·eps^(3/4).
    ill = kept.amin(dim=-1, keepdim=True) <= _ILL_CONDITIONED * eps**0.25 * kept.amax(
        dim=-1, keepdim=True
    )
    if bool(((kept <= eps**0.5 * size) | ill).any()):
        rows = _orthonormal_rows(_project_out(Q, rows, space=space)[0], space)[0]
    return rows


_STAGNATION_RESTARTS = 30  # restarts without a 10 % fall of the residual: the floor is reached
_PROGRESS = 0.9


class _Bidiagonalization:
    """The state of block Golub–Kahan–Lanczos: row bases ``V``, ``U`` and the projected ``B``.

    Preallocated to ``dmax`` rows (growing by concatenation copied every basis at every step);
    the live part is ``[:d]``: ``V`` (d×n) and ``U`` (d×m) orthonormal rows, ``B = Uᴴ A V``
    (d×d), kept from the coefficients of the orthogonalizations (`expand`, `residual`) rather
    than from stored products ``A V``: reading those back cost one more pass over a basis of
    long vectors at every step. The newest ``fresh`` rows of ``U`` await their product with
    ``Aᴴ`` (`residual`). Rows hold the entries of the operator's `spaces` this process holds
    (all of them, unless they are split over processes).
    """

    def __init__(self, op: LinearOperator, dmax: int, gen: torch.Generator) -> None:
        batch = op.batch_shape
        self.left, self.right = op.spaces
        m, n = self.left.local, self.right.local
        dtype, device = op.dtype, op.device
        self.op, self.gen = op, gen
        self._V = torch.empty((*batch, dmax, n), dtype=dtype, device=device)
        self._U = torch.empty((*batch, dmax, m), dtype=dtype, device=device)
        self._B = torch.zeros((*batch, dmax, dmax), dtype=dtype, device=device)
        self.d = self.fresh = 0

    @property
    def V(self) -> torch.Tensor:
        return self._V[..., : self.d, :]

    @property
    def U(self) -> torch.Tensor:
        return self._U[..., : self.d, :]

    @property
    def B(self) -> torch.Tensor:
        return self._B[..., : self.d, : self.d]

    def begin(self, rows: torch.Tensor) -> None:
        """Start the recurrence afresh from the block ``rows`` (..., w, n)."""
        w = rows.shape[-2]
        V, U = self._V[..., :w, :], self._U[..., :w, :]
        V[...] = _orthonormalize(rows, self._V[..., :0, :], self.gen, space=self.right)
        AV = self.op.matmat_rows(V)
        U[...] = _orthonormalize(AV, self._U[..., :0, :], self.gen, space=self.left)
        self._B[..., :w, :w] = self.left.dot(U.conj(), AV.conj())  # B_ij = u_iᴴ A v_j
        self.d = self.fresh = w

    def residual(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``Aᴴ U_new`` (rows), the same projected off ``V``, and its row norms before that.

        In exact arithmetic ``Aᴴ U_new`` has no component along ``V`` but the newest block (rows
        paired with ``U_new``), or the kept rows after a thick restart: the newest block goes
        first (`_project_out`).

        The coefficients ``Z Vᴴ`` against the older rows of ``V`` are ``conj(U_newᴴ A V_old)``:
        they fill the new rows of ``B`` left of the newest block (zero in exact arithmetic;
        keeping their rounding makes the residual estimate that of the ``Aᴴ`` recurrence).
        """
        d, w = self.d, self.fresh
        Z = self.op.rmatmat_rows(self.U[..., d - w :, :])
        projected, coef = _project_out(self.V, Z, local=w, space=self.right)
        self._B[..., d - w : d, : d - w] = coef[..., : d - w].conj()
        return Z, projected, self.right.norm(Z)

    def ritz(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The SVD ``B = P Θ Qᴴ`` of the projected matrix."""
        return torch.linalg.svd(self.B)

    def vectors(
        self, P: torch.Tensor, Qh: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of the ``k`` leading Ritz vectors ``(U P_k)ᵀ`` and ``(V Q_k)ᵀ``."""
        return P[..., :k].mT.contiguous() @ self.U, Qh[..., :k, :].conj().contiguous() @ self.V

    def restart(self, P: torch.Tensor, theta: torch.Tensor, Qh: torch.Tensor, keep: int) -> None:
        """Thick restart: keep the bases of the ``keep`` leading Ritz vectors, ``B ← Θ_keep``.

        The kept rows ``P_pᵀ U`` and ``Q_pᵀ V`` lose about eps of orthogonality per restart. In
        float32 that reached 1e-5 over many restarts and they had to be re-orthonormalized; the
        solver works in float64 (`LinearOperator.promoted`), where a thousand restarts cost
        1e-13. ``B ← Θ`` adds the backward error of the small SVD (float64 eps·‖B‖) at each
        restart, as little again; the convergence test checks the true residual.
        """
        Uk, Vk = self.vectors(P, Qh, keep)
        self._U[..., :keep, :], self._V[..., :keep, :] = Uk, Vk
        self._B[..., :keep, :keep] = torch.diag_embed(theta[..., :keep]).to(self._B.dtype)
        self.d = keep

    def expand(self, Z: torch.Tensor, z_size: torch.Tensor) -> None:
        """Append a block: ``V_new`` from ``Z`` (already off ``V``), ``A V_new``, ``U_new``, ``B``.

        The new columns of ``B``, ``U_oldᴴ A V_new``, are the projection coefficients of
        ``A V_new`` against ``U`` (whose large part lies along the newest U block, or along all
        kept rows right after a thick restart, where the repeated pass may then be needed);
        the new diagonal block ``U_newᴴ A V_new`` is a product of two blocks. The rows
        ``U_newᴴ A V_old`` come with the next `residual`.
        """
        d, w = self.d, self.fresh  # w: the block width, b, or k > b after a restart from k
        U = self.U
        self._V[..., d : d + w, :] = _orthonormalize(
            Z, self.V, self.gen, size=z_size, space=self.right
        )
        AV_new = self.op.matmat_rows(self._V[..., d : d + w, :])
        W, coef = _project_out(U, AV_new, local=w, space=self.left)
        self._B[..., :d, d : d + w] = coef.mT
        self._U[..., d : d + w, :] = _orthonormalize(
            W, U, self.gen, size=self.left.norm(AV_new), space=self.left
        )
        new = self._U[..., d : d + w, :].conj()
        self._B[..., d : d + w, :d] = 0  # until `residual` brings their rounding
        self._B[..., d : d + w, d : d + w] = self.left.dot(new, AV_new.conj())
        self.d = d + w


class _Accepted:
    """The triplets accepted so far, per batch element (elements converge at different steps)."""

    def __init__(self, op: LinearOperator, k: int) -> None:
        batch = op.batch_shape
        m, n = op.spaces[0].local, op.spaces[1].local
        dtype, device, real = op.dtype, op.device, op.dtype.to_real()
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)
        self.U = torch.zeros((*batch, k, m), dtype=dtype, device=device)
        self.S = torch.zeros((*batch, k), dtype=real, device=device)
        self.V = torch.zeros((*batch, k, n), dtype=dtype, device=device)
        self.next = torch.zeros(batch, dtype=real, device=device)
        self.res = torch.zeros((*batch, k), dtype=real, device=device)

    def take(
        self,
        accept: torch.Tensor,
        triplet: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        nxt: torch.Tensor,
        res: torch.Tensor,
    ) -> None:
        sel = accept.unsqueeze(-1)
        self.U = torch.where(sel.unsqueeze(-1), triplet[0], self.U)
        self.S = torch.where(sel, triplet[1], self.S)
        self.V = torch.where(sel.unsqueeze(-1), triplet[2], self.V)
        self.res = torch.where(sel, res, self.res)
        self.next = torch.where(accept, nxt, self.next)
        self.done = self.done | accept

    def result(self, steps: int) -> KrylovResult:
        return KrylovResult(self.U.mT, self.S, self.V.conj(), self.next, self.res, steps)

    def partial(
        self, triplet: tuple[torch.Tensor, torch.Tensor, torch.Tensor], res: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """Ours where there are some, else ``triplet`` (rows, as stored) and its ``res``."""
        sel = self.done.unsqueeze(-1)
        U = torch.where(sel.unsqueeze(-1), self.U, triplet[0])
        S = torch.where(sel, self.S, triplet[1])
        V = torch.where(sel.unsqueeze(-1), self.V, triplet[2])
        return (U, S, V), torch.where(sel, self.res, res)


def block_lanczos(
    op: LinearOperator,
    k: int,
    *,
    tol: float,
    maxiter: int,
    v0: torch.Tensor | None = None,
    block: int | None = None,
    max_dim: int | None = None,
    seed: int = 0,
) -> KrylovResult:
    """Top-k singular triplets of ``op`` to relative residual ``tol`` (module docstring).

    Parameters
    ----------
    op : LinearOperator of shape ``(..., m, n)``
        Its products are rounded to ``op.product_dtype`` (lower than ``op.dtype`` for a
        promoted float32 operator): the check that ``rmatmat`` is the adjoint of ``matmat``
        allows for that rounding.
    k : int, 1 <= k <= min(m, n)
    tol : float
        Stop when ``‖Aᴴu_i − σ_i v_i‖ <= tol·σ_1`` for i < k in every batch element.
    maxiter : int
        Maximum number of block steps.
    v0 : Tensor ``(..., p, n)``, optional
        Rows ``Vᴴ`` of a guess (e.g. a previous ``Vh``) that start the first block; the rest is
        random.
    block, max_dim : int, optional
        Block size and largest basis size (defaults: ``op.block_size``, else
        `default_block_size`; `default_max_dim`).
    seed : int
        Seed of the random start and of the replacements of vanishing directions.

    Raises
    ------
    ConvergenceError
        Not converged within ``maxiter`` steps, or stagnated: the residual fell by less than
        10 % over the last 30 restarts (the rounding of the products allows no smaller
        residual; the message names the one reached). ``.result`` holds the last Ritz triplets
        and ``.residuals`` their relative residual estimates ``(..., k)``.
    ValueError
        The operator returns blocks of the wrong shape or dtype, non-finite values, or its
        ``rmatmat`` is not the adjoint of its ``matmat``.
    """
    *batch, m, n = op.shape
    dtype, device = op.dtype, op.device
    real = dtype.to_real()  # of singular values and residuals
    tiny = torch.finfo(real).tiny
    b = block or op.block_size or default_block_size(k)
    eps = torch.finfo(op.product_dtype.to_real()).eps
    # Room for k kept vectors and two blocks, so a restart always leaves space for a new block.
    # (max(b, k): the width after a restart from k Ritz vectors.)
    dmax = max(default_max_dim(k, b) if max_dim is None else max_dim, k + 2 * max(b, k))
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    accepted = _Accepted(op, k)
    if accepted.done.numel() == 0:  # an empty batch
        return accepted.result(0)
    # The iterate with the smallest true residual so far, per batch element, for the error.
    closest = _Accepted(op, k)
    closest_worst = torch.full(batch, torch.inf, dtype=real, device=device)
    if min(m, n) <= dmax:
        # The basis would fill a whole space (and a wide/tall Krylov basis cannot span the row
        # space of A before it does): form A with min(m, n) products and decompose it densely.
        return _dense(op, k, b, eps, gen)

    left, right = op.spaces
    start = right.randn((*batch, b), gen, dtype, device)
    if v0 is not None:
        p = min(v0.shape[-2], b)
        start[..., :p, :] = right.take(v0[..., :p, :]).to(dtype).conj()
    basis = _Bidiagonalization(op, dmax, gen)
    basis.begin(start)
    best, restarts = float("inf"), 0  # stagnation: the lowest residual, restarts since it fell
    step = 1
    while True:
        AhU, Z, z_size = basis.residual()
        if step == 1:
            # Vᴴ (Aᴴ U) = (Uᴴ A V)ᴴ
            _check_adjoint(right.dot(basis.V.conj(), AhU.conj()), basis.B.mH, eps)
        P, theta, Qh = basis.ritz()
        drifted = torch.zeros_like(accepted.done)
        if basis.d < k:
            if step >= maxiter:
                raise ConvergenceError(
                    f"svds did not converge in {maxiter} block steps: the Krylov basis "
                    f"({basis.d} vectors) is still smaller than k = {k}; raise maxiter.",
                )
        else:
            sigma1 = theta[..., :1]
            scale = sigma1.clamp_min(tiny)
            # The residual estimate: the rows of the newest U block, Z projected off V.
            last = P[..., basis.d - basis.fresh :, :k]
            estimate = right.norm(last.mT @ Z)
            ok = (estimate <= tol * sigma1).all(dim=-1) & ~accepted.done
            rel = estimate / scale
            Sk = theta[..., :k]
            if bool(ok.any()):
                Uk, Vk = basis.vectors(P, Qh, k)
                true = right.norm(op.rmatmat_rows(Uk) - Sk.unsqueeze(-1) * Vk)
                # A V = U B holds only to the backward errors of the small SVDs that replaced
                # B by Θ at the restarts: checked too, one product of k vectors per check.
                true = torch.maximum(true, left.norm(op.matmat_rows(Vk) - Sk.unsqueeze(-1) * Uk))
                accept = ok & (true <= tol * sigma1).all(dim=-1)
                # Off by more than the rounding of the check itself: the recurrence drifted.
                drifted = ok & (true > 4 * tol * sigma1).any(dim=-1)
                rel = torch.where(ok.unsqueeze(-1), true / scale, rel)
                nxt = theta[..., k] if basis.d > k else torch.zeros_like(theta[..., 0])
                accepted.take(accept, (Uk, Sk, Vk), nxt, true / scale)
                true_worst = (true / scale).amax(dim=-1)
                closer = ok & (true_worst < closest_worst)
                closest.take(closer, (Uk, Sk, Vk), nxt, true / scale)
                closest_worst = torch.where(closer, true_worst, closest_worst)
                if bool(accepted.done.all()):
                    return accepted.result(step)
            worst = float(rel.amax(dim=-1)[~accepted.done].max())
            if worst < _PROGRESS * best:
                best, restarts = worst, 0
            if step >= maxiter or restarts >= _STAGNATION_RESTARTS:
                Uk, Vk = basis.vectors(P, Qh, k)
                # The accepted triplets, else the closest checked iterate, else the last one.
                rows, res = accepted.partial(*closest.partial((Uk, Sk, Vk), rel))
                if step >= maxiter:
                    why = (
                        f"did not converge in {maxiter} block steps (block size {b}): the "
                        f"largest relative residual is {float(res.max()):.3g}, tol is {tol:.3g}"
                    )
                    advice = "raise maxiter or tol"
                else:
                    why = (
                        f"stagnated after {step} block steps: the residual fell by less than "
                        f"{1 - _PROGRESS:.0%} over the last {restarts} restarts: the rounding "
                        "of the operator's products allows no smaller residual, or the top "
                        "singular values cluster so tightly that convergence has slowed to a "
                        f"crawl; the iterate in .result has relative residual "
                        f"{float(res.max()):.3g}, tol is {tol:.3g}"
                    )
                    advice = f"a tol of {float(res.max()):.2g} was reachable"
                raise ConvergenceError(
                    f"svds {why}. The iterate is in .result (U, S, Vh); {advice}, or "
                    "warm-start with v0=.result[2].",
                    residuals=res,
                    result=(rows[0].mT, rows[1], rows[2].conj()),
                )
        step += 1
        if bool(drifted.any()):
            # The estimate says converged, the true residual is far from it: rounding has broken
            # the recurrence (seen with float32 bases on vectors of length 10⁵: the estimate fell
            # to 1e-6 while the true residual stayed at 1e-4; float64 bases cured that case, and
            # this guards the rest). Start again from the k Ritz vectors (plus random rows up to
            # the block size): two products, and the recurrence is exact again. A true residual
            # just above tol is left to the next steps: at tol near the rounding of the products
            # a restart would only throw the basis away.
            fill = right.randn((*batch, max(b - k, 0)), gen, dtype, device)
            basis.begin(torch.cat([Vk, fill], dim=-2))
            restarts += 1
            continue
        if basis.d + basis.fresh > dmax:  # the next block has `fresh` rows too
            # Thick restart: keep the leading Ritz vectors; Z stays orthogonal to them.
            basis.restart(P, theta, Qh, max(k, min(basis.d - basis.fresh, (dmax + k) // 2)))
            restarts += 1
        basis.expand(Z, z_size)


def _dense(op: LinearOperator, k: int, b: int, eps: float, gen: torch.Generator) -> KrylovResult:
    """Small problems: ``A`` from ``min(m, n)`` products, then ``torch.linalg.svd``.

    ``A`` is built with the product on the smaller side (``Aᴴ`` when m > n, then the factors are
    swapped); the other product is checked on one random vector. (With a vector of ones, an
    rmatmat that returns Aᵀ Y instead of Aᴴ Y passed whenever the imaginary parts of A summed to
    zero along rows, a Hermitian tight-binding ring say, and the singular vectors came out
    conjugated.) ``b``: the block size, the most vectors one product takes where the vectors
    are split over processes (`_dense_split`).
    """
    *batch, m, n = op.shape
    if op.spaces[0].split or op.spaces[1].split:
        return _dense_split(op, k, b, eps, gen)
    if m > n:
        r = _dense(op.H, k, b, eps, gen)
        return KrylovResult(r.Vh.mH, r.S, r.U.mH, r.next_sigma, r.residuals, 0)
    dtype, device = op.dtype, op.device
    # Row i of the product is Aᴴ e_i, the conjugate of row i of A.
    A = op.rmatmat_rows(torch.eye(m, dtype=dtype, device=device).expand(*batch, m, m)).conj()
    x = torch.randn((*batch, 1, n), generator=gen, dtype=dtype, device=device)
    _check_adjoint(op.matmat_rows(x), x @ A.mT, eps)
    return _triplets(A, k)


def _triplets(A: torch.Tensor, k: int) -> KrylovResult:
    """The leading ``k`` triplets of the dense ``A`` (..., m, n) and their true residuals."""
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    residuals = (A @ Vh[..., :k, :].mH - U[..., :k] * S[..., None, :k]).norm(dim=-2)
    residuals = residuals / S[..., :1].clamp_min(torch.finfo(S.dtype).tiny)
    nxt = S[..., k] if k < S.shape[-1] else torch.zeros_like(S[..., 0])
    return KrylovResult(U[..., :k], S[..., :k], Vh[..., :k, :], nxt, residuals, 0)


def _dense_split(
    op: LinearOperator, k: int, b: int, eps: float, gen: torch.Generator
) -> KrylovResult:
    """Small problems with vectors split over processes, by products of at most ``b`` vectors.

    With ``s = min(m, n)`` (at most the largest basis), the products of the short side's
    identity, ``b`` vectors at a time, are the columns of ``A`` (or of ``Aᴴ``). Taking them in
    blocks keeps every collective the size of a Krylov block step's: a block of ``b`` vectors of
    the side that is not split, or inner products of at most ``s × b`` numbers.

    * The short side split (a tall ``A`` split by columns): each block of columns is one
      all-reduce of (long side) × b, after which every process holds the columns whole, as it
      would a basis of ``s`` vectors of the long side. Their dense SVD, the same on every
      process, gives ``U`` whole and each process its entries of ``V``: nothing more is sent.
    * The long side split (a tall ``A`` split by rows): the columns are local. Rayleigh–Ritz on
      the whole short side: orthonormalized block by block against the previous blocks (inner
      products reduced over the processes) they give ``Q`` (s rows) with ``A = Qᵀ M``,
      ``M = Qᴴ A`` (s×s) from the products ``Aᴴ Q``, ``b`` rows at a time; the SVD
      ``M = P Σ Yᴴ`` gives ``U = Qᵀ P`` and ``V = Y``, exact to the accuracy of the
      orthonormalization, and ``A`` is never held whole.
    """
    *batch, m, n = op.shape
    if m < n:
        r = _dense_split(op.H, k, b, eps, gen)
        return KrylovResult(r.Vh.mH, r.S, r.U.mH, r.next_sigma, r.residuals, 0)
    left, right = op.spaces
    dtype, device = op.dtype, op.device
    blocks = [slice(i, min(i + b, n)) for i in range(0, n, b)]
    # Rows e_i of the n-space identity, as this process holds them.
    eye = right.take(torch.eye(n, dtype=dtype, device=device).expand(*batch, n, n))
    columns = torch.cat([op.matmat_rows(eye[..., j, :]) for j in blocks], dim=-2)  # A e_i
    if right.split:
        A = columns.mT
        y = torch.randn((*batch, 1, m), generator=gen, dtype=dtype, device=device)
        # Aᴴ y as rows is y conj(A); this process holds its entries of it.
        _check_adjoint(op.rmatmat_rows(y), right.take(y @ A.conj()), eps, space=right)
        r = _triplets(A, k)
        return KrylovResult(r.U, r.S, right.take(r.Vh), r.next_sigma, r.residuals, 0)
    Q = columns[..., :0, :]
    for j in blocks:
        Q = torch.cat([Q, _orthonormalize(columns[..., j, :], Q, gen, space=left)], dim=-2)
    # Rows of Qᴴ A, the conjugates of the products Aᴴ q_i.
    M = torch.cat([op.rmatmat_rows(Q[..., j, :]) for j in blocks], dim=-2).conj()
    # <Aᴴ q_i, e_j> = <q_i, A e_j> on the first block: the two products agree.
    _check_adjoint(left.dot(columns, Q[..., blocks[0], :]).mT, M[..., blocks[0], :], eps)
    P, S, Yh = torch.linalg.svd(M, full_matrices=False)
    U_rows = P[..., :k].mT @ Q
    V_rows = Yh[..., :k, :].conj()
    true = left.norm(op.matmat_rows(V_rows) - S[..., :k, None] * U_rows)
    residuals = true / S[..., :1].clamp_min(torch.finfo(S.dtype).tiny)
    nxt = S[..., k] if k < S.shape[-1] else torch.zeros_like(S[..., 0])
    return KrylovResult(U_rows.mT, S[..., :k], V_rows.conj(), nxt, residuals, 0)


def _check_adjoint(
    got: torch.Tensor, want: torch.Tensor, eps: float, space: Space | None = None
) -> None:
    """Two ways to compute the same product must agree, to √eps of the products' precision.

    ``space``: where the rows of ``got`` and ``want`` live. Rows split over processes are
    compared by their norms (one reduction), so that every process reaches the same verdict.
    """
    if space is not None and space.split:
        sizes = space.norm(torch.cat([got - want, want], dim=-2))
        mismatch, scale = sizes[..., : got.shape[-2]].amax(), sizes[..., got.shape[-2] :].amax()
    else:
        mismatch, scale = (got - want).abs().amax(), want.abs().amax()
    if bool(mismatch > 10 * eps**0.5 * scale):
        raise ValueError(
            "rmatmat is not the adjoint of matmat: <Aᴴu, v> and <u, Av> differ by "
            f"{float(mismatch):.3g} (scale {float(scale):.3g})"
        )
