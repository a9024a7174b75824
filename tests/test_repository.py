"""Repository hygiene a maintainer relies on: every cited document is in the
repository, and the installed package is imported as installed."""
import os
import os.path as osp
import re

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TEXT_SUFFIXES = ('.py', '.md', '.sh', '.cfg', '.toml', '.yml', 'Makefile')
# Names of documents that are not in the repository (built here so that this file
# does not cite them itself).
ABSENT_DOCS = re.compile('|'.join([
    'ALGORITHM' + r'\.md', 'PLATFORM' + r'\.md', r'\.\./' + 'shared']))


def _text_files():
    for top in ('lbc_mm', 'tools', 'configs', 'tests', 'docs'):
        for root, dirs, files in os.walk(osp.join(REPO, top)):
            dirs[:] = [d for d in dirs if not d.startswith(('.', '__'))]
            for name in files:
                if name.endswith(TEXT_SUFFIXES):
                    yield osp.join(root, name)
    for name in os.listdir(REPO):
        if name.endswith(TEXT_SUFFIXES) and osp.isfile(osp.join(REPO, name)):
            yield osp.join(REPO, name)


def test_no_reference_to_documents_outside_the_repository():
    hits = []
    for path in _text_files():
        with open(path, encoding='utf-8', errors='replace') as f:
            for number, line in enumerate(f, 1):
                if ABSENT_DOCS.search(line):
                    hits.append(f'{osp.relpath(path, REPO)}:{number}')
    assert not hits, f'cite docs/method.md, docs/platform.md or the paper: {hits}'


def test_method_sections_cited_by_the_code_exist():
    """``docs/method.md §N`` in the code and configs: N is one of §1-§10."""
    with open(osp.join(REPO, 'docs', 'method.md'), encoding='utf-8') as f:
        method = f.read()
    present = {int(n) for n in re.findall(r'\(§(\d+)', method)}
    present |= {int(n) for n in re.findall(r'^## §(\d+)', method, re.M)}
    assert present == set(range(1, 11)), sorted(present)
    cited = set()
    for path in _text_files():
        with open(path, encoding='utf-8', errors='replace') as f:
            for match in re.finditer(r'method\.md[^\n§]{0,3}§(\d+)(?:-§?(\d+))?',
                                     f.read()):
                cited.update(int(n) for n in match.groups() if n)
    assert cited and cited <= present, sorted(cited - present)


def test_tools_and_setup_do_not_patch_sys_path():
    """lbc_mm is installed (editable by ``make env``): tools import it normally."""
    paths = [osp.join(REPO, 'setup.py')] + [
        osp.join(REPO, 'tools', n) for n in os.listdir(osp.join(REPO, 'tools'))
        if n.endswith('.py')]
    offenders = [osp.relpath(p, REPO) for p in paths
                 if 'sys.path.insert' in open(p, encoding='utf-8').read()]
    assert not offenders, offenders
