"""Export a converted N:M model to ONNX, verify it, and time it in TensorRT if present.

Usage:
    python tools/export_onnx.py CONFIG MODEL [--out X.onnx] [--shape H W] [--batch B]
        [--dynamic-batch] [--dynamic-shape] [--opset 17] [--images PATH ...]
        [--json REPORT.json] [--trt-precision fp16|fp32] [--no-trt]

MODEL is what tools/convert.py wrote: the stock ``.pth`` or the compressed ``.nm.pth``
(docs/export_format.md). mmpretrain classifiers are exported whole; mmdet detectors
as backbone + neck (the heads are left to mmdeploy, docs/deploy.md). After export,
always: ``onnx.checker``; every sparse layer's initializer checked N:M in TensorRT's
layout (a table of every Conv/Gemm/MatMul weight: 2:4 or not, and why); onnxruntime
(CPU) outputs equal PyTorch's within a stated tolerance. The .onnx file is written
(atomically) only when all of that passes. With TensorRT (trtexec or the tensorrt
module) dense and 2:4 engines are built and timed side by side; without it one line
says how, and the exit code is 0. Errors: one line on stderr, exit code 1.

``--random-weights`` (no MODEL): magnitude 2:4 masks on the config's random-init
weights, for timing TensorRT without a trained model.
"""
import argparse
import json
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Export a converted N:M model to ONNX and verify it')
    p.add_argument('config', help='the training config or the stock config')
    p.add_argument('model', nargs='?',
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
    return p.parse_args(argv)


def default_out(model: str) -> str:
    root = model[:-4] if model.endswith('.pth') else os.path.splitext(model)[0]
    return (root[:-len('.nm')] if root.endswith('.nm') else root) + '.onnx'


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.model and not args.random_weights:
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
    from lbc_mm.deploy import onnx_check as chk
    from lbc_mm.deploy import onnx_export as exp
    from lbc_mm.deploy import onnx_trt as trt
    from lbc_mm.deploy.models import load_converted, random_weights
    from lbc_mm.export.io import atomic_write
    out = args.out or (default_out(args.model) if args.model else
                       os.path.join('work_dirs', 'onnx', os.path.basename(
                           args.config).replace('.py', '.onnx')))
    try:
        got = random_weights(args.config, score_thr=0.0) if args.random_weights \
            else load_converted(args.config, args.model)
        model, scope, patterns = got['model'], got['scope'], got['patterns']
        shape = tuple(args.shape) if args.shape else \
            exp.default_shape(got['cfg'], scope)
        images = exp.find_images(args.images)
        x, source = exp.example_input(model, shape, args.batch, images)
        wrapper = exp.ExportWrapper(model, exp.export_part(scope))
        opset = args.opset or exp.DEFAULT_OPSET
        proto = exp.export_onnx(wrapper, x, opset, args.dynamic_batch,
                                args.dynamic_shape)
        rows = chk.initializer_rows(proto, wrapper, patterns)
        chk.check_rows(rows, patterns)
        ort = chk.compare_onnxruntime(proto, x, exp.torch_outputs(wrapper, x))
        if not ort['ok']:
            worst = max(ort['outputs'], key=lambda o: o['max_abs_diff'])
            raise chk.OnnxCheckError(
                f'onnxruntime disagrees with PyTorch on {worst["name"]}: max |diff| '
                f'{worst["max_abs_diff"]:.3g} (tolerance {ort["tolerance"]})')
        data = proto.SerializeToString()
        atomic_write(out, lambda f: f.write(data))
    except KeyboardInterrupt:
        print('error: interrupted; no ONNX file was written', file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    except KeyError as exc:  # a registry type the config names is unknown
        print(f'error: config {args.config}: {exc.args[0] if exc.args else exc}',
              file=sys.stderr)
        return 1
    part = exp.export_part(scope)
    dyn = [a for a, on in (('batch', args.dynamic_batch), ('H/W', args.dynamic_shape))
           if on]
    what = f'the whole {scope} model' if part == 'whole' else \
        f'{part} of the {scope} model'
    print(f'wrote {out}: {what}, opset {opset}, input '
          f'{args.batch}x3x{shape[0]}x{shape[1]} '
          f'({"dynamic " + ", ".join(dyn) if dyn else "static"}), '
          f'{len(data) / 2**20:.1f} MiB; onnx.checker passed')
    if part != 'whole':
        print('detector: backbone + neck only (all N:M layers are there); export the '
              'heads with mmdeploy (docs/deploy.md)')
    print(chk.format_rows(rows))
    print(chk.summarize_rows(rows, len(proto.graph.initializer)))
    print(f'onnxruntime (CPU) vs PyTorch on {source}: ' + '; '.join(
        f'{o["name"]} max |diff| {o["max_abs_diff"]:.2e} (max |out| '
        f'{o["max_abs_ref"]:.2f})' for o in ort['outputs']) +
        (f'; top-1 agreement {ort["top1_agree"]:.0%}' if 'top1_agree' in ort else '') +
        f'; within {ort["tolerance"]}: yes')
    engines = {'available': False, 'line': 'skipped (--no-trt)'}
    if not args.no_trt:
        trt_shape = (args.batch, 3) + tuple(shape)
        try:
            engines = trt.compare_engines(out, trt_shape, args.trt_dir or os.path.join(
                os.path.dirname(os.path.abspath(out)), 'trt'), args.trt_precision)
        except Exception as exc:  # noqa: BLE001  (a TensorRT failure: report, go on)
            engines = {'available': False, 'line': f'TensorRT failed: {exc}'}
        print(trt.format_engines(engines))
    if args.json:
        report = dict(onnx=out, scope=scope, part=part, opset=opset,
                      input=[args.batch, 3, *shape], dynamic=dyn, input_source=source,
                      initializers=rows, onnxruntime=ort, tensorrt=engines)
        text = json.dumps(report, indent=1, default=str).encode()
        atomic_write(args.json, lambda f: f.write(text))
    return 0


if __name__ == '__main__':
    sys.exit(main())
