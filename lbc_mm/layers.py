"""N:M sparse ``Conv2d`` and ``Linear`` layers; the method is a pluggable part.

Registered in mmengine's root ``MODELS``, so ``conv_cfg=dict(type='NMSparseConv',
n=2, m=4)`` works from ``mmdet`` and ``mmpretrain`` scopes wherever mmcv's
``build_conv_layer`` is used. A layer keeps the ``nn`` plumbing (forward, weight,
divisibility rule, ``from_dense`` / ``to_dense``, checkpoint loading); what the
method decides lives in ``layer.sparsity`` (:mod:`lbc_mm.methods`). Model-level
helpers: :mod:`lbc_mm.sparse_model`.
"""
from typing import Any, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.registry import MODELS
from torch import Tensor, nn

from .methods import METHODS, build_method, check_sparsity_args

__all__ = [
    'NMSparseConv',
    'NMSparseLinear',
    'divisibility_problem',
    'sparse_layers',
]


def divisibility_problem(shape: Sequence[int], n: int, m: int) -> Optional[str]:
    """Why a weight of ``shape`` cannot be ``n:m`` sparse (its grouped axis,
    ``shape[1]``, is not a multiple of ``m``), or None when it can."""
    cin = int(shape[1])
    if cin % m == 0:
        return None
    return (f'weight {tuple(shape)} has {cin} input channels, not a multiple of '
            f'M={m}, so it cannot be {n}:{m} sparse')


class _NMSparseMixin:
    """Shared N:M plumbing of :class:`NMSparseConv` and :class:`NMSparseLinear`
    (``self`` is the ``nn.Conv2d`` / ``nn.Linear``)."""

    weight: nn.Parameter

    def _init_sparsity(self, n: int, m: int, method: str, strict: bool,
                       options: dict) -> None:
        where = (f'{type(self).__name__} weight {tuple(self.weight.shape)} '
                 f'pattern {n}:{m}')
        try:
            check_sparsity_args(n, m, method, **options)
            #: The method object (:mod:`lbc_mm.methods`), bound to this layer.
            self.sparsity = build_method(method, self, **options)
        except ValueError as err:
            raise ValueError(f'{where}: {err}') from err
        self.n = n
        self.m = m
        self.strict = strict
        #: Module name, set by ``sparse_model.name_sparse_layers`` (log lines).
        self.layer_name: Optional[str] = None
        problem = divisibility_problem(self.weight.shape, n, m)
        self.is_sparse = problem is None
        if not self.is_sparse:
            msg = f'{type(self).__name__} {problem}'
            if strict:
                raise ValueError(msg)
            print_log(msg + '; it stays dense', logger='current')
            return
        self.sparsity.init_state()

    # -- introspection -------------------------------------------------------
    @property
    def method(self) -> str:
        """The sparsity method's name (``'lbc'``, ``'srste'``, ``'ste'``, ``'asp'``)."""
        return self.sparsity.name

    @property
    def num_groups(self) -> int:
        """Groups of ``m`` weights, ``G = weight.numel() / m``."""
        return self.weight.numel() // self.m

    def describe(self) -> str:
        """One line naming the layer, its weight shape, pattern and method."""
        name = f' {self.layer_name!r}' if self.layer_name else ''
        dense = '' if self.is_sparse else ' (dense: channels not divisible by M)'
        return (f'{type(self).__name__}{name} weight {tuple(self.weight.shape)} '
                f'{self.n}:{self.m} {self.method}{dense}')

    def get_mask(self) -> Tensor:
        """Current binary mask (bool, in ``weight.shape``; all ones when dense)."""
        weight = self.weight
        if not self.is_sparse:
            return torch.ones(weight.shape, dtype=torch.bool, device=weight.device)
        return self.sparsity.mask()

    def sparse_weight(self) -> Tensor:
        """The effective (masked) weight used by ``forward``."""
        if not self.is_sparse:
            return self.weight
        return self.sparsity.masked_weight()

    # -- checkpoints ---------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        self._check_loaded_state(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)
        if self.is_sparse:
            self.sparsity.after_load(state_dict, prefix, missing_keys)

    def _check_loaded_state(self, state_dict, prefix: str) -> None:
        """``ValueError`` for a checkpoint whose mask this layer would drop.

        A non-strict load (``init_cfg`` Pretrained, ``load_from``) only warns about
        unexpected keys and size mismatches: another method's mask state, or state
        of another shape, would silently leave another mask than the checkpoint's.
        """
        where = f'{self.describe()} loading {prefix or "<root>"}'
        for cls in METHODS.values():
            if self.is_sparse and isinstance(self.sparsity, cls):
                continue
            held = [key for key in cls.state_keys if prefix + key in state_dict]
            if held:
                raise ValueError(
                    f'{where}: the checkpoint holds an {cls.label} layer '
                    f'({", ".join(held)}), whose mask this layer would drop. Load it '
                    f'into method={cls.name!r} layers with the same N:M pattern')
        if self.is_sparse:
            self.sparsity.check_load(state_dict, prefix, where)

    # -- conversion ----------------------------------------------------------
    @classmethod
    def from_dense(cls, layer: nn.Module, n: int = 2, m: int = 4,
                   method: str = 'lbc', strict: bool = False,
                   **options: Any) -> '_NMSparseMixin':
        """The sparse twin of a stock layer, sharing its ``weight`` / ``bias``.

        Args:
            layer (nn.Module): ``nn.Conv2d`` (for :class:`NMSparseConv`) or
                ``nn.Linear`` (for :class:`NMSparseLinear`).
            n, m, method, strict: As the constructor (and ``**options``).

        Returns:
            The new layer: same hyper-parameters, device, dtype, train/eval mode
            and the same Parameter objects (state-dict keys and references stay).
        """
        factory = dict(device=layer.weight.device, dtype=layer.weight.dtype)
        new = cls(*cls._dense_args(layer), n=n, m=m, method=method, strict=strict,
                  **factory, **options)
        new.weight = layer.weight
        new.bias = layer.bias
        new.train(layer.training)
        return new

    def to_dense(self) -> nn.Module:
        """A stock ``nn.Conv2d`` / ``nn.Linear`` holding the masked weight.

        Returns:
            nn.Module: same hyper-parameters, device, dtype and train/eval mode;
            its weight is ``mask * weight`` (a copy).
        """
        w = self.weight
        new = self._dense_type(*self._dense_args(self), device=w.device,
                               dtype=w.dtype)
        with torch.no_grad():
            new.weight.copy_(w * self.get_mask().to(w.dtype))
            if self.bias is not None:
                new.bias.copy_(self.bias)
        new.train(self.training)
        return new

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, n={self.n}, m={self.m}, '
                f'method={self.method!r}' + ('' if self.is_sparse else ', dense'))


