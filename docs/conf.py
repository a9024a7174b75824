"""Sphinx configuration of the lbc_mm docs (``make docs``).

Markdown pages through MyST, the API reference through autodoc + napoleon (the
docstrings are Google style), the furo theme. Offline by design: no intersphinx,
nothing fetched; ``make docs`` runs with ``-W`` so any broken reference fails.
"""
import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# autodoc documents this checkout, whichever lbc_mm the environment has installed.
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault('MPLBACKEND', 'Agg')

project = 'lbc_mm'
author = 'the lbc_mm authors'
copyright = '2026, the lbc_mm authors'
release = runpy.run_path(os.path.join(HERE, '..', 'lbc_mm', 'version.py'))['__version__']
version = release

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
]
source_suffix = {'.md': 'markdown'}
root_doc = 'index'
exclude_patterns = ['_build']

# MyST: GitHub-style heading anchors (``page.md#a-heading``), ```{directive} fences.
myst_heading_anchors = 3
myst_enable_extensions = ['colon_fence']

# autodoc: the documented class / function only, in source order, no imported
# members; type hints in the description rather than in long signatures.
autodoc_default_options = {'member-order': 'bysource'}
autodoc_typehints = 'description'
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = 'furo'
html_title = f'lbc_mm {release}'
html_static_path = []
