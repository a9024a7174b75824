"""Export a trained N:M checkpoint: stock checkpoint + compressed N:M file.

``export_checkpoint`` bakes the masks into the weights, drops the scores (and the
``alive`` / ``asp_mask`` buffers), refuses when any sparse layer is not N:M, then
writes both or neither of (atomically)

1. ``out``: ``{'state_dict', 'meta'}`` with exactly the stock model's keys and
   shapes, loadable by the upstream config without lbc_mm;
2. ``compressed_out``: the compressed N:M format (``lbc_mm.export.compressed``,
   ``docs/export_format.md``).
"""
import os
from typing import Dict, List, Optional, Tuple

import torch

from ..apis import build_model, load_checkpoint_into, load_config, resolve_config
from ..sparsity.patterns import validate_pattern
from .bake import SPARSE_ONLY_KEYS, NotNMError, densify_model, nm_violations
from .compressed import compress_state_dict, layer_sizes, nbytes
from .io import atomic_write_all, same_file, torch_writer

_PLAIN = (str, int, float, bool, type(None))


def parse_pattern(text: str) -> Tuple[int, int]:
    """``'2:4'`` -> ``(2, 4)``; ``ValueError`` for anything that is not N:M."""
    parts = str(text).split(':')
    try:
        n, m = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f'pattern {text!r} is not N:M (expected e.g. 2:4)') from None
    try:
        validate_pattern(n, m)
    except ValueError as err:
        raise ValueError(
            f'pattern {text!r} is not a valid N:M pattern: {err}') from None
    return n, m


def plain_meta(obj, depth: int = 0):
    """Keep only plain values (str/int/float/bool/None, lists, dicts) of ``meta``.

    A stock loader must read the exported file with ``weights_only=True`` and no
    allow-list, so nothing else may be pickled into it.
    """
    if obj is None or isinstance(obj, bool):
        return obj
    for kind in (str, int, float):  # str subclasses (TorchVersion) -> plain str
        if isinstance(obj, kind):
            return kind(obj)
    if depth > 8:
        return None
    if isinstance(obj, (list, tuple)):
        return [plain_meta(v, depth + 1) for v in obj if isinstance(
            plain_meta(v, depth + 1), _PLAIN + (list, dict))]
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            pv = plain_meta(v, depth + 1)
            if isinstance(k, str) and (pv is not None or v is None):
                out[k] = pv
        return out
    return None


def default_compressed_path(out: str) -> str:
    """``model.pth`` -> ``model.nm.pth``."""
    root, ext = os.path.splitext(out)
    return f'{root}.nm{ext or ".pth"}'


def refuse_overwrites(inputs: Dict[str, str], outputs: Dict[str, str]) -> None:
    """Refuse output paths that are an input or another output.

    Paths are compared after resolving symlinks (and as files, so a hard link
    counts too): ``OUT == CHECKPOINT`` would replace the training checkpoint with
    the export, ``--compressed == OUT`` would leave one file of the two.

    Args:
        inputs (dict): ``{label: path}`` of files read (e.g. ``'CHECKPOINT'``).
        outputs (dict): ``{label: path}`` of files to write; None values skipped.

    Raises:
        ValueError: naming both labels and paths.
    """
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


def export_checkpoint(config: str, checkpoint: str, out: str,
                      compressed_out: Optional[str] = None,
                      pattern: Optional[str] = None) -> Dict:
    """Convert an lbc_mm checkpoint into a stock checkpoint + compressed file.

    Args:
        config (str): the training config (path or ``pkg::path``).
        checkpoint (str): mmengine checkpoint of that config.
        out (str): stock checkpoint path.
        compressed_out (str, optional): compressed path. Defaults to
            ``<out stem>.nm<ext>``.
        pattern (str, optional): require every sparse layer to have this N:M
            pattern (e.g. ``'2:4'``).

    Returns:
        dict: ``rows`` (per sparse layer: layer, pattern, shape, sparsity,
        dense_bytes, compressed_bytes), ``totals``, ``out``, ``compressed_out``.

    Raises:
        FileNotFoundError: config or checkpoint missing.
        ValueError: bad pattern, an output path that is an input or the other
            output, checkpoint not matching the config or corrupted
            (``CheckpointMismatchError``), layers not N:M (``NotNMError``).
        OSError: a file could not be written (neither file is then written).
    """
    want = parse_pattern(pattern) if pattern is not None else None
    compressed_out = compressed_out or default_compressed_path(out)
    refuse_overwrites({'CHECKPOINT': checkpoint, 'CONFIG': resolve_config(config)},
                      {'OUT': out, '--compressed': compressed_out})
    cfg = load_config(config)
    model, _scope = build_model(cfg)
    ckpt = load_checkpoint_into(model, checkpoint)
    patterns = densify_model(model)
    if not patterns:
        raise ValueError(f'config {config} has no N:M sparse layers: nothing to export')
    if want is not None:
        other = [f'{k} ({n}:{m})' for k, (n, m) in patterns.items() if (n, m) != want]
        if other:
            raise ValueError(f'{len(other)} layers do not have the requested pattern '
                             f'{want[0]}:{want[1]}: {", ".join(other[:5])}')
    bad = nm_violations(model, patterns)
    if bad:
        raise NotNMError(bad)
    state_dict = {k: v.detach().cpu().contiguous()
                  for k, v in model.state_dict().items()}
    leftover = [k for k in state_dict if k.rsplit('.', 1)[-1] in SPARSE_ONLY_KEYS]
    assert not leftover, f'sparse-only keys survived densify: {leftover[:3]}'
    meta = plain_meta(ckpt.get('meta', {})) or {}
    meta['lbc_mm_export'] = {
        'source_checkpoint': os.path.abspath(checkpoint), 'config': config,
        'sparse_layers': {k: f'{n}:{m}' for k, (n, m) in patterns.items()},
        'torch': str(torch.__version__)}
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
    # both files or neither (a failure or Ctrl-C in the second leaves no first)
    atomic_write_all([(out, torch_writer({'state_dict': state_dict, 'meta': meta})),
                      (compressed_out, torch_writer(comp))])
    return {'rows': rows, 'totals': totals, 'out': out,
            'compressed_out': compressed_out}


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
