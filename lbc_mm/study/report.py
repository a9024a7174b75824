"""The method study's table, JSON summary and chart."""
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from ..io import atomic_write
from .grid import METHODS

METRIC_PRIORITY = ('accuracy/top1', 'coco/bbox_mAP')
OUT_NAME = 'compare_methods'


def pick_metric(results: Sequence[dict], wanted: Optional[str]) -> Optional[str]:
    keys: List[str] = []
    for res in results:
        for key in res.get('metrics', {}):
            if key not in keys:
                keys.append(key)
    if wanted:
        return wanted
    for key in METRIC_PRIORITY:
        if key in keys:
            return key
    return keys[0] if keys else None


def _mean_std(values: Sequence[float]) -> Tuple[Optional[float], Optional[float]]:
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def summarize(results: Sequence[dict], metric: Optional[str]) -> List[dict]:
    """One row per (method, pattern): mean / std over the seeds that finished."""
    rows: Dict[Tuple[str, str], dict] = {}
    for res in results:
        key = (res['method'], res['pattern'])
        row = rows.setdefault(key, dict(method=key[0], pattern=key[1], runs=[]))
        row['runs'].append(res)
    out = []
    for row in rows.values():
        ok = [r for r in row['runs'] if r['status'] == 'ok']
        values = [r['metrics'][metric] for r in ok
                  if metric is not None and metric in r.get('metrics', {})]
        mean, std = _mean_std(values)
        nm = [r['nm_exact'] for r in ok if r.get('nm_exact') is not None]
        diag = [r.get('diagnostics') or {} for r in ok]
        agree = [d['agree_mag'] for d in diag if 'agree_mag' in d]
        margin = [d['margin_steps'] for d in diag if 'margin_steps' in d]
        chance = [d['chance_agree'] for d in diag if 'chance_agree' in d]
        tied = [d['tied'] for d in diag if 'tied' in d]
        out.append(dict(
            method=row['method'], pattern=row['pattern'], metric=metric,
            mean=mean, std=std, values=values, seeds=[r['seed'] for r in ok],
            ok=len(ok), failed=[dict(seed=r['seed'], error=r.get('error', ''))
                                for r in row['runs'] if r['status'] == 'failed'],
            not_run=[r['seed'] for r in row['runs'] if r['status'] == 'not run'],
            nm_exact=None if not nm else sum(nm), nm_runs=len(nm),
            wall_s=_mean_std([r['wall_s'] for r in ok])[0],
            peak_mem_mib=max((r['peak_mem_mib'] for r in ok), default=None),
            agree_mag=_mean_std(agree)[0], margin_steps=_mean_std(margin)[0],
            tied=_mean_std(tied)[0],
            chance_agree=chance[0] if chance else None))
    return out


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def markdown_table(rows: Sequence[dict], metric: Optional[str]) -> str:
    """The study's markdown table."""
    head = (f'| method | pattern | {metric or "metric"} (mean ± std) | exactly N:M | '
            'train time / run (s) | peak memory (MiB) | LBC: kept = magnitude '
            '(chance) | LBC: decision margin (score steps; tied decisions) | runs |')
    lines = [head, '|' + '---|' * 9]
    for row in rows:
        value = '-' if row['mean'] is None else (
            f'{row["mean"]:.2f}' + (f' ± {row["std"]:.2f}'
                                    if row['std'] is not None else ''))
        nm = ('n/a' if row['nm_exact'] is None else
              f'{row["nm_exact"]}/{row["nm_runs"]}')
        agree = ('-' if row['agree_mag'] is None else
                 f'{row["agree_mag"]:.1%} ({row["chance_agree"]:.1%})')
        runs = f'{row["ok"]} ok'
        if row.get('not_run'):
            runs += f', {len(row["not_run"])} not run yet'
        if row['failed']:
            runs += ', ' + '; '.join(
                f'seed {f["seed"]} failed: {f["error"][:120]}'.replace('|', '/')
                for f in row['failed'])
        lines.append(
            f'| {row["method"]} | {row["pattern"]} | {value} | {nm} | '
            f'{_fmt(row["wall_s"], 0)} | {_fmt(row["peak_mem_mib"], 0)} | {agree} | '
            f'{_fmt(row["margin_steps"], 1)}'
            + ('' if row.get('tied') is None else f' ({row["tied"]:.0%} tied)')
            + f' | {runs} |')
    return '\n'.join(lines) + '\n'


def write_chart(path: str, rows: Sequence[dict], metric: Optional[str]):
    """Metric per method and pattern (bars, std error bars; dense as a line);
    returns the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    patterns = []
    for row in rows:
        if row['method'] != 'dense' and row['pattern'] not in patterns:
            patterns.append(row['pattern'])
    methods = [m for m in METHODS if m != 'dense'
               and any(r['method'] == m for r in rows)]
    fig = Figure(figsize=(max(5, 1.6 * max(1, len(patterns)) + 2), 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(methods))
    for j, method in enumerate(methods):
        xs, ys, errs = [], [], []
        for i, pattern in enumerate(patterns):
            row = next((r for r in rows if r['method'] == method
                        and r['pattern'] == pattern), None)
            if row is None or row['mean'] is None:
                continue
            xs.append(i + (j - (len(methods) - 1) / 2) * width)
            ys.append(row['mean'])
            errs.append(row['std'] or 0.0)
        ax.bar(xs, ys, width, yerr=errs, capsize=3, label=method)
    for row in rows:
        if row['method'] == 'dense' and row['mean'] is not None:
            ax.axhline(row['mean'], color='black', linestyle='--', label='dense')
            if row['std']:
                ax.axhspan(row['mean'] - row['std'], row['mean'] + row['std'],
                           color='grey', alpha=0.2)
    ax.set_xticks(range(len(patterns)))
    ax.set_xticklabels(patterns)
    ax.set_xlabel('N:M pattern')
    ax.set_ylabel(f'{metric} (mean ± std over seeds)' if metric else 'metric')
    values = [r['mean'] for r in rows if r['mean'] is not None]
    if values:
        low, high = min(values), max(values)
        pad = max(1e-6, (high - low) * 0.5 + 0.02 * abs(high))
        ax.set_ylim(low - pad, high + pad)
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=100))
    return fig
