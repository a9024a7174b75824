"""Deploy: what runs the exported N:M model (2:4 on cuSPARSELt, ONNX / TensorRT).

``models`` (the converted file, read and N:M-checked), ``kernels`` / ``modules``
(2:4 GEMMs, drop-in layers), ``timing``, ``plan`` (units, their timing, the auto
choice), ``workload`` / ``bench`` / ``report`` (``tools/benchmark.py``),
``inference`` (:func:`accelerate`), ``onnx`` (``tools/export_onnx.py``). Nothing
here needs a GPU to import.
"""
from .inference import AccelerateError, accelerate

__all__ = ['AccelerateError', 'accelerate']
