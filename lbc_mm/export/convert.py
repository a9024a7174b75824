"""Export a trained N:M checkpoint: stock checkpoint + compressed N:M file + stock
config, written all or none (:func:`export_checkpoint`; docs/user_guides/convert.md,
docs/export_format.md).
"""
import copy
import os
from typing import Dict, List, Optional

import torch

from ..apis import (
    build_model,
    checkpoint_mismatch,
    load_checkpoint_into,
    load_config,
    resolve_config,
)
from ..io import atomic_write_all, same_file, torch_writer
from ..sparse_config import LAYER_TYPES, TRANSFORM_TYPE, type_name
from ..sparsity.patterns import parse_pattern
from .bake import NotNMError, densify_model, nm_violations
from .compressed import compress_state_dict, layer_sizes, nbytes

#: The scores' optimizer settings (``LBCOptimWrapperConstructor``).
SCORE_KEYS = ('scores_lr_mult', 'scores_decay_mult')
#: Registries whose lbc_mm items a stock config just leaves out (training only).
OPTIONAL_REGISTRIES = ('HOOKS', 'VISBACKENDS')

def plain_meta(obj, depth: int = 9):
    """Only the plain values (str/int/float/bool/None, lists, dicts) of ``meta``, at
    most ``depth`` containers deep: a stock loader reads the exported file
    weights-only with no allow-list."""
    if obj is None or isinstance(obj, bool):
        return obj
    for kind in (str, int, float):  # str subclasses (TorchVersion) -> plain str
        if isinstance(obj, kind):
            return kind(obj)
    if depth <= 0:
        return None
    if isinstance(obj, (list, tuple)):
        return [plain_meta(v, depth - 1) for v in obj]
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            pv = plain_meta(v, depth - 1)
            if isinstance(k, str) and (pv is not None or v is None):
                out[k] = pv
        return out
    return None


def default_compressed_path(out: str) -> str:
    """``model.pth`` -> ``model.nm.pth``."""
    root, ext = os.path.splitext(out)
    return f'{root}.nm{ext or ".pth"}'


def refuse_overwrites(inputs: Dict[str, str], outputs: Dict[str, str]) -> None:
    """``ValueError`` naming both when an output path is an input or another output
    (symlinks and hard links resolved). ``inputs`` / ``outputs``: ``{label: path}``
    (e.g. ``'CHECKPOINT'``); empty paths are skipped."""
    seen = [(label, path) for label, path in inputs.items() if path]
    for label, path in outputs.items():
        if not path:
            continue
        for other_label, other in seen:
            if same_file(path, other):
                kind = 'input' if other_label in inputs else 'output'
                raise ValueError(
                    f'{label} {path} is the same file as the {kind} {other_label} '
                    f'{other}: refusing to overwrite it; choose another {label}')
        seen.append((label, path))


def default_config_path(out: str) -> str:
    """``model.pth`` -> ``model.py`` (the stock config written next to it)."""
    return f'{os.path.splitext(out)[0]}.py'


def lbc_mm_types() -> Dict[str, str]:
    """Type name -> registry name of everything lbc_mm registers in mmengine's
    root registries."""
    from mmengine import registry as root
    found = {}
    for reg_name in dir(root):
        reg = getattr(root, reg_name)
        if isinstance(reg, root.Registry):
            for name, obj in reg.module_dict.items():
                if getattr(obj, '__module__', '').split('.')[0] == 'lbc_mm':
                    found[name] = reg_name
    return found


def _strip_lbc(node, lbc_types, path: str):
    """Copy of a config node without lbc_mm: sparse layer cfgs -> None, list items
    of lbc_mm hook / visualizer-backend types and the ``_scope_='lbc_mm'`` that
    ``lbc_mm::`` bases add dropped; raises on any other lbc_mm type (naming its
    key)."""
    if isinstance(node, dict):
        if type_name(node) in LAYER_TYPES:  # a stock config: the library default
            return None
        if type_name(node) == TRANSFORM_TYPE:  # the model it wraps, as it was
            inner = dict(node['model'])
            if node.get('data_preprocessor') is not None:
                inner.setdefault('data_preprocessor', node['data_preprocessor'])
            return _strip_lbc(inner, lbc_types, f'{path}.model')
        if node.get('type') in lbc_types:
            raise ValueError(
                f'cannot write a stock config: {path}.type={node["type"]!r} is an '
                f'lbc_mm {lbc_types[node["type"]]} type with no stock equivalent')
        return {k: _strip_lbc(v, lbc_types, f'{path}.{k}') for k, v in node.items()
                if not (k == '_scope_' and v == 'lbc_mm')}
    if isinstance(node, (list, tuple)):
        return type(node)(_strip_lbc(v, lbc_types, f'{path}[{i}]')
                          for i, v in enumerate(node) if not (
                              isinstance(v, dict) and
                              lbc_types.get(v.get('type')) in OPTIONAL_REGISTRIES))
    return node


