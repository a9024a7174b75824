"""How settled the LBC layers' candidate choice is over a run (``LBCHook``'s
settledness line and per-layer scalars); the measures are
:mod:`lbc_mm.sparsity.diagnostics`."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..sparsity import to_groups
from ..sparsity.diagnostics import (
    decision_margin,
    magnitude_agreement,
    relative_step_rms,
    score_spread,
    score_step_rms,
    settledness,
    unmoved_groups,
)

__all__ = ['SettlednessTracker']


class SettlednessTracker:
    """The settledness measures of a run's LBC layers, step by step.

    Measured on a fixed, evenly spaced sample of up to ``sample`` groups per layer
    (cheap next to an iteration). Per iteration, with ``active`` the layers still
    removing candidates: :meth:`measure_steps` (before the removal step), then
    :meth:`before_removal` for every layer, then :meth:`after_removal`, which
    returns the measures of a card step (None when no layer's card changed).

    ``layer_margins``: per layer, the median decision margin (score steps) of its
    last card step.
    """

    def __init__(self, sample: int = 4096) -> None:
        self.sample = sample
        self._prev: Dict[str, Tuple[Tensor, Tensor]] = {}  # sampled snapshots
        self._idx: Dict[str, Tensor] = {}  # sampled rows per layer
        # Sums of squared score steps and of squared relative steps, iterations.
        self._steps: Dict[str, list] = {}
        self._pending: List[Tensor] = []  # margins / step of this card step
        # Decisions on exactly equal scores, of them in unmoved groups, decisions.
        self._ties = [0, 0, 0]
        self._spread: List[Tuple[float, int]] = []
        self.layer_margins: Dict[str, Optional[float]] = {}

    def rows(self, name: str, layer) -> Tensor:
        """The sampled group indices of a layer (fixed for the run)."""
        idx = self._idx.get(name)
        if idx is None or idx.device != layer.scores.device:
            num_g = layer.num_groups
            stride = max(1, num_g // self.sample)
            idx = torch.arange(0, num_g, stride,
                               device=layer.scores.device)[:self.sample]
            self._idx[name] = idx
        return idx

    def measure_steps(self, active: Sequence[Tuple[str, object]]) -> None:
        """Accumulate the per-iteration score step since the last snapshot."""
        with torch.no_grad():
            for name, layer in active:
                prev = self._prev.get(name)
                if prev is None:
                    continue
                idx, before = prev
                after, alive = layer.scores[idx], layer.alive[idx]
                step = score_step_rms(before, after, alive)
                dev = relative_step_rms(before, after, alive)
                acc = self._steps.setdefault(name, [0.0, 0.0, 0])
                acc[0] = acc[0] + step * step  # stays on the device until used
                acc[1] = acc[1] + dev * dev
                acc[2] += 1

    def noise(self, name: str) -> float:
        """How far noise alone would have moved two alive scores of a group apart
        by now: :func:`relative_step_rms` times the square root of the iterations
        measured (a random walk); 0 before two snapshots."""
        acc = self._steps.get(name)  # rms * sqrt(n) = sqrt(sum of squared steps)
        return float(acc[1])**0.5 if acc else 0.0

    def before_removal(self, name: str, layer, keep: int) -> None:
        """Measure the decision a removal step down to ``keep`` is about to take."""
        if keep >= layer.sparsity.current_card():
            return
        with torch.no_grad():
            idx = self.rows(name, layer)
            scores, alive = layer.scores[idx], layer.alive[idx]
            acc = self._steps.get(name)
            step = float(acc[0] / acc[2])**0.5 if acc else 0.0
            margins = decision_margin(scores, alive, keep)  # (G',)
            unmoved = unmoved_groups(scores, alive)[alive.sum(dim=1) > keep]
            self._ties[0] += int((margins == 0).sum())
            self._ties[1] += int(unmoved.sum())
            self._ties[2] += margins.numel()
            if step > 0:  # the margin of groups that got gradient
                self._pending.append((margins[~unmoved] / step).float().cpu())
                self.layer_margins[name] = settledness(self._pending[-1], 1.0)
            init = 1.0 / float(layer.sparsity.num_candidates * layer.n / layer.m)
            self._spread.append((score_spread(scores, alive) / init,
                                 layer.num_groups))

    def after_removal(self, active: Sequence[Tuple[str, object]], finished,
                      layers: Sequence[Tuple[str, object]]) -> Optional[Dict]:
        """Snapshot the scores; summarise the card step if one happened.

        Args:
            active: The layers that took a removal step this iteration.
            finished: Names of the layers at one candidate per group.
            layers: Every LBC layer (for the magnitude agreement).

        Returns:
            dict or None: ``agree_mag``, ``score_spread``, ``tied`` (share of
            the decisions on exactly equal scores), ``unmoved`` (of them, in
            groups whose alive scores never moved), ``chance_agree`` and (when
            the scores moved) ``margin_steps`` (median over the moved groups).
        """
        with torch.no_grad():
            summary = self._summary(layers) if self._spread else None
            for name, layer in active:
                if name in finished:
                    self._prev.pop(name, None)
                    continue
                idx = self.rows(name, layer)
                self._prev[name] = (idx, layer.scores.detach()[idx].clone())
        return summary

    def _summary(self, layers: Sequence[Tuple[str, object]]) -> Dict[str, float]:
        agree = total = 0.0
        for name, layer in layers:
            num_g = layer.num_groups
            idx = self.rows(name, layer)
            agree += num_g * magnitude_agreement(
                to_groups(layer.weight.detach(), layer.m)[idx], layer.scores[idx],
                layer.alive[idx], layer.candidates)
            total += num_g
        spread = (sum(s * g for s, g in self._spread) /
                  sum(g for _, g in self._spread))
        margin = (settledness(torch.cat(self._pending), 1.0)
                  if self._pending else None)
        tied, unmoved = (k / max(1, self._ties[2]) for k in self._ties[:2])
        self._pending, self._spread, self._ties = [], [], [0, 0, 0]
        chance = min(1.0 / layer.sparsity.num_candidates for _, layer in layers)
        out = dict(agree_mag=agree / total, score_spread=spread, tied=tied,
                   unmoved=unmoved, chance_agree=chance)
        if margin is not None:
            out['margin_steps'] = margin
        return out
