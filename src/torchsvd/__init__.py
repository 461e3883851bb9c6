"""torchsvd: the singular value decomposition as a differentiable building block for PyTorch."""

from torchsvd import nn as nn
from torchsvd import testing as testing
from torchsvd._errors import ConvergenceError as ConvergenceError
from torchsvd._errors import DegenerateGradientWarning as DegenerateGradientWarning
from torchsvd._operators import LinearOperator as LinearOperator
from torchsvd._pca import pca as pca
from torchsvd._spectral import clip_singular_values as clip_singular_values
from torchsvd._spectral import polar as polar
from torchsvd._spectral import svd_apply as svd_apply
from torchsvd._spectral import svt as svt
from torchsvd._subspace import low_rank as low_rank
from torchsvd._subspace import null_space as null_space
from torchsvd._subspace import orth as orth
from torchsvd._svd import svd as svd
from torchsvd._svd import svdvals as svdvals
from torchsvd._topk import spectral_norm as spectral_norm
from torchsvd._topk import svds as svds
from torchsvd.explain import explain as explain

__version__ = "0.1.0"

__all__ = [
    "ConvergenceError",
    "DegenerateGradientWarning",
    "LinearOperator",
    "clip_singular_values",
    "explain",
    "low_rank",
    "nn",
    "null_space",
    "orth",
    "pca",
    "polar",
    "spectral_norm",
    "svd",
    "svd_apply",
    "svds",
    "svdvals",
    "svt",
    "testing",
]
