"""tools/gpu_check.sh --plan: the steps, their order and budgets, without a GPU."""
import os
import re
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_plan_lists_steps_in_the_order_that_tells_most(tmp_path):
    env = dict(os.environ, GPU_CHECK_BUDGET='345')
    proc = subprocess.run(['bash', 'tools/gpu_check.sh', '--plan'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    steps = re.findall(r'^\[plan\] at (\d+)s: (.*) \(timeout (\d+)s\)$', proc.stdout,
                       re.M)
    names = [s[1] for s in steps]
    order = ['install wheels', 'versions', 'preflight', 'gpu tests',
             'benchmark deit-small', 'benchmark vit-base', 'benchmark resnet50',
             'benchmark mask-rcnn', 'summary', 'onnx + TensorRT']
    assert [next(i for i, n in enumerate(names) if n.startswith(o)) for o in order] \
        == list(range(len(order))), names
    # the GPU tests get their whole 60 s, before any benchmark
    assert int(steps[3][2]) == 60 and int(steps[3][0]) + 60 <= 345
    assert 'only where trtexec is installed' in proc.stdout
    assert 'nothing was run' in proc.stdout
    assert not os.path.exists(os.path.join(REPO, 'OUT_DIR'))
