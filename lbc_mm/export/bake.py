"""Bake N:M masks into the weights and turn sparse layers back into stock layers."""
from typing import Dict, List, Tuple

from torch import nn

from ..layers import sparse_layers
from ..methods import state_keys
from ..sparse_model import (
    describe_tensors,
    nm_report,
    non_finite_tensors,
    set_submodule,
)

#: State-dict entries only sparse layers have (``scores``, ``alive``, ``asp_mask``).
SPARSE_ONLY_KEYS = state_keys()


class NotNMError(ValueError):
    """Some sparse layers are not N:M after baking; ``violations`` lists them."""

    def __init__(self, violations: List[Tuple[str, str, int, int]]):
        self.violations = violations
        listed = '; '.join(f'{name} ({pattern}): {bad}/{total} groups break it'
                           for name, pattern, bad, total in violations)
        super().__init__(f'{len(violations)} sparse layers are not N:M, refusing to '
                         f'export: {listed}')


class NonFiniteWeightsError(ValueError):
    """The model holds NaN / inf weights (a diverged run); ``names`` lists them."""

    def __init__(self, names: List[str]):
        self.names = names
        super().__init__(f'non-finite weights in {describe_tensors(names)}: the '
                         f'checkpoint comes from a diverged run, refusing to export')


def densify_model(model: nn.Module) -> Dict[str, Tuple[int, int]]:
    """Replace every lbc_mm sparse layer by its ``to_dense()`` stock layer: plain
    ``nn.Conv2d`` / ``nn.Linear`` with ``W := mask * W``, so the ``state_dict`` has
    exactly the stock model's keys and shapes (no method state).

    Args:
        model (nn.Module): model with ``NMSparseConv`` / ``NMSparseLinear`` layers
            (modified in place).

    Returns:
        dict[str, tuple[int, int]]: name -> ``(n, m)`` of the layers that were
        sparse (``is_sparse``); layers that stayed dense are replaced too but not
        listed.
    """
    found = list(sparse_layers(model, only_sparse=False))
    patterns = {name: (int(layer.n), int(layer.m)) for name, layer in found
                if layer.is_sparse}
    for name, layer in found:
        set_submodule(model, name, layer.to_dense())
    return patterns


def nm_violations(model: nn.Module, patterns: Dict[str, Tuple[int, int]]
                  ) -> List[Tuple[str, str, int, int]]:
    """``(name, 'n:m', bad_groups, total_groups)`` of every layer that breaks N:M.
    Non-finite weights raise ``NonFiniteWeightsError`` first (a NaN survives mask
    baking and would read as a group that breaks N:M)."""
    names = non_finite_tensors(model)
    if names:
        raise NonFiniteWeightsError(names)
    return [(row['layer'], row['pattern'], row['bad_groups'], row['groups'])
            for row in nm_report(model, patterns) if row['bad_groups']]
