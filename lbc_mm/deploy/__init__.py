"""Deploy: what runs the exported N:M model (2:4 on cuSPARSELt, ONNX / TensorRT).

Submodules: ``models`` (converted ``.nm.pth`` / stock ``.pth`` (+ config) -> the
model with its N:M layers, or random weights with magnitude masks), ``kernels``
(GEMMs), ``modules`` (drop-in layers; the preflight of the variants), ``timing``
(``torch.utils.benchmark.Timer``, CUDA graphs), ``plan`` (shapes, per-layer timing,
auto choice), ``workload`` (model, input, timed functions, units), ``end_to_end``
and ``bench`` (the :class:`Benchmark` behind ``tools/benchmark.py``), ``report``
(JSON, markdown, PNG), ``onnx`` (``tools/export_onnx.py``: export, check, trtexec),
``inference``
(:func:`accelerate`: 2:4 units swapped into a loaded converted model). Nothing
here needs a GPU to import.
"""
from .inference import AccelerateError, accelerate

__all__ = ['AccelerateError', 'accelerate']
