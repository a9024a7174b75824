"""TensorRT by version, without TensorRT: the trtexec command lines for 8.x / 10.x /
11.x, the timing trtexec exports, and which layers ran sparse from the engine's
layer information.

The layer-information samples below were written by hand from NVIDIA's documented
schema (``trtexec --exportLayerInfo`` / ``IEngineInspector`` JSON with
``--profilingVerbosity=detailed``: ``Layers`` of objects with ``Name``,
``LayerType``, ``TacticName``, and for convolutions ``HasSparseWeights``; without
detailed verbosity ``Layers`` is a list of names; 11.x replaced ``Bindings`` by
``I/O Tensors``), not recorded from a GPU run: no TensorRT was available.
"""
import pytest

from lbc_mm.deploy.onnx import trt_layers
from lbc_mm.deploy.onnx import trtexec as trt

STATIC = None
DYNAMIC = {'input': [16, 3, 224, 224]}


def _argv(version, sparse=True, shapes=STATIC, precision='fp16'):
    return trt.trtexec_argv('trtexec', 'm.onnx', version, sparse, '/w', precision,
                            shapes)


@pytest.mark.parametrize('version', ['8.6.1', '10.3.0.26', '11.4.0'])
def test_static_onnx_gets_no_shapes_dynamic_gets_them(version):
    assert not any(a.startswith('--shapes') for a in _argv(version))
    assert '--shapes=input:16x3x224x224' in _argv(version, shapes=DYNAMIC)


def test_precision_flags_per_version():
    assert '--fp16' in _argv('8.6.1') and '--fp16' in _argv('10.3.0')
    assert '--fp16' not in _argv('10.3.0', precision='fp32')
    # 11.x is strongly typed: no precision flag exists; FP16 comes from the file
    v11 = _argv('11.4.0')
    assert not any(a in v11 for a in ('--fp16', '--bf16', '--int8', '--best',
                                      '--stronglyTyped'))
    assert trt.needs_fp16_onnx('11.4.0', 'fp16')
    assert not trt.needs_fp16_onnx('10.3.0', 'fp16')
    assert not trt.needs_fp16_onnx('11.4.0', 'fp32')


def test_explicit_batch_and_layer_info_flags_per_version():
    # --explicitBatch: only before 8.2 (from 8.2 on it is deprecated: ONNX is
    # always explicit batch); layer information from 8.2 on
    old = _argv('8.0.1')
    assert '--explicitBatch' in old and not any('exportLayerInfo' in a for a in old)
    for v in ('8.6.1', '10.3.0', '11.4.0'):
        a = _argv(v)
        assert '--explicitBatch' not in a
        assert '--profilingVerbosity=detailed' in a
        assert '--exportLayerInfo=/w/layers_sparse.json' in a
    assert '--sparsity=enable' in _argv('10.3.0')
    assert '--sparsity=disable' in _argv('10.3.0', sparse=False)
    assert not any('force' in a for a in _argv('10.3.0'))  # removed in 10.x
    with pytest.raises(ValueError, match='too old'):
        _argv('7.2.3')


def test_timing_comes_from_the_times_trtexec_exports():
    argv = _argv('10.3.0')
    assert '--exportTimes=/w/times_sparse.json' in argv
    assert '--exportTimes=/w/times_dense.json' in _argv('8.6.1', sparse=False)
    times = [{'computeMs': v, 'latencyMs': v + 1} for v in (0.7, 0.5, 0.6)]
    assert trt.median_compute_ms(times) == 0.6
    old = [{'startComputeMs': 1.0, 'endComputeMs': 1.25}]  # no computeMs key
    assert trt.median_compute_ms(old) == 0.25
    assert trt.median_compute_ms([]) is None


def test_trtexec_version_from_its_banner():
    assert trt.trtexec_version('&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # '
                               'trtexec --help') == '8.6.1'
    assert trt.trtexec_version('&&&& RUNNING TensorRT.trtexec [TensorRT v100300] #') \
        == '10.3.0'
    assert trt.trtexec_version('[TensorRT v110400]') == '11.4.0'
    assert trt.version_tuple('10.13.3.9') == (10, 13)


def test_compare_engines_without_tensorrt_says_how_in_one_line(tmp_path):
    onnx = pytest.importorskip('onnx')
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node('Relu', ['input'], ['out'])], 'g',
        [helper.make_tensor_value_info('input', TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info('out', TensorProto.FLOAT, [1, 3, 8, 8])])
    path = str(tmp_path / 'static.onnx')
    onnx.save(helper.make_model(graph), path)
    assert trt.dynamic_inputs(path) == {}
    none = {'trtexec': None, 'trtexec_version': None}
    res = trt.compare_engines(path, (1, 3, 8, 8), str(tmp_path), found=none)
    assert not res['available'] and '\n' not in res['line']
    assert '--shapes' not in res['line']  # static file
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = 'batch'
    onnx.save(helper.make_model(graph), path)
    assert trt.dynamic_inputs(path) == {'input': ['batch', 3, 8, 8]}


