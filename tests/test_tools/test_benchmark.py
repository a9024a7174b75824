"""tools/benchmark.py: the no-GPU answer, the CPU dry run of the pipeline, --combine."""
import json
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, 'tools', 'benchmark.py')

TINY_VIT = """
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='VisionTransformer',
                  arch=dict(embed_dims=64, num_layers=2, num_heads=2,
                            feedforward_channels=128),
                  img_size=32, patch_size=8),
    neck=None,
    head=dict(type='VisionTransformerClsHead', num_classes=10, in_channels=64))
"""


def _run(*args, timeout=120):
    env = dict(os.environ, MPLBACKEND='Agg', CUDA_VISIBLE_DEVICES='')
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def tiny_cfg(tmp_path_factory):
    path = tmp_path_factory.mktemp('cfg') / 'tiny_vit.py'
    path.write_text(TINY_VIT)
    return str(path)


def test_no_gpu_exits_2_with_one_line_after_checking_weights(tiny_cfg, tmp_path):
    out = tmp_path / 'r.json'
    proc = _run(tiny_cfg, '--batch', '2', '--img-size', '32', '--out-json', str(out))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines()
             if ln.startswith('no 2:4 sparse timing possible')]
    assert len(lines) == 1
    assert 'no CUDA GPU' in lines[0]
    assert 'Traceback' not in proc.stderr
    res = json.loads(out.read_text())
    assert res['nm_check']['layers'] == 8 and res['nm_check']['layers_not_nm'] == 0
    assert 'no CUDA GPU' in res['no_sparse_timing']
    assert res['weights'] == 'random' and 'magnitude 2:4' in res['weights_source']
    assert res['env']['torch'] == torch.__version__


def test_missing_config_is_one_line_exit_1(tmp_path):
    proc = _run(str(tmp_path / 'nope.py'))
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith('error: config file not found')
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cpu_dry_run_goes_through_every_stage(tiny_cfg, tmp_path):
    out, png = tmp_path / 'r.json', tmp_path / 'r.png'
    umask = os.umask(0o022)  # the JSON and the PNG get the umask's mode
    try:
        proc = _run(tiny_cfg, '--dry-run-cpu', '--batch', '2', '--img-size', '32',
                    '--margin', '-1', '--out-json', str(out), '--out-png', str(png))
    finally:
        os.umask(umask)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {n: os.stat(tmp_path / n).st_mode & 0o777 for n in os.listdir(tmp_path)} \
        == {'r.json': 0o644, 'r.png': 0o644}  # and no temp file left
    res = json.loads(out.read_text())
    assert res['dry_run'] is True and 'DRY RUN' in res['notes'][0]
    assert res['stages_done'] == ['weights', 'layers_fp32', 'end_to_end']
    rows = res['layers']['fp32']
    assert {r['kind'] for r in rows} == {'linear', 'mlp'}
    assert sum(len(r['layers']) for r in rows if r['kind'] == 'linear') == 8
    e2e = res['end_to_end']['forward_eager']
    # margin -1: every unit runs its stand-in variant, outputs still match dense
    assert e2e['auto_sparse_units'] == e2e['units'] == 6
    assert e2e['checks']['auto'] < 1e-4 and e2e['checks']['all_sparse'] < 1e-4
    assert e2e['auto_speedup'] >= 1.0  # auto never reports a slowdown
    assert '| tiny_vit | forward | eager |' in proc.stdout
    assert png.stat().st_size > 1000
    # --combine merges results into one markdown + one chart
    md, png2 = tmp_path / 's.md', tmp_path / 's.png'
    proc = _run('--combine', str(out), '--out-md', str(md), '--out-png', str(png2))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '## tiny_vit' in md.read_text() and png2.exists()


LBC_RESNET = """
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(3, ),
                  base_channels=16, conv_cfg=dict(type='NMSparseConv', n=2, m=4)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=128))
"""


