"""What a TensorRT build says about sparse kernels: the log and the layer information.

Which layers ran with sparse kernels comes from the engine's layer information
(``--exportLayerInfo`` file or ``IEngineInspector`` JSON: ``HasSparseWeights``, or
a tactic name containing ``sparse``), with TensorRT's verbose build log
("(Sparsity) ... picked sparse implementation for layers: ...") as a second signal;
:func:`layer_verdicts` maps both back to the model's layers and names the ones that
were 2:4 in the ONNX file but did not get a sparse kernel. Pure functions of text /
JSON (no TensorRT needed); :mod:`lbc_mm.deploy.onnx.trtexec` runs the builds.
"""
import re
from typing import Dict, List, Sequence

__all__ = ['engine_layers', 'layer_verdicts', 'parse_trtexec_log',
           'sparse_tactic_layers']

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
    """Engine layers from ``--exportLayerInfo`` / inspector JSON (any version).

    Returns:
        list[dict]: ``name``, ``sparse`` (``HasSparseWeights`` set or a tactic name
        containing ``sparse``; None when the JSON has no detail: built without
        ``--profilingVerbosity=detailed``), ``tactic``.
    """
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
        flag = layer.get('HasSparseWeights')
        sparse = (flag is not None and _truthy(flag)) or 'sparse' in tactic.lower()
        out.append(dict(name=str(layer.get('Name', '?')), sparse=sparse,
                        tactic=tactic))
    return out


def sparse_tactic_layers(layer_info) -> List[str]:
    """Names of the engine layers that run sparse kernels."""
    return [lay['name'] for lay in engine_layers(layer_info) if lay['sparse']]


def _parts(name: str) -> List[str]:
    """Fused TensorRT layer ``'a + b + c'`` -> its ONNX node names."""
    return [p.strip() for p in name.split(' + ') if p.strip()]


def layer_verdicts(rows: List[Dict[str, object]], layers: List[Dict[str, object]],
                   log_picked: Sequence[str] = ()) -> List[Dict[str, object]]:
    """Per 2:4 weight of the ONNX file: did TensorRT run it with a sparse kernel?

    Args:
        rows: :func:`lbc_mm.deploy.onnx.check.initializer_rows` (``node`` names).
        layers: :func:`engine_layers` of the sparse engine.
        log_picked: layer names from the build log's "picked sparse" line.

    Returns:
        list[dict]: for each row with ``is_2of4``: ``layer``, ``node``,
        ``engine_layer``, ``verdict`` (``'sparse'``, ``'eligible, not picked'``,
        ``'not in layer info'``), ``log`` (named in the log's picked line).
    """
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
        lay = by_node.get(node)
        if lay is None:  # TensorRT may prefix / suffix node names
            lay = next((x for x in layers if node and node in x['name']), None)
        verdict = 'not in layer info' if lay is None or lay['sparse'] is None else (
            'sparse' if lay['sparse'] else 'eligible, not picked')
        out.append(dict(layer=r.get('layer'), node=node,
                        engine_layer=lay['name'] if lay else None, verdict=verdict,
                        log=node in picked or any(node and node in p for p in picked)))
    return out
