"""Export a trained lbc_mm checkpoint: stock dense checkpoint + compressed N:M file.

Usage:
    python tools/convert.py CONFIG CHECKPOINT OUT [--compressed PATH] [--pattern 2:4]

OUT gets a checkpoint with exactly the stock model's keys (masks baked in, scores /
alive / asp_mask dropped) that the upstream mmdet / mmpretrain config loads without
lbc_mm; PATH (default ``<OUT stem>.nm<ext>``) gets the compressed N:M form
(docs/export_format.md). Refuses when a sparse layer is not N:M. Both files are
written atomically. Errors are one line on stderr with exit code 1 (130 on Ctrl-C).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Bake N:M masks, verify N:M, write stock + compressed files')
    parser.add_argument('config', help='training config (path or pkg::path)')
    parser.add_argument('checkpoint', help='mmengine checkpoint of that config')
    parser.add_argument('out', help='stock checkpoint to write')
    parser.add_argument('--compressed', default=None,
                        help='compressed N:M file (default <OUT stem>.nm<ext>)')
    parser.add_argument('--pattern', default=None,
                        help='require this pattern on every sparse layer, e.g. 2:4')
    parser.add_argument('--json', default=None, help='also write the table as JSON')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import lbc_mm  # noqa: F401  (compat: weights-only loading of mmengine ckpts)
    from lbc_mm.export import export_checkpoint, format_table, parse_pattern
    from lbc_mm.export.io import atomic_write
    try:
        if args.pattern is not None:
            parse_pattern(args.pattern)
        report = export_checkpoint(args.config, args.checkpoint, args.out,
                                   args.compressed, args.pattern)
    except KeyboardInterrupt:
        print('error: interrupted; no output file was written', file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    except KeyError as exc:  # a registry type the config names is unknown
        print(f'error: config {args.config}: {exc.args[0] if exc.args else exc}',
              file=sys.stderr)
        return 1
    print(format_table(report))
    t = report['totals']
    print(f'wrote {report["out"]} (stock keys) and {report["compressed_out"]} '
          f'(compressed: sparse layers {t["sparse_dense_bytes"]} -> '
          f'{t["sparse_compressed_bytes"]} bytes)')
    if args.json:
        text = json.dumps(report, indent=1).encode()
        atomic_write(args.json, lambda f: f.write(text))
    return 0


if __name__ == '__main__':
    sys.exit(main())
