"""LBC: learnable candidate scores, removed down to one per group (docs/method.md).

State on the layer: ``scores`` ``(G, C)`` (a Parameter; removed candidates are
exactly 0) and ``alive`` ``(G, C)`` bool (a buffer), both in checkpoints;
``candidates`` ``(C, m)``, rebuilt from ``(n, m)`` (a non-persistent buffer).
``LBCHook`` drives the removal through :meth:`LBC.remove_candidates`.
"""
import sys
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
from .base import SparsityMethod, register_method

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
    state_keys = ('scores', 'alive')
    operations = ('remove_candidates', 'keep_magnitude_candidates', 'freeze_scores',
                  'unfreeze_scores', 'alive_checksum', 'num_alive', 'num_candidates',
                  'current_card')

    tie_break: str

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self._card_cache: Optional[tuple] = None
        self._mask_cache: Optional[tuple] = None
        #: Who removes the candidates (``'LBCHook'`` once it attached at
        #: ``before_train``); see :meth:`check_driven`.
        self.driver: Optional[str] = None
        #: The last load gave this layer dense weights without LBC state.
        self.loaded_dense = False

    @classmethod
    def check_options(cls, options) -> None:
        if options['tie_break'] not in TIE_BREAKS:
            raise ValueError(f'unknown tie_break {options["tie_break"]!r}, expected '
                             f'one of {TIE_BREAKS}')

    # -- state and forward ----------------------------------------------------
    def init_state(self, layer: nn.Module) -> None:
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

    def mask(self, layer: nn.Module) -> Tensor:
        return lbc_mask(layer.scores, layer.candidates, layer.weight.shape,
                        layer.alive)

    def masked_weight(self, layer: nn.Module) -> Tensor:
        # The mask depends on `alive` only: cache it in the weight's dtype (which
        # multiplies fastest) until `alive` changes. Any in-place update (removal,
        # load_state_dict, an EMA hook copying it) bumps the tensor's version
        # counter; a device move replaces the tensor.
        weight = layer.weight
        if layer.training and self.driver is None and torch.is_grad_enabled():
            self.check_driven(layer)
        alive = layer.alive
        key = (alive._version, alive.data_ptr(), weight.dtype, weight.device)
        if self._mask_cache is None or self._mask_cache[0] != key:
            mask = lbc_mask(layer.scores, layer.candidates, weight.shape, alive)
            self._mask_cache = (key, mask.to(weight.dtype))
        # The score gradient skips the `* alive` factor only when every candidate of
        # every group is alive: groups may differ in alive count (a hand-edited or
        # partially loaded checkpoint), and removed candidates must get no gradient.
        return LBCMaskFunction.apply(weight, layer.scores, layer.candidates,
                                     None if self._alive_counts(layer)[1] else alive,
                                     self._mask_cache[1])

    def check_driven(self, layer: nn.Module) -> None:
        """Fail when this LBC layer trains inside an mmengine Runner without an
        ``LBCHook``: nothing would remove its candidates and the run would end dense.

        Outside a Runner (a hand-written loop, a unit test) the caller drives
        :meth:`remove_candidates` itself, so the layer trains as told.

        Raises:
            RuntimeError: One line naming the layer, the cause and the fix.
        """
        if self.current_card(layer) == 1:  # already N:M: nothing left to remove
            return
        runner = _training_runner()
        if runner is None:
            return
        model = getattr(runner.model, 'module', runner.model)
        modules = list(model.named_modules())
        lbc = [name for name, mod in modules
               if isinstance(getattr(mod, 'sparsity', None), LBC) and mod.is_sparse]
        name = next((n for n, mod in modules if mod is layer),
                    layer.layer_name or '?')
        raise RuntimeError(
            f'LBC layer {name} (1 of {len(lbc)}) trains in a Runner without an '
            f'LBCHook, so its candidates would never be removed and the run would '
            f"end dense; the usual cause: a child config's custom_hooks replaces "
            f"its base's list (mmengine replaces lists), dropping the base's "
            f"LBCHook; fix: add dict(type='LBCHook', ...) to the child's "
            f'custom_hooks too')

    def _alive_counts(self, layer: nn.Module) -> Tuple[int, bool]:
        """(max alive candidates per group, every candidate alive), cached per
        version of ``alive``."""
        alive = layer.alive
        key = (alive._version, alive.data_ptr())
        if self._card_cache is None or self._card_cache[0] != key:
            self._card_cache = (key, int(alive.sum(dim=1).max()), bool(alive.all()))
        return self._card_cache[1], self._card_cache[2]

    def _alive_changed(self) -> None:
        self._card_cache = None
        self._mask_cache = None

    # -- operations -------------------------------------------------------------
    def num_candidates(self, layer: nn.Module) -> int:
        """Candidates per group, ``C = C(m, n)`` (6 for 2:4)."""
        return num_candidates(layer.n, layer.m)

    def num_alive(self, layer: nn.Module) -> Optional[Tensor]:
        """Alive candidates per group, ``(G,)`` long; None for a dense layer."""
        return layer.alive.sum(dim=1) if layer.is_sparse else None

    def current_card(self, layer: nn.Module) -> int:
        """Alive candidates per group (the max over groups), cached per version."""
        return self._alive_counts(layer)[0]

    def remove_candidates(self, layer: nn.Module, keep: int,
                          margin: Optional[float] = None) -> None:
        """Keep the ``keep`` best candidates per group (docs/method.md §6).

        Removed candidates stay removed; their scores are re-zeroed on every call
        (momentum may have moved them). A no-op for a dense layer.

        Args:
            keep (int): ``card(t)``; clipped to ``[1, C]``.
            margin (float, optional): Score gaps up to this are ties, ranked by
                magnitude (``LBCHook(noise_margin=...)``); None: exact ties only.

        Raises:
            FloatingPointError: An alive score is not finite (names the layer).
        """
        if not layer.is_sparse:
            return
        keep = max(1, min(int(keep), self.num_candidates(layer)))
        card_now, all_alive = self._alive_counts(layer)
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

    def keep_magnitude_candidates(self, layer: nn.Module) -> None:
        """Jump to the end state with the magnitude (ASP) choice.

        Every group keeps exactly the one candidate equal to the magnitude mask of
        the current weight (``LBCHook(frozen_layers='asp')`` for layers whose
        weights are frozen); its score becomes 1, the others 0.
        """
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
        self.remove_candidates(layer, 1)

    def alive_checksum(self, layer: nn.Module) -> Tensor:
        """Order-sensitive float64 checksum of ``alive`` (exact < 2**53).

        Returns:
            Tensor: ``(2,)``, equal on two layers iff (practically) the same
            candidates are alive.
        """
        flat = layer.alive.flatten().to(torch.float64)  # (G*C,)
        index = torch.arange(1, flat.numel() + 1, dtype=torch.float64,
                             device=flat.device)
        return torch.stack([flat.sum(), flat @ index])  # (2,)

    def freeze_scores(self, layer: nn.Module) -> None:
        """Stop learning the scores (``requires_grad=False``, grad dropped)."""
        if not layer.is_sparse:
            return
        layer.scores.requires_grad_(False)
        layer.scores.grad = None

    def unfreeze_scores(self, layer: nn.Module) -> None:
        """Learn the scores again (``requires_grad=True``; frozen layers' scores,
        which ``model.train()`` / a frozen stage turned off)."""
        if layer.is_sparse:
            layer.scores.requires_grad_(True)

    # -- checkpoints ----------------------------------------------------------
    def check_load(self, layer: nn.Module, state_dict: dict, prefix: str,
                   where: str) -> None:
        theirs = state_dict.get(prefix + 'weight')
        has_state = any(prefix + key in state_dict for key in self.state_keys)
        if (not has_state and theirs is not None
                and tuple(theirs.shape) != tuple(layer.weight.shape)):
            raise ValueError(
                f'{where}: dense checkpoint weight has shape {tuple(theirs.shape)}, '
                f'this layer needs {tuple(layer.weight.shape)} (another model?)')
        super().check_load(layer, state_dict, prefix, where)

    def after_load(self, layer: nn.Module, state_dict: dict, prefix: str,
                   missing_keys: list) -> None:
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
        if self.loaded_dense:
            self._init_from_dense(layer, prefix, missing_keys)
        self._alive_changed()

    def _init_from_dense(self, layer: nn.Module, prefix: str,
                         missing_keys: list) -> None:
        """Dense weights without LBC state loaded (a model-zoo checkpoint): the LBC
        state starts afresh (initial scores, every candidate alive), which is not a
        missing key; ``LBCHook`` reports these layers in one line."""
        with torch.no_grad():
            layer.scores.copy_(init_scores(layer.scores.shape[0], layer.n, layer.m,
                                           dtype=layer.scores.dtype,
                                           device=layer.scores.device))
            layer.alive.fill_(True)
        for key in self.state_keys:
            if prefix + key in missing_keys:
                missing_keys.remove(prefix + key)


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
