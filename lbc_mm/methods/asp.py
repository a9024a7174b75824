"""ASP one-shot: the magnitude mask, fixed once, then trained under.

State on the layer: ``asp_mask`` (bool, ``weight.shape``; a buffer, in
checkpoints). The mask is fixed at the first training forward, or when a dense
checkpoint without ``asp_mask`` is loaded (:meth:`ASP.set_asp_mask`); until then an
eval forward uses the magnitude mask of the current weight.
"""
import torch
from torch import Tensor, nn

from ..sparsity import magnitude_mask
from .base import SparsityMethod, register_method

__all__ = ['ASP']


@register_method
class ASP(SparsityMethod):
    """NVIDIA ASP's one-shot magnitude pruning, then training with the mask fixed."""

    name = 'asp'
    label = 'ASP'
    state_keys = ('asp_mask', )
    operations = ('set_asp_mask', )

    def __init__(self, layer: nn.Module, **options) -> None:
        super().__init__(layer, **options)
        #: ``asp_mask`` holds the fixed mask (set, or loaded from a checkpoint).
        self.mask_fixed = False

    def init_state(self) -> None:
        layer = self.layer
        layer.register_buffer('asp_mask', torch.ones(layer.weight.shape,
                                                     dtype=torch.bool,
                                                     device=layer.weight.device))

    def mask(self) -> Tensor:
        layer = self.layer
        if self.mask_fixed:
            return layer.asp_mask.clone()
        return magnitude_mask(layer.weight, layer.n, layer.m)

    def masked_weight(self) -> Tensor:
        layer = self.layer
        weight = layer.weight
        if not self.mask_fixed:  # fixed at the first training forward
            if not layer.training:
                return weight * magnitude_mask(weight, layer.n, layer.m)
            self.set_asp_mask()
        return weight * layer.asp_mask

    def set_asp_mask(self) -> None:
        """Fix the mask to the magnitude mask of the current weight.

        Raises:
            RuntimeError: The layer stayed dense (no mask to fix).
        """
        layer = self.layer
        if not layer.is_sparse:
            raise RuntimeError(f'{layer.describe()}: set_asp_mask() needs a sparse '
                               f'layer')
        with torch.no_grad():
            layer.asp_mask.copy_(magnitude_mask(layer.weight, layer.n, layer.m))
        self.mask_fixed = True

    def after_load(self, state_dict: dict, prefix: str, missing_keys: list) -> None:
        key = prefix + 'asp_mask'
        if key in state_dict:
            self.mask_fixed = True
        elif prefix + 'weight' in state_dict:
            # Dense pretrained checkpoint: fix the mask from the loaded weight.
            self.set_asp_mask()
            if key in missing_keys:
                missing_keys.remove(key)
