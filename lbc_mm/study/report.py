"""The method study's table, JSON summary and chart."""
import os
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from ..visualization import write_figure
from .grid import parse_arm

METRIC_PRIORITY = ('accuracy/top1', 'coco/bbox_mAP')
OUT_NAME = 'compare_methods'


def pick_metric(results: Sequence[dict], wanted: Optional[str]) -> Optional[str]:
    if wanted:
        return wanted
    keys = list(dict.fromkeys(k for res in results for k in res.get('metrics', {})))
    return next((k for k in METRIC_PRIORITY if k in keys), keys[0] if keys else None)


def _mean(values: Sequence[float]) -> Optional[float]:
    return statistics.fmean(values) if values else None


def summarize(results: Sequence[dict], metric: Optional[str]) -> List[dict]:
    """One row per (method, pattern): mean / std over the seeds that finished."""
    groups: Dict[Tuple[str, str], List[dict]] = {}
    for res in results:
        groups.setdefault((res['method'], res['pattern']), []).append(res)
    out = []
    for (method, pattern), runs in groups.items():
        ok = [r for r in runs if r['status'] == 'ok']
        values = [r['metrics'][metric] for r in ok if metric in r['metrics']]
        nm = [r['nm_exact'] for r in ok if r.get('nm_exact') is not None]
        diag = [r.get('diagnostics') or {} for r in ok]
        diag = {key: [d[key] for d in diag if key in d]
                for key in ('agree_mag', 'margin_steps', 'chance_agree', 'tied')}
        cost = [r['train_cost'] for r in ok if r.get('train_cost')]
        out.append(dict(
            method=method, pattern=pattern, metric=metric, mean=_mean(values),
            std=statistics.stdev(values) if len(values) > 1 else None,
            values=values, seeds=[r['seed'] for r in ok], ok=len(ok),
            failed=[dict(seed=r['seed'], error=r.get('error', ''))
                    for r in runs if r['status'] == 'failed'],
            not_run=[r['seed'] for r in runs if r['status'] == 'not run'],
            nm_exact=None if not nm else sum(nm), nm_runs=len(nm),
            wall_s=_mean([r['wall_s'] for r in ok]),
            peak_mem_mib=max((r['peak_mem_mib'] for r in ok), default=None),
            agree_mag=_mean(diag['agree_mag']),
            margin_steps=_mean(diag['margin_steps']), tied=_mean(diag['tied']),
            chance_agree=diag['chance_agree'][0] if diag['chance_agree'] else None,
            # training FLOPs and their ratio to dense (lbc_mm.train_cost)
            train_flops=_mean([c['flops'] for c in cost]),
            train_relative=_mean([c['relative'] for c in cost])))
    return out


def _flops(value: Optional[float]) -> str:
    if value is None:
        return '-'
    for div, unit in ((1e15, 'P'), (1e12, 'T'), (1e9, 'G'), (1e6, 'M')):
        if value >= div:
            return f'{value / div:.3g} {unit}'
    return f'{value:.3g}'


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def markdown_table(rows: Sequence[dict], metric: Optional[str]) -> str:
    """The study's markdown table."""
    head = (f'| method | pattern | {metric or "metric"} (mean ± std) | exactly N:M | '
            'training FLOPs (x dense) | train time / run (s) | peak memory (MiB) | '
            'LBC: kept = magnitude (chance) | LBC: decision margin (score steps; '
            'tied decisions) | runs |')
    lines = [head, '|' + '---|' * 10]
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
            f'{_flops(row.get("train_flops"))}'
            f' ({_fmt(row.get("train_relative"), 3)}) | {_fmt(row["wall_s"], 0)} | '
            f'{_fmt(row["peak_mem_mib"], 0)} | {agree} | '
            f'{_fmt(row["margin_steps"], 1)}'
            + ('' if row.get('tied') is None else f' ({row["tied"]:.0%} tied)')
            + f' | {runs} |')
    return '\n'.join(lines) + '\n'


