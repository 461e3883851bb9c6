"""Warnings and errors raised by torchsvd."""

from __future__ import annotations

__all__ = ["ConvergenceError", "DegenerateGradientWarning"]


class DegenerateGradientWarning(UserWarning):
    """The loss depends on a choice the decomposition leaves free, so it has no gradient.

    Raised in a backward pass when a loss depends on the basis chosen inside a group of tied
    singular values, on the phase of complex singular vectors, or (for `svds`) when there is no
    gap between the k-th and (k+1)-th singular values. The gradient returned is the one of the
    gauge-invariant part of the loss and is finite.
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
