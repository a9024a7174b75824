"""Export a converted N:M model to ONNX, verify it, and time it in TensorRT if present.

Usage:
    python tools/export_onnx.py [CONFIG] MODEL [--out X.onnx] [--shape H W] [--batch B]
        [--dynamic-batch] [--dynamic-shape] [--opset 17] [--images PATH ...]
        [--json REPORT.json] [--trt-precision fp16|fp32] [--no-trt] [--fp16-onnx]
        [--polygraphy]

MODEL is what tools/convert.py wrote (``.pth`` / ``.nm.pth``; CONFIG is optional),
its sparse weights 2:4. The .onnx file is written only when ``onnx.checker``, the
N:M check of every sparse initializer in TensorRT's layout and onnxruntime's
equality with PyTorch pass; then Polygraphy (``--polygraphy``) and TensorRT, dense
vs 2:4 engines, where trtexec is installed (else one line says how, exit 0). Errors
are one line on stderr, exit 1; Ctrl-C exits 130, SIGTERM 143. docs/deploy.md.
"""
import argparse
import os
import sys

#: The lowest opset ``torch.onnx.export`` writes.
MIN_OPSET = 7

def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Export a converted N:M model to ONNX and verify it')
    p.add_argument('config', metavar='CONFIG',
                   help='the training or the stock config (optional with MODEL)')
    p.add_argument('model_file', nargs='?', metavar='MODEL',
                   help='converted model (.pth or .nm.pth from tools/convert.py)')
    p.add_argument('--out', help='ONNX file (default: MODEL with .onnx)')
    p.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                   help="input size (default: the config's test pipeline)")
    p.add_argument('--batch', type=int, default=1, help='batch size (default 1)')
    p.add_argument('--dynamic-batch', action='store_true', help='batch axis dynamic')
    p.add_argument('--dynamic-shape', action='store_true',
                   help='height and width axes dynamic')
    p.add_argument('--opset', type=int, default=None, help='ONNX opset (default 17)')
    p.add_argument('--images', nargs='+', default=[],
                   help='images or folders for the onnxruntime check (default: a '
                   'fixed-seed random image)')
    p.add_argument('--json', help='also write the whole report as JSON')
    p.add_argument('--random-weights', action='store_true',
                   help='no MODEL: magnitude 2:4 masks on random-init weights')
    p.add_argument('--trt-precision', choices=('fp16', 'fp32'), default='fp16')
    p.add_argument('--trt-dir', help='TensorRT engines and logs (default: next to '
                   'the ONNX file)')
    p.add_argument('--no-trt', action='store_true', help='skip TensorRT')
    p.add_argument('--polygraphy', action='store_true',
                   help="NVIDIA's `polygraphy inspect sparsity` decides which weights "
                   'are 2:4 (else our count); exit 1 if a sparse layer is not')
    p.add_argument('--fp16-onnx', action='store_true',
                   help='also write OUT.fp16.onnx (FP16 weights and I/O, 2:4 checked '
                   'again); automatic with TensorRT 11, which is strongly typed')
    args = p.parse_args(argv)
    if args.model_file is None and args.config.endswith('.pth'):  # MODEL alone
        args.config, args.model_file = None, args.config
    if args.batch < 1:
        p.exit(2, f'error: --batch must be >= 1, got {args.batch}\n')
    if args.opset is not None and args.opset < MIN_OPSET:
        p.exit(2, f'error: --opset must be >= {MIN_OPSET} (the first opset '
               f'torch.onnx writes), got {args.opset}\n')
    return args


