"""ONNX / TensorRT deploy (``tools/export_onnx.py``).

``export`` (wrapper, example input, ONNX export, FP16 copy), ``check`` (N:M of the
ONNX initializers in TensorRT's layout, onnxruntime equality, Polygraphy's sparsity
check), ``trtexec`` (trtexec commands per version, engine builds and timing,
dense vs 2:4) and
``trt_layers`` (which layers got sparse kernels, from layer info and build log).
Importing needs neither onnx nor TensorRT.
"""
