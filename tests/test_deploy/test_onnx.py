"""tools/export_onnx.py and lbc_mm.deploy.onnx: export, N:M of initializers,
onnxruntime equality, refusals (CPU, tiny models)."""
import importlib.util
import json
import os
import sys

import pytest
import torch
from torch import nn

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

from lbc_mm.apis import build_model, load_config  # noqa: E402
from lbc_mm.deploy.onnx import check as onnx_check  # noqa: E402
from lbc_mm.deploy.onnx import trt_layers  # noqa: E402
from lbc_mm.deploy.onnx import trtexec as onnx_trt  # noqa: E402
from lbc_mm.export import export_checkpoint  # noqa: E402
from lbc_mm.layers import sparse_layers  # noqa: E402
from lbc_mm.sparsity.patterns import magnitude_mask  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SPEC = importlib.util.spec_from_file_location(
    'export_onnx', os.path.join(REPO, 'tools', 'export_onnx.py'))
export_onnx = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(export_onnx)

SPARSE_CONV = "conv_cfg=dict(type='NMSparseConv', n=2, m=4, method='lbc')"
CLASSIFIER = f"""
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(num_classes=10, mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], to_rgb=True),
    backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(3, ),
                  base_channels=16, {SPARSE_CONV}),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=128))
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(32, 32)),
                 dict(type='PackInputs')]
"""
DETECTOR = f"""
default_scope = 'mmdet'
model = dict(
    type='RetinaNet',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
                           pad_size_divisor=32),
    backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(0, 1, 2, 3),
                  base_channels=16, norm_eval=False, {SPARSE_CONV}),
    neck=dict(type='FPN', in_channels=[16, 32, 64, 128], out_channels=16,
              start_level=1, add_extra_convs='on_input', num_outs=5),
    bbox_head=dict(
        type='RetinaHead', num_classes=3, in_channels=16, stacked_convs=1,
        feat_channels=16,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                              scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                              strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                        target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.5), max_per_img=10))
test_pipeline = [dict(type='LoadImageFromFile'),
                 dict(type='Resize', scale=(60, 60), keep_ratio=True)]
"""


def _trained(folder, name, text):
    """Config + an LBC 'training' checkpoint (removal finished) + converted files."""
    cfg = folder / f'{name}.py'
    cfg.write_text(text)
    model, _ = build_model(load_config(str(cfg)))
    for _n, layer in sparse_layers(model):
        with torch.no_grad():
            layer.scores.uniform_(0.1, 1.0)
        layer.sparsity.remove_candidates(1)
    for mod in model.modules():  # non-trivial BN statistics, so folding rescales
        if isinstance(mod, nn.BatchNorm2d):
            with torch.no_grad():
                mod.running_var.uniform_(0.5, 2.0)
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.weight.uniform_(0.5, 1.5)
    ckpt = folder / f'{name}_epoch_1.pth'
    torch.save({'meta': {'epoch': 1}, 'state_dict': model.state_dict()}, ckpt)
    out = folder / f'{name}_stock.pth'
    export_checkpoint(str(cfg), str(ckpt), str(out))
    return dict(cfg=str(cfg), ckpt=str(ckpt), stock=str(out),
                nm=str(folder / f'{name}_stock.nm.pth'))


@pytest.fixture(scope='module')
def cls(tmp_path_factory):
    return _trained(tmp_path_factory.mktemp('onnx_cls'), 'cls', CLASSIFIER)


def _run(capsys, *argv):
    rc = export_onnx.main([str(a) for a in argv] + ['--no-trt'])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize('which', ['stock', 'nm'])
