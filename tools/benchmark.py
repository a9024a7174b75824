"""Dense vs 2:4 latency of one model, side by side in one process.

Usage:
    python tools/benchmark.py [CONFIG] [MODEL.nm.pth] [--batch 256] [--dtype fp16]
        [--layer-dtypes fp16 bf16] [--out-json out.json] [--out-png out.png]
    python tools/benchmark.py --combine a.json b.json --out-png all.png --out-md all.md
    python tools/benchmark.py --preflight     (which 2:4 variants run on this GPU)

CONFIG is a config path or ``pkg::path`` (``mmdet::mask_rcnn/...``). MODEL is what
tools/convert.py wrote (``.nm.pth`` or ``.pth``; CONFIG is then optional), its N:M
layers 2:4 (1:4, 2:8, 1:16 and 2:4 models are; 4:8 is refused on one line). Without
MODEL the layers the config makes sparse (a stock config: NMSparsify's default
rule) get magnitude 2:4 masks of random-init weights. Without an Ampere-or-newer
GPU the weights are still checked, then one line says why no sparse timing.
Exit codes: 0 done, 1 error / weights not N:M or not 2:4, 2 no sparse timing here.
"""
import argparse
import functools
import json
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Dense vs 2:4 (cuSPARSELt) latency, per layer and end to end')
    parser.add_argument('config', nargs='?', metavar='CONFIG',
                        help='config path or pkg::path (optional with MODEL)')
    parser.add_argument('model_file', nargs='?', default=None, metavar='MODEL',
                        help='converted model file from tools/convert.py: MODEL.nm.pth '
                        'or the stock MODEL.pth (default: random weights, magnitude '
                        'masks)')
    parser.add_argument('--batch', type=int, default=None,
                        help='batch size (default: 64 classifiers, 1 detectors)')
    parser.add_argument('--dtype', default='fp16', choices=['fp16', 'bf16'],
                        help='end-to-end dtype')
    parser.add_argument('--layer-dtypes', nargs='+', default=['fp16', 'bf16'],
                        choices=['fp16', 'bf16'], help='dtypes of the per-layer table')
    parser.add_argument('--img-size', type=int, default=None,
                        help='classifier input size (default 224)')
    parser.add_argument('--det-shape', type=int, nargs=2, default=[800, 1216],
                        metavar=('H', 'W'), help='detector input size')
    parser.add_argument('--channels-last', action='store_true',
                        help='run the model channels-last')
    parser.add_argument('--margin', type=float, default=0.03,
                        help='auto runs a unit 2:4 only if >= 1+margin faster')
    parser.add_argument('--time-budget', type=float, default=80.0,
                        help='seconds; the bf16 table is cut short past it')
    parser.add_argument('--name', default=None, help='model label in tables')
    parser.add_argument('--out-json', default=None,
                        help='JSON path (default work_dirs/benchmark/<name>.json)')
    parser.add_argument('--out-png', default=None, help='per-layer speedup chart')
    parser.add_argument('--out-md', default=None, help='markdown summary (--combine)')
    parser.add_argument('--dry-run-cpu', action='store_true',
                        help='test the pipeline on CPU (fp32, dense GEMMs stand in for '
                        '2:4 kernels; numbers mean nothing)')
    parser.add_argument('--variants', default=None,
                        type=lambda s: [v for v in s.split(',') if v and v != 'none'],
                        help='comma-separated 2:4 variants allowed (default all: '
                        'mm,cslt,cslt_t); "none" times dense only')
    parser.add_argument('--preflight', action='store_true',
                        help='run each 2:4 variant once on small layers and print '
                        'PREFLIGHT_OK <variant> per variant that works')
    parser.add_argument('--combine', nargs='+', default=None, metavar='JSON',
                        help='merge benchmark JSON files into one chart + markdown')
    args = parser.parse_args(argv)
    if args.model_file is None and (args.config or '').endswith('.pth'):
        args.config, args.model_file = None, args.config  # MODEL alone
    if not args.combine and not (args.config or args.model_file) and \
            not args.preflight:
        parser.error('CONFIG is required (or --combine JSON... / --preflight)')
    return args


def combine(paths, out_png, out_md):
    """One chart and one markdown summary from several benchmark JSON files."""
    from lbc_mm.deploy.report import combined_markdown, plot_layers
    results, unreadable = [], []
    for path in paths:
        try:
            with open(path) as f:
                results.append(json.load(f))
        except (OSError, ValueError) as exc:
            unreadable.append(f'- {path}: unreadable ({exc})')
    if not results:  # nothing to combine: no table
        print('error: no readable benchmark JSON: '
              + '; '.join(u[2:] for u in unreadable), file=sys.stderr)
        return 1
    text = combined_markdown(results, unreadable)
    print(text)
    if out_md:
        from lbc_mm.io import atomic_write
        try:
            atomic_write(out_md, lambda f: f.write(text.encode()))
        except OSError as exc:
            print(f'error: cannot write {exc.filename}: {exc.strerror or exc}',
                  file=sys.stderr)
            return 1
    if out_png:
        try:
            plot_layers(results, out_png, title='per-layer 2:4 speedups')
        except Exception as exc:  # noqa: BLE001  (the markdown is already written)
            print(f'plot failed: {type(exc).__name__}: {exc}', file=sys.stderr)
    return 1 if unreadable else 0  # the table lists the unreadable files


def main(argv=None):
    args = parse_args(argv)
    import lbc_mm  # noqa: F401  (compat shims + registries before any config)
    if args.combine:
        return combine(args.combine, args.out_png, args.out_md)
    if args.preflight:
        from lbc_mm.deploy.kernels import sparse_support
        from lbc_mm.deploy.modules import preflight
        ok, why = sparse_support()
        if not ok:
            print(f'no 2:4 sparse timing possible: {why}')
            return 2
        preflight(lambda line: print(line, flush=True))
        return 0
    from lbc_mm.deploy.bench import Benchmark, model_label
    from lbc_mm.tool_exit import run_tool, tool_error_line
    name = args.name or model_label(args.config, args.model_file)
    out_json = args.out_json or os.path.join('work_dirs', 'benchmark', f'{name}.json')

    def bench() -> int:
        try:
            code = Benchmark(
                args.config, args.model_file, out_json=out_json,
                out_png=args.out_png, model_name=name, batch=args.batch,
                dtype=args.dtype, layer_dtypes=tuple(args.layer_dtypes),
                img_size=args.img_size, det_shape=tuple(args.det_shape),
                channels_last=args.channels_last, margin=args.margin,
                time_budget=args.time_budget, allowed_variants=args.variants,
                log=functools.partial(print, flush=True),
                dry_run=args.dry_run_cpu).run()
        # a missing, refused, mismatched or truncated file; 4:8 not 2:4; a failed
        # write of the JSON; a registry type the config names is unknown
        except (OSError, ValueError, KeyError) as exc:
            print(tool_error_line(exc, args.config or args.model_file, [out_json]),
                  file=sys.stderr)
            return 1
        print(f'[bench] wrote {out_json}', flush=True)
        return code

    # SIGTERM unwinds like Ctrl-C: no temp file stays behind.
    return run_tool(bench, lambda: f'{out_json} holds the stages done')


if __name__ == '__main__':
    sys.exit(main())