# -- which layers ran sparse ---------------------------------------------------------
# Detailed layer information (schema as documented; hand-written sample)
LAYER_INFO_DETAILED = {'Layers': [
    {'Name': '/model/backbone/layer1/layer1.0/conv1/Conv + '
             '/model/backbone/layer1/layer1.0/relu/Relu',
     'LayerType': 'CaskConvolution', 'ParameterType': 'Convolution',
     'HasSparseWeights': 1,
     'TacticName': 'sm80_xmma_fprop_sparse_conv_f16f16_f16f16_f16_nhwckrsc_nhwc'},
    {'Name': '/model/backbone/layer1/layer1.0/conv2/Conv',
     'LayerType': 'CaskConvolution', 'ParameterType': 'Convolution',
     'HasSparseWeights': 0,
     'TacticName': 'sm80_xmma_fprop_implicit_gemm_f16f16_f16f16_f16_nhwckrsc_nhwc'},
    {'Name': '/model/head/fc/Gemm', 'LayerType': 'CaskGemmMatrixMultiply',
     'TacticName': 'sm80_xmma_gemm_f16f16_f16f32_f32_tn_n_sparse_tilesize64x64'},
    {'Name': 'Reformatting CopyNode for Input Tensor 0', 'LayerType': 'Reformat',
     'TacticName': 'copy'}],
    'I/O Tensors': [{'Name': 'input', 'IOMode': 'Input'}]}  # 11.x key
# Without --profilingVerbosity=detailed: names only
LAYER_INFO_NAMES = {'Layers': ['/model/backbone/layer1/layer1.0/conv2/Conv'],
                    'Bindings': ['input', 'logits']}  # 10.x key
LOG = ('[I] [TRT] (Sparsity) Layers eligible for sparse math: '
       '/model/backbone/layer1/layer1.0/conv1/Conv, '
       '/model/backbone/layer1/layer1.0/conv2/Conv\n'
       '[I] [TRT] (Sparsity) TRT inference plan picked sparse implementation for '
       'layers: /model/backbone/layer1/layer1.0/conv1/Conv + '
       '/model/backbone/layer1/layer1.0/relu/Relu\n'
       '[I] GPU Compute Time: min = 0.5 ms, max = 0.9 ms, mean = 0.61 ms, '
       'median = 0.6 ms, percentile(90%) = 0.7 ms\n')
ROWS = [
    {'layer': 'backbone.layer1.0.conv1', 'is_2of4': True,
     'node': '/model/backbone/layer1/layer1.0/conv1/Conv'},
    {'layer': 'backbone.layer1.0.conv2', 'is_2of4': True,
     'node': '/model/backbone/layer1/layer1.0/conv2/Conv'},
    {'layer': 'head.fc', 'is_2of4': True, 'node': '/model/head/fc/Gemm'},
    {'layer': 'backbone.conv1', 'is_2of4': None, 'node': '/model/backbone/conv1/Conv'},
]


def test_engine_layers_read_sparse_flag_and_tactic_names():
    layers = trt_layers.engine_layers(LAYER_INFO_DETAILED)
    assert [x['sparse'] for x in layers] == [True, False, True, False]
    assert [x['name'] for x in layers if x['sparse']] == [
        layers[0]['name'], '/model/head/fc/Gemm']
    assert trt_layers.engine_layers(LAYER_INFO_NAMES)[0]['sparse'] is None


def test_verdicts_name_eligible_layers_that_were_not_picked():
    log = trt_layers.parse_trtexec_log(LOG)
    assert len(log['eligible_layers']) == 2
    got = {v['layer']: v for v in trt_layers.layer_verdicts(
        ROWS, trt_layers.engine_layers(LAYER_INFO_DETAILED), log['sparse_layers'])}
    assert set(got) == {'backbone.layer1.0.conv1', 'backbone.layer1.0.conv2',
                        'head.fc'}  # only 2:4 weights are judged
    assert got['backbone.layer1.0.conv1']['verdict'] == 'sparse'
    assert got['backbone.layer1.0.conv1']['log']  # the log agrees
    assert got['backbone.layer1.0.conv2']['verdict'] == 'eligible, not picked'
    assert not got['backbone.layer1.0.conv2']['log']
    assert got['head.fc']['verdict'] == 'sparse' and not got['head.fc']['log']
    # no detail in the layer information: no verdict invented
    v = trt_layers.layer_verdicts(ROWS[1:2], trt_layers.engine_layers(LAYER_INFO_NAMES))
    assert v[0]['verdict'] == 'not in layer info'
    text = trt.format_engines({
        'available': True, 'tensorrt_version': '10.3.0', 'tool': 'trtexec',
        'precision': 'fp16', 'shape': [1, 3, 8, 8], 'speedup': 1.2,
        'verdicts': list(got.values()),
        'runs': {'dense': {'median_ms': 0.72, 'sparse_layers': []},
                 'sparse': {'median_ms': 0.6, 'sparse_layers': log['sparse_layers'],
                            'engine_layers':
                                trt_layers.engine_layers(LAYER_INFO_DETAILED)}}})
    assert 'TensorRT 10.3.0 (trtexec)' in text and '| 2 |' in text
    assert 'run dense by TensorRT (1): backbone.layer1.0.conv2' in text