def test_classifier_export_keeps_2of4_and_matches_onnxruntime(cls, tmp_path, capsys,
                                                              which):
    import onnx
    out, rep = tmp_path / 'cls.onnx', tmp_path / 'report.json'
    rc, stdout, err = _run(capsys, cls['cfg'], cls[which], '--out', out, '--json', rep,
                           '--batch', 2, '--dynamic-batch')
    assert rc == 0, err
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    report = json.loads(rep.read_text())
    assert report['model_file'] == str(cls[which])
    assert report['input'] == [2, 3, 32, 32] and report['part'] == 'whole'
    rows = {r['layer']: r for r in report['initializers']}
    sparse = [r for r in rows.values() if r['pattern']]
    assert len(sparse) == 20  # ResNet-18 (stem 64 ch): convs + 4 downsamples, no stem
    assert all(r['nm_ok'] and r['is_2of4'] and r['zeros_kept'] for r in sparse)
    assert all(abs(r['sparsity'] - 0.5) < 0.01 for r in sparse)
    assert rows['backbone.conv1']['pattern'] == '' and \
        rows['backbone.conv1']['why'] == '3 input channels: not a multiple of 4'
    assert rows['head.fc']['op'] == 'Gemm' and not rows['head.fc']['is_2of4']
    assert report['onnxruntime']['ok'] and report['onnxruntime']['top1_agree'] == 1.0
    assert '| backbone.layer1.0.conv1 | Conv' in stdout
    assert '| yes | yes | yes | 0.50 |' in stdout
    assert 'onnxruntime (CPU) vs PyTorch' in stdout
    # dynamic batch: the same file runs batch 3
    import numpy as np
    import onnxruntime as ort
    sess = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    assert sess.run(None, {'input': np.zeros((3, 3, 32, 32), np.float32)})[0].shape \
        == (3, 10)


def test_the_model_file_alone_is_enough(cls, tmp_path, capsys):
    """convert.py records the stock config in the export record: no CONFIG."""
    meta = torch.load(cls['nm'], weights_only=True)['meta']['lbc_mm_export']
    assert meta['stock_config']['model']['backbone']['type'] == 'ResNet'
    assert 'conv_cfg' not in meta['stock_config']['model']['backbone'] or \
        meta['stock_config']['model']['backbone']['conv_cfg'] is None
    out = tmp_path / 'alone.onnx'
    rc, stdout, err = _run(capsys, cls['nm'], '--out', out)
    assert rc == 0, err
    assert out.exists() and '20 N:M sparse (20 of them 2:4' in stdout


@pytest.mark.parametrize('args, line', [
    (['--opset', '5'], 'error: --opset must be >= 7 (the first opset torch.onnx '
     'writes), got 5'),
    (['--batch', '0'], 'error: --batch must be >= 1, got 0')])
def test_bad_numbers_are_one_line(capsys, args, line):
    with pytest.raises(SystemExit) as info:
        export_onnx.parse_args(['cfg.py', 'model.nm.pth'] + args)
    assert info.value.code == 2
    assert capsys.readouterr().err == line + '\n'


def test_detector_backbone_and_neck(tmp_path, capsys):
    det = _trained(tmp_path, 'det', DETECTOR)
    out, rep = tmp_path / 'det.onnx', tmp_path / 'det.json'
    rc, stdout, err = _run(capsys, det['cfg'], det['nm'], '--out', out, '--json', rep,
                           '--dynamic-shape')
    assert rc == 0, err
    report = json.loads(rep.read_text())
    assert report['part'] == 'backbone+neck' and report['input'] == [1, 3, 64, 64]
    assert [o['name'] for o in report['onnxruntime']['outputs']] == \
        [f'feat{i}' for i in range(5)]
    sparse = [r for r in report['initializers'] if r['pattern']]
    assert len(sparse) == 19 and all(r['nm_ok'] and r['zeros_kept'] for r in sparse)
    assert any(r['layer'].startswith('neck.') and not r['pattern']
               for r in report['initializers'])
    assert 'export the heads with mmdeploy' in stdout


def test_non_nm_model_is_refused(cls, tmp_path, capsys):
    ckpt = torch.load(cls['stock'], weights_only=True)
    ckpt['state_dict']['backbone.layer1.0.conv1.weight'].fill_(1.0)
    bad = tmp_path / 'dense.pth'
    torch.save(ckpt, bad)
    rc, _out, err = _run(capsys, cls['cfg'], bad, '--out', tmp_path / 'x.onnx')
    assert rc == 1 and err.count('\n') == 1
    assert 'backbone.layer1.0.conv1 (2:4)' in err and 'not N:M' in err
    assert not (tmp_path / 'x.onnx').exists()


@pytest.mark.parametrize('case,expect', [
    ('missing', 'error: checkpoint not found'),
    ('training', 'is a training checkpoint'),
    ('no_record', 'has no lbc_mm export record'),
])
def test_bad_input_is_one_line(cls, tmp_path, capsys, case, expect):
    path = {'missing': tmp_path / 'nope.pth', 'training': cls['ckpt'],
            'no_record': tmp_path / 'plain.pth'}[case]
    if case == 'no_record':
        sd = torch.load(cls['stock'], weights_only=True)['state_dict']
        torch.save({'state_dict': sd}, path)
    rc, _out, err = _run(capsys, cls['cfg'], path, '--out', tmp_path / 'x.onnx')
    assert rc == 1 and err.count('\n') == 1 and expect in err, err
    if case != 'missing':
        assert 'run tools/convert.py' in err
    assert not (tmp_path / 'x.onnx').exists()


