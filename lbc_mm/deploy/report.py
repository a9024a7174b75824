"""What a benchmark writes (each file through :func:`lbc_mm.io.atomic_write`): its
JSON, markdown tables and the per-layer chart, also of several (``--combine``)."""
import json
import platform
from typing import Dict, List, Optional

import torch

from ..io import atomic_write
from . import kernels

__all__ = ['combined_markdown', 'e2e_markdown', 'environment', 'layer_markdown',
           'plot_layers', 'short_names', 'tables', 'write_json']


def environment() -> Dict[str, object]:
    """Versions and hardware, so a JSON file describes itself."""
    env: Dict[str, object] = {
        'python': platform.python_version(), 'torch': torch.__version__,
        'cuda': torch.version.cuda, 'host': platform.node(),
        'cusparselt': kernels.cusparselt_version(), 'gpu': None}
    for pkg in ('mmengine', 'mmcv', 'mmdet', 'mmpretrain'):
        try:
            env[pkg] = __import__(pkg).__version__
        except Exception:  # noqa: BLE001  (optional for the report)
            env[pkg] = None
    if torch.cuda.is_available():
        env['gpu'] = torch.cuda.get_device_name()
        env['capability'] = 'sm%d%d' % torch.cuda.get_device_capability()
    return env


def write_json(obj: dict, path: str) -> None:
    """Write ``obj`` as JSON atomically."""
    text = json.dumps(obj, indent=1, default=str).encode()
    atomic_write(path, lambda f: f.write(text))


def short_names(names: List[str]) -> str:
    """Compact label for a list of layer names (first name, count)."""
    return names[0] if len(names) == 1 else f'{names[0]} (+{len(names) - 1})'


def _fmt(value, pattern: str = '%.3f') -> str:
    return (pattern % value) if isinstance(value, (int, float)) else '-'


def _table(header: List[str], rows: List[List[object]]) -> str:
    lines = [header, ['---'] * len(header)] + rows
    return '\n'.join('| ' + ' | '.join(str(c) for c in line) + ' |' for line in lines)


def layer_markdown(rows: List[dict], dtype: str) -> str:
    """Markdown table of per-layer timings for one dtype."""
    out = []
    for row in rows:
        graph = row.get('timing', {}).get('cuda_graph', {})
        best_graph = row.get('best', {}).get('cuda_graph') or [None, None]
        best_eager = row.get('best', {}).get('eager') or [None, None]
        sparse_ms = graph.get(best_graph[0], {}).get('ms') if best_graph[0] else None
        if best_graph[0] or best_eager[0]:
            variant = f'{best_graph[0] or "-"} / {best_eager[0] or "-"}'
        else:
            variant = row.get('unsupported') or row.get('error') or '-'
        out.append([short_names(row['layers']), row['kind'], row.get('weight_shape'),
                    row['input_shape'], _fmt(graph.get('dense', {}).get('ms')),
                    _fmt(sparse_ms), _fmt(best_graph[1], '%.2fx'),
                    _fmt(best_eager[1], '%.2fx'), variant])
    return _table([f'layer ({dtype})', 'kind', 'weight', 'input', 'dense ms (graph)',
                   '2:4 ms (graph)', 'speedup graph', 'speedup eager',
                   'best 2:4 variant (graph / eager)'], out)


