"""Warnings and errors raised by torchsvd."""

from __future__ import annotations

__all__ = ["ConvergenceError", "DegenerateGradientWarning"]


class DegenerateGradientWarning(UserWarning):
    """The loss depends on a choice the decomposition leaves free, so it has no gradient.

    Raised in a backward pass when a loss depends on the basis chosen inside a group of tied
    singular values, on the phase of complex singular vectors, on the arbitrary basis of a null
    space, or (for `svds`) when there is no gap between the k-th and (k+1)-th singular values;
    the gradient returned is then the one of the gauge-invariant part of the loss and is finite.
    `svd` also raises it where the returned gradient is known to be wrong although the loss has
    one (a reconstruction U diag(S) Vh at a tie), and `svdvals` where a second derivative at a
    tie cannot be made exact (under torch.func transforms and in forward mode). `svds` raises
    it when the products of a `LinearOperator` use a tensor requiring grad that their output
    does not depend on through autograd (detached, or converted to a number): that tensor gets
    no gradient.
    """


class ConvergenceError(RuntimeError):
    """An iterative solver did not reach its tolerance within its iteration budget.

    Attributes
    ----------
    residuals : torch.Tensor or None
        The largest relative residual reached for each requested triplet, where known.
    result : tuple or None
        The partial result (U, S, Vh) at the last iteration, where available.
    """

    def __init__(self, message: str, *, residuals: object = None, result: object = None) -> None:
        super().__init__(message)
        self.residuals = residuals
        self.result = result
