"""N:M sparse ``Conv2d`` and ``Linear`` layers (LBC, SR-STE, STE, ASP).

Both are registered in mmengine's root ``MODELS`` registry, so
``conv_cfg=dict(type='NMSparseConv', n=2, m=4)`` works from ``mmdet`` and
``mmpretrain`` scopes wherever mmcv's ``build_conv_layer`` is used (it calls
``layer(*args, **kwargs, **cfg)`` with the ``nn.Conv2d`` positional arguments).

Methods (docs/method.md):

- ``'lbc'``: learnable candidate ``scores`` ``(G, C)`` and an ``alive`` buffer;
  ``LBCHook`` drives the removal through :meth:`remove_candidates`.
- ``'srste'`` / ``'ste'``: magnitude mask every forward, SR-STE backward with
  ``srste_lambda`` (2e-4; STE is 0).
- ``'asp'``: magnitude mask fixed once (first training forward, or when a dense
  checkpoint without ``asp_mask`` is loaded).

A layer whose grouped axis (``in/groups`` or ``in_features``) is not a multiple of
``m`` stays dense (``is_sparse = False``, one log line), or raises a ``ValueError``
with ``strict=True`` (:func:`divisibility_problem`, the one rule).

The layers own their state changes (:meth:`~_NMSparseMixin.remove_candidates`,
``keep_magnitude_candidates``, ``freeze_scores``, ``set_asp_mask``) and convert
from and to stock layers (``from_dense`` / ``to_dense``, torchao's shape).
:func:`sparse_layers` finds them in a model; the other model-level helpers
(``lbc_layers``, ``nm_report``, ``set_submodule``, ...) are :mod:`lbc_mm.sparse_model`.
"""
import sys
from typing import Any, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.registry import MODELS
from torch import Tensor, nn

from .sparsity import (
    TIE_BREAKS,
    LBCMaskFunction,
    candidate_magnitude,
    candidate_matrix,
    init_scores,
    lbc_mask,
    magnitude_mask,
    removal_step,
    srste_masked_weight,
    to_groups,
    validate_pattern,
)

__all__ = [
    'METHODS',
    'NMSparseConv',
    'NMSparseLinear',
    'check_sparsity_args',
    'divisibility_problem',
    'sparse_layers',
]

#: Supported sparsity methods.
METHODS = ('lbc', 'srste', 'ste', 'asp')
_SRSTE_DEFAULT_LAMBDA = 2e-4


def check_sparsity_args(n: int, m: int, method: str,
                        srste_lambda: Optional[float] = None,
                        tie_break: str = 'magnitude') -> None:
    """The rules for a sparse layer's N:M arguments (the layers and
    :mod:`lbc_mm.config_check` both use them).

    Raises:
        ValueError: An invalid pattern, an unknown method or an ``srste_lambda``
            the method does not take; the message names the argument.
    """
    validate_pattern(n, m)
    if method not in METHODS:
        raise ValueError(f'unknown method {method!r}, expected one of {METHODS}')
    if method in ('lbc', 'asp') and srste_lambda is not None:
        raise ValueError(f'srste_lambda does not apply to method {method!r}')
    if method == 'ste' and srste_lambda not in (None, 0, 0.0):
        raise ValueError(f'STE is SR-STE with srste_lambda=0, got {srste_lambda}')
    if srste_lambda is not None and srste_lambda < 0:
        raise ValueError(f'srste_lambda must be >= 0, got {srste_lambda}')
    if tie_break not in TIE_BREAKS:
        raise ValueError(f'unknown tie_break {tie_break!r}, expected one of '
                         f'{TIE_BREAKS}')


def divisibility_problem(shape: Sequence[int], n: int, m: int) -> Optional[str]:
    """Why a weight of ``shape`` cannot be ``n:m`` sparse, or None when it can.

    The grouped axis (``in/groups`` of a conv, ``in_features`` of a linear,
    ``shape[1]``) must be a multiple of ``m``.
    """
    cin = int(shape[1])
    if cin % m == 0:
        return None
    return (f'weight {tuple(shape)} has {cin} input channels, not a multiple of '
            f'M={m}, so it cannot be {n}:{m} sparse')