def _lbc_checkpoint(tmp_path, finished=True):
    """An LBC training checkpoint of LBC_RESNET (every group down to one candidate
    when ``finished``)."""
    import lbc_mm  # noqa: F401
    from lbc_mm.apis import build_model, load_config
    from lbc_mm.layers import sparse_layers
    cfg = tmp_path / 'lbc.py'
    cfg.write_text(LBC_RESNET)
    model, _ = build_model(load_config(str(cfg)))
    for _name, layer in sparse_layers(model):
        with torch.no_grad():
            layer.scores.uniform_(0.1, 1.0)
        if finished:
            layer.sparsity.remove_candidates(1)
    ckpt = tmp_path / 'epoch_1.pth'
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, ckpt)
    return str(cfg), str(ckpt)


@pytest.mark.parametrize('finished', [True, False])
def test_checkpoint_weights_are_checked_before_the_gpu_question(tmp_path, finished):
    from lbc_mm.export import export_checkpoint
    cfg, ckpt = _lbc_checkpoint(tmp_path)
    stock = tmp_path / 'model.pth'
    export_checkpoint(cfg, ckpt, str(stock))  # also writes model.nm.pth
    model_file = tmp_path / 'model.nm.pth'
    if not finished:  # a stock file whose N:M layers were made dense again
        obj = torch.load(stock, weights_only=True)
        for name in obj['meta']['lbc_mm_export']['sparse_layers']:
            weight = obj['state_dict'][f'{name}.weight']
            weight.copy_(torch.rand_like(weight) + 0.1)
        model_file = tmp_path / 'dense_again.pth'
        torch.save(obj, model_file)
    out = tmp_path / 'r.json'
    from lbc_mm.deploy.bench import Benchmark
    lines = []
    code = Benchmark(cfg, str(model_file), out_json=str(out), log=lines.append).run()
    res = json.loads(out.read_text())
    assert res['nm_check']['layers'] == 20
    assert res['weights'] in ('stock', 'compressed')
    assert res['weights_source'].startswith('trained weights from')
    assert res['model_file'] == str(model_file) and 'checkpoint' not in res
    if finished:
        assert code == (0 if torch.cuda.is_available() else 2)
        assert res['nm_check']['layers_not_nm'] == 0
    else:
        assert code == 1
        assert res['nm_check']['layers_not_nm'] == 20
        assert any('refusing to time: layers not N:M' in ln for ln in lines)


# -- reliability: damaged / mismatched checkpoints, write failures, modes ----------
@pytest.fixture(scope='module')
def vit_ckpt(tiny_cfg, tmp_path_factory):
    """A compressed N:M file of the tiny ViT (magnitude 2:4 masks)."""
    from lbc_mm.deploy.models import random_weights
    from lbc_mm.export import compress_state_dict
    got = random_weights(tiny_cfg)
    meta = {'lbc_mm_export': {'sparse_layers': {
        k: f'{n}:{m}' for k, (n, m) in got.patterns.items()}}}
    path = tmp_path_factory.mktemp('ckpt') / 'vit.nm.pth'
    torch.save(compress_state_dict(got.model.state_dict(), got.patterns, meta),
               path)
    return str(path)


def _one_line(proc, code=1):
    assert proc.returncode == code, proc.stdout[-2000:] + proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    return err[0]


