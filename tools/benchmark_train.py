"""Training-step cost of N:M sparse layers vs the dense model, in one process.

Builds the config's model dense and per (method, pattern) (backbone sparse, as
docs/method.md §8), times full training steps alternating between the models
(:mod:`lbc_mm.step_cost`) and prints median step time, memory and per-step training
FLOPs with ratios to dense. Memory on CUDA: the model and optimizer state plus the
step's peak above it; on CPU: tensor bytes of parameters, buffers, gradients,
optimizer state and the tensors saved for backward, with the sparse extras (scores,
their gradient and momentum, ``alive`` / ``asp_mask``) apart.

Example::

    python tools/benchmark_train.py mmpretrain::resnet/resnet50_8xb32_in1k.py \\
        --device cuda --batch-size 64 --img-size 224 --steps 20 \\
        --methods lbc,srste --patterns 2:4,2:8 --lbc-frozen
"""
import argparse
import sys
from typing import Any, Dict, List, Optional

import torch

import lbc_mm  # noqa: F401  (registers layers, compat shims)
from lbc_mm.methods import METHODS
from lbc_mm.step_cost import build_dense, make_batch, run, variants
from lbc_mm.study.grid import parse_patterns
from lbc_mm.tool_exit import fail, run_tool


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command line; a bad value is one line on stderr, exit 2."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='mmdet / mmpretrain config (file or pkg::path)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--steps', type=int, default=10, help='timed steps per model')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps first')
    parser.add_argument('--methods', default='lbc,srste',
                        help=f'comma list of {", ".join(METHODS)}')
    parser.add_argument('--patterns', default='2:4', help='comma list, e.g. 2:4,2:8')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--amp', action='store_true',
                        help='autocast (bf16 on CPU, fp16 on CUDA)')
    parser.add_argument('--lbc-frozen', action='store_true',
                        help='also time LBC after t_f (card 1, scores frozen)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    problem = check_args(args)
    if problem is not None:
        fail(f'error: {problem}', 2)
    return args


def check_args(args: argparse.Namespace) -> Optional[str]:
    """The first bad argument, in words; parses ``patterns`` / ``methods`` in
    place (a list of ``(n, m)`` / of names)."""
    for name, least in (('batch_size', 1), ('img_size', 1), ('steps', 1),
                        ('warmup', 0), ('threads', 1)):
        value = getattr(args, name)
        if value is not None and value < least:
            return f'--{name.replace("_", "-")} must be >= {least}, got {value}'
    try:
        args.patterns = parse_patterns(args.patterns)
    except ValueError as err:
        return f'--patterns: {err}'
    if not args.patterns:
        return '--patterns: give at least one pattern, e.g. 2:4'
    args.methods = [m.strip() for m in args.methods.split(',') if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        return (f'--methods: unknown method {unknown[0]!r}' if unknown else
                '--methods: give at least one method') + (
                    f', expected a comma list of {", ".join(METHODS)}')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        return '--device cuda given but CUDA is not available'
    return None


def print_table(rows: List[Dict[str, Any]], args: argparse.Namespace) -> None:
    """The table, with ratios to the first (dense) row."""
    ref, cuda = rows[0], args.device.startswith('cuda')
    dev = torch.cuda.get_device_name() if cuda else 'cpu'
    print(f'\n{args.config}: device {dev}, torch {torch.__version__}, batch '
          f'{args.batch_size}, {args.img_size}px, {args.steps} timed steps '
          f'(median), amp={args.amp}, threads {torch.get_num_threads()}')
    print(f'{"model":<16}{"step ms":>10}{"x dense":>9}{"cpu ms":>10}{"x dense":>9}'
          f'{"peak MB":>10}{"x dense":>9}'
          f'{"saved MB":>10}{"scores":>9}{"grad":>8}{"momentum":>10}{"alive":>8}')
    for row in rows:
        print(f'{row["name"]:<16}{row["ms"]:>10.1f}{row["ms"] / ref["ms"]:>9.3f}'
              f'{row["cpu_ms"]:>10.1f}{row["cpu_ms"] / ref["cpu_ms"]:>9.3f}'
              f'{row["peak"]:>10.1f}{row["peak"] / ref["peak"]:>9.3f}'
              f'{row["saved"]:>10.1f}{row["scores"]:>9.1f}{row["scores_grad"]:>8.1f}'
              f'{row["scores_momentum"]:>10.1f}{row["alive"]:>8.1f}')
    print('peak = ' + ('model state + optimizer state + CUDA peak of a step above '
                       'the resident memory' if cuda else
                       'params + buffers + grads + optimizer state + tensors saved '
                       'for backward (tensor bytes)') +
          '; sparse extras in MB: scores (G x C), their grad and momentum, alive '
          '(G x C bool) / asp_mask; saved MB includes masked weights and masks. '
          '"lbc N:M" is mid-removal (scores learning), "lbc N:M end" after t_f. '
          'step ms: wall-clock median; cpu ms: process CPU time (all threads) '
          'median, steadier on a shared machine.')


def main(argv: Optional[List[str]] = None) -> int:
    """Run the benchmark and print the table; 0."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dense, scope = build_dense(args.config)
    dense.to(args.device)
    models = variants(dense, args.patterns, args.methods, args.lbc_frozen)
    loss_fn = make_batch(dense, scope, args.batch_size, args.img_size, args.device)
    rows = run(models, loss_fn, args.device, args.amp, args.warmup, args.steps)
    print_table(rows, args)
    from lbc_mm.train_cost import step_cost_lines
    for var in models:  # training FLOPs per step (docs/training_cost.md)
        if not var.name.endswith(' end'):  # its LBC row prints the end state
            print('\n'.join(step_cost_lines(
                var.model, scope, (args.img_size, args.img_size),
                var.name.split()[0], args.batch_size, label=var.name)))
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