def stock_config(cfg) -> Dict:
    """The training config as a stock mmdet / mmpretrain config (a plain dict):
    upstream layers, no training-only lbc_mm parts (hooks, visualizer backends,
    the scores' optimizer settings, the DDP wrapper, ``custom_imports``), no
    ``load_from`` / ``resume``; everything else as trained. ``ValueError`` naming
    the key of any other lbc_mm type."""
    data = copy.deepcopy(cfg.to_dict())
    lbc_types = lbc_mm_types()
    for hook in (data.get('default_hooks') or {}).values():
        if isinstance(hook, dict) and hook.get('type') == 'AtomicCheckpointHook':
            hook['type'] = 'CheckpointHook'  # same arguments, non-atomic writes
    optim = data.get('optim_wrapper')
    if isinstance(optim, dict):
        if optim.get('constructor') in lbc_types:
            optim.pop('constructor')
        paramwise = optim.get('paramwise_cfg')
        if isinstance(paramwise, dict):
            for key in SCORE_KEYS:
                paramwise.pop(key, None)
            if not paramwise:
                optim.pop('paramwise_cfg')
    wrapper = data.get('model_wrapper_cfg')
    if isinstance(wrapper, dict) and wrapper.get('type') in lbc_types:
        data.pop('model_wrapper_cfg')
    imports = data.get('custom_imports')
    if isinstance(imports, dict):
        names = imports.get('imports') or []
        names = [names] if isinstance(names, str) else names
        kept = [i for i in names if i.split('.')[0] != 'lbc_mm']
        if kept:
            imports['imports'] = kept
        else:
            data.pop('custom_imports')
    data.update(load_from=None, resume=False)
    return _strip_lbc(data, lbc_types, 'cfg')


def checked_stock_config(cfg, state_dict: Dict[str, torch.Tensor]):
    """:func:`stock_config` as an mmengine ``Config``; ``ValueError`` when the model
    it builds does not take ``state_dict`` strictly."""
    from mmengine.config import Config
    stock = Config(stock_config(cfg))
    model, _ = build_model(stock)
    problem = checkpoint_mismatch(model, state_dict)
    if problem is not None:
        raise ValueError(f'the stock config written from {cfg.filename} does not '
                         f'load the exported weights: {problem}')
    return stock