def write_chart(path: str, rows: Sequence[dict], metric: Optional[str]):
    """Metric per method and pattern (bars, std error bars; dense as a line);
    returns the figure. When the runs report training FLOPs, the metric against
    them is drawn beside it too (:func:`write_window_chart`, ``*_windows.png``)."""
    if any(r.get('train_relative') is not None for r in rows):
        stem, ext = os.path.splitext(path)
        write_window_chart(f'{stem}_windows{ext}', rows, metric)
    from matplotlib.figure import Figure

    sparse = [r for r in rows if r['method'] != 'dense']
    patterns = list(dict.fromkeys(r['pattern'] for r in sparse))
    methods = list(dict.fromkeys(r['method'] for r in sparse))
    # Wider with many arms; the legend sits right of the bars.
    fig = Figure(figsize=(max(5, 0.3 * max(1, len(patterns)) * max(5, len(methods)))
                          + 3, 4))
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
            if row.get('train_relative') is not None:  # training FLOPs x dense
                ax.annotate(f'x{row["train_relative"]:.2f}', (xs[-1], 0),
                            xycoords=('data', 'axes fraction'), ha='center',
                            va='bottom', fontsize=6, rotation=90)
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
    ax.set_title('bar foot: training FLOPs x dense (docs/training_cost.md)',
                 fontsize=8)
    values = [r['mean'] for r in rows if r['mean'] is not None]
    if values:
        low, high = min(values), max(values)
        pad = max(1e-6, (high - low) * 0.5 + 0.02 * abs(high))
        ax.set_ylim(low - pad, high + pad)
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    write_figure(fig, path)
    return fig


def _family(arm: str) -> Tuple[str, Optional[float]]:
    """``'lbc+noise_margin=2+t_f=0.05'`` -> ``('lbc+noise_margin=2', 0.05)``."""
    family = '+'.join(item for item in arm.split('+') if not item.startswith('t_f='))
    return family, parse_arm(arm)[1].get('t_f')


def write_window_chart(path: str, rows: Sequence[dict], metric: Optional[str]):
    """Metric against training FLOPs (x dense), one panel per pattern: a line per
    LBC arm through its removal windows (labelled ``t_f``), a point per other
    method, dense as a line; returns the figure."""
    from matplotlib.figure import Figure

    patterns = list(dict.fromkeys(r['pattern'] for r in rows
                                  if r['method'] != 'dense'))
    fig = Figure(figsize=(5 * max(1, len(patterns)), 4.2))
    dense = [r for r in rows if r['method'] == 'dense' and r['mean'] is not None]
    for i, pattern in enumerate(patterns):
        ax = fig.add_subplot(1, max(1, len(patterns)), i + 1)
        lines: Dict[str, list] = {}
        for row in rows:
            if (row['pattern'] == pattern and row['mean'] is not None
                    and row.get('train_relative') is not None):
                family, t_f = _family(row['method'])
                lines.setdefault(family, []).append((row['train_relative'],
                                                     row['mean'], row['std'], t_f))
        for family, points in lines.items():
            points.sort()
            xs, ys, errs, tfs = zip(*points)
            ax.errorbar(xs, ys, yerr=[e or 0.0 for e in errs], marker='o',
                        capsize=3, label=family)
            for x, y, t_f in zip(xs, ys, tfs):
                if t_f is not None:
                    ax.annotate(f'{t_f:g}', (x, y), textcoords='offset points',
                                xytext=(3, 3), fontsize=7)
        for row in dense:
            ax.axhline(row['mean'], color='black', linestyle='--', label='dense')
        ax.set_title(f'{pattern} (labels: removal window t_f, fraction of run)',
                     fontsize=9)
        ax.set_xlabel('training FLOPs / dense (docs/training_cost.md)')
        ax.set_ylabel(f'{metric} (mean ± std over seeds)' if metric else 'metric')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    write_figure(fig, path)
    return fig
