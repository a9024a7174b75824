"""Compare N:M methods (dense / LBC / SR-STE / STE / ASP) on one recipe and data.

The paper's comparison table for a user's own config::

    python tools/compare_methods.py CONFIG [--methods dense,lbc,srste,ste,asp]
        [--patterns 2:4,1:4,2:8] [--seeds 0,1,2] [--work-dir DIR] [--metric KEY]
        [--windows 0.01,0.05,0.2,0.5,0.75] [--cfg-options KEY=VALUE ...]
        [--report-only]

One training run per (method, pattern, seed) under ``--work-dir``; finished runs are
skipped, so a rerun continues a stopped study. What changes between runs, the
faults and the outputs: :mod:`lbc_mm.study`, docs/user_guides/study.md.
"""
import argparse
import os.path as osp
import shlex
import sys
from typing import List, Optional


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from lbc_mm.cli import KeyValueAction
    from lbc_mm.study import METHODS, parse_arm, parse_patterns, with_windows
    parser = argparse.ArgumentParser(
        description='Compare dense / LBC / SR-STE / STE / ASP on one config')
    parser.add_argument('config', help='train config (any lbc_mm N:M config)')
    parser.add_argument('--methods', default='dense,lbc,srste,ste,asp',
                        help=f'comma-separated, from {",".join(METHODS)}')
    parser.add_argument('--patterns', default='2:4,1:4,2:8',
                        help='comma-separated N:M patterns')
    parser.add_argument('--seeds', default='0,1,2', help='comma-separated seeds')
    parser.add_argument('--work-dir', help='study folder (one sub-folder per run); '
                        'default work_dirs/compare_methods/<config name>')
    parser.add_argument('--metric', help='metric key to compare (default: '
                        'accuracy/top1, else coco/bbox_mAP, else the first)')
    parser.add_argument('--cfg-options', nargs='+', action=KeyValueAction,
                        help='override config settings for every run')
    parser.add_argument('--windows', help='comma-separated LBC removal windows '
                        't_f as fractions of the run (e.g. 0.01,0.05,0.2,0.5,0.75): '
                        'each LBC arm runs once per window')
    parser.add_argument('--report-only', action='store_true',
                        help='train nothing: write the table, JSON and chart of '
                        'the runs finished so far (e.g. while a study runs)')
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(',') if m.strip()]
    if not args.methods:
        parser.error(f'--methods: expected from {METHODS}')
    for arm in args.methods:
        try:
            parse_arm(arm)
        except ValueError as exc:
            parser.error(f'--methods: {exc}')
    if args.windows:
        try:
            windows = [float(w) for w in args.windows.split(',') if w.strip()]
        except ValueError:
            parser.error('--windows: comma-separated fractions')
        if not windows or not all(0 <= w <= 1 for w in windows):
            parser.error('--windows: fractions of the run in [0, 1]')
        args.methods = with_windows(args.methods, windows)
    try:
        args.patterns = parse_patterns(args.patterns)
    except ValueError as exc:
        parser.error(f'--patterns: {exc}')
    try:
        args.seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
    except ValueError:
        parser.error('--seeds: comma-separated integers')
    if any(m != 'dense' for m in args.methods) and not args.patterns:
        parser.error('--patterns: at least one N:M pattern')
    if args.work_dir is None:
        args.work_dir = osp.join('work_dirs', 'compare_methods',
                                 osp.splitext(osp.basename(args.config))[0])
    return args


def main(argv: Optional[List[str]] = None) -> int:
    """Run the study; 0, 1 when a run failed, 143 / 130 on SIGTERM / Ctrl-C."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from lbc_mm.study import run_study
    from lbc_mm.tool_exit import run_tool
    command = 'python tools/compare_methods.py ' + shlex.join(argv)
    running: List[Optional[str]] = [None]  # the run training now

    def study() -> int:
        results = run_study(args, command, on_run=running.append)
        return 1 if any(r['status'] == 'failed' for r in results) else 0

    def stopped() -> str:
        return (f'{running[-1]} was stopped too; a rerun trains it again (finished '
                'runs are skipped)' if running[-1] else '')

    return run_tool(study, stopped)


if __name__ == '__main__':
    sys.exit(main())
