"""The package's import structure: no cycles, the pure math stays pure.

Reads the sources (module-level imports only; imports inside functions are lazy by
design), so it runs in milliseconds and needs no heavy import.
"""
import ast
import os.path as osp
from pathlib import Path
from typing import Dict, List, Set, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / 'lbc_mm'


def import_graph(root: Path = PACKAGE) -> Dict[str, Set[str]]:
    """Module -> the lbc_mm modules its top level imports (importing ``a.b.c`` also
    runs the ``a.b`` package ``__init__``)."""
    mods = {}
    for path in root.rglob('*.py'):
        name = '.'.join(path.relative_to(root.parent).with_suffix('').parts)
        mods[name[:-len('.__init__')] if name.endswith('.__init__') else name] = path
    graph = {}
    for name, path in mods.items():
        pkg = name if path.name == '__init__.py' else name.rpartition('.')[0]
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = pkg.split('.')[:len(pkg.split('.')) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            subs = {f'{target}.{a.name}' for a in node.names} & mods.keys()
            deps |= subs or ({target} & mods.keys())
        for dep in list(deps):
            parts = dep.split('.')
            deps |= {'.'.join(parts[:i]) for i in range(2, len(parts))
                     if not name.startswith('.'.join(parts[:i]) + '.')}
        deps.discard(name)
        graph[name] = deps
    return graph


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    cycles, done, stack = [], set(), []

    def visit(node):
        stack.append(node)
        for dep in sorted(graph[node]):
            if dep in stack:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in done:
                visit(dep)
        stack.pop()
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node)
    return cycles


def test_no_import_cycle():
    assert find_cycles(import_graph()) == []


def test_sparsity_is_pure_torch():
    for path in (PACKAGE / 'sparsity').glob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ''] if isinstance(node, ast.ImportFrom)
                     and not node.level else [])
            for name in names:
                assert not name.startswith(('mm', 'lbc_mm')), (osp.basename(path),
                                                               name)


def test_model_helpers_sit_below_hooks_export_and_deploy():
    graph = import_graph()
    assert graph['lbc_mm.sparse_model'] <= {'lbc_mm.layers', 'lbc_mm.methods',
                                            'lbc_mm.sparsity'}
    assert not any(dep.startswith('lbc_mm.hooks')
                   for mod, deps in graph.items() if mod.startswith('lbc_mm.export')
                   for dep in deps)


#: Modules that run while training; they import nothing from export or deploy.
TRAINING = ('lbc_mm.hooks', 'lbc_mm.layers', 'lbc_mm.methods', 'lbc_mm.optim',
            'lbc_mm.transforms', 'lbc_mm.visualization', 'lbc_mm.sparse_model',
            'lbc_mm.model_wrappers', 'lbc_mm.config_check', 'lbc_mm.sparsity',
            'lbc_mm.io')


def training_imports_of_export(graph: Dict[str, Set[str]]) -> List[Tuple[str, str]]:
    """``(training module, export / deploy module it imports)`` pairs."""
    return sorted((mod, dep) for mod, deps in graph.items()
                  if mod.startswith(TRAINING) for dep in deps
                  if dep.startswith(('lbc_mm.export', 'lbc_mm.deploy')))


def test_training_imports_nothing_from_export_or_deploy():
    assert training_imports_of_export(import_graph()) == []


def test_the_rule_catches_a_training_module_importing_export(tmp_path):
    pkg = tmp_path / 'lbc_mm'
    (pkg / 'export').mkdir(parents=True)
    (pkg / 'hooks').mkdir()
    for init in (pkg, pkg / 'export', pkg / 'hooks'):
        (init / '__init__.py').write_text('')
    (pkg / 'export' / 'io.py').write_text('')
    (pkg / 'hooks' / 'checkpoint.py').write_text('from ..export.io import x\n')
    assert training_imports_of_export(import_graph(pkg)) == [
        ('lbc_mm.hooks.checkpoint', 'lbc_mm.export'),
        ('lbc_mm.hooks.checkpoint', 'lbc_mm.export.io')]


def test_methods_sit_between_the_math_and_the_layers():
    """A method module knows the pure math and the method interface, not the
    layers, hooks or tools that use it (and imports no OpenMMLab at top level)."""
    graph = import_graph()
    methods = {mod: deps for mod, deps in graph.items()
               if mod.startswith('lbc_mm.methods')}
    assert {'lbc_mm.methods.lbc', 'lbc_mm.methods.srste', 'lbc_mm.methods.asp',
            'lbc_mm.methods.base'} <= methods.keys()
    for mod, deps in methods.items():
        assert all(dep.startswith(('lbc_mm.sparsity', 'lbc_mm.methods'))
                   for dep in deps), (mod, deps)
        path = PACKAGE.parent / (mod.replace('.', '/') + (
            '/__init__.py' if mod == 'lbc_mm.methods' else '.py'))
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(
                    node, 'level', 0):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ''])
                assert not any(n.startswith('mm') for n in names), (mod, names)


def test_method_facts_stay_in_the_methods_and_no_code_reads_the_call_stack():
    """Outside ``lbc_mm/methods`` nothing tests a method by name (``method ==
    'lbc'``: the method objects and their registration say it), and no module
    inspects the Python call stack."""
    import re
    by_name = re.compile(r"""(method|\.name)\s*[!=]=\s*['"](lbc|srste|ste|asp)['"]""")
    stack = re.compile(r'_getframe|currentframe|inspect\.stack|\.f_back\b')
    tools = PACKAGE.parent / 'tools'
    offenders = []
    for path in list(PACKAGE.rglob('*.py')) + list(tools.glob('*.py')):
        text = path.read_text()
        if stack.search(text) or ('methods' not in path.parts
                                  and by_name.search(text)):
            offenders.append(str(path.relative_to(PACKAGE.parent)))
    assert offenders == []
