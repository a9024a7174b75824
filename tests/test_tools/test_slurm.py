"""tools/slurm_{train,test}.sh: the srun command they start (a stand-in ``srun`` on
PATH records its arguments and environment), mmdet's interface, executable."""
import os
import os.path as osp
import stat
import subprocess

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FAKE_SRUN = '#!/bin/sh\nprintf "%s\\n" "$@" > "$SRUN_LOG"\n' \
            'echo "MASTER_PORT=$MASTER_PORT" >> "$SRUN_LOG"\n'


def _run(tmp_path, script, args, **env):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir(exist_ok=True)
    srun = bin_dir / 'srun'
    srun.write_text(FAKE_SRUN)
    srun.chmod(0o755)
    log = tmp_path / 'srun.log'
    full_env = dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}',
                    SRUN_LOG=str(log), PYTHON='py', **env)
    for key in ('GPUS', 'GPUS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS', 'PORT'):
        if key not in env:
            full_env.pop(key, None)
    proc = subprocess.run(['bash', osp.join(REPO, 'tools', script)] + args,
                          env=full_env, capture_output=True, text=True, timeout=60)
    return proc, (log.read_text().splitlines() if log.exists() else [])


@pytest.mark.parametrize('script', ['slurm_train.sh', 'slurm_test.sh'])
def test_scripts_are_executable_in_git_and_on_disk(script):
    path = osp.join(REPO, 'tools', script)
    assert os.stat(path).st_mode & stat.S_IXUSR
    listed = subprocess.run(['git', 'ls-files', '-s', f'tools/{script}'], cwd=REPO,
                            capture_output=True, text=True).stdout
    if listed:  # committed: the index records mode 100755
        assert listed.startswith('100755'), listed


def test_train_runs_one_task_per_gpu_with_the_slurm_launcher(tmp_path):
    proc, argv = _run(tmp_path, 'slurm_train.sh',
                      ['gpu', 'lbc', 'cfg.py', 'work_dirs/x', '--amp'],
                      GPUS='16', SRUN_ARGS='--quotatype=auto --exclusive',
                      PORT='29777')
    assert proc.returncode == 0, proc.stderr
    assert argv[:2] == ['-p', 'gpu']
    for want in ('--job-name=lbc', '--gres=gpu:8', '--ntasks=16',
                 '--ntasks-per-node=8', '--cpus-per-task=5', '--kill-on-bad-exit=1',
                 '--quotatype=auto', '--exclusive', 'py', '-u'):
        assert want in argv, (want, argv)
    script = argv.index('-u') + 1
    assert argv[script] == osp.join(REPO, 'tools', 'train.py')
    assert argv[script + 1:-1] == ['cfg.py', '--work-dir=work_dirs/x',
                                   '--launcher=slurm', '--amp']
    assert argv[-1] == 'MASTER_PORT=29777'


def test_test_script_passes_the_checkpoint_and_fewer_gpus_than_a_node(tmp_path):
    proc, argv = _run(tmp_path, 'slurm_test.sh',
                      ['gpu', 'eval', 'cfg.py', 'epoch_12.pth'], GPUS='2')
    assert proc.returncode == 0, proc.stderr
    assert '--ntasks=2' in argv and '--gres=gpu:2' in argv
    assert '--ntasks-per-node=2' in argv
    script = argv.index('-u') + 1
    assert argv[script] == osp.join(REPO, 'tools', 'test.py')
    assert argv[script + 1:-1] == ['cfg.py', 'epoch_12.pth', '--launcher=slurm']
    assert argv[-1] == 'MASTER_PORT=29500'


@pytest.mark.parametrize('script', ['slurm_train.sh', 'slurm_test.sh'])
def test_missing_arguments_are_a_usage_line(tmp_path, script):
    proc, argv = _run(tmp_path, script, ['gpu', 'job', 'cfg.py'])
    assert proc.returncode == 2 and argv == []
    assert proc.stderr.startswith('usage:') and proc.stderr.count('\n') == 1