class _NMSparseMixin:
    """Shared N:M state and behaviour of :class:`NMSparseConv` and
    :class:`NMSparseLinear` (``self`` is the ``nn.Conv2d`` / ``nn.Linear``)."""

    weight: nn.Parameter

    def _init_sparsity(self, n: int, m: int, method: str, strict: bool,
                       srste_lambda: Optional[float],
                       tie_break: str = 'magnitude') -> None:
        where = (f'{type(self).__name__} weight {tuple(self.weight.shape)} '
                 f'pattern {n}:{m}')
        try:
            check_sparsity_args(n, m, method, srste_lambda, tie_break)
        except ValueError as err:
            raise ValueError(f'{where}: {err}') from err
        self.tie_break = tie_break  # (LBC) removal_step ties; not in checkpoints
        self.n = n
        self.m = m
        self.method = method
        self.strict = strict
        self.srste_lambda = (0.0 if method == 'ste' else
                             _SRSTE_DEFAULT_LAMBDA if srste_lambda is None else
                             float(srste_lambda))
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
        factory = dict(device=self.weight.device)
        num_groups = self.weight.numel() // m
        if method == 'lbc':
            # (G, C) learnable scores; removed candidates are exactly 0.
            self.scores = nn.Parameter(
                init_scores(num_groups, n, m, dtype=self.weight.dtype, **factory))
            self.register_buffer(
                'alive', torch.ones(self.scores.shape, dtype=torch.bool, **factory))
            # (C, m) candidate matrix, rebuilt from (n, m): not in checkpoints.
            self.register_buffer(
                'candidates',
                candidate_matrix(n, m, dtype=self.weight.dtype, **factory),
                persistent=False)
            self._card_cache: Optional[tuple] = None
            self._mask_cache: Optional[tuple] = None
            #: Who removes the candidates (``'LBCHook'`` once it attached at
            #: ``before_train``); see :meth:`_check_driven`.
            self.lbc_driver: Optional[str] = None
            #: The last load gave this layer dense weights without LBC state.
            self.loaded_dense = False
        elif method == 'asp':
            self.register_buffer('asp_mask', torch.ones(self.weight.shape,
                                                        dtype=torch.bool, **factory))
            self._asp_ready = False

    # -- introspection -------------------------------------------------------
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
        if self.method == 'lbc':
            return lbc_mask(self.scores, self.candidates, weight.shape, self.alive)
        if self.method == 'asp':
            if self._asp_ready:
                return self.asp_mask.clone()
            return magnitude_mask(weight, self.n, self.m)
        return magnitude_mask(weight, self.n, self.m)

    def sparse_weight(self) -> Tensor:
        """The effective (masked) weight used by ``forward``."""
        weight = self.weight
        if not self.is_sparse:
            return weight
        if self.method == 'lbc':
            return self._lbc_weight(weight)
        if self.method in ('srste', 'ste'):
            return srste_masked_weight(weight, self.n, self.m, self.srste_lambda)
        # ASP: fix the magnitude mask at the first training forward.
        if not self._asp_ready:
            if not self.training:
                return weight * magnitude_mask(weight, self.n, self.m)
            self.set_asp_mask()
        return weight * self.asp_mask

    def _lbc_weight(self, weight: Tensor) -> Tensor:
        # The mask depends on `alive` only: cache it in the weight's dtype (which
        # multiplies fastest) until `alive` changes. Any in-place update (removal,
        # load_state_dict, an EMA hook copying it) bumps the tensor's version
        # counter; a device move replaces the tensor.
        if self.training and self.lbc_driver is None and torch.is_grad_enabled():
            self._check_driven()
        alive = self.alive
        key = (alive._version, alive.data_ptr(), weight.dtype, weight.device)
        if self._mask_cache is None or self._mask_cache[0] != key:
            mask = lbc_mask(self.scores, self.candidates, weight.shape, alive)
            self._mask_cache = (key, mask.to(weight.dtype))
        # The score gradient skips the `* alive` factor only when every candidate of
        # every group is alive: groups may differ in alive count (a hand-edited or
        # partially loaded checkpoint), and removed candidates must get no gradient.
        return LBCMaskFunction.apply(weight, self.scores, self.candidates,
                                     None if self._all_alive() else alive,
                                     self._mask_cache[1])

    def _check_driven(self) -> None:
        """Fail when this LBC layer trains inside an mmengine Runner without an
        ``LBCHook``: nothing would remove its candidates and the run would end dense.

        Outside a Runner (a hand-written loop, a unit test) the caller drives
        :meth:`remove_candidates` itself, so the layer trains as told.

        Raises:
            RuntimeError: One line naming the layer, the cause and the fix.
        """
        if self._current_card() == 1:  # already N:M: nothing left to remove
            return
        runner = _training_runner()
        if runner is None:
            return
        model = getattr(runner.model, 'module', runner.model)
        names = [name for name, layer in sparse_layers(model)
                 if layer.method == 'lbc']
        name = next((n for n, layer in sparse_layers(model) if layer is self),
                    self.layer_name or '?')
        raise RuntimeError(
            f'LBC layer {name} (1 of {len(names)}) trains in a Runner without an '
            f'LBCHook, so its candidates would never be removed and the run would '
            f"end dense; the usual cause: a child config's custom_hooks replaces "
            f"its base's list (mmengine replaces lists), dropping the base's "
            f"LBCHook; fix: add dict(type='LBCHook', ...) to the child's "
            f'custom_hooks too')

    def _alive_counts(self) -> Tuple[int, bool]:
        """(max alive candidates per group, every candidate alive), cached per
        version of ``alive``."""
        alive = self.alive
        key = (alive._version, alive.data_ptr())
        if self._card_cache is None or self._card_cache[0] != key:
            self._card_cache = (key, int(alive.sum(dim=1).max()), bool(alive.all()))
        return self._card_cache[1], self._card_cache[2]

    def _current_card(self) -> int:
        """Alive candidates per group (the max over groups), cached per version."""
        return self._alive_counts()[0]

    def _all_alive(self) -> bool:
        """Whether every candidate of every group is alive (cached per version)."""
        return self._alive_counts()[1]

    def _alive_changed(self) -> None:
        self._card_cache = None
        self._mask_cache = None

    # -- ASP -----------------------------------------------------------------
    def set_asp_mask(self) -> None:
        """(ASP) Fix the mask to the magnitude mask of the current weight."""
        if self.method != 'asp' or not self.is_sparse:
            raise RuntimeError(f'{self.describe()}: set_asp_mask() needs a sparse ASP '
                               f'layer')
        with torch.no_grad():
            self.asp_mask.copy_(magnitude_mask(self.weight, self.n, self.m))
        self._asp_ready = True

    # -- LBC -----------------------------------------------------------------
    @property
    def num_alive(self) -> Optional[Tensor]:
        """(LBC) Alive candidates per group, ``(G,)`` long; None otherwise."""
        if self.method != 'lbc' or not self.is_sparse:
            return None
        return self.alive.sum(dim=1)

    def remove_candidates(self, keep: int) -> None:
        """(LBC) Keep the ``keep`` best candidates per group (docs/method.md §6).

        Removed candidates stay removed; their scores are re-zeroed on every call
        (momentum may have moved them). A no-op for non-LBC or dense layers.

        Args:
            keep (int): ``card(t)``; clipped to ``[1, C]``.

        Raises:
            FloatingPointError: An alive score is not finite (names the layer).
        """
        if self.method != 'lbc' or not self.is_sparse:
            return
        num_c = self.scores.shape[1]
        keep = max(1, min(int(keep), num_c))
        card_now = self._current_card()
        if keep < card_now:
            magnitude = (candidate_magnitude(to_groups(self.weight, self.m),
                                             self.candidates)
                         if self.tie_break == 'magnitude' else None)  # (G, C)
            try:
                removal_step(self.scores.data, self.alive, keep, magnitude)
            except FloatingPointError as err:
                raise FloatingPointError(f'{self.describe()}: {err}') from err
            self._alive_changed()
        elif not self._all_alive() and self.scores.requires_grad:
            # (Frozen scores get no gradient, so no optimizer moves them.)
            with torch.no_grad():
                self.scores.masked_fill_(~self.alive, 0.0)

    def keep_magnitude_candidates(self) -> None:
        """(LBC) Jump to the end state with the magnitude (ASP) choice.

        Every group keeps exactly the one candidate equal to the magnitude mask of
        the current weight (``LBCHook(frozen_layers='asp')`` for layers whose
        weights are frozen); its score becomes 1, the others 0.
        """
        if self.method != 'lbc' or not self.is_sparse:
            return
        with torch.no_grad():
            keep = to_groups(magnitude_mask(self.weight, self.n, self.m),
                             self.m).to(self.scores.dtype)  # (G, m), n ones per row
            cands = self.candidates.to(self.scores.dtype)  # (C, m)
            match = (keep @ cands.t()) == self.n  # (G, C), one True per row
            # Rank the magnitude candidate first; the removal step keeps it.
            self.scores.copy_(match.to(self.scores.dtype))
            self.alive.fill_(True)
        self._alive_changed()
        self.remove_candidates(1)

    def alive_checksum(self) -> Tensor:
        """(LBC) Order-sensitive float64 checksum of ``alive`` (exact < 2**53).

        Returns:
            Tensor: ``(2,)``, equal on two layers iff (practically) the same
            candidates are alive.
        """
        flat = self.alive.flatten().to(torch.float64)  # (G*C,)
        index = torch.arange(1, flat.numel() + 1, dtype=torch.float64,
                             device=flat.device)
        return torch.stack([flat.sum(), flat @ index])  # (2,)

    def freeze_scores(self) -> None:
        """(LBC) Stop learning the scores (``requires_grad=False``, grad dropped)."""
        if self.method != 'lbc' or not self.is_sparse:
            return
        self.scores.requires_grad_(False)
        self.scores.grad = None

    # -- checkpoints ---------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        self._check_loaded_mask(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)
        if not self.is_sparse:
            return
        if self.method == 'lbc':
            key = prefix + 'alive'
            has_scores = prefix + 'scores' in state_dict
            if key not in state_dict and has_scores:
                # Scores without `alive` (hand-made checkpoint): removed == 0.
                with torch.no_grad():
                    self.alive.copy_(self.scores != 0)
                if key in missing_keys:
                    missing_keys.remove(key)
            self.loaded_dense = (not has_scores and key not in state_dict
                                 and prefix + 'weight' in state_dict)
            if self.loaded_dense:
                self._init_from_dense(prefix, missing_keys)
            self._alive_changed()
        elif self.method == 'asp':
            key = prefix + 'asp_mask'
            if key in state_dict:
                self._asp_ready = True
            elif prefix + 'weight' in state_dict:
                # Dense pretrained checkpoint: fix the mask from the loaded weight.
                self.set_asp_mask()
                if key in missing_keys:
                    missing_keys.remove(key)

    def _init_from_dense(self, prefix: str, missing_keys: list) -> None:
        """(LBC) Dense weights without LBC state loaded (a model-zoo checkpoint):
        the LBC state starts afresh (initial scores, every candidate alive), which
        is not a missing key; ``LBCHook`` reports these layers in one line."""
        with torch.no_grad():
            self.scores.copy_(init_scores(self.scores.shape[0], self.n, self.m,
                                          dtype=self.scores.dtype,
                                          device=self.scores.device))
            self.alive.fill_(True)
        for key in ('scores', 'alive'):
            if prefix + key in missing_keys:
                missing_keys.remove(prefix + key)

    def _check_loaded_mask(self, state_dict, prefix: str) -> None:
        """Refuse a checkpoint whose mask this layer would silently drop.

        A non-strict load (``init_cfg`` Pretrained, ``load_from``) only warns about
        unexpected keys and size mismatches; for the mask state that would leave a
        layer with another mask than the checkpoint's (e.g. an LBC backbone's
        chosen candidates replaced by a magnitude mask, or by all candidates).

        Raises:
            ValueError: The checkpoint holds LBC ``scores`` / ``alive`` and this
                layer is not LBC, holds an ``asp_mask`` and this layer is not ASP,
                or its mask state has another shape (another N:M pattern).
        """
        has_lbc = [k for k in ('scores', 'alive') if prefix + k in state_dict]
        has_asp = prefix + 'asp_mask' in state_dict
        where = f'{self.describe()} loading {prefix or "<root>"}'
        if has_lbc and (self.method != 'lbc' or not self.is_sparse):
            raise ValueError(
                f'{where}: the checkpoint holds an LBC layer ({", ".join(has_lbc)}), '
                f'whose mask is its alive candidates; this layer would drop them. '
                f"Load it into method='lbc' layers with the same N:M pattern")
        if has_asp and (self.method != 'asp' or not self.is_sparse):
            raise ValueError(
                f'{where}: the checkpoint holds an ASP layer (asp_mask); this layer '
                f"would drop its mask. Load it into method='asp' layers with the "
                f'same N:M pattern')
        theirs = state_dict.get(prefix + 'weight')
        if (self.method == 'lbc' and self.is_sparse and not has_lbc
                and theirs is not None and tuple(theirs.shape) != tuple(
                    self.weight.shape)):
            raise ValueError(
                f'{where}: dense checkpoint weight has shape {tuple(theirs.shape)}, '
                f'this layer needs {tuple(self.weight.shape)} (another model?)')
        for key in ('scores', 'alive', 'asp_mask'):
            own = getattr(self, key, None)
            theirs = state_dict.get(prefix + key)
            if (own is not None and theirs is not None
                    and tuple(theirs.shape) != tuple(own.shape)):
                raise ValueError(
                    f'{where}: checkpoint {key} has shape {tuple(theirs.shape)}, this '
                    f'layer needs {tuple(own.shape)} (another N:M pattern?)')

    # -- conversion ----------------------------------------------------------
    @classmethod
    def from_dense(cls, layer: nn.Module, n: int = 2, m: int = 4,
                   method: str = 'lbc', strict: bool = False,
                   **opts: Any) -> '_NMSparseMixin':
        """The sparse twin of a stock layer, sharing its ``weight`` / ``bias``.

        Args:
            layer (nn.Module): ``nn.Conv2d`` (for :class:`NMSparseConv`) or
                ``nn.Linear`` (for :class:`NMSparseLinear`).
            n, m, method, strict, **opts: As the constructor.

        Returns:
            The new layer: same hyper-parameters, device, dtype, train/eval mode
            and the same Parameter objects (state-dict keys and references stay).
        """
        factory = dict(device=layer.weight.device, dtype=layer.weight.dtype)
        new = cls(*cls._dense_args(layer), n=n, m=m, method=method, strict=strict,
                  **factory, **opts)
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

    def _sparse_extra_repr(self) -> str:
        return f'n={self.n}, m={self.m}, method={self.method!r}' + (
            '' if self.is_sparse else ', dense')


