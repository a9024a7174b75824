"""lbc_mm: Learning Best Combination (LBC) N:M sparsity for OpenMMLab.

Zhang, Lin et al., "Learning Best Combination for Efficient N:M Sparsity",
NeurIPS 2022 (arXiv 2206.06662). ``import lbc_mm`` registers the sparse layers, the
model transform, the hook and the model wrapper in mmengine's root registries, for
``default_scope='mmdet'`` and ``'mmpretrain'`` configs alike; it imports neither
(both are extras).
"""
from . import compat  # noqa: F401  (must run before mmpretrain/mmdet models import)
from .version import __version__  # noqa: F401

from . import registry  # noqa: F401,E402  isort:skip
from . import layers, transforms, optim, hooks, model_wrappers  # noqa: F401,E402  isort:skip
from .hooks import LBCHook  # noqa: E402  isort:skip
from .layers import NMSparseConv, NMSparseLinear  # noqa: E402  isort:skip
from .optim import LBCOptimWrapperConstructor  # noqa: E402  isort:skip
from .transforms import NMSparsify  # noqa: E402  isort:skip

__all__ = ['LBCHook', 'LBCOptimWrapperConstructor', 'NMSparseConv', 'NMSparseLinear',
           'NMSparsify', '__version__']
