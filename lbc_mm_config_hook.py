"""Let mmengine resolve ``_base_ = 'lbc_mm::dir/file.py'`` before lbc_mm is imported.

mmengine 0.10.7 accepts ``pkg::path`` only for the packages in its hard-coded
``mmengine.config.utils.MODULE2PACKAGE``, and finds ``<pkg>/.mim/configs`` through
pkg_resources, which points at site-packages for an editable install. ``lbc_mm.compat``
fixes both when lbc_mm is imported; this module does the same for scripts that parse a
config *before* importing lbc_mm (mmdet's and mmpretrain's own ``tools/train.py``).

OpenMMLab's ``mim`` (``mim search / train / test lbc_mm``) has the same blind spot:
it reads ``<site-packages>/lbc_mm/.mim/`` (model-index.yml, configs, tools), which
an editable install does not have; :func:`register_mim` points it at the imported
package, whose ``.mim/`` links to the repository (``setup.py``).
`register_mim_weights` turns ``mim download lbc_mm``'s traceback (no weights
published) into one line.

It lives outside the ``lbc_mm`` package so that it imports nothing heavy: the
``lbc_mm_config_hook.pth`` file installed next to it calls :func:`install` at
interpreter start, which only adds a meta-path finder; the patches themselves run
when ``mmengine.config.config`` / ``mim.utils.utils`` /
``mim.commands.search`` are first imported.

The ``.pth`` file is part of the installed distribution (``setup.py`` puts it into
the wheel, the editable one included), so ``pip uninstall lbc_mm`` removes it. Set
``LBC_MM_NO_CONFIG_HOOK=1`` to keep it from doing anything at start-up; lbc_mm's
own tools (and any script that imports lbc_mm before parsing a config) still
resolve ``lbc_mm::`` through ``lbc_mm.compat``.
"""
import importlib.abc
import importlib.util
import os
import sys
from types import ModuleType

PACKAGE = 'lbc_mm'
TARGET = 'mmengine.config.config'
MIM_TARGET = 'mim.utils.utils'
MIM_SEARCH_TARGET = 'mim.commands.search'
PTH_NAME = 'lbc_mm_config_hook.pth'
#: ``LBC_MM_NO_CONFIG_HOOK=1`` turns the start-up hook off.
DISABLE_ENV = 'LBC_MM_NO_CONFIG_HOOK'
# A .pth line that starts with "import" is executed at start-up; it must not fail
# when lbc_mm has been uninstalled.
PTH_LINE = ("import importlib.util as _u; _u.find_spec('lbc_mm_config_hook') and "
            "__import__('lbc_mm_config_hook').install()\n")


def package_dir() -> str:
    """Directory of the lbc_mm package, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f'{PACKAGE} is not importable')
    return os.path.dirname(os.path.abspath(spec.origin))


def register(config_module: ModuleType) -> None:
    """Add lbc_mm to ``MODULE2PACKAGE`` and point ``get_installed_path`` at it.

    Args:
        config_module (ModuleType): ``mmengine.config.config`` (imported).
    """
    from mmengine.config.utils import MODULE2PACKAGE
    MODULE2PACKAGE.setdefault(PACKAGE, PACKAGE)
    original = config_module.get_installed_path
    if getattr(original, '_lbc_mm_patched', False):
        return

    def get_installed_path(package: str) -> str:
        return package_dir() if package == PACKAGE else original(package)

    get_installed_path._lbc_mm_patched = True
    config_module.get_installed_path = get_installed_path


def register_mim(utils_module: ModuleType) -> None:
    """Point mim's ``get_installed_path('lbc_mm')`` at the imported package.

    mim joins the distribution's location with the package name, which is
    site-packages for an editable install; the package found by import is the same
    directory for a regular install and the repository's ``lbc_mm/`` (with its
    ``.mim`` links) for an editable one. Runs before ``mim.utils`` re-exports it.

    Args:
        utils_module (ModuleType): ``mim.utils.utils`` (executed).
    """
    original = utils_module.get_installed_path
    if getattr(original, '_lbc_mm_patched', False):
        return

    def get_installed_path(package: str) -> str:
        return package_dir() if package == PACKAGE else original(package)

    get_installed_path._lbc_mm_patched = True
    utils_module.get_installed_path = get_installed_path


def register_mim_weights(search_module: ModuleType) -> None:
    """Make ``mim download lbc_mm --config NAME`` say in one line that no weights
    are published, instead of mim's traceback.

    mim reads the ``Weights`` of every model in ``model-index.yml`` through
    ``get_model_info(..., shown_fields=['weight', ...])``; lbc_mm's index has none yet
    (no invented URLs), and mim then raises ``ValueError: Expected fields: ..., but
    got {'weight'}``. Only that error, for lbc_mm, becomes the line (exit 1). mim runs
    its commands from their source files, so the patch sits in the module they
    import it from.

    Args:
        search_module (ModuleType): ``mim.commands.search`` (executed).
    """
    original = search_module.get_model_info
    if getattr(original, '_lbc_mm_patched', False):
        return

    def get_model_info(package, *args, **kwargs):
        try:
            return original(package, *args, **kwargs)
        except ValueError as exc:
            if (str(package).split('=')[0].lower() != PACKAGE
                    or "{'weight'}" not in str(exc)):
                raise
            raise SystemExit(
                f'mim download {PACKAGE}: no trained weights are published yet; '
                f'train the config instead (mim train {PACKAGE} CONFIG; configs: '
                f'mim search {PACKAGE})') from None

    get_model_info._lbc_mm_patched = True
    search_module.get_model_info = get_model_info


#: module -> what runs right after it executes.
PATCHES = {TARGET: register, MIM_TARGET: register_mim,
           MIM_SEARCH_TARGET: register_mim_weights}


class _ConfigImportFinder(importlib.abc.MetaPathFinder):
    """Runs the :data:`PATCHES` right after their modules execute."""

    def __init__(self):
        self.pending = set(PATCHES)

    def find_spec(self, name, path=None, target=None):
        if name not in self.pending:
            return None
        self.pending.discard(name)  # one shot per module
        sys.meta_path.remove(self)  # also avoids finding ourselves
        try:
            spec = importlib.util.find_spec(name)
        finally:
            if self.pending:
                sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_register(module: ModuleType) -> None:
            exec_module(module)
            PATCHES[name](module)

        spec.loader.exec_module = exec_and_register
        return spec


def install() -> None:
    """Patch mmengine's config module (and mim's utils) now if loaded, else when
    they are.

    Does nothing when the environment variable ``LBC_MM_NO_CONFIG_HOOK`` is set to
    anything but ``''`` / ``'0'``.
    """
    if os.environ.get(DISABLE_ENV, '') not in ('', '0'):
        return
    loaded = [name for name in PATCHES if name in sys.modules]
    for name in loaded:
        PATCHES[name](sys.modules[name])
    if len(loaded) < len(PATCHES) and not any(
            isinstance(f, _ConfigImportFinder) for f in sys.meta_path):
        finder = _ConfigImportFinder()
        finder.pending -= set(loaded)
        sys.meta_path.insert(0, finder)


def write_pth(site_dir: str) -> str:
    """Write ``lbc_mm_config_hook.pth`` into ``site_dir`` atomically; return it."""
    path = os.path.join(site_dir, PTH_NAME)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(PTH_LINE)
    os.replace(tmp, path)
    return path


if __name__ == '__main__':  # python lbc_mm_config_hook.py SITE_DIR
    print(write_pth(sys.argv[1]))
