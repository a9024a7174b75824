"""LBC: learnable candidate scores, removed down to one per group (docs/method.md).

State on the layer: ``scores`` ``(G, C)`` (a Parameter; removed candidates are
exactly 0) and ``alive`` ``(G, C)`` bool (a buffer), both in checkpoints;
``candidates`` ``(C, m)``, rebuilt from ``(n, m)`` (a non-persistent buffer).
``LBCHook`` drives the removal through :meth:`LBC.remove_candidates`; the method's
registration says so (:attr:`LBC.requires`), and an LBC layer refuses to train in an
mmengine run that has no ``LBCHook`` (:meth:`LBC.check_driven`).
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
        #: Who removes the candidates (``'LBCHook'`` once it attached at
        #: ``before_train``); see :meth:`check_driven`.
        self.driver: Optional[str] = None
        #: The mmengine run already training when the layer was built (see
        #: :func:`training_run`): a later run must have a driver.
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
        # The mask depends on `alive` only: cache it in the weight's dtype (which
        # multiplies fastest) until `alive` changes. Any in-place update (removal,
        # load_state_dict, an EMA hook copying it) bumps the tensor's version
        # counter; a device move replaces the tensor.
        layer = self.layer
        weight = layer.weight
        # In train or eval mode (a frozen stage is in eval mode): a forward with
        # gradients inside a run nobody drives would end dense.
        if self.driver is None and torch.is_grad_enabled():
            self.check_driven()
        alive = layer.alive
        key = (alive._version, alive.data_ptr(), weight.dtype, weight.device)
        if self._mask_cache is None or self._mask_cache[0] != key:
            mask = lbc_mask(layer.scores, layer.candidates, weight.shape, alive)
            self._mask_cache = (key, mask.to(weight.dtype))
        # The score gradient skips the `* alive` factor only when every candidate of
        # every group is alive: groups may differ in alive count (a hand-edited or
        # partially loaded checkpoint), and removed candidates must get no gradient.
        return LBCMaskFunction.apply(weight, layer.scores, layer.candidates,
                                     None if self._alive_counts()[1] else alive,
                                     self._mask_cache[1])

    def check_driven(self) -> None:
        """Fail when this unfinished LBC layer computes gradients (in train or eval
        mode) in an mmengine run without an ``LBCHook``: nothing would remove its
        candidates and the run would end dense.

        The run is read from mmengine's message hub (:func:`training_run`), not
        from the call stack. A hand-written loop (no run, or one that already
        trained when the layer was built) drives :meth:`remove_candidates` itself,
        so the layer trains as told.

        Raises:
            RuntimeError: One line naming the layer, the cause and the fix.
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
        """(max alive candidates per group, every candidate alive), cached per
        version of ``alive``."""
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
        """Jump to the end state with the magnitude (ASP) choice.

        Every group keeps exactly the one candidate equal to the magnitude mask of
        the current weight (``LBCHook(frozen_layers='asp')`` for layers whose
        weights are frozen); its score becomes 1, the others 0.
        """
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
        """Order-sensitive float64 checksum of ``alive`` (exact < 2**53).

        Returns:
            Tensor: ``(2,)``, equal on two layers iff (practically) the same
            candidates are alive.
        """
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
        """Learn the scores again (``requires_grad=True``; frozen layers' scores,
        which ``model.train()`` / a frozen stage turned off)."""
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
        if self.loaded_dense:
            self._init_from_dense(prefix, missing_keys)
        self._alive_changed()

    def _init_from_dense(self, prefix: str, missing_keys: list) -> None:
        """Dense weights without LBC state loaded (a model-zoo checkpoint): the LBC
        state starts afresh (initial scores, every candidate alive), which is not a
        missing key; ``LBCHook`` reports these layers in one line."""
        layer = self.layer
        with torch.no_grad():
            layer.scores.copy_(init_scores(layer.scores.shape[0], layer.n, layer.m,
                                           dtype=layer.scores.dtype,
                                           device=layer.scores.device))
            layer.alive.fill_(True)
        for key in self.state_keys:
            if prefix + key in missing_keys:
                missing_keys.remove(prefix + key)


def training_run() -> Optional[str]:
    """The name of the mmengine run that is training, or None.

    Read from mmengine's message hub, where components that cannot reach the
    runner get its state: a ``Runner`` / ``FlexibleRunner`` makes its hub the
    current one when built, and its ``RuntimeInfoHook`` writes ``max_iters`` there
    at ``before_train``. A hub that trained before stays current, so callers
    compare with the run seen when the layer was built.
    """
    from mmengine.logging import MessageHub
    hub = MessageHub.get_current_instance()
    return hub.instance_name if 'max_iters' in hub.runtime_info else None
