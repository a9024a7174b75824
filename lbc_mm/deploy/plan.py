"""Per-unit 2:4 plan: units and their real input shapes, timing, auto choice, swap.

A *unit* is what the plan switches between dense and 2:4: an ``nn.Linear`` / 1x1
``nn.Conv2d``, or an mmcv ``FFN.layers`` MLP (fc1 -> act -> fc2, the hidden
activation kept feature-major). Auto runs a unit 2:4 only where its isolated timing
at its shape in the model beat dense by ``margin`` and its output matched dense.
"""
import copy
import functools
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..sparse_model import set_submodule
from . import modules as dm
from .timing import LAYER_TOL, error_line, rel_error, speedup, time_many


@dataclass
class UnitTiming:
    """One unit timed dense vs its 2:4 variants (:func:`time_unit`): ``check``
    (variant -> relative error vs dense, or the error line), ``timing`` (mode ->
    ``time_many`` result), ``best`` (mode -> ``[variant, speedup]``), why no variant
    could run (``unsupported``) or the timing crashed (``error``)."""
    check: Dict[str, object] = field(default_factory=dict)
    timing: Dict[str, Dict[str, dict]] = field(default_factory=dict)
    best: Dict[str, list] = field(default_factory=dict)
    unsupported: Optional[str] = None
    error: Optional[str] = None

    def best_in(self, mode: str) -> Tuple[Optional[str], Optional[float]]:
        """``(variant, speedup)`` of the fastest 2:4 variant in ``mode``."""
        return tuple(self.best.get(mode) or (None, None))

    def to_dict(self) -> Dict[str, object]:
        """The per-layer JSON row's fields."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def record_inputs(model: nn.Module, names: Sequence[str],
                  run: Callable[[], object]) -> Dict[str, Dict[str, object]]:
    """Run ``run()`` once; name -> ``{'shape', 'channels_last'}`` of the first
    input each named module sees (modules never called are absent)."""
    seen: Dict[str, Dict[str, object]] = {}

    def hook(name, _module, args):
        x = args[0] if args else None
        if name not in seen and torch.is_tensor(x):
            seen[name] = {'shape': list(x.shape), 'channels_last': bool(
                x.dim() == 4 and x.shape[0] > 1 and not x.is_contiguous()
                and x.is_contiguous(memory_format=torch.channels_last))}

    handles = [model.get_submodule(name).register_forward_pre_hook(
        functools.partial(hook, name)) for name in names]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return seen


def find_mlps(model: nn.Module, sparse_names: Sequence[str]) -> Dict[str, List[str]]:
    """mmcv FFN MLPs whose fc1 or fc2 is sparse: name -> ``[fc1, fc2]`` names."""
    sparse = set(sparse_names)
    mlps = {name: [f'{name}.0.0', f'{name}.1'] for name, mod in model.named_modules()
            if dm.match_mlp(mod) is not None}
    return {name: pair for name, pair in mlps.items() if sparse & set(pair)}


def unit_kind(mod: nn.Module) -> str:
    """``'linear'`` or ``'conv'`` (1x1 or not), ``'mlp'``, else ``'other'``."""
    if dm.match_mlp(mod) is not None:
        return 'mlp'
    if isinstance(mod, nn.Linear):
        return 'linear'
    if isinstance(mod, nn.Conv2d):
        return 'conv'
    return 'other'


def _weight_shape(mod: nn.Module) -> list:
    mlp = dm.match_mlp(mod)
    if mlp is not None:
        return [list(mlp[0].weight.shape), list(mlp[2].weight.shape)]
    return list(mod.weight.shape)


def signature(mod: nn.Module, inp: Dict[str, object]) -> str:
    """A key equal for layers that time the same (type, weight, stride, input)."""
    mlp = dm.match_mlp(mod)
    extra = type(mlp[1]).__name__ if mlp else str(tuple(getattr(mod, 'stride', ())))
    return (f'{unit_kind(mod)} w={_weight_shape(mod)} {extra} in={inp["shape"]}'
            f'{" cl" if inp["channels_last"] else ""}')


def find_units(model: nn.Module, layers: Sequence[str],
               run: Callable[[], object]) -> Dict[str, dict]:
    """The units of the sparse ``layers``: ``inputs`` (:func:`record_inputs` of
    ``run``), ``units`` (name -> signature; fc1 / fc2 run inside their MLP) and
    ``rows`` (signature -> per-layer table row, every sparse layer and MLP)."""
    mlps = find_mlps(model, layers)
    in_mlp = {n for pair in mlps.values() for n in pair}
    names = list(layers) + list(mlps)
    inputs = record_inputs(model, names, run)
    units: Dict[str, str] = {}
    rows: Dict[str, Dict[str, object]] = {}
    for name in names:
        if name not in inputs:
            continue
        mod = model.get_submodule(name)
        sig = signature(mod, inputs[name])
        row = rows.setdefault(sig, {'signature': sig, 'kind': unit_kind(mod),
                                    'input_shape': inputs[name]['shape'],
                                    'layers': [], 'module': name,
                                    'weight_shape': _weight_shape(mod)})
        row['layers'].append(name)
        if name in mlps or name not in in_mlp:
            units[name] = sig
    return {'inputs': inputs, 'units': units, 'rows': rows}


def allowed(variant: str, allowed_variants: Optional[Sequence[str]] = None) -> bool:
    """Whether a variant (or ``'a+b'`` MLP combination) uses only allowed 2:4
    variants (``None``: all; ``tools/gpu_check.sh`` passes the preflight's)."""
    if allowed_variants is None:
        return True
    return all(v in ('dense', 'dense_fm') or v in allowed_variants
               for v in variant.split('+'))


def _variants(mod: nn.Module, with_dense_fm: bool, stand_in: bool = False,
              allowed_variants: Optional[Sequence[str]] = None,
              channels_last: bool = True) -> Dict[str, Callable[[], nn.Module]]:
    """name -> builder of the 2:4 (and dense-GEMM) candidates for one unit.

    ``stand_in`` (CPU dry run): only the dense feature-major GEMM, standing in for
    the 2:4 kernels. ``channels_last``: a conv's input is token-major, which
    ``'cslt_t'`` reads in place.
    """
    kind = unit_kind(mod)
    names = (('dense_fm', ) if with_dense_fm or stand_in else ()) + (
        () if stand_in else tuple(v for v in dm.SPARSE_VARIANTS
                                 if allowed(v, allowed_variants)))
    if kind == 'linear':
        return {v: (lambda v=v: dm.Sparse24Linear(mod, v)) for v in names}
    if kind == 'conv':
        if dm.conv1x1_unsupported(mod):
            return {}
        # NCHW input is feature-major already: 'cslt_t' would equal 'cslt' there;
        # channels-last input is token-major, which 'cslt_t' reads without a copy
        return {v: (lambda v=v: dm.Sparse24Conv1x1(mod, v)) for v in names
                if v != 'cslt_t' or channels_last}
    if kind == 'mlp':
        fc1, act, fc2 = dm.match_mlp(mod)
        # fc2 reads the feature-major hidden activation: 'cslt' there
        combos = [] if stand_in else [('cslt_t', 'cslt'), ('cslt', 'cslt'),
                                      ('mm', 'mm'), ('cslt_t', 'dense'),
                                      ('dense', 'cslt')]
        combos = [c for c in combos if allowed('+'.join(c), allowed_variants)]
        if with_dense_fm or stand_in:
            combos.append(('dense', 'dense'))
        return {f'{a}+{b}': (lambda a=a, b=b: dm.FeatureMajorMLP(fc1, act, fc2, a, b))
                for a, b in combos}
    return {}


def time_unit(mod: nn.Module, inp: Dict[str, object], dtype: torch.dtype,
              device: torch.device, modes: Sequence[str] = ('cuda_graph', 'eager'),
              with_dense_fm: bool = False, stand_in: bool = False,
              allowed_variants: Optional[Sequence[str]] = None) -> UnitTiming:
    """Time one dense-with-zeros unit vs each 2:4 variant at its input ``inp``
    (:func:`record_inputs`), in each of ``modes`` (``'cuda_graph'``, ``'eager'``).

    ``with_dense_fm``: also time the dense feature-major GEMM; ``stand_in`` and
    ``allowed_variants``: see :func:`_variants`. ``unsupported`` is set when no 2:4
    variant ran and matched dense.
    """
    dense = copy.deepcopy(mod).to(device=device, dtype=dtype).eval()
    x = torch.randn(*inp['shape'], dtype=dtype, device=device)
    if inp.get('channels_last'):
        x = x.contiguous(memory_format=torch.channels_last)
    result = UnitTiming()
    builders = _variants(dense, with_dense_fm, stand_in, allowed_variants,
                         channels_last=bool(inp.get('channels_last')))
    if not builders:
        result.unsupported = dm.conv1x1_unsupported(dense) if isinstance(
            dense, nn.Conv2d) else f'{type(dense).__name__} has no 2:4 path'
        return result
    with torch.no_grad():
        ref = dense(x)
        cands: Dict[str, nn.Module] = {}
        for name, build in builders.items():
            try:
                cand = build()
                err = rel_error(cand(x), ref)
            except Exception as exc:  # noqa: BLE001  (a variant may be unsupported)
                result.check[name] = error_line(exc)
                continue
            result.check[name] = err
            if err <= LAYER_TOL.get(dtype, 1e-2):
                cands[name] = cand
        if not cands:
            result.unsupported = 'no 2:4 variant ran and matched dense'
            return result
        fns = {'dense': lambda: dense(x), **{k: (lambda c=c: c(x))
                                             for k, c in cands.items()}}
        for mode in modes:
            timing = time_many(fns, graph=(mode == 'cuda_graph'), target_ms=10.0)
            result.timing[mode] = timing
            sps = {k: speedup(timing.get('dense'), timing.get(k)) for k in cands
                   if stand_in or k not in ('dense_fm', 'dense+dense')}
            best = max((k for k in sps if sps[k] is not None), key=sps.get,
                       default=None)
            result.best[mode] = [best, sps.get(best)]
    return result


def choose(unit_results: Dict[str, UnitTiming], mode: str,
           margin: float = 0.03) -> Dict[str, Optional[str]]:
    """Auto choice: signature -> the fastest 2:4 variant in ``mode`` where it is
    at least ``1 + margin`` times faster than dense, else None (dense)."""
    best = {sig: res.best_in(mode) for sig, res in unit_results.items()}
    return {sig: variant if sp is not None and sp >= 1.0 + margin else None
            for sig, (variant, sp) in best.items()}


def auto_plan(model: nn.Module, layers: Sequence[str], run: Callable[[], object],
              dtype: torch.dtype, device: torch.device, mode: str, margin: float,
              stand_in: bool = False) -> Dict[str, str]:
    """Time each unit at the shape ``run()`` shows and :func:`choose`:
    unit name -> variant of the units that run 2:4."""
    found = find_units(model, layers, run)
    results = {}
    for name, sig in found['units'].items():
        if sig not in results:
            results[sig] = time_unit(model.get_submodule(name), found['inputs'][name],
                                     dtype, device, modes=(mode, ), stand_in=stand_in)
    choice = choose(results, mode, margin)
    return {name: choice[sig] for name, sig in found['units'].items() if choice[sig]}


def build_unit(mod: nn.Module, variant: str) -> nn.Module:
    """The deployed module for ``mod`` running ``variant``."""
    return _variants(mod, with_dense_fm=True)[variant]()


def apply_plan(model: nn.Module, units: Dict[str, str],
               choice: Dict[str, Optional[str]]) -> Dict[str, str]:
    """Swap the units (name -> signature) of a dense-with-zeros ``model`` in place
    to ``choice`` (signature -> variant, None: dense); returns name -> variant
    installed."""
    installed = {name: choice[sig] for name, sig in units.items() if choice.get(sig)}
    for name, variant in installed.items():
        set_submodule(model, name, build_unit(model.get_submodule(name), variant))
    return installed
