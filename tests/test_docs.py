"""The README is a landing page and its links resolve; the docs site builds offline.

``make docs`` (run by ``make test``) builds the site with warnings as errors, so a
broken link, toctree entry or autodoc target fails there; these checks are the ones a
Sphinx build does not make.
"""
import os.path as osp
import re
import runpy

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
LINK = re.compile(r'\]\(([^)#\s]+)(?:#[^)]*)?\)')


def _readme():
    with open(osp.join(REPO, 'README.md'), encoding='utf-8') as f:
        return f.read()


def test_readme_is_a_landing_page():
    text = _readme()
    assert len(text.splitlines()) <= 250
    for must in ('make demo', 'make test', '## Results', '## Configs',
                 'docs/get_started.md', 'docs/method.md'):
        assert must in text, must


def test_readme_links_resolve():
    targets = [t for t in LINK.findall(_readme()) if '://' not in t]
    assert len(targets) >= 15, targets
    missing = [t for t in targets if not osp.exists(osp.join(REPO, t))]
    assert not missing, missing


def test_every_docs_page_the_readme_names_is_in_the_site():
    """The README's docs links point at pages of the site (docs/index.md's
    toctrees), not at files only GitHub shows."""
    with open(osp.join(REPO, 'docs', 'index.md'), encoding='utf-8') as f:
        index = f.read()
    pages = {t[len('docs/'):-len('.md')] for t in LINK.findall(_readme())
             if t.startswith('docs/') and t.endswith('.md')}
    assert pages
    assert not [p for p in pages if not re.search(rf'^{re.escape(p)}$', index, re.M)]


def test_docs_build_needs_no_network():
    conf = runpy.run_path(osp.join(REPO, 'docs', 'conf.py'))
    assert 'sphinx.ext.intersphinx' not in conf['extensions']
    assert not conf.get('intersphinx_mapping')
    assert conf['html_theme'] == 'furo'  # from PyPI (the docs extra)
