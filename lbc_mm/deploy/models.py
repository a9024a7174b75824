"""The model deploy runs: the config's stock structure with an exported file's weights.

Deploy reads what export writes. ``tools/convert.py`` writes a stock ``.pth`` and a
compressed ``.nm.pth`` (docs/export_format.md); both name their N:M layers (the
compressed file by its ``layers`` entries, the stock file in
``meta['lbc_mm_export']['sparse_layers']``) and record the stock config.
:func:`load_converted` builds the stock model (from that record, or from a config
given, made stock without building its sparse layers), loads the file's weights
strictly and takes the N:M layers and patterns from the file. A file without that
record (a training checkpoint, an upstream checkpoint) is refused on one line that
says to run ``tools/convert.py`` first: which layers are N:M is never guessed from the
weights.

Without a file, :func:`random_weights` gives random-init weights with magnitude N:M
masks for timing (values do not change the timing): on the layers the config makes
sparse, or, for a stock config, on the layers ``NMSparsify``'s default rule
(``lbc_mm.transforms``) would make sparse.

Either way the result is a :class:`LoadedModel`.
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

__all__ = ['LoadedModel', 'Not2of4Error', 'NotConvertedError', 'converted_config',
           'load_converted', 'magnitude_sparse', 'not_2of4', 'prepare',
           'random_weights', 'read_model_file', 'require_2of4']

Patterns = Dict[str, Tuple[int, int]]


@dataclass
class LoadedModel:
    """The model deploy runs and where its weights came from.

    Attributes:
        model: eval model with plain Conv2d / Linear layers (N:M zeros in them).
        scope: ``'mmpretrain'`` or ``'mmdet'``.
        cfg: the loaded mmengine ``Config``.
        patterns: N:M layer name -> ``(n, m)``.
        kind: ``'stock'`` / ``'compressed'`` (the model file's kind) or ``'random'``.
        rule: how the N:M layers were picked (a sentence).
        source: what the weights are (a sentence, for logs and reports).
        model_file: the converted model file; None for random weights.
        meta: the file's ``meta`` (empty for random weights).
    """
    model: nn.Module
    scope: str
    cfg: object
    patterns: Patterns
    kind: str
    rule: str
    source: str
    model_file: Optional[str] = None
    meta: Dict = field(default_factory=dict)


class NotConvertedError(ValueError):
    """The model file is not one that ``tools/convert.py`` wrote."""


class Not2of4Error(ValueError):
    """Sparse weights that are N:M but not 2:4: no GPU 2:4 kernel (cuSPARSELt,
    TensorRT) can run them. ``rows``: the :func:`not_2of4` rows."""

    def __init__(self, message: str, rows: List[Dict[str, object]]):
        super().__init__(message)
        self.rows = rows


def not_2of4(model: nn.Module, patterns: Patterns) -> List[Dict[str, object]]:
    """The sparse layers whose weights break 2:4 (``nm_report`` rows).

    1:4, 2:8 and 1:16 weights are 2:4 too (at most 2 non-zeros in any 4
    consecutive input channels), 4:8 weights only by chance: the weights decide.
    """
    rows = nm_report(model, {name: (2, 4) for name in patterns})
    return [dict(r, trained='%d:%d' % patterns[r['layer']]) for r in rows
            if r['bad_groups']]


def require_2of4(model: nn.Module, patterns: Patterns) -> None:
    """Raise :class:`Not2of4Error` (one line) unless every sparse weight is 2:4."""
    bad = not_2of4(model, patterns)
    if bad:
        r = bad[0]
        raise Not2of4Error(
            f'{len(bad)} of {len(patterns)} sparse layers are not 2:4, the only '
            f'pattern GPU sparse kernels run: {r["layer"]} (trained {r["trained"]}) '
            f'has {r["bad_groups"]}/{r["groups"]} groups of 4 weights with more than '
            '2 non-zeros (1:4, 2:8, 1:16 and 2:4 models deploy; 4:8 ones do not)',
            bad)


def read_model_file(model_file: str) -> Tuple[Dict[str, object], Dict, str]:
    """Read a converted model file (stock ``.pth`` or compressed ``.nm.pth``).

    Returns:
        tuple: stock state dict (dense with zeros), ``meta``, and the file kind
        (``'stock'`` or ``'compressed'``).

    Raises:
        FileNotFoundError: no such file.
        CheckpointMismatchError: corrupted, unreadable or refused file.
        NotConvertedError: a training checkpoint, or a file without the export
            record ``meta['lbc_mm_export']``.
    """
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


def _override_score_thr(cfg, score_thr: Optional[float]) -> None:
    """Detector ``test_cfg.rcnn.score_thr`` override, so random-init weights still
    send boxes through the mask head."""
    if score_thr is not None and 'test_cfg' in cfg.model and \
            cfg.model.test_cfg.get('rcnn') is not None:
        cfg.model.test_cfg.rcnn.score_thr = score_thr


def converted_config(meta: Dict, config: Optional[str], model_file: str):
    """The stock config to build the model of a converted file: ``config`` made
    stock (:func:`lbc_mm.export.convert.stock_config`: no LBC layers are built), or
    without one the stock config the export recorded (plain data).

    Raises:
        NotConvertedError: no ``config`` and the record holds no stock config (a
            file from an older ``tools/convert.py``).
    """
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
    """Converted model file (+ config) -> eval model with plain layers.

    Args:
        config (str, optional): the lbc_mm training config or the stock upstream
            one (path or ``pkg::path``); None: the stock config the file records.
        model_file (str): what ``tools/convert.py`` wrote (``.pth`` or ``.nm.pth``).
        check (bool): raise :class:`NotNMError` when a named layer is not N:M.
        score_thr (float, optional): detector score threshold override.

    Returns:
        LoadedModel: ``kind`` is the file's kind.

    Raises:
        NotNMError: (``check``) a layer the file names is not N:M.
        NotConvertedError: see :func:`read_model_file`; no N:M layer named.
        CheckpointMismatchError: the file does not fit the config, or names a
            layer that is not a Conv2d / Linear of the model.
    """
    sd, meta, kind = read_model_file(model_file)
    cfg = converted_config(meta, config, model_file)
    _override_score_thr(cfg, score_thr)
    model, scope = build_model(cfg)
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
    if check:
        bad = nm_violations(model, patterns)
        if bad:
            raise NotNMError(bad)
    return LoadedModel(
        model=model.eval(), scope=scope, cfg=cfg, patterns=patterns, kind=kind,
        rule=f'layers the {kind} model file names as N:M',
        source=(f'trained weights from {model_file} ({kind} file written by '
                'tools/convert.py)'),
        model_file=model_file, meta=meta)


def magnitude_sparse(model: nn.Module, patterns: Optional[Patterns] = None,
                     n: int = 2, m: int = 4) -> Tuple[Patterns, str]:
    """Bake magnitude N:M masks (:func:`~lbc_mm.sparsity.magnitude_mask`) into a
    model with stock layers (in place).

    Args:
        model (nn.Module): plain Conv2d / Linear layers.
        patterns (dict, optional): the layers to mask and their patterns; empty or
            None: the layers ``NMSparsify``'s default rule picks, at ``n:m``.

    Returns:
        tuple: ``{name: (n, m)}`` of the masked layers, and how they were picked.
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
    """Random-init model with magnitude ``n:m`` masks (timing does not need
    trained values): on the layers the config makes sparse, else on those of
    ``NMSparsify``'s default rule (``kind='random'``, no model file)."""
    cfg = load_config(config)
    _override_score_thr(cfg, score_thr)
    model, scope = build_model(cfg)
    config_patterns = densify_model(model)  # the layers the config made sparse
    # they get the timed pattern (the GPU kernels run 2:4)
    patterns, rule = magnitude_sparse(
        model, {name: (n, m) for name in config_patterns}, n, m)
    return LoadedModel(
        model=model.eval(), scope=scope, cfg=cfg, patterns=patterns, kind='random',
        rule=rule, source=(f'random-init weights with magnitude {n}:{m} masks (no '
                           'model file given; timing does not depend on the values)'))


def prepare(config: Optional[str], model_file: Optional[str], n: int = 2, m: int = 4,
            score_thr: Optional[float] = 0.0, device: str = 'cpu') -> LoadedModel:
    """Config (+ converted model file) -> the benchmark's model on ``device``.

    :func:`load_converted` (N:M checked by the caller, ``nm_report``) or, without
    ``model_file``, :func:`random_weights`; ``score_thr``: the detector
    ``test_cfg.rcnn.score_thr`` override.
    """
    if model_file is not None:
        got = load_converted(config, model_file, check=False, score_thr=score_thr)
    else:
        got = random_weights(config, n, m, score_thr)
    got.model = got.model.to(device)
    return got