def default_out(model: str) -> str:
    root = model[:-4] if model.endswith('.pth') else os.path.splitext(model)[0]
    return (root[:-len('.nm')] if root.endswith('.nm') else root) + '.onnx'


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.model_file and not args.random_weights:
        print('error: MODEL is required (the file tools/convert.py wrote), or pass '
              '--random-weights', file=sys.stderr)
        return 1
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        print(f'error: {exc.name} is not installed: pip install -e ".[deploy]"',
              file=sys.stderr)
        return 1
    import lbc_mm  # noqa: F401  (compat shims, registries)
    from lbc_mm.deploy.models import prepare
    from lbc_mm.deploy.onnx import check as chk
    from lbc_mm.deploy.onnx import export as exp
    from lbc_mm.deploy.onnx import trtexec as trt
    from lbc_mm.deploy.report import write_json
    from lbc_mm.export.convert import refuse_overwrites
    from lbc_mm.io import atomic_write
    from lbc_mm.tool_exit import run_tool, tool_error_line
    out = args.out or (default_out(args.model_file) if args.model_file else
                       os.path.join('work_dirs', 'onnx', os.path.basename(
                           args.config.split('::')[-1]).replace('.py', '.onnx')))
    found = None if args.no_trt else trt.find_tensorrt()
    version = found and found['trtexec_version']
    want_fp16 = args.fp16_onnx or trt.needs_fp16_onnx(version, args.trt_precision)
    out16 = exp.fp16_path(out) if want_fp16 else None
    outputs = {'--out': out, '--json': args.json, 'the FP16 ONNX file': out16}
    written = []

    def export() -> int:
        try:
            refuse_overwrites({'MODEL': args.model_file, 'CONFIG': args.config},
                              outputs)
            got = prepare(args.config,
                          None if args.random_weights else args.model_file)
            got.require_2of4()  # N:M, and 2:4 (1:4 / 2:8 / 1:16 / 2:4; not 4:8)
            model, scope, patterns = got.model, got.scope, got.patterns
            shape = tuple(args.shape) if args.shape else \
                exp.default_shape(got.cfg, scope)
            images = exp.find_images(args.images)
            x, source = exp.example_input(model, shape, args.batch, images)
            part = exp.export_part(scope)
            wrapper = exp.ExportWrapper(model, part)
            opset = args.opset or exp.DEFAULT_OPSET
            proto = exp.export_onnx(wrapper, x, opset, args.dynamic_batch,
                                    args.dynamic_shape)
            rows = chk.initializer_rows(proto, wrapper, patterns)
            chk.check_rows(rows, patterns)
            ort = chk.compare_onnxruntime(proto, x, exp.torch_outputs(wrapper, x))
            if not ort['ok']:
                worst = max(ort['outputs'], key=lambda o: o['max_abs_diff'])
                raise chk.OnnxCheckError(
                    f'onnxruntime disagrees with PyTorch on {worst["name"]}: max '
                    f'|diff| {worst["max_abs_diff"]:.3g} (tolerance '
                    f'{ort["tolerance"]})')
            files, rows16 = {out: proto}, None
            if out16:  # TensorRT 11 (strongly typed) builds FP16 from an FP16 file
                files[out16], wrapper16 = exp.export_onnx_fp16(
                    wrapper, x, opset, args.dynamic_batch, args.dynamic_shape)
                rows16 = chk.initializer_rows(files[out16], wrapper16, patterns)
                chk.check_rows(rows16, patterns)  # the 2:4 check on the FP16 weights
            for path, graph in files.items():
                data = graph.SerializeToString()
                atomic_write(path, lambda f: f.write(data))
                written.append(path)
            dyn = [a for a, on in (('batch', args.dynamic_batch),
                                   ('H/W', args.dynamic_shape)) if on]
            report = dict(model_file=got.model_file, onnx=out, onnx_fp16=out16,
                          scope=scope, part=part, opset=opset,
                          input=[args.batch, 3, *shape], dynamic=dyn,
                          input_source=source,
                          initializers=rows, initializers_fp16=rows16, onnxruntime=ort,
                          tensorrt={'available': False, 'line': 'not run yet'})
            missed = []
            if args.polygraphy:  # NVIDIA's checker decides which weights are 2:4
                poly = chk.polygraphy_sparsity(out)
                missed = chk.judge_by_polygraphy(rows, poly)
                report['polygraphy'] = dict(
                    command=' '.join(poly['command']), sparse=len(poly['sparse']),
                    sparse_layers_not_2of4=missed)
            if args.json:  # written now, rewritten after each TensorRT engine
                write_json(report, args.json)
                written.append(args.json)
            what = f'the whole {scope} model' if part == 'whole' else \
                f'{part} of the {scope} model'
            print(f'wrote {out}: {what}, opset {opset}, input '
                  f'{args.batch}x3x{shape[0]}x{shape[1]} '
                  f'({"dynamic " + ", ".join(dyn) if dyn else "static"}), '
                  f'{os.path.getsize(out) / 2**20:.1f} MiB; onnx.checker passed')
            if part != 'whole':
                print('detector: backbone + neck only (all N:M layers are there); '
                      'export the heads with mmdeploy (docs/deploy.md)')
            print(chk.format_rows(rows))
            print(chk.summarize_rows(rows, len(proto.graph.initializer)) + (
                ' (2:4 as `polygraphy inspect sparsity` says)' if args.polygraphy
                else ''))
            print(f'onnxruntime (CPU) vs PyTorch on {source}: ' + '; '.join(
                f'{o["name"]} max |diff| {o["max_abs_diff"]:.2e} (max |out| '
                f'{o["max_abs_ref"]:.2f})' for o in ort['outputs']) +
                (f'; top-1 agreement {ort["top1_agree"]:.0%}' if 'top1_agree' in ort
                 else '') + f'; within {ort["tolerance"]}: yes')
            if out16:
                print(f'wrote {out16} (FP16 weights and I/O): ' +
                      chk.summarize_rows(rows16, len(files[out16].graph.initializer)))
            if missed:
                print(f'error: Polygraphy does not call the weights of {len(missed)} '
                      f'sparse layers of {out} 2:4: {", ".join(missed[:3])}',
                      file=sys.stderr)
                return 1
            if not args.no_trt:
                report['tensorrt'] = run_tensorrt(args, trt, found, out16 or out,
                                                  rows16 or rows, report)
                print(trt.format_engines(report['tensorrt']))
            if args.json:
                write_json(report, args.json)
        # a write / missing file; same paths, not N:M / not 2:4, mismatch,
        # corrupted, Polygraphy failed; a registry type the config names is unknown
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            print(tool_error_line(exc, args.config or args.model_file,
                                  outputs.values(),
                                  _done(written)), file=sys.stderr)
            return 1
        return 0

    # SIGTERM unwinds like Ctrl-C: no temp file stays behind.
    return run_tool(export, lambda: _done(written))


def _done(written) -> str:
    return (', '.join(written) + ' written') if written else 'no file was written'


def run_tensorrt(args, trt, found, onnx_path, rows, report):
    """Dense and 2:4 engines; the JSON is rewritten after each engine."""
    from lbc_mm.deploy.onnx.trt_layers import layer_verdicts
    from lbc_mm.deploy.report import write_json
    from lbc_mm.deploy.timing import error_line

    def on_step(partial):
        report['tensorrt'] = partial
        if args.json:
            write_json(report, args.json)

    try:
        engines = trt.compare_engines(
            onnx_path, report['input'], args.trt_dir or os.path.join(
                os.path.dirname(os.path.abspath(onnx_path)), 'trt'),
            args.trt_precision, found=found, on_step=on_step)
    except Exception as exc:  # noqa: BLE001  (a TensorRT failure: report, go on)
        return dict(report.get('tensorrt') or {}, available=False,
                    line=f'TensorRT failed: {error_line(exc)}')
    if engines.get('available'):
        sparse = engines['runs']['sparse']
        engines['verdicts'] = layer_verdicts(
            rows, sparse.get('engine_layers', []), sparse.get('sparse_layers', []))
    return engines


if __name__ == '__main__':
    sys.exit(main())
