"""LBC bound to a layer (docs/method.md); the math is :mod:`lbc_mm.sparsity.lbc`.

State on the layer: ``scores`` ``(G, C)`` (a Parameter, removed candidates exactly
0) and ``alive`` ``(G, C)`` bool, both in checkpoints; ``candidates`` ``(C, m)``
(not persistent). ``LBCHook`` calls :meth:`LBC.remove_candidates`.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..sparsity import (
    TIE_BREAKS,
    LBCMaskFunction,
    candidate_magnitude,
    candidate_matrix,
    init_scores,
    lbc_mask,
    magnitude_mask,
    num_candidates,
    removal_step,
    to_groups,
)
from .base import Requirements, SparsityMethod, register_method

__all__ = ['LBC']


@register_method
class LBC(SparsityMethod):
    """Learning Best Combination.

    Options:
        tie_break (str): Which alive candidates with exactly equal scores a
            removal step keeps: ``'magnitude'`` (larger summed ``|w|``, then the
            lower index) or ``'index'`` (the lower index). Defaults to
            'magnitude'. Not in checkpoints.
    """

    name = 'lbc'
    label = 'LBC'
    options = {'tie_break': 'magnitude'}
    gradual = True  # dense -> N:M as LBCHook removes candidates
    state_keys = ('scores', 'alive')
    operations = ('remove_candidates', 'keep_magnitude_candidates', 'freeze_scores',
                  'unfreeze_scores', 'alive_checksum', 'num_alive', 'num_candidates',
                  'current_card')
    requires = Requirements(
        hook='LBCHook', constructor='LBCOptimWrapperConstructor',
        duty='removes their candidates', without='the run would end dense')

    tie_break: str

    def __init__(self, layer: nn.Module, **options) -> None:
        super().__init__(layer, **options)
        self._card_cache: Optional[tuple] = None
        self._mask_cache: Optional[tuple] = None
        #: ``'LBCHook'`` once it took the layer over (:meth:`check_driven`).
        self.driver: Optional[str] = None
        #: The mmengine run training when the layer was built.
        self.built_during = training_run()
        #: The last load gave this layer dense weights without LBC state.
        self.loaded_dense = False

    @classmethod
    def check_options(cls, options) -> None:
        if options['tie_break'] not in TIE_BREAKS:
            raise ValueError(f'unknown tie_break {options["tie_break"]!r}, expected '
                             f'one of {TIE_BREAKS}')

    # -- state and forward ----------------------------------------------------
    def init_state(self) -> None:
        layer = self.layer
        weight, n, m = layer.weight, layer.n, layer.m
        layer.scores = nn.Parameter(
            init_scores(weight.numel() // m, n, m, dtype=weight.dtype,
                        device=weight.device))
        layer.register_buffer(
            'alive', torch.ones(layer.scores.shape, dtype=torch.bool,
                                device=weight.device))
        layer.register_buffer(
            'candidates', candidate_matrix(n, m, dtype=weight.dtype,
                                           device=weight.device),
            persistent=False)

    def mask(self) -> Tensor:
        layer = self.layer
        return lbc_mask(layer.scores, layer.candidates, layer.weight.shape,
                        layer.alive)

    def masked_weight(self) -> Tensor:
        # The mask depends on `alive` only: cached in the weight's dtype until an
        # in-place update bumps alive's version or a device move replaces it.
        layer = self.layer
        weight = layer.weight
        if self.driver is None and torch.is_grad_enabled():
            self.check_driven()
        alive = layer.alive
        key = (alive._version, alive.data_ptr(), weight.dtype, weight.device)
        if self._mask_cache is None or self._mask_cache[0] != key:
            self._mask_cache = (key, self.mask().to(weight.dtype))
        # The score gradient skips `* alive` only when every candidate is alive
        # (docs/method.md §4).
        return LBCMaskFunction.apply(weight, layer.scores, layer.candidates,
                                     None if self._alive_counts()[1] else alive,
                                     self._mask_cache[1])

    def check_driven(self) -> None:
        """``RuntimeError`` (layer, cause, fix) when this unfinished layer computes
        gradients in an mmengine run without an ``LBCHook``: it would end dense.

        A hand-written loop (no run, or the run that built the layer) drives
        :meth:`remove_candidates` itself.
        """
        if self.current_card() == 1:  # already N:M: nothing left to remove
            return
        run = training_run()
        if run is None or run == self.built_during:
            return
        req = self.requires
        raise RuntimeError(
            f'{self.layer.describe()} trains in an mmengine run without '
            f'an {req.hook}, so its candidates would never be removed and '
            f"{req.without}; the usual cause: a child config's custom_hooks "
            f"replaces its base's list (mmengine replaces lists), dropping the "
            f"base's {req.hook}; fix: add dict(type='{req.hook}', ...) to the "
            f"child's custom_hooks too")

    def _alive_counts(self) -> Tuple[int, bool]:
        """(max alive per group, every candidate alive), cached per ``alive``."""
        alive = self.layer.alive
        key = (alive._version, alive.data_ptr())
        if self._card_cache is None or self._card_cache[0] != key:
            self._card_cache = (key, int(alive.sum(dim=1).max()), bool(alive.all()))
        return self._card_cache[1], self._card_cache[2]

    def _alive_changed(self) -> None:
        self._card_cache = None
        self._mask_cache = None

    # -- operations -------------------------------------------------------------
    @property
    def num_candidates(self) -> int:
        """Candidates per group, ``C = C(m, n)`` (6 for 2:4)."""
        return num_candidates(self.layer.n, self.layer.m)

    @property
    def num_alive(self) -> Optional[Tensor]:
        """Alive candidates per group, ``(G,)`` long; None for a dense layer."""
        return self.layer.alive.sum(dim=1) if self.layer.is_sparse else None

    def current_card(self) -> int:
        """Alive candidates per group (the max over groups), cached per version."""
        return self._alive_counts()[0]

    def remove_candidates(self, keep: int, margin: Optional[float] = None) -> None:
        """Keep the ``keep`` best candidates per group (``removal_step``, §6).

        ``keep`` is clipped to ``[1, C]``; removed scores are re-zeroed on every
        call (momentum may have moved them). A no-op for a dense layer.

        Raises:
            FloatingPointError: An alive score is not finite (names the layer).
        """
        layer = self.layer
        if not layer.is_sparse:
            return
        keep = max(1, min(int(keep), self.num_candidates))
        card_now, all_alive = self._alive_counts()
        if keep < card_now:
            magnitude = (candidate_magnitude(to_groups(layer.weight, layer.m),
                                             layer.candidates)
                         if self.tie_break == 'magnitude' or margin is not None
                         else None)  # (G, C)
            try:
                removal_step(layer.scores.data, layer.alive, keep, magnitude, margin)
            except FloatingPointError as err:
                raise FloatingPointError(f'{layer.describe()}: {err}') from err
            self._alive_changed()
        elif not all_alive and layer.scores.requires_grad:
            # (Frozen scores get no gradient, so no optimizer moves them.)
            with torch.no_grad():
                layer.scores.masked_fill_(~layer.alive, 0.0)

    def keep_magnitude_candidates(self) -> None:
        """Jump to the end state with the magnitude (ASP) candidate of every group
        (``LBCHook(frozen_layers='asp')``); its score becomes 1, the others 0."""
        layer = self.layer
        if not layer.is_sparse:
            return
        scores = layer.scores
        with torch.no_grad():
            keep = to_groups(magnitude_mask(layer.weight, layer.n, layer.m),
                             layer.m).to(scores.dtype)  # (G, m), n ones per row
            cands = layer.candidates.to(scores.dtype)  # (C, m)
            match = (keep @ cands.t()) == layer.n  # (G, C), one True per row
            # Rank the magnitude candidate first; the removal step keeps it.
            scores.copy_(match.to(scores.dtype))
            layer.alive.fill_(True)
        self._alive_changed()
        self.remove_candidates(1)

    def alive_checksum(self) -> Tensor:
        """``(2,)`` order-sensitive float64 checksum of ``alive`` (DDP ranks)."""
        flat = self.layer.alive.flatten().to(torch.float64)  # (G*C,)
        index = torch.arange(1, flat.numel() + 1, dtype=torch.float64,
                             device=flat.device)
        return torch.stack([flat.sum(), flat @ index])  # (2,)

    def freeze_scores(self) -> None:
        """Stop learning the scores (``requires_grad=False``, grad dropped)."""
        layer = self.layer
        if not layer.is_sparse:
            return
        layer.scores.requires_grad_(False)
        layer.scores.grad = None

    def unfreeze_scores(self) -> None:
        """Learn the scores again (a frozen stage turned them off)."""
        if self.layer.is_sparse:
            self.layer.scores.requires_grad_(True)

    # -- checkpoints ----------------------------------------------------------
    def check_load(self, state_dict: dict, prefix: str, where: str) -> None:
        layer = self.layer
        theirs = state_dict.get(prefix + 'weight')
        has_state = any(prefix + key in state_dict for key in self.state_keys)
        if (not has_state and theirs is not None
                and tuple(theirs.shape) != tuple(layer.weight.shape)):
            raise ValueError(
                f'{where}: dense checkpoint weight has shape {tuple(theirs.shape)}, '
                f'this layer needs {tuple(layer.weight.shape)} (another model?)')
        super().check_load(state_dict, prefix, where)

    def after_load(self, state_dict: dict, prefix: str, missing_keys: list) -> None:
        layer = self.layer
        key = prefix + 'alive'
        has_scores = prefix + 'scores' in state_dict
        if key not in state_dict and has_scores:
            # Scores without `alive` (hand-made checkpoint): removed == 0.
            with torch.no_grad():
                layer.alive.copy_(layer.scores != 0)
            if key in missing_keys:
                missing_keys.remove(key)
        self.loaded_dense = (not has_scores and key not in state_dict
                             and prefix + 'weight' in state_dict)
        if self.loaded_dense:  # the state starts afresh, not a missing key
            with torch.no_grad():
                layer.scores.copy_(init_scores(
                    layer.scores.shape[0], layer.n, layer.m,
                    dtype=layer.scores.dtype, device=layer.scores.device))
                layer.alive.fill_(True)
            for name in self.state_keys:
                if prefix + name in missing_keys:
                    missing_keys.remove(prefix + name)
        self._alive_changed()


def training_run() -> Optional[str]:
    """The name of the mmengine run that is training, or None.

    A runner makes its message hub current when built; ``RuntimeInfoHook`` writes
    ``max_iters`` there at ``before_train``. A hub that trained before stays
    current, so callers compare with the run seen when the layer was built.
    """
    from mmengine.logging import MessageHub
    hub = MessageHub.get_current_instance()
    return hub.instance_name if 'max_iters' in hub.runtime_info else None
