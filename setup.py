"""lbc_mm: LBC N:M sparsity for OpenMMLab (mmdet / mmpretrain)."""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop
from setuptools.command.egg_info import egg_info

HERE = os.path.dirname(os.path.abspath(__file__))


def add_mim_extension():
    """Expose ``configs/`` as ``lbc_mm/.mim/configs`` like OpenMMLab packages.

    mmengine resolves ``_base_ = 'lbc_mm::dir/file.py'`` by reading
    ``<installed lbc_mm>/.mim/configs/dir/file.py``. Editable installs get a symlink
    (edits show up at once); regular builds get a copy.
    """
    mim_dir = os.path.join(HERE, 'lbc_mm', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    # mmengine reads .mim/model-index.yml first, then falls back to .mim/configs/<path>.
    for name in ('configs', 'model-index.yml'):
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
        import lbc_mm_config_hook
        lbc_mm_config_hook.write_pth(self.build_lib)


class _EggInfo(egg_info):

    def run(self):
        add_mim_extension()
        super().run()


setup(
    name='lbc_mm',
    version='0.1.0',
    description='Learning Best Combination (LBC) N:M sparsity for mmdet and '
    'mmpretrain, with 2:4 export and GPU benchmarks',
    long_description=open(os.path.join(HERE, 'README.md')).read()
    if os.path.exists(os.path.join(HERE, 'README.md')) else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['lbc_mm', 'lbc_mm.*']),
    py_modules=['lbc_mm_config_hook'],
    include_package_data=True,
    package_data={'lbc_mm': ['.mim/model-index.yml', '.mim/configs/**/*.py',
                            '.mim/configs/*.py']},
    python_requires='>=3.9',
    install_requires=[
        'torch>=2.1',
        'mmengine==0.10.7',
        'mmcv==2.1.0',
        'mmdet==3.3.0',
        'mmpretrain==1.2.0',
        # mmengine 0.10.7 resolves `pkg::path` configs through pkg_resources.
        'setuptools<81',
        'matplotlib',
    ],
    extras_require={
        'tests': ['pytest>=7', 'pytest-timeout'],
        # tools/export_onnx.py: ONNX export, onnx.checker, onnxruntime (CPU) check.
        # mmdeploy 1.3.1 is left out: it pins protobuf<=3.20.2 and onnx 1.17
        # (docs/deploy.md).
        'deploy': ['onnx>=1.14', 'onnxruntime>=1.16'],
    },
    cmdclass={'build_py': _BuildPy, 'develop': _Develop, 'egg_info': _EggInfo},
    zip_safe=False,
)