def export_checkpoint(config: str, checkpoint: str, out: str,
                      compressed_out: Optional[str] = None,
                      pattern: Optional[str] = None,
                      config_out: Optional[str] = None) -> Dict:
    """Convert an lbc_mm checkpoint into a stock checkpoint + compressed file.

    Bakes the masks into the weights, drops the method state (``scores``, ``alive``,
    ``asp_mask``), refuses when a sparse layer is not N:M, then writes all or none
    of ``out`` (the stock model's keys and shapes: loadable without lbc_mm),
    ``compressed_out`` and ``config_out`` (the stock config, so ``out`` loads with
    ``init_detector`` / ``get_model`` without lbc_mm).

    Args:
        config (str): the training config (path or ``pkg::path``).
        checkpoint (str): mmengine checkpoint of that config.
        out (str): stock checkpoint path.
        compressed_out (str, optional): defaults to ``<out stem>.nm<ext>``.
        pattern (str, optional): require every sparse layer's weights to hold
            this N:M pattern (e.g. ``'2:4'``, which 1:4, 2:8 and 1:16 layers hold
            too; each layer is still stored in its trained pattern).
        config_out (str, optional): defaults to ``<out stem>.py``; checked to load
            ``out`` strictly.

    Returns:
        dict: ``rows`` (per sparse layer: layer, pattern, shape, sparsity,
        dense_bytes, compressed_bytes), ``totals``, ``out``, ``compressed_out``,
        ``config_out``.

    Raises:
        FileNotFoundError: config or checkpoint missing.
        ValueError: bad pattern, an output path that is an input or another
            output, a checkpoint that does not fit or is corrupted
            (``CheckpointMismatchError``), layers not N:M (``NotNMError``).
        OSError: a file could not be written (then none is written).
    """
    want = parse_pattern(pattern) if pattern is not None else None
    compressed_out = compressed_out or default_compressed_path(out)
    config_out = config_out or default_config_path(out)
    refuse_overwrites({'CHECKPOINT': checkpoint, 'CONFIG': resolve_config(config)},
                      {'OUT': out, '--compressed': compressed_out,
                       'stock config': config_out})
    cfg = load_config(config)
    model, _scope = build_model(cfg)
    ckpt = load_checkpoint_into(model, checkpoint)
    patterns = densify_model(model)
    if not patterns:
        raise ValueError(f'config {config} has no N:M sparse layers: nothing to export')
    if want is not None:  # the weights decide: 1:4, 2:8 and 1:16 weights are 2:4 too
        differ = {k: want for k, p in patterns.items() if p != want}
        broken = {row[0] for row in nm_violations(model, differ)} if differ else set()
        other = [f'{k} ({n}:{m})' for k, (n, m) in patterns.items() if k in broken]
        if other:
            raise ValueError(f'{len(other)} layers do not have the requested pattern '
                             f'{want[0]}:{want[1]} (their weights break it): '
                             f'{", ".join(other[:5])}')
    bad = nm_violations(model, patterns)
    if bad:
        raise NotNMError(bad)
    state_dict = {k: v.detach().cpu().contiguous()
                  for k, v in model.state_dict().items()}
    stock = checked_stock_config(cfg, state_dict)
    meta = plain_meta(ckpt.get('meta', {})) or {}
    # The stock config as plain data: deploy builds the model from the file alone
    # (a config from a file is data, never code that runs).
    meta['lbc_mm_export'] = {
        'source_checkpoint': os.path.abspath(checkpoint), 'config': config,
        'sparse_layers': {k: f'{n}:{m}' for k, (n, m) in patterns.items()},
        'torch': str(torch.__version__),
        'stock_config': plain_meta(stock.to_dict(), depth=64)}
    comp = compress_state_dict(state_dict, patterns, meta)
    rows: List[Dict] = []
    for key, entry in comp['layers'].items():
        dense_b, comp_b = layer_sizes(entry)
        w = state_dict[key]
        rows.append({'layer': key[:-len('.weight')],
                     'pattern': f'{entry["n"]}:{entry["m"]}',
                     'shape': list(w.shape), 'sparsity': float((w == 0).float().mean()),
                     'dense_bytes': dense_b, 'compressed_bytes': comp_b})
    other_bytes = sum(nbytes(v) for v in comp['dense'].values())
    totals = {
        'sparse_layers': len(rows),
        'sparse_dense_bytes': sum(r['dense_bytes'] for r in rows),
        'sparse_compressed_bytes': sum(r['compressed_bytes'] for r in rows),
        'other_bytes': other_bytes}
    totals['model_dense_bytes'] = totals['sparse_dense_bytes'] + other_bytes
    totals['model_compressed_bytes'] = totals['sparse_compressed_bytes'] + other_bytes
    config_text = stock.pretty_text.encode()
    # all files or none (a failure or Ctrl-C in a later one leaves no earlier one)
    atomic_write_all([(out, torch_writer({'state_dict': state_dict, 'meta': meta})),
                      (compressed_out, torch_writer(comp)),
                      (config_out, lambda f: f.write(config_text))])
    return {'rows': rows, 'totals': totals, 'out': out,
            'compressed_out': compressed_out, 'config_out': config_out}


def format_table(report: Dict) -> str:
    """Per-layer table (pattern, shape, sparsity, bytes dense vs compressed)."""
    lines = ['| layer | pattern | shape | sparsity | dense bytes | compressed bytes |',
             '| --- | --- | --- | --- | --- | --- |']
    for r in report['rows']:
        lines.append(f'| {r["layer"]} | {r["pattern"]} | {tuple(r["shape"])} | '
                     f'{r["sparsity"]:.3f} | {r["dense_bytes"]} | '
                     f'{r["compressed_bytes"]} |')
    t = report['totals']
    lines.append(f'| **sparse layers ({t["sparse_layers"]})** | | | | '
                 f'{t["sparse_dense_bytes"]} | {t["sparse_compressed_bytes"]} |')
    lines.append(f'| **whole model** | | | | {t["model_dense_bytes"]} | '
                 f'{t["model_compressed_bytes"]} |')
    return '\n'.join(lines)