@pytest.mark.parametrize('case', ['truncated', 'mismatched'])
def test_damaged_or_mismatched_checkpoint_is_one_line(tiny_cfg, vit_ckpt, tmp_path,
                                                      case):
    bad = tmp_path / 'bad.pth'
    if case == 'truncated':
        data = open(vit_ckpt, 'rb').read()
        bad.write_bytes(data[:len(data) // 2])
        cfg, expect = tiny_cfg, 'corrupted'
    else:
        bad.write_bytes(open(vit_ckpt, 'rb').read())
        cfg = tmp_path / 'other.py'
        cfg.write_text(TINY_VIT.replace('num_classes=10', 'num_classes=7'))
        cfg, expect = str(cfg), 'does not match the config'
    line = _one_line(_run(cfg, str(bad), '--batch', '2', '--img-size', '32',
                          '--out-json', str(tmp_path / 'r.json')))
    assert line.startswith('error: ') and expect in line
    assert not (tmp_path / 'r.json').exists()


@pytest.mark.parametrize('case', ['training', 'no_record'])
def test_unconverted_checkpoint_is_one_line_to_run_convert(tmp_path, case):
    cfg, ckpt = _lbc_checkpoint(tmp_path)
    if case == 'no_record':  # stock keys, but nothing says which layers are N:M
        from lbc_mm.export import export_checkpoint
        export_checkpoint(cfg, ckpt, str(tmp_path / 'model.pth'))
        obj = torch.load(tmp_path / 'model.pth', weights_only=True)
        ckpt = str(tmp_path / 'upstream.pth')
        torch.save({'state_dict': obj['state_dict'], 'meta': {}}, ckpt)
    line = _one_line(_run(cfg, ckpt, '--out-json', str(tmp_path / 'r.json')))
    assert line.startswith('error: ') and 'run tools/convert.py' in line
    assert ('training checkpoint' in line) == (case == 'training')
    assert not (tmp_path / 'r.json').exists()


def test_unwritable_json_is_one_line(tiny_cfg, tmp_path):
    (tmp_path / 'r.json').mkdir()
    line = _one_line(_run(tiny_cfg, '--batch', '2', '--img-size', '32',
                          '--out-json', str(tmp_path / 'r.json')))
    assert line.startswith('error: cannot write') and 'r.json' in line


def _pattern_file(tiny_cfg, folder, n, m):
    """A compressed file of the tiny ViT whose sparse layers hold n:m weights."""
    from lbc_mm.deploy.models import random_weights
    from lbc_mm.export import compress_state_dict
    from lbc_mm.sparsity.patterns import magnitude_mask
    got = random_weights(tiny_cfg)
    torch.manual_seed(0)
    patterns = {k: (n, m) for k in got.patterns}
    with torch.no_grad():
        for name in patterns:
            w = got.model.get_submodule(name).weight
            w.copy_(torch.randn_like(w) * magnitude_mask(torch.randn_like(w), n, m))
    meta = {'lbc_mm_export': {'sparse_layers': {k: f'{n}:{m}' for k in patterns}}}
    path = folder / f'vit_{n}of{m}.nm.pth'
    torch.save(compress_state_dict(got.model.state_dict(), patterns, meta), path)
    return str(path)


def test_trained_patterns_that_are_2of4_run_and_4of8_is_refused(tiny_cfg, tmp_path):
    # 1:16 weights are 2:4 too: the dry run goes through (was: exit 2, "the GPU
    # kernels run 2:4 only")
    out = tmp_path / 'r16.json'
    proc = _run(tiny_cfg, _pattern_file(tiny_cfg, tmp_path, 1, 16), '--dry-run-cpu',
                '--batch', '2', '--img-size', '32', '--layer-dtypes', 'fp16',
                '--out-json', str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'layers_fp32' in json.loads(out.read_text())['stages_done']
    # 4:8 weights break 2:4: one line, exit 1, the JSON says which layers
    out = tmp_path / 'r48.json'
    line = _one_line(_run(tiny_cfg, _pattern_file(tiny_cfg, tmp_path, 4, 8),
                          '--dry-run-cpu', '--out-json', str(out)))
    assert line.startswith('error: 8 of 8 sparse layers are not 2:4') and \
        'trained 4:8' in line and '4:8 ones do not' in line
    assert json.loads(out.read_text())['not_2of4'][0]['trained'] == '4:8'


def test_the_model_file_alone_is_enough(tmp_path):
    """The export record holds the stock config: ``benchmark.py MODEL.nm.pth``
    builds the stock model from it (no training config, no LBC layer built)."""
    from lbc_mm.export import export_checkpoint
    cfg, ckpt = _lbc_checkpoint(tmp_path)
    export_checkpoint(cfg, ckpt, str(tmp_path / 'model.pth'))
    out = tmp_path / 'r.json'
    proc = _run(str(tmp_path / 'model.nm.pth'), '--batch', '2', '--img-size', '32',
                '--out-json', str(out))
    assert proc.returncode == 2, proc.stderr[-2000:]  # no GPU here, weights checked
    res = json.loads(out.read_text())
    assert res['config'] is None and res['model_name'] == 'model'
    assert res['weights'] == 'compressed'
    assert res['nm_check']['layers'] == 20 and res['nm_check']['layers_not_nm'] == 0