@MODELS.register_module()
class NMSparseConv(_NMSparseMixin, nn.Conv2d):
    """``nn.Conv2d`` with an N:M sparse weight, grouped along input channels.

    ``nn.Conv2d``'s arguments come first (positional too), then:

    Args:
        n (int): Kept weights per group. Defaults to 2.
        m (int): Group size. Defaults to 4.
        method (str): ``'lbc'``, ``'srste'``, ``'ste'`` or ``'asp'``.
            Defaults to 'lbc'.
        strict (bool): Raise instead of staying dense when ``in/groups`` is not
            a multiple of ``m``. Defaults to False.
        **options: The method's options (:mod:`lbc_mm.methods`), e.g.
            ``srste_lambda`` (``'srste'``, 2e-4) or ``tie_break`` (``'lbc'``,
            ``'magnitude'``); another method's option is a ``ValueError``.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size,
                 stride=1,
                 padding=0,
                 dilation=1,
                 groups: int = 1,
                 bias: bool = True,
                 padding_mode: str = 'zeros',
                 device=None,
                 dtype=None,
                 *,
                 n: int = 2,
                 m: int = 4,
                 method: str = 'lbc',
                 strict: bool = False,
                 **options: Any) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding,
                         dilation, groups, bias, padding_mode, device, dtype)
        self._init_sparsity(n, m, method, strict, options)

    _dense_type = nn.Conv2d

    @staticmethod
    def _dense_args(layer: nn.Conv2d) -> tuple:
        return (layer.in_channels, layer.out_channels, layer.kernel_size,
                layer.stride, layer.padding, layer.dilation, layer.groups,
                layer.bias is not None, layer.padding_mode)

    def forward(self, input: Tensor) -> Tensor:
        """Convolution with the masked weight."""
        return self._conv_forward(input, self.sparse_weight(), self.bias)


@MODELS.register_module()
class NMSparseLinear(_NMSparseMixin, nn.Linear):
    """``nn.Linear`` with an N:M sparse weight, grouped along input features.

    ``nn.Linear``'s arguments first, then ``n``, ``m``, ``method``, ``strict`` and
    ``**options`` as :class:`NMSparseConv`.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 bias: bool = True,
                 device=None,
                 dtype=None,
                 *,
                 n: int = 2,
                 m: int = 4,
                 method: str = 'lbc',
                 strict: bool = False,
                 **options: Any) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self._init_sparsity(n, m, method, strict, options)

    _dense_type = nn.Linear

    @staticmethod
    def _dense_args(layer: nn.Linear) -> tuple:
        return layer.in_features, layer.out_features, layer.bias is not None

    def forward(self, input: Tensor) -> Tensor:
        """Linear map with the masked weight."""
        return F.linear(input, self.sparse_weight(), self.bias)


SparseLayer = (NMSparseConv, NMSparseLinear)

# The stock twins by config name, so a config can switch a layer back to dense
# (the method study's dense runs): mmcv registers 'Conv2d' but not 'Linear'.
if 'Linear' not in MODELS.module_dict:
    MODELS.register_module('Linear', module=nn.Linear)


def sparse_layers(model: nn.Module,
                  only_sparse: bool = True) -> Iterator[Tuple[str, _NMSparseMixin]]:
    """Yield ``(name, layer)`` for the N:M layers of a model.

    Args:
        model (nn.Module): Any model (DDP wrappers are fine: names then start
            with ``module.``).
        only_sparse (bool): Skip layers that stayed dense. Defaults to True.
    """
    for name, module in model.named_modules():
        if isinstance(module, SparseLayer) and (module.is_sparse or not only_sparse):
            yield name, module
