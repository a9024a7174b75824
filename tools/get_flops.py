"""Parameters, MACs and size of an N:M model as deployed (CPU only, no data).

Usage:
    python tools/get_flops.py CONFIG [CHECKPOINT] [--shape H [W]] [--all-layers]
                              [--json PATH]

CHECKPOINT may be a training checkpoint of CONFIG or what tools/convert.py wrote;
without it the config's random init is counted (the counts do not depend on the
weights). Prints per N:M layer (``--all-layers``: every Conv2d / Linear) and in total
the dense and N:M-effective parameters and MACs and the compressed size
(:mod:`lbc_mm.cost`; unlike mmdet's ``get_flops.py``, LBC scores are not counted:
they are dropped on export). Errors are one line, exit 1.
"""
import argparse
import json
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Dense vs N:M parameters / MACs / size of an lbc_mm model')
    parser.add_argument('config', help='config (path or pkg::path)')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='training checkpoint or converted model file '
                        '(default: the config\'s random init)')
    parser.add_argument('--shape', type=int, nargs='+', default=None,
                        help='input H [W] (default 800 1344 for mmdet, 224 for '
                        'mmpretrain)')
    parser.add_argument('--all-layers', action='store_true',
                        help='list the dense Conv2d / Linear layers too')
    parser.add_argument('--json', default=None, help='also write the report as JSON')
    args = parser.parse_args(argv)
    if args.shape is not None:
        if len(args.shape) not in (1, 2) or min(args.shape) <= 0:
            parser.error('--shape takes one or two positive sizes: H [W]')
        args.shape = tuple(args.shape) * (3 - len(args.shape))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import lbc_mm  # noqa: F401  (registers the layers; weights-only mmengine ckpts)
    from lbc_mm.cost import cost_report, format_report
    from lbc_mm.io import atomic_write
    from lbc_mm.tool_exit import run_tool, tool_error_line

    def report_cost() -> int:
        try:
            report = cost_report(args.config, args.checkpoint, args.shape)
            print(format_report(report, all_layers=args.all_layers))
            if args.json:
                text = json.dumps(report, indent=1).encode()
                atomic_write(args.json, lambda f: f.write(text))
        # missing / mismatched / corrupted files; an unknown registry type
        except (OSError, ValueError, KeyError) as exc:
            print(tool_error_line(exc, args.config), file=sys.stderr)
            return 1
        return 0

    return run_tool(report_cost)


if __name__ == '__main__':
    sys.exit(main())
