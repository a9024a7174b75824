"""The model deploy runs: a converted file's weights in its stock model, or random
weights with magnitude N:M masks.

The one place that reads a converted file (docs/export_format.md) and checks its
N:M, once (:class:`LoadedModel`). The N:M layers come from the file's export record,
never from the weights: a file without it is refused (run ``tools/convert.py``).
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..apis import build_model, checkpoint_mismatch, load_config, state_dict_of
from ..checkpoint_io import CheckpointMismatchError, read_checkpoint
from ..export.bake import SPARSE_ONLY_KEYS, NotNMError, densify_model, nm_violations
from ..export.compressed import FORMAT, decompress_state_dict
from ..layers import divisibility_problem
from ..sparse_model import nm_report
from ..sparsity.patterns import magnitude_mask, parse_pattern
from ..transforms import select_layers

__all__ = ['LoadedModel', 'Not2of4Error', 'NotConvertedError', 'load_converted',
           'magnitude_sparse', 'prepare', 'random_weights', 'read_model_file']

Patterns = Dict[str, Tuple[int, int]]


class NotConvertedError(ValueError):
    """The model file is not one that ``tools/convert.py`` wrote."""


class Not2of4Error(ValueError):
    """N:M weights that are not 2:4 (e.g. 4:8): no GPU 2:4 kernel runs them."""


@dataclass
class LoadedModel:
    """The eval model (plain Conv2d / Linear layers, N:M zeros in them), its N:M
    ``patterns`` (name -> ``(n, m)``), where it came from (``kind``: ``'stock'`` /
    ``'compressed'`` file or ``'random'``; ``rule`` and ``source``: sentences for the
    reports) and the N:M check, computed once: ``nm_rows`` (``nm_report``) and
    ``not_2of4`` (rows that break 2:4, ``trained``: their pattern; 1:4, 2:8 and 1:16
    weights are 2:4 too, 4:8 ones only by chance)."""
    model: nn.Module
    scope: str
    cfg: object
    patterns: Patterns
    kind: str
    rule: str
    source: str
    model_file: Optional[str] = None
    nm_rows: List[Dict[str, object]] = field(init=False)
    not_2of4: List[Dict[str, object]] = field(init=False)

    def __post_init__(self):
        self.model.eval()
        self.nm_rows = nm_report(self.model, self.patterns)
        self.not_2of4 = [
            dict(r, trained='%d:%d' % self.patterns[r['layer']])
            for r in nm_report(self.model, {k: (2, 4) for k in self.patterns})
            if r['bad_groups']]

    @property
    def not_nm(self) -> List[Dict[str, object]]:
        """The :attr:`nm_rows` of layers that break their N:M pattern."""
        return [r for r in self.nm_rows if r['bad_groups']]

    def require_2of4(self) -> None:
        """Raise unless every N:M layer is N:M (``NonFiniteWeightsError``,
        ``NotNMError``) and 2:4 (:class:`Not2of4Error`), each on one line."""
        if self.not_nm:  # the lines (non-finite weights named first)
            raise NotNMError(nm_violations(self.model, self.patterns))
        if self.not_2of4:
            r = self.not_2of4[0]
            raise Not2of4Error(
                f'{len(self.not_2of4)} of {len(self.patterns)} sparse layers are not '
                f'2:4, the only pattern GPU sparse kernels run: {r["layer"]} (trained '
                f'{r["trained"]}) has {r["bad_groups"]}/{r["groups"]} groups of 4 '
                'weights with more than 2 non-zeros (1:4, 2:8, 1:16 and 2:4 models '
                'deploy; 4:8 ones do not)')


def read_model_file(model_file: str) -> Tuple[Dict[str, object], Dict, str]:
    """A converted file -> ``(stock state dict, meta, 'stock' | 'compressed')``;
    ``NotConvertedError`` for a training checkpoint or a file without
    ``meta['lbc_mm_export']``."""
    ckpt = read_checkpoint(model_file)
    if ckpt.get('format') == FORMAT:
        try:
            sd, kind = decompress_state_dict(ckpt), 'compressed'
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise CheckpointMismatchError(
                f'compressed model file {model_file} is malformed: {exc}') from None
    else:
        sd, kind = state_dict_of(ckpt), 'stock'
    meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
    training = [k for k in sd if k.rsplit('.', 1)[-1] in SPARSE_ONLY_KEYS]
    if training:
        raise NotConvertedError(
            f'{model_file} is a training checkpoint (it holds {training[0]}), not a '
            f'converted model: run tools/convert.py CONFIG {model_file} OUT first and '
            'pass OUT.nm.pth (or OUT)')
    if not isinstance(meta.get('lbc_mm_export'), dict):
        raise NotConvertedError(
            f'{model_file} has no lbc_mm export record (meta.lbc_mm_export), so '
            'nothing says which layers are N:M: run tools/convert.py CONFIG '
            'CHECKPOINT OUT on the trained checkpoint first and pass OUT.nm.pth '
            '(or OUT)')
    return sd, meta, kind


def _build(cfg, score_thr: Optional[float]):
    """The model of ``cfg``; ``score_thr`` overrides a detector's
    ``test_cfg.rcnn.score_thr`` (random-init weights still reach the mask head)."""
    if score_thr is not None and 'test_cfg' in cfg.model and \
            cfg.model.test_cfg.get('rcnn') is not None:
        cfg.model.test_cfg.rcnn.score_thr = score_thr
    return build_model(cfg)


def _stock_config(meta: Dict, config: Optional[str], model_file: str):
    """``config`` made stock (no LBC layer is built), else the recorded one."""
    from mmengine.config import Config

    from ..export.convert import stock_config
    if config is not None:
        return Config(stock_config(load_config(config)))
    recorded = meta['lbc_mm_export'].get('stock_config')
    if not isinstance(recorded, dict) or 'model' not in recorded:
        raise NotConvertedError(
            f'{model_file} records no stock config (written by an older '
            'tools/convert.py): pass the config, CONFIG MODEL')
    return Config(recorded)


def load_converted(config: Optional[str], model_file: str, check: bool = True,
                   score_thr: Optional[float] = None) -> LoadedModel:
    """Converted model file (+ ``config``, training or stock; None: the one the
    file records) -> :class:`LoadedModel`; ``check``: also
    :meth:`~LoadedModel.require_2of4`. One-line errors: ``NotConvertedError``,
    ``CheckpointMismatchError`` (the file does not fit the model)."""
    sd, meta, kind = read_model_file(model_file)
    cfg = _stock_config(meta, config, model_file)
    model, scope = _build(cfg, score_thr)
    problem = checkpoint_mismatch(model, sd)
    if problem is not None:
        raise CheckpointMismatchError(
            f'model file {model_file} does not match the config: {problem}')
    model.load_state_dict(sd, strict=True)
    listed = meta['lbc_mm_export'].get('sparse_layers') or {}
    patterns = {name: parse_pattern(p) for name, p in listed.items()}
    if not patterns:
        raise NotConvertedError(f'{model_file}: its export record lists no N:M sparse '
                                'layers, so there is nothing sparse to deploy')
    modules = dict(model.named_modules())
    for name in patterns:
        if not isinstance(modules.get(name), (nn.Conv2d, nn.Linear)):
            raise CheckpointMismatchError(
                f'model file {model_file} lists sparse layer {name}, which is not a '
                f'Conv2d / Linear of the model built from '
                f'{config or "its recorded stock config"}')
    got = LoadedModel(
        model=model, scope=scope, cfg=cfg, patterns=patterns, kind=kind,
        rule=f'layers the {kind} model file names as N:M',
        source=(f'trained weights from {model_file} ({kind} file written by '
                'tools/convert.py)'),
        model_file=model_file)
    if check:
        got.require_2of4()
    return got


def magnitude_sparse(model: nn.Module, patterns: Optional[Patterns] = None,
                     n: int = 2, m: int = 4) -> Tuple[Patterns, str]:
    """Bake magnitude N:M masks into a model with stock layers (in place).

    ``patterns``: the layers to mask; empty or None: those ``NMSparsify``'s default
    rule picks, at ``n:m``. Returns ``({name: (n, m)} masked, how they were picked)``.
    """
    if patterns:
        rule = 'layers the config made sparse (NMSparseConv / NMSparseLinear)'
        layers = [(name, model.get_submodule(name)) for name in patterns]
    else:
        rule = ('NMSparsify default rule (docs/method.md §8): backbone Conv2d / '
                f'Linear with in/groups % {m} == 0, stem / patch embedding, neck '
                'and head dense')
        layers, patterns = select_layers(model), {}
    masked = {name: patterns.get(name, (n, m)) for name, layer in layers
              if divisibility_problem(layer.weight.shape,
                                      *patterns.get(name, (n, m))) is None}
    with torch.no_grad():
        for name, (ln, lm) in masked.items():
            weight = model.get_submodule(name).weight
            weight.mul_(magnitude_mask(weight, ln, lm))
    return masked, rule


def random_weights(config: str, n: int = 2, m: int = 4,
                   score_thr: Optional[float] = None) -> LoadedModel:
    """Random-init model with magnitude ``n:m`` masks (timing does not need trained
    values) on the layers the config makes sparse, else on those of ``NMSparsify``'s
    default rule."""
    cfg = load_config(config)
    model, scope = _build(cfg, score_thr)
    config_patterns = densify_model(model)  # the layers the config made sparse
    patterns, rule = magnitude_sparse(
        model, {name: (n, m) for name in config_patterns}, n, m)
    return LoadedModel(
        model=model, scope=scope, cfg=cfg, patterns=patterns, kind='random',
        rule=rule, source=(f'random-init weights with magnitude {n}:{m} masks (no '
                           'model file given; timing does not depend on the values)'))


def prepare(config: Optional[str], model_file: Optional[str], n: int = 2, m: int = 4,
            score_thr: Optional[float] = 0.0, device: str = 'cpu') -> LoadedModel:
    """What the tools load: :func:`load_converted` (unchecked: the caller reads
    the rows) or, without ``model_file``, :func:`random_weights`; on ``device``."""
    if model_file is not None:
        got = load_converted(config, model_file, check=False, score_thr=score_thr)
    else:
        got = random_weights(config, n, m, score_thr)
    got.model = got.model.to(device)
    return got
