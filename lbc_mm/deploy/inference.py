"""2:4 inference in PyTorch: :func:`accelerate` swaps cuSPARSELt units into a
loaded converted model (docs/deploy.md, "2:4 inference in PyTorch")."""
import copy
import json
from typing import Callable, Dict, List, Optional, Union

import torch
from torch import nn

from ..sparse_model import set_submodule
from ..sparsity.patterns import count_nm_violations
from . import kernels, plan
from . import modules as dm

__all__ = ['AccelerateError', 'accelerate', 'two_of_four_layers']


class AccelerateError(RuntimeError):
    """2:4 inference cannot run here, or the plan does not fit the model."""


class _Unit(nn.Module):
    """A 2:4 unit in its own dtype inside a model of another dtype."""

    def __init__(self, unit: nn.Module, variant: str):
        super().__init__()
        self.unit = unit
        self.variant = variant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unit(x).to(x.dtype)


def two_of_four_layers(model: nn.Module) -> List[str]:
    """Linear / 1x1-conv layers whose weight is 2:4 and at least half zeros."""
    names = []
    for name, mod in model.named_modules():
        if plan.unit_kind(mod) not in ('linear', 'conv'):
            continue
        if isinstance(mod, nn.Conv2d) and dm.conv1x1_unsupported(mod):
            continue
        w = mod.weight.detach()
        if w.shape[1] % 4 or (w == 0).float().mean() < 0.5:
            continue
        if count_nm_violations(w, 2, 4)[0] == 0:
            names.append(name)
    return names


def _plan_from_json(path: str, mode: str) -> Dict[str, str]:
    try:
        with open(path) as f:
            res = json.load(f)
    except (OSError, ValueError) as exc:
        raise AccelerateError(f'cannot read benchmark JSON {path}: {exc}') from None
    plans = res.get('plans') or {}
    if f'auto_{mode}' not in plans:
        raise AccelerateError(f'{path} has no auto_{mode} plan (the benchmark did not '
                              'reach its end-to-end stage)')
    fell_back = [k for k, e in (res.get('end_to_end') or {}).items()
                 if isinstance(e, dict) and e.get('mode') == mode and
                 e.get('auto_fallback_to_dense')]
    return {} if fell_back else dict(plans[f'auto_{mode}'])


def accelerate(model: nn.Module, plan_spec: Union[str, Dict[str, str]] = 'auto',
               run: Optional[Callable[[], object]] = None,
               dtype: torch.dtype = torch.float16, mode: str = 'eager',
               margin: float = 0.03, stand_in: bool = False) -> Dict[str, str]:
    """Swap the 2:4 units of ``plan_spec`` into ``model`` (in place).

    Args:
        model (nn.Module): a loaded converted model (e.g. ``init_detector(...)``,
            ``DetInferencer(...).model``, ``ImageClassificationInferencer(...).model``)
            on its CUDA device.
        plan_spec (str | dict): ``'auto'``, a ``tools/benchmark.py`` JSON path, or
            ``{unit name: variant}``.
        run (callable, optional): one forward pass of a typical input (``'auto'``).
        dtype (torch.dtype): dtype of the 2:4 units (fp16 or bf16).
        mode (str): ``'eager'`` or ``'cuda_graph'``: which benchmark choice.
        margin (float): ``'auto'``: a unit runs 2:4 only if that much faster.
        stand_in (bool): tests only: dense feature-major GEMMs (fp32, CPU) stand in
            for the 2:4 kernels.

    Returns:
        dict: unit name -> variant installed.

    Raises:
        AccelerateError: no 2:4-capable GPU (one line saying why), a unit the
            plan names is not in the model or not 2:4, ``'auto'`` without ``run``.
    """
    ok, why = kernels.sparse_support()
    if not ok and not stand_in:
        raise AccelerateError(f'2:4 inference needs an Ampere-or-newer CUDA GPU: {why}')
    if stand_in:
        dtype = torch.float32
    layers = two_of_four_layers(model)
    device = next(model.parameters()).device
    if plan_spec == 'auto':
        if run is None:
            raise AccelerateError("plan 'auto' needs run=, one forward pass of a "
                                  'typical input (it times each unit at its shape)')
        chosen = plan.auto_plan(model, layers, run, dtype, device, mode, margin,
                                stand_in)
    elif isinstance(plan_spec, str):
        chosen = _plan_from_json(plan_spec, mode)
    else:
        chosen = dict(plan_spec)
    known = set(layers) | set(plan.find_mlps(model, layers))
    missing = sorted(set(chosen) - known)
    if missing:
        raise AccelerateError(f'{len(missing)} planned units are not 2:4 units of this '
                              f'model (e.g. {missing[0]}): another model, or weights '
                              'that are not 2:4')
    installed = {}
    for name, variant in chosen.items():
        if stand_in:
            variant = 'dense+dense' if '+' in variant else 'dense_fm'
        unit = plan.build_unit(
            copy.deepcopy(model.get_submodule(name)).to(dtype=dtype).eval(), variant)
        set_submodule(model, name, _Unit(unit, variant))
        installed[name] = variant
    return installed