def e2e_markdown(model_name: str, e2e: Dict[str, dict]) -> str:
    """Markdown table of end-to-end timings (``result['end_to_end']``)."""
    out = []
    for key, entry in e2e.items():
        if not isinstance(entry, dict):  # the stage's own error line
            continue
        if 'timing' not in entry:
            out.append([model_name, key, '-', f'error: {entry.get("error")}'])
            continue
        ms = {k: _fmt(v.get('ms'), '%.2f') for k, v in entry['timing'].items()}
        fallback = ' (fallback: dense)' if entry.get('auto_fallback_to_dense') else ''
        out.append([
            model_name, entry['function'], entry['mode'], ms.get('dense', '-'),
            _fmt(entry.get('auto_ms'), '%.2f'),
            _fmt(entry.get('auto_speedup'), '%.2fx') + fallback,
            f'{ms.get("auto", "-")} '
            f'({_fmt(entry.get("auto_layers_speedup"), "%.2fx")})',
            ms.get('all_sparse', '-'), _fmt(entry.get('all_sparse_speedup'), '%.2fx'),
            f'{entry.get("auto_sparse_units", "-")}/{entry.get("units", "-")}',
            entry.get('check_summary', '-')])
    return _table(['model', 'function', 'mode', 'dense ms', 'auto ms', 'auto speedup',
                   'per-layer choice ms (speedup)', 'all-2:4 ms', 'all-2:4 speedup',
                   'sparse units (auto)', 'output rel. err (auto / all-2:4)'], out)


def tables(result: dict, dtypes: List[str]) -> Dict[str, object]:
    """The markdown tables of one benchmark result (stored in its JSON)."""
    return {'layers': {dt: layer_markdown(result['layers'].get(dt, []), dt)
                       for dt in dtypes if result['layers'].get(dt)},
            'end_to_end': e2e_markdown(result['model_name'], result['end_to_end'])}


def combined_markdown(results: List[dict], unreadable: List[str]) -> str:
    """One markdown summary of several benchmark results (``--combine``)."""
    lines = list(unreadable)
    for res in results:
        env = res.get('env', {})
        lines.append(f'## {res.get("model_name")} (batch {res.get("batch")}, '
                     f'{res.get("dtype")}, {env.get("gpu")}, torch {env.get("torch")}, '
                     f'cuSPARSELt {env.get("cusparselt")})')
        cut = f'; truncated: {res["truncated"]}' if res.get('truncated') else ''
        if res.get('allowed_variants') is not None:
            cut += f'; 2:4 variants allowed: {res["allowed_variants"]}'
        lines.append(f'weights: {res.get("weights_source", res.get("weights"))}; '
                     f'stages: {res.get("stages_done")}{cut}')
        if res.get('no_sparse_timing'):
            lines.append(f'no sparse timing: {res["no_sparse_timing"]}')
        if any(isinstance(v, dict) for v in res.get('end_to_end', {}).values()):
            lines.append(e2e_markdown(res.get('model_name'), res['end_to_end']))
        for dt, rows in res.get('layers', {}).items():
            if rows:
                lines.append(layer_markdown(rows, dt))
        lines.append('')
    return '\n\n'.join(lines) + '\n'


def plot_layers(results: List[dict], path: str, title: str = '') -> Optional[str]:
    """PNG bar chart of per-layer 2:4 speedups, a panel per result and dtype;
    returns ``path``, or None when there was nothing to plot."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    panels = []
    for res in results:
        for dt, rows in res.get('layers', {}).items():
            if rows:
                panels.append((f'{res.get("model_name", "?")} {dt}', rows))
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 3.2 * len(panels)),
                             squeeze=False)
    for ax, (name, rows) in zip(axes[:, 0], panels):
        mode = 'cuda_graph' if any(r.get('best', {}).get('cuda_graph')
                                   for r in rows) else 'eager'
        vals = [(r.get('best', {}).get(mode) or [None, None])[1] or 0.0 for r in rows]
        ax.bar(range(len(vals)), vals,
               color=['tab:green' if v >= 1.0 else 'tab:red' for v in vals])
        ax.axhline(1.0, color='k', lw=0.8)
        ax.set_xticks(range(len(vals)))
        ax.set_xticklabels([f'{r["kind"]} {r.get("weight_shape")}\nx{len(r["layers"])}'
                            for r in rows], rotation=60, ha='right', fontsize=6)
        ax.set_ylabel('2:4 speedup')
        ax.set_title(f'{name}: per-layer dense ms / 2:4 ms ({mode}; 0 = no 2:4 path)',
                     fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=90))
    finally:
        plt.close(fig)
    return path
