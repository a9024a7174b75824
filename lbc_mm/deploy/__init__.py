"""Deploy: 2:4 execution paths (cuSPARSELt), per-layer auto choice, benchmark.

Submodules: ``kernels`` (GEMMs), ``modules`` (drop-in layers), ``timing`` (CUDA
events / graphs), ``plan`` (shapes, per-layer timing, auto choice), ``models``
(config -> dense-with-zeros model), ``bench`` (the benchmark behind
``tools/benchmark.py``). Nothing here needs a GPU to import.
"""
