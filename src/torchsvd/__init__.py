"""torchsvd: the singular value decomposition as a differentiable building block for PyTorch."""

from torchsvd import testing as testing
from torchsvd._errors import ConvergenceError as ConvergenceError
from torchsvd._errors import DegenerateGradientWarning as DegenerateGradientWarning
from torchsvd._svd import svd as svd
from torchsvd._svd import svdvals as svdvals

__version__ = "0.1.0"

__all__ = [
    "ConvergenceError",
    "DegenerateGradientWarning",
    "svd",
    "svdvals",
    "testing",
]
