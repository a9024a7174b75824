"""ONNX / TensorRT deploy (``tools/export_onnx.py``, docs/deploy.md). Importing
needs neither onnx nor TensorRT."""