@MODELS.register_module()
class NMSparseConv(_NMSparseMixin, nn.Conv2d):
    """``nn.Conv2d`` with an N:M sparse weight, grouped along input channels.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
            bias, padding_mode, device, dtype: As ``nn.Conv2d`` (positional too).
        n (int): Kept weights per group. Defaults to 2.
        m (int): Group size. Defaults to 4.
        method (str): ``'lbc'``, ``'srste'``, ``'ste'`` or ``'asp'``.
            Defaults to 'lbc'.
        strict (bool): Raise instead of staying dense when ``in/groups`` is not
            a multiple of ``m``. Defaults to False.
        srste_lambda (float, optional): SR-STE ``lambda_w``; 2e-4 for
            ``'srste'``, 0 for ``'ste'``; not allowed for other methods.
            Defaults to None.
        tie_break (str): (LBC) Which alive candidates with exactly equal scores
            a removal step keeps: ``'magnitude'`` (larger summed ``|w|``, then
            the lower index) or ``'index'`` (the lower index). Defaults to
            'magnitude'.
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
                 srste_lambda: Optional[float] = None,
                 tie_break: str = 'magnitude') -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding,
                         dilation, groups, bias, padding_mode, device, dtype)
        self._init_sparsity(n, m, method, strict, srste_lambda, tie_break)

    _dense_type = nn.Conv2d

    @staticmethod
    def _dense_args(layer: nn.Conv2d) -> tuple:
        return (layer.in_channels, layer.out_channels, layer.kernel_size,
                layer.stride, layer.padding, layer.dilation, layer.groups,
                layer.bias is not None, layer.padding_mode)

    def forward(self, input: Tensor) -> Tensor:
        """Convolution with the masked weight."""
        return self._conv_forward(input, self.sparse_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + ', ' + self._sparse_extra_repr()


@MODELS.register_module()
class NMSparseLinear(_NMSparseMixin, nn.Linear):
    """``nn.Linear`` with an N:M sparse weight, grouped along input features.

    Args:
        in_features, out_features, bias, device, dtype: As ``nn.Linear``.
        n, m, method, strict, srste_lambda, tie_break: As :class:`NMSparseConv`.
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
                 srste_lambda: Optional[float] = None,
                 tie_break: str = 'magnitude') -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self._init_sparsity(n, m, method, strict, srste_lambda, tie_break)

    _dense_type = nn.Linear

    @staticmethod
    def _dense_args(layer: nn.Linear) -> tuple:
        return layer.in_features, layer.out_features, layer.bias is not None

    def forward(self, input: Tensor) -> Tensor:
        """Linear map with the masked weight."""
        return F.linear(input, self.sparse_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + ', ' + self._sparse_extra_repr()


SparseLayer = (NMSparseConv, NMSparseLinear)


def _training_runner():
    """The mmengine ``Runner`` / ``FlexibleRunner`` whose ``train()`` is on the
    call stack (subclasses included), or None."""
    from mmengine.runner import FlexibleRunner, Runner
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == 'train':
            owner = frame.f_locals.get('self')
            if isinstance(owner, (Runner, FlexibleRunner)):
                return owner
        frame = frame.f_back
    return None


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
