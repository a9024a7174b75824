"""``python -m lbc_mm.study RUN_DIR``: train one run of a study (what
:func:`lbc_mm.study.launch` starts, in a process of its own)."""
import sys

from .run import run_one

if __name__ == '__main__':
    run_one(sys.argv[1])
