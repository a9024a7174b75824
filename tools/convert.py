"""Export a trained lbc_mm checkpoint: stock dense checkpoint + compressed N:M file.

Usage:
    python tools/convert.py CONFIG CHECKPOINT OUT [--compressed PATH] [--pattern 2:4]

OUT gets the stock model's keys (masks baked in, method state dropped), PATH (default
``<OUT stem>.nm<ext>``) the compressed N:M form (docs/export_format.md) and
``<OUT stem>.py`` the stock config: OUT and it load with mmdet / mmpretrain without
lbc_mm (:func:`lbc_mm.export.export_checkpoint`, docs/user_guides/convert.md). The
files are written atomically, all or none. Errors are one line on stderr, exit 1;
Ctrl-C exits 130 and SIGTERM 143, without leaving a file behind
(docs/user_guides/failure_behaviour.md).
"""
import argparse
import json
import sys


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
    from lbc_mm.export import export_checkpoint, format_table
    from lbc_mm.export.convert import (
        default_compressed_path,
        default_config_path,
        refuse_overwrites,
    )
    from lbc_mm.io import atomic_write, check_writable, file_ids, replaced_since
    from lbc_mm.tool_exit import run_tool, tool_error_line
    outputs = {'OUT': args.out,
               '--compressed': args.compressed or default_compressed_path(args.out),
               'stock config': default_config_path(args.out), '--json': args.json}
    before = file_ids(outputs.values())

    def written() -> str:
        """What this run wrote, read from the disk (a stop may come at any time)."""
        new = replaced_since(before)
        left = [p for p in filter(None, outputs.values()) if p not in new]
        if not new:
            return 'no output file was written'
        return (', '.join(new) + (' was' if len(new) == 1 else ' were') + ' written'
                + (f', {", ".join(left)} not' if left else ''))

    def convert() -> int:
        try:
            refuse_overwrites({'CHECKPOINT': args.checkpoint, 'CONFIG': args.config},
                              outputs)
            # before the 10-20 s of loading
            for path in filter(None, outputs.values()):
                check_writable(path)
            report = export_checkpoint(args.config, args.checkpoint, args.out,
                                       args.compressed, args.pattern)
            print(format_table(report))
            t = report['totals']
            print(f'wrote {report["out"]} (stock keys), {report["compressed_out"]} '
                  f'(compressed: sparse layers {t["sparse_dense_bytes"]} -> '
                  f'{t["sparse_compressed_bytes"]} bytes) and {report["config_out"]} '
                  '(the stock config: it and OUT load without lbc_mm)')
            if args.json:
                text = json.dumps(report, indent=1).encode()
                atomic_write(args.json, lambda f: f.write(text))
        # a write / missing file; bad pattern / paths, mismatch, corrupted, not
        # N:M; a registry type the config names is unknown
        except (OSError, ValueError, KeyError) as exc:
            print(tool_error_line(exc, args.config, outputs.values(), written()),
                  file=sys.stderr)
            return 1
        return 0

    return run_tool(convert, written)


if __name__ == '__main__':
    sys.exit(main())
