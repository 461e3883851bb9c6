"""The vectors of one side of an operator: where they live, and their inner products.

The solvers (`torchsvd._lanczos`, `torchsvd._cg`, the backward of `torchsvd.svds`) hold
blocks of vectors of the m-space and the n-space of an operator as rows ``(..., p, N)``.
Everything they do with them is either local to each entry (combinations ``C Q``, scaling)
or a contraction over the vectors' length ``N`` (inner products, norms, Gram matrices). A
`Space` supplies the contractions. This one holds every vector whole, and its contractions
are the plain tensor expressions. A space whose vectors are split over processes
(``torchsvd._distributed``) holds this process's entries only and sums the partial
contractions over the processes, so the solver runs unchanged on sharded vectors and every
small result (a coefficient block, a norm) is the same on every process.
"""

from __future__ import annotations

import torch

__all__ = ["Space"]


class Space:
    """Vectors of length ``size``, held whole: contractions are local tensor expressions.

    Parameters
    ----------
    size : int
        The length of the vectors (the global one; for a split space also that of the whole
        vectors, of which `local` entries are held here).
    """

    split = False

    def __init__(self, size: int) -> None:
        self.size = size

    @property
    def local(self) -> int:
        """How many entries of each vector this process holds."""
        return self.size

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        """The sum over the processes of partial contractions ``t`` (here: ``t``)."""
        return t

    def dot(self, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """``X Yᴴ`` ``(..., p, q)`` for rows ``X`` ``(..., p, N)`` and ``Y`` ``(..., q, N)``."""
        return self.reduce(X @ Y.mH)

    def norm(self, X: torch.Tensor) -> torch.Tensor:
        """The 2-norms of the rows of ``X`` ``(..., p, N)``: ``(..., p)``."""
        return X.norm(dim=-1)

    def any(self, t: torch.Tensor) -> bool:
        """Whether any entry of ``t`` (entries of vectors of this space) is nonzero."""
        return bool(t.any())

    def take(self, t: torch.Tensor) -> torch.Tensor:
        """This process's entries of whole vectors ``t`` ``(..., p, size)``."""
        return t

    def randn(
        self,
        shape: tuple[int, ...],
        gen: torch.Generator,
        dtype: torch.dtype,
        device: torch.device,
    ) -> torch.Tensor:
        """This process's entries of random rows ``(*shape, size)``, the same draw everywhere.

        The whole rows are drawn and the local entries kept, so that the generator advances
        alike on every process and the rows are those a single process draws.
        """
        return self.take(
            torch.randn((*shape, self.size), generator=gen, dtype=dtype, device=device)
        )

    def qr_rows(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Orthonormal rows spanning the rows of ``W``, and ``|diag R|`` of ``W = Rᵀ Q``.

        Householder QR of ``Wᵀ``: backward stable at any condition number.
        """
        # Wᵀ = Qm R; the columns of Qm, as rows, are orthonormal in the sense W Wᴴ = I.
        Qm, R = torch.linalg.qr(W.mT)
        return Qm.mT, R.diagonal(dim1=-2, dim2=-1).abs()
