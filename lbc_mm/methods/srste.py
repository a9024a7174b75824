"""SR-STE and STE: the magnitude mask of the current weight on every forward.

No state on the layer. Backward: straight-through with SR-STE's sparse-refined decay
``srste_lambda`` on the masked weights (docs/method.md, baselines); STE is the same
with ``srste_lambda=0``.
"""
from torch import Tensor

from ..sparsity import magnitude_mask, srste_masked_weight
from .base import SparsityMethod, register_method

__all__ = ['SRSTE', 'STE']


@register_method
class SRSTE(SparsityMethod):
    """SR-STE (Zhou et al., ICLR 2021).

    Options:
        srste_lambda (float): ``lambda_w`` of the sparse-refined term, >= 0.
            Defaults to 2e-4.
    """

    name = 'srste'
    label = 'SR-STE'
    options = {'srste_lambda': 2e-4}
    sparse_gemms = (True, True, False)  # the weight gradient stays dense

    srste_lambda: float

    @classmethod
    def check_options(cls, options) -> None:
        options['srste_lambda'] = float(options['srste_lambda'])
        if options['srste_lambda'] < 0:
            raise ValueError(
                f'srste_lambda must be >= 0, got {options["srste_lambda"]}')

    def mask(self) -> Tensor:
        layer = self.layer
        return magnitude_mask(layer.weight, layer.n, layer.m)

    def masked_weight(self) -> Tensor:
        layer = self.layer
        return srste_masked_weight(layer.weight, layer.n, layer.m, self.srste_lambda)


@register_method
class STE(SRSTE):
    """The straight-through estimator: SR-STE with ``srste_lambda=0`` (fixed)."""

    name = 'ste'
    label = 'STE'
    options = {'srste_lambda': 0.0}
    fixed_options = {'srste_lambda': 0.0}

    @classmethod
    def check_options(cls, options) -> None:
        if options['srste_lambda'] not in (0, 0.0):
            raise ValueError(f'STE is SR-STE with srste_lambda=0, got '
                             f'{options["srste_lambda"]}')
        options['srste_lambda'] = 0.0