class _Tokens(nn.Module):
    """A Linear on (B, T, C) tokens exports as MatMul with a (K, N) initializer."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 12)
        self.fc2 = nn.Linear(12, 4)

    def forward(self, x):
        return self.fc2(self.fc1(x).relu())


def test_matmul_weights_are_grouped_along_k():
    from lbc_mm.deploy.onnx.export import ExportWrapper, export_onnx
    model = _Tokens().eval()
    with torch.no_grad():
        model.fc1.weight.mul_(magnitude_mask(model.fc1.weight, 2, 4))
    wrapper = ExportWrapper(model, 'tokens')
    wrapper.forward = lambda x: wrapper.model(x)
    proto = export_onnx(wrapper, torch.randn(2, 5, 8))
    rows = onnx_check.initializer_rows(proto, wrapper, {'fc1': (2, 4)})
    by_layer = {r['layer']: r for r in rows}
    assert by_layer['fc1']['op'] == 'MatMul' and by_layer['fc1']['shape'] == [8, 12]
    assert by_layer['fc1']['nm_ok'] and by_layer['fc1']['zeros_kept']
    assert by_layer['fc2']['is_2of4'] is False
    onnx_check.check_rows(rows, {'fc1': (2, 4)})
    with pytest.raises(onnx_check.OnnxCheckError, match='fc2'):
        onnx_check.check_rows(rows, {'fc1': (2, 4), 'fc2': (2, 4)})
    x = torch.randn(2, 5, 8)
    res = onnx_check.compare_onnxruntime(proto, x, [model(x) + 1.0])
    assert not res['ok']


class _ZeroGammaBlocks(nn.Module):
    """Two conv + BN pairs whose BN starts at gamma 0 (mmdet's zero_init_residual in
    a frozen stage): folded into the convs, both weights are all zeros."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.bn_a = nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.conv_b, self.bn_b = nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8)
        for bn in (self.bn_a, self.bn_b):
            nn.init.zeros_(bn.weight)

    def forward(self, x):
        return x + self.bn_a(self.conv_a(x)) + self.bn_b(self.conv_b(x))


def test_layers_sharing_one_folded_initializer_are_each_checked():
    # `make demo` failed here: the exporter keeps one initializer for equal folded
    # weights, whose name belongs to one layer only; the other was reported missing.
    from lbc_mm.deploy.onnx.export import ExportWrapper, export_onnx
    model = _ZeroGammaBlocks().eval()
    with torch.no_grad():
        for conv in (model.conv_a, model.conv_b):
            conv.weight.mul_(magnitude_mask(conv.weight, 2, 4))
    wrapper = ExportWrapper(model, 'blocks')
    wrapper.forward = lambda x: wrapper.model(x)
    proto = export_onnx(wrapper, torch.randn(1, 8, 4, 4))
    patterns = {'conv_a': (2, 4), 'conv_b': (2, 4)}
    rows = onnx_check.initializer_rows(proto, wrapper, patterns)
    assert sorted(r['layer'] for r in rows if r['pattern']) == ['conv_a', 'conv_b']
    assert all(r['nm_ok'] for r in rows if r['pattern'])
    onnx_check.check_rows(rows, patterns)


def test_layer_of_resolves_sequential_scopes():
    names = ['', 'model', 'model.backbone', 'model.backbone.layer1',
             'model.backbone.layer1.0', 'model.backbone.layer1.0.conv1']
    assert onnx_check.layer_of('/model/backbone/layer1/layer1.0/conv1/Conv', names) \
        == 'model.backbone.layer1.0.conv1'
    assert onnx_check.layer_of('/other/Conv', names) is None


