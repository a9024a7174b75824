"""Which layers a TensorRT build ran with sparse kernels (pure functions of its
text / JSON): the engine's layer information (``--exportLayerInfo``:
``HasSparseWeights`` or a ``sparse`` tactic), the verbose build log's "(Sparsity)
... picked sparse implementation for layers" as a second signal, and
:func:`layer_verdicts` mapping both back to the ONNX file's 2:4 weights.
"""
import re
from typing import Dict, List, Sequence

__all__ = ['engine_layers', 'layer_verdicts', 'parse_trtexec_log']

_PICKED = re.compile(r'\(Sparsity\)[^\n]*picked sparse implementation for layers:'
                     r'[ \t]*([^\n]*)')
_ELIGIBLE = re.compile(r'\(Sparsity\)[^\n]*eligible for sparse math:[ \t]*([^\n]*)')


def _split_layers(text: str) -> List[str]:
    return [p.strip() for p in text.strip().rstrip('.').split(',') if p.strip()]


def parse_trtexec_log(log: str) -> Dict[str, object]:
    """The build log's sparse / eligible layer lists."""
    picked = [x for m in _PICKED.findall(log) for x in _split_layers(m)]
    eligible = [x for m in _ELIGIBLE.findall(log) for x in _split_layers(m)]
    return {'sparse_layers': picked, 'eligible_layers': eligible}


def _truthy(v) -> bool:
    return v is True or (isinstance(v, (int, float)) and v != 0) or \
        str(v).strip().lower() in ('1', 'true', 'yes')


def engine_layers(layer_info) -> List[Dict[str, object]]:
    """Engine layers of ``--exportLayerInfo`` JSON (any version): ``name``,
    ``sparse`` (None without ``--profilingVerbosity=detailed``), ``tactic``."""
    layers = layer_info.get('Layers', []) if isinstance(layer_info, dict) else \
        layer_info if isinstance(layer_info, list) else []
    out = []
    for layer in layers:
        if isinstance(layer, str):  # names only (no detailed profiling verbosity)
            out.append(dict(name=layer, sparse=None, tactic=''))
            continue
        if not isinstance(layer, dict):
            continue
        tactic = str(layer.get('TacticName', '') or '')
        sparse = _truthy(layer.get('HasSparseWeights')) or 'sparse' in tactic.lower()
        out.append(dict(name=str(layer.get('Name', '?')), sparse=sparse,
                        tactic=tactic))
    return out


def _parts(name: str) -> List[str]:
    """Fused TensorRT layer ``'a + b + c'`` -> its ONNX node names."""
    return [p.strip() for p in name.split(' + ') if p.strip()]


def layer_verdicts(rows: List[Dict[str, object]], layers: List[Dict[str, object]],
                   log_picked: Sequence[str] = ()) -> List[Dict[str, object]]:
    """Per 2:4 row of :func:`~lbc_mm.deploy.onnx.check.initializer_rows`: did the
    sparse engine (:func:`engine_layers`, the log's ``log_picked`` names) run it
    sparse? ``layer``, ``node``, ``engine_layer``, ``verdict`` (``'sparse'``,
    ``'eligible, not picked'``, ``'not in layer info'``), ``log``."""
    by_node = {}
    for lay in layers:
        for part in _parts(lay['name']):
            by_node.setdefault(part, lay)
    picked = {p for name in log_picked for p in _parts(name)}
    out = []
    for r in rows:
        if not r.get('is_2of4'):
            continue
        node = str(r.get('node') or '')
        # TensorRT may prefix / suffix node names
        lay = by_node.get(node) or next(
            (x for x in layers if node and node in x['name']), None)
        verdict = 'not in layer info' if lay is None or lay['sparse'] is None else (
            'sparse' if lay['sparse'] else 'eligible, not picked')
        out.append(dict(layer=r.get('layer'), node=node,
                        engine_layer=lay['name'] if lay else None, verdict=verdict,
                        log=node in picked or any(node and node in p for p in picked)))
    return out
