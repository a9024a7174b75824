"""lbc_mm: LBC N:M sparsity for OpenMMLab (mmdet / mmpretrain)."""
import os
import runpy
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop
from setuptools.command.egg_info import egg_info

try:  # PEP 660 editable installs (setuptools >= 64)
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # pragma: no cover
    editable_wheel = None

HERE = os.path.dirname(os.path.abspath(__file__))
MMDET = 'mmdet>=3.3.0,<3.4'
MMPRETRAIN = 'mmpretrain>=1.2.0,<1.3'


def read_version() -> str:
    """``lbc_mm.version.__version__``, read without importing the package."""
    return runpy.run_path(os.path.join(HERE, 'lbc_mm', 'version.py'))['__version__']


def write_config_hook_pth(site_dir: str) -> None:
    """Write ``lbc_mm_config_hook.pth`` (see ``lbc_mm_config_hook.py``) into a
    wheel's root, so pip records it and ``pip uninstall lbc_mm`` removes it."""
    hook = runpy.run_path(os.path.join(HERE, 'lbc_mm_config_hook.py'))
    hook['write_pth'](site_dir)


def add_mim_extension():
    """Expose ``configs/``, ``tools/`` and ``model-index.yml`` as ``lbc_mm/.mim/``
    like OpenMMLab packages.

    mmengine resolves ``_base_ = 'lbc_mm::dir/file.py'`` by reading
    ``<installed lbc_mm>/.mim/configs/dir/file.py``; ``mim search`` reads
    ``.mim/model-index.yml`` (and the metafiles it imports), ``mim train / test``
    run ``.mim/tools/train.py`` / ``test.py``. Editable installs get symlinks
    (edits show up at once); regular builds copy the files through them.
    """
    mim_dir = os.path.join(HERE, 'lbc_mm', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in ('configs', 'tools', 'model-index.yml'):
        src = os.path.join(HERE, name)
        dst = os.path.join(mim_dir, name)
        if os.path.islink(dst) or os.path.isfile(dst):
            os.remove(dst)
        elif os.path.isdir(dst):
            shutil.rmtree(dst)
        try:
            os.symlink(os.path.relpath(src, mim_dir), dst)
        except OSError:
            if os.path.isdir(src):
                shutil.copytree(src, dst)
            else:
                shutil.copyfile(src, dst)


class _Develop(develop):

    def run(self):
        add_mim_extension()
        super().run()


class _BuildPy(build_py):
    """Also ship ``lbc_mm_config_hook.pth`` (wheels install it into site-packages)."""

    def run(self):
        super().run()
        if not getattr(self, 'editable_mode', False):  # editable: _EditableWheel
            write_config_hook_pth(self.build_lib)


class _EggInfo(egg_info):

    def run(self):
        add_mim_extension()
        super().run()


cmdclass = {'build_py': _BuildPy, 'develop': _Develop, 'egg_info': _EggInfo}
if editable_wheel is not None:

    class _EditableWheel(editable_wheel):
        """``pip install -e .``: put ``lbc_mm_config_hook.pth`` into the editable
        wheel next to setuptools' own ``__editable__`` files, so pip records it.

        ``_run_build_commands`` is setuptools' own (64 to 80, the range the
        ``setuptools<81`` pin allows); tests/test_compat.py checks the installed
        RECORD, so a setuptools that drops it fails there, not silently.
        """

        def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
            outputs = super()._run_build_commands(dist_name, unpacked_wheel,
                                                  build_lib, tmp_dir)
            write_config_hook_pth(str(unpacked_wheel))
            return outputs

    cmdclass['editable_wheel'] = _EditableWheel


setup(
    name='lbc_mm',
    version=read_version(),
    description='Learning Best Combination (LBC) N:M sparsity for mmdet and '
    'mmpretrain, with 2:4 export and GPU benchmarks',
    long_description=open(os.path.join(HERE, 'README.md')).read()
    if os.path.exists(os.path.join(HERE, 'README.md')) else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['lbc_mm', 'lbc_mm.*']),
    py_modules=['lbc_mm_config_hook'],
    include_package_data=True,
    package_data={'lbc_mm': ['.mim/model-index.yml', '.mim/configs/*.py',
                            '.mim/configs/**/*.py', '.mim/configs/**/*.yml',
                            '.mim/configs/**/*.md', '.mim/tools/*.py',
                            '.mim/tools/*.sh']},
    python_requires='>=3.9',
    # Ranges, not pins, so lbc_mm installs next to a user's stack. Tested: exactly
    # the set tools/setup_env.sh installs (docs/get_started.md); the ranges admit
    # patch releases of those minor versions. mmdet / mmpretrain are extras.
    install_requires=[
        # weights-only torch.load by default (lbc_mm also asks for it explicitly).
        'torch>=2.6',
        'mmengine>=0.10.7,<0.11',
        # mmcv with its ops (mmdet.models imports mmcv.ops); mmdet 3.3 needs < 2.2.
        'mmcv>=2.1.0,<2.2',
        # mmengine 0.10.7 resolves `pkg::path` configs through pkg_resources.
        'setuptools<81',
        'matplotlib',
    ],
    extras_require={
        'det': [MMDET],
        'cls': [MMPRETRAIN],
        'all': [MMDET, MMPRETRAIN],
        # `make docs`: Sphinx + MyST Markdown + the furo theme (tested: sphinx 9.0.4,
        # myst-parser 5.2.0, furo 2025.12.19).
        'docs': ['sphinx>=9.0,<10', 'myst-parser>=5.0,<6', 'furo>=2025.9'],
        'tests': ['pytest>=7', 'pytest-timeout', 'ruff>=0.17,<0.18'],
        # tools/export_onnx.py: ONNX export, onnx.checker, onnxruntime (CPU) check;
        # polygraphy: NVIDIA's own 2:4 check of the ONNX file (runs on CPU).
        # mmdeploy 1.3.1 is left out: it pins protobuf<=3.20.2 and onnx 1.17
        # (docs/deploy.md).
        'deploy': ['onnx>=1.14', 'onnxruntime>=1.16', 'polygraphy'],
        # `mim search / train / test lbc_mm` (OpenMMLab's package manager).
        'mim': ['openmim'],
    },
    cmdclass=cmdclass,
    zip_safe=False,
)