def test_trtexec_log_parsing_and_missing_tensorrt_line():
    log = ('[I] [TRT] (Sparsity) Layers eligible for sparse math: Conv_1, Conv_2\n'
           '[I] [TRT] (Sparsity) TRT inference plan picked sparse implementation for '
           'layers: Conv_2\n')
    got = trt_layers.parse_trtexec_log(log)
    assert got == {'sparse_layers': ['Conv_2'], 'eligible_layers': ['Conv_1', 'Conv_2']}
    assert [x['name'] for x in trt_layers.engine_layers({'Layers': [
        {'Name': 'a', 'TacticName': 'sm80_xmma_fprop_sparse_conv'},
        {'Name': 'b', 'TacticName': 'sm80_xmma_fprop_implicit_gemm'}]})
        if x['sparse']] == ['a']
    line = onnx_trt.how_to_run('m.onnx', (1, 3, 224, 224))
    assert '\n' not in line and '--sparsity=enable' in line and 'input:1x3x224x224' \
        in line


def test_random_weights_need_no_model_and_format_engines(cls, tmp_path, capsys):
    out = tmp_path / 'rand.onnx'
    rc, stdout, err = _run(capsys, cls['cfg'], '--random-weights', '--out', out)
    assert rc == 0, err
    assert out.exists() and '20 N:M sparse (20 of them 2:4' in stdout
    rc, _out, err = _run(capsys, cls['cfg'])
    assert rc == 1 and 'MODEL is required' in err and err.count('\n') == 1
    text = onnx_trt.format_engines({
        'available': True, 'precision': 'fp16', 'shape': [1, 3, 8, 8], 'speedup': None,
        'runs': {'dense': {'median_ms': 1.5, 'sparse_layers': []},
                 'sparse': {'median_ms': None, 'rc': 1, 'log': 'x.log',
                            'sparse_layers': []}}})
    assert '| dense (--sparsity=disable) | 1.500 | - |' in text
    assert 'failed (rc 1, x.log)' in text


# -- output paths, write errors, SIGTERM (the convert.py rules) -----------------------
@pytest.mark.parametrize('case', ['out_is_model', 'out_is_config', 'json_is_out',
                                  'json_is_model'])
def test_output_that_is_an_input_or_the_other_output_is_refused(cls, tmp_path, capsys,
                                                                case):
    before = {p: open(p, 'rb').read() for p in (cls['stock'], cls['cfg'])}
    out, rep = {
        'out_is_model': (cls['stock'], None), 'out_is_config': (cls['cfg'], None),
        'json_is_out': (tmp_path / 'a.onnx', tmp_path / 'a.onnx'),
        'json_is_model': (tmp_path / 'a.onnx', cls['stock'])}[case]
    argv = [cls['cfg'], cls['stock'], '--out', out] + (['--json', rep] if rep else [])
    rc, _out, err = _run(capsys, *argv)
    assert rc == 1 and err.count('\n') == 1 and 'refusing to overwrite it' in err, err
    assert {p: open(p, 'rb').read() for p in before} == before
    assert not (tmp_path / 'a.onnx').exists()


def test_write_errors_are_one_line(cls, tmp_path, capsys):
    (tmp_path / 'folder.onnx').mkdir()  # --out is a folder
    rc, _out, err = _run(capsys, cls['cfg'], cls['stock'], '--out',
                         tmp_path / 'folder.onnx')
    assert rc == 1 and err.count('\n') == 1 and err.startswith('error: cannot write')
    (tmp_path / 'r.json').mkdir()  # the --json write fails after the ONNX file
    rc, _out, err = _run(capsys, cls['cfg'], cls['stock'], '--out',
                         tmp_path / 'm.onnx', '--json', tmp_path / 'r.json')
    assert rc == 1 and err.count('\n') == 1 and 'cannot write' in err and \
        'r.json' in err and 'm.onnx written' in err, err
    assert not [p for p in os.listdir(tmp_path) if p.startswith('.')]


def test_sigterm_leaves_no_temp_file(cls, tmp_path):
    """SIGTERM while the ONNX file is being written: exit 143, nothing left."""
    import subprocess
    code = (
        'import os, signal, sys; sys.path.insert(0, "tools"); import export_onnx\n'
        'from lbc_mm import io\n'
        'real = io.atomic_write\n'
        'def slow(path, write):\n'
        '    def w(f):\n'
        '        f.write(b"partial"); f.flush()\n'
        '        os.kill(os.getpid(), signal.SIGTERM)\n'
        '        write(f)\n'
        '    return real(path, w)\n'
        'io.atomic_write = slow\n'
        f'sys.exit(export_onnx.main(["{cls["cfg"]}", "{cls["stock"]}", "--out", '
        f'"{tmp_path / "m.onnx"}", "--no-trt"]))\n')
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        'error: terminated (SIGTERM); no file was written']
    assert os.listdir(tmp_path) == []


