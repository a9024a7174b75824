"""Train an mmdet or mmpretrain model with lbc_mm (LBC / SR-STE / STE / ASP N:M).

One script for both libraries: the config's ``default_scope`` picks the registry.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [auto|PATH]] [--amp]
        [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]
    bash tools/dist_train.sh CONFIG NUM_PROCS [ARGS...]   # torchrun; CPU uses gloo

Before the Runner is built the script checks that the config and the datasets it
needs exist and otherwise exits with one line naming the missing path (and the fix);
``--resume`` of a missing file is one line up front too, and ``--resume`` in a work
dir without a checkpoint yet (a run stopped before its first one) says, in a
warning, that training starts from scratch. A checkpoint to resume from that does not
fit the config (another pattern or model: missing, unexpected or mis-shaped keys), is
corrupted or is refused by weights-only loading stops the run in one line (exit 1)
before the first iteration; so does a corrupted or refused ``load_from`` (which may
fit partially). Both may be URLs (or ``torchvision://`` ...), downloaded into the
torch hub cache and checked the same way; ``init_cfg`` checkpoints load weights-only
too, and one that cannot be loaded into its module (missing, corrupted, refused,
another N:M pattern or method) stops the run in one line. An error that stops
training with a message that says it all (a divergence, an ``LBCHook`` refusal
such as ``t_f`` after the end of training, a full disk) is one line on stderr, exit
1 (:func:`lbc_mm.tool_exit.run_error_line`); any other keeps its traceback. A
distributed launch without a GPU initialises gloo itself (mmengine 0.10.7 assumes
CUDA) and every distributed launch uses ``LBCDistributedDataParallel`` (see
``lbc_mm/dist.py``); a finished run destroys its process group before it exits.
"""
# isort: off
# lbc_mm first: compat shims, the ``lbc_mm::`` config prefix, registries.
import lbc_mm  # noqa: F401
# isort: on
import os.path as osp
import sys
from typing import List, Optional

from mmengine.config import Config

from lbc_mm.apis import resolve_config
from lbc_mm.cli import merge_train_args, parse_train_args
from lbc_mm.dist import teardown_distributed
from lbc_mm.training import prepare_training, run_training


def main(argv: Optional[List[str]] = None) -> None:
    """Parse, merge, check the config and data, set up distributed, train."""
    args = parse_train_args(argv)
    if args.resume not in (None, 'auto') and '://' not in args.resume and \
            not osp.isfile(args.resume):
        print(f'Checkpoint not found: {args.resume} (--resume)', file=sys.stderr)
        raise SystemExit(2)
    try:
        cfg = Config.fromfile(resolve_config(args.config))
    except FileNotFoundError as exc:
        print(f'error: {exc}', file=sys.stderr)
        raise SystemExit(2) from None
    merge_train_args(cfg, args)
    if args.amp:
        import torch
        if not torch.cuda.is_available():
            print('--amp needs a CUDA GPU (mmengine AmpOptimWrapper); on CPU train '
                  'without it', file=sys.stderr)
            raise SystemExit(2)
    runner = prepare_training(cfg, args.launcher)
    run_training(runner)
    del runner  # its DDP model holds the process group (see lbc_mm/dist.py)
    teardown_distributed()  # after success only


if __name__ == '__main__':
    from lbc_mm.tool_exit import run_tool
    sys.exit(run_tool(lambda: main() or 0))  # SIGTERM: one line, exit 143