# -- every trained pattern whose weights are 2:4 exports; 4:8 is refused --------------
def _with_pattern(cls, tmp_path, n, m):
    """The classifier's stock file with n:m weights on its sparse layers."""
    from lbc_mm.sparsity.patterns import magnitude_mask
    ckpt = torch.load(cls['stock'], weights_only=True)
    sd = ckpt['state_dict']
    layers = ckpt['meta']['lbc_mm_export']['sparse_layers']
    gen = torch.Generator().manual_seed(0)
    for name in layers:
        w = torch.randn(sd[name + '.weight'].shape, generator=gen)
        sd[name + '.weight'] = w * magnitude_mask(w, n, m)
        layers[name] = f'{n}:{m}'
    path = tmp_path / f'm_{n}of{m}.pth'
    torch.save(ckpt, path)
    return path


def test_1of16_exports_and_4of8_is_refused_in_one_line(cls, tmp_path, capsys):
    rc, stdout, err = _run(capsys, cls['cfg'], _with_pattern(cls, tmp_path, 1, 16),
                           '--out', tmp_path / 'a.onnx')
    assert rc == 0, err
    assert '20 N:M sparse (20 of them 2:4' in stdout
    rc, _out, err = _run(capsys, cls['cfg'], _with_pattern(cls, tmp_path, 4, 8),
                         '--out', tmp_path / 'b.onnx')
    assert rc == 1 and err.count('\n') == 1, err
    assert 'sparse layers are not 2:4' in err and 'trained 4:8' in err
    assert not (tmp_path / 'b.onnx').exists()


def test_fp16_onnx_keeps_2of4_on_the_fp16_weights(cls, tmp_path, capsys):
    """The file TensorRT 11 (strongly typed) builds an FP16 engine from."""
    import onnx
    rep = tmp_path / 'r.json'
    rc, stdout, err = _run(capsys, cls['cfg'], cls['stock'], '--out',
                           tmp_path / 'm.onnx', '--fp16-onnx', '--json', rep)
    assert rc == 0, err
    proto = onnx.load(str(tmp_path / 'm.fp16.onnx'))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    report = json.loads(rep.read_text())
    sparse = [r for r in report['initializers_fp16'] if r['pattern']]
    assert len(sparse) == 20 and all(r['dtype'] == 'float16' and r['is_2of4'] and
                                     r['zeros_kept'] for r in sparse)
    assert 'm.fp16.onnx (FP16 weights and I/O)' in stdout


# -- NVIDIA's own checker -------------------------------------------------------------
def test_polygraphy_judges_the_2of4_weights(cls, tmp_path, capsys):
    from lbc_mm.deploy.onnx.check import polygraphy_sparsity
    try:
        polygraphy_sparsity(str(tmp_path / 'none.onnx'), timeout=60)
    except FileNotFoundError:
        pytest.skip('polygraphy is not installed (pip install -e ".[deploy]")')
    except RuntimeError:
        pass  # installed; the missing file fails, as it should
    rep = tmp_path / 'r.json'
    rc, stdout, err = _run(capsys, cls['cfg'], cls['stock'], '--out',
                           tmp_path / 'm.onnx', '--polygraphy', '--json', rep)
    assert rc == 0, err
    report = json.loads(rep.read_text())
    assert report['polygraphy']['sparse'] >= 20
    assert report['polygraphy']['sparse_layers_not_2of4'] == []
    sparse = [r for r in report['initializers'] if r['pattern']]
    assert len(sparse) == 20 and all(r['is_2of4'] for r in sparse)
    assert '(2:4 as `polygraphy inspect sparsity` says)' in stdout
    # Polygraphy decides: a sparse layer it does not call 2:4 is named; a grouped
    # conv (no 2:4 kernel, is_2of4 None) stays out whatever it says.
    from lbc_mm.deploy.onnx import check as onnx_check
    rows = [{'initializer': 'w', 'is_2of4': True, 'pattern': '2:4', 'layer': 'a'},
            {'initializer': 'v', 'is_2of4': None, 'pattern': '', 'layer': 'g'},
            {'initializer': 'x', 'is_2of4': False, 'pattern': '', 'layer': 'h'}]
    assert onnx_check.judge_by_polygraphy(rows, {'sparse': ['v', 'x']}) == ['a']
    assert [r['is_2of4'] for r in rows] == [False, None, True]
