"""No code from a checkpoint, whatever its address (issue 14, item 2).

A poisoned checkpoint (its pickle calls ``os.mkdir(marker)``: harmless, but the
marker folder shows that the file's code ran) is refused, in one line naming the
global, on every path a checkpoint takes into lbc_mm and mmengine: a local file, an
``http://`` URL (served by a local HTTP server), the torch hub cache behind
``torchvision://`` / ``open-mmlab://`` / ``mmcls://`` names, ``load_from``,
``--resume`` and ``init_cfg`` ``Pretrained``. The two-stage backbone's init errors
are in tests/test_two_stage.py.
"""
import functools
import http.server
import importlib.util
import os
import os.path as osp
import subprocess
import sys
import threading

import pytest
import torch
from mmengine.runner.checkpoint import (
    CheckpointLoader,
    get_external_models,
    get_mmcls_models,
    get_torchvision_models,
)

from lbc_mm.checkpoint_io import CheckpointMismatchError, read_any_checkpoint

TESTS = osp.dirname(osp.abspath(__file__))
from checkpoint_poison import assert_refused, poison  # noqa: E402

REPO = osp.dirname(TESTS)
from lbc_toy import (  # noqa: E402
    LBCToyNet,
    build_runner,
    reset_mmengine_globals,
    subprocess_env,
    toy_cfg,
    write_config,
)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

    def log_message(self, *args):
        pass


@pytest.fixture
def www(tmp_path):
    """``(folder, base URL)`` of an HTTP server on 127.0.0.1 serving ``folder``."""
    root = tmp_path / 'www'
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()
    server.server_close()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache (``$TORCH_HOME/hub/checkpoints``)."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    return tmp_path / 'torch_home' / 'hub' / 'checkpoints'


def _first_http(urls: dict) -> str:
    return next(name for name, url in sorted(urls.items())
                if isinstance(url, str) and url.startswith('http'))


def _hub_name(address: str) -> str:
    """The hub-cache file name an mmengine checkpoint name downloads to."""
    scheme, name = address.split('://', 1)
    urls = {'torchvision': get_torchvision_models, 'open-mmlab': get_external_models,
            'mmcls': get_mmcls_models}[scheme]()
    return osp.basename(urls[name])


def test_the_poison_runs_when_loaded_unsafely(tmp_path):
    """Control: the test file does run code under ``weights_only=False`` (what
    ``torch.hub.load_state_dict_from_url`` does by default)."""
    marker = tmp_path / 'ran'
    path = poison(tmp_path / 'evil.pth', marker)
    torch.load(path, weights_only=False)
    assert osp.isdir(marker)


def test_local_file(tmp_path):
    marker = tmp_path / 'ran'
    path = poison(tmp_path / 'evil.pth', marker)
    for load in (read_any_checkpoint, CheckpointLoader.load_checkpoint):
        with pytest.raises(CheckpointMismatchError) as err:
            load(path)
        assert_refused(err.value, marker)


def test_http_url(www, hub, tmp_path):
    root, base = www
    marker = tmp_path / 'ran'
    poison(root / 'evil.pth', marker)
    with pytest.raises(CheckpointMismatchError) as err:
        CheckpointLoader.load_checkpoint(f'{base}/evil.pth')
    assert_refused(err.value, marker)
    assert f'{base}/evil.pth (cached as {hub}' in str(err.value)
    # a clean file behind a URL still loads (weights-only allows tensors)
    torch.save({'state_dict': {'w': torch.ones(2)}}, str(root / 'good.pth'))
    ckpt = CheckpointLoader.load_checkpoint(f'{base}/good.pth')
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))
    # a URL that is not there: one line with the reason
    with pytest.raises(CheckpointMismatchError, match='cannot download .*404'):
        CheckpointLoader.load_checkpoint(f'{base}/missing.pth')


@pytest.mark.parametrize('address', ['torchvision://resnet50', 'modelzoo://resnet50',
                                     'open-mmlab://', 'mmcls://'])
def test_hub_cache_of_mmengine_names(address, hub, tmp_path):
    """A poisoned file already in the hub cache, where ``torchvision://resnet50``
    and the other mmengine names look first (no network)."""
    if address.endswith('://'):
        urls = (get_external_models if address == 'open-mmlab://' else
                get_mmcls_models)()
        address += _first_http(urls)
    marker = tmp_path / 'ran'
    poison(hub / _hub_name(address.replace('modelzoo', 'torchvision')), marker)
    with pytest.raises(CheckpointMismatchError) as err:
        CheckpointLoader.load_checkpoint(address)
    assert_refused(err.value, marker)


def test_init_cfg_pretrained_torchvision(hub, tmp_path):
    """The shipped configs' ``init_cfg=dict(type='Pretrained',
    checkpoint='torchvision://resnet50')``, on a small mmdet ResNet."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    marker = tmp_path / 'ran'
    poison(hub / _hub_name('torchvision://resnet50'), marker)
    backbone = MODELS.build(dict(
        type='ResNet', depth=18, base_channels=16, init_cfg=dict(
            type='Pretrained', checkpoint='torchvision://resnet50')))
    with pytest.raises(CheckpointMismatchError) as err:
        backbone.init_weights()
    assert_refused(err.value, marker)


# -- through tools/train.py: load_from and --resume, local and URL --------------------
def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(
        f'lbc_tools_{name}', osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def train_tool(monkeypatch):
    monkeypatch.setenv('LOCAL_RANK', '0')  # parse_args() sets it: keep it here
    yield _load_tool('train')
    reset_mmengine_globals()


@pytest.mark.parametrize('where', ['local', 'url'])
@pytest.mark.parametrize('how', ['--resume', 'load_from'])
def test_train_tool_refuses_in_one_line(train_tool, www, hub, tmp_path, capsys,
                                        where, how):
    root, base = www
    marker = tmp_path / 'ran'
    torch.manual_seed(0)
    path = poison(root / 'evil.pth', marker, LBCToyNet().state_dict())
    address = path if where == 'local' else f'{base}/evil.pth'
    config = write_config(str(tmp_path / 'cfg.py'),
                          toy_cfg(str(tmp_path / 'work'), hook=dict(t_f=0.5)))
    extra = (['--resume', address] if how == '--resume' else
             ['--cfg-options', f'load_from={address}'])
    with pytest.raises(SystemExit) as exit_:
        train_tool.main([config, '--work-dir', str(tmp_path / 'work')] + extra)
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith('error: '), err
    assert_refused(err, marker)
    assert not list((tmp_path / 'work').rglob('*.pth'))  # nothing trained


# -- getattr: only stock mmengine's HistoryBuffer statistics (issue 22 item 1) ------
class _Getattr:
    """Pickles as ``getattr(obj, name)`` (``GLOBAL builtins.getattr``)."""

    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def __reduce__(self):
        return getattr, (self.obj, self.name)

    def __call__(self, *args):  # pickle wants a callable in a reduce
        raise AssertionError('never called when pickling')


class _Import:
    """Pickles as ``importlib.import_module(name)``."""

    def __init__(self, name):
        self.name = name

    def __reduce__(self):
        return importlib.import_module, (self.name, )


class _Call:
    """Pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_getattr_allows_only_history_buffer_statistics(tmp_path):
    from mmengine.logging.history_buffer import HistoryBuffer
    ok = tmp_path / 'ok.pth'
    torch.save({'meta': {'methods': {name: _Getattr(HistoryBuffer, name) for name in
                                     ('min', 'max', 'current', 'mean')}}}, str(ok))
    methods = read_any_checkpoint(str(ok))['meta']['methods']
    assert methods == {name: getattr(HistoryBuffer, name)
                       for name in ('min', 'max', 'current', 'mean')}

    other = tmp_path / 'other.pth'
    torch.save({'meta': {'hook': _Getattr(HistoryBuffer, '__init__')}}, str(other))
    with pytest.raises(CheckpointMismatchError) as err:
        read_any_checkpoint(str(other))
    assert "it pickles GLOBAL getattr(HistoryBuffer, '__init__')" in str(err.value)
    assert len(str(err.value).splitlines()) == 1

    marker = tmp_path / 'ran'
    system = tmp_path / 'system.pth'  # getattr(os, 'system')('mkdir marker')
    torch.save({'meta': {'hook': _Call(_Getattr(_Import('os'), 'system'),
                                       f'mkdir {marker}')}}, str(system))
    torch.load(str(system), weights_only=False)  # control: it runs code
    assert marker.is_dir()
    marker.rmdir()
    with pytest.raises(CheckpointMismatchError, match='refused') as err:
        read_any_checkpoint(str(system))
    assert 'GLOBAL importlib.import_module' in str(err.value)
    assert not marker.exists()


# -- no code from the config text a checkpoint stores (issue 22 item 2) ------------
def _code_checkpoint(tmp_path, marker):
    """A weights-clean toy checkpoint (iteration 4 of 8) whose stored config texts
    run ``os.mkdir(marker)`` when mmengine parses them."""
    from mmengine.config import Config
    torch.manual_seed(0)
    cfg = toy_cfg(str(tmp_path / 'first'), length=4, hook=dict(t_f=0.5))
    build_runner(cfg).train()
    reset_mmengine_globals()
    ckpt = torch.load(str(tmp_path / 'first' / 'iter_4.pth'), weights_only=True)
    code = f"x = __import__('os').mkdir({str(marker)!r})\n"
    Config.fromstring(code, file_format='.py')  # control: parsing it runs it
    assert osp.isdir(marker)
    os.rmdir(marker)
    ckpt['meta'].update(config=code, cfg=code)
    ckpt['message_hub']['runtime_info']['cfg'] = code
    path = str(tmp_path / 'code.pth')
    torch.save(ckpt, path)
    return path


def test_resume_never_runs_the_config_text_of_a_checkpoint(tmp_path):
    marker = tmp_path / 'ran'
    path = _code_checkpoint(tmp_path, marker)
    config = write_config(str(tmp_path / 'cfg.py'),
                          toy_cfg(str(tmp_path / 'work'), length=8,
                                  hook=dict(t_f=0.5)))
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'), config, '--work-dir',
         str(tmp_path / 'work'), '--resume', path], cwd=str(tmp_path),
        env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (tmp_path / 'work' / 'iter_8.pth').is_file()  # resumed and finished
    assert not marker.exists(), 'the checkpoint ran its config text'
    # An inferencer built from the checkpoint alone: no config to run.
    from mmdet.apis import DetInferencer
    with pytest.raises(ValueError, match='Cannot find the config'):
        DetInferencer(model=None, weights=path, device='cpu')
    assert not marker.exists(), 'the checkpoint ran its config text'


# -- TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 reopens nothing (issue 22 item 3) ----------
@pytest.fixture
def no_weights_only(monkeypatch):
    """The common workaround for mmengine on torch >= 2.6: ``torch.load`` calls that
    pass no ``weights_only`` load everything (it applies per call)."""
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')


def _s3_to(folder, monkeypatch):
    """``s3://bucket/NAME`` read from ``folder/NAME`` by mmengine's file backend
    named 'petrel' (what its s3 loader asks for)."""
    from mmengine.fileio import LocalBackend
    from mmengine.fileio.backends import registry_utils

    class S3InFolder(LocalBackend):

        def get(self, filepath):
            return super().get(osp.join(folder, str(filepath).split('/')[-1]))

    monkeypatch.setitem(registry_utils.backends, 'petrel', S3InFolder)
    return 's3://bucket/evil.pth'


def _pavi_to(folder, monkeypatch):
    """``pavi://NAME`` downloaded from ``folder/NAME`` (pavi's ``modelcloud``, which
    is not installed here, as mmengine's pavi loader calls it)."""
    import shutil
    import types

    class Model:

        def __init__(self, path):
            self.name, self.path = osp.basename(path), osp.join(folder, path)

        def download(self, dst):
            shutil.copy(self.path, dst)

    pavi = types.ModuleType('pavi')
    pavi.modelcloud = types.SimpleNamespace(get=Model)
    monkeypatch.setitem(sys.modules, 'pavi', pavi)
    return 'pavi://evil.pth'


def _open_mmlab_to(folder, monkeypatch):
    """``open-mmlab://evil`` mapped to a local file by ``$MMENGINE_HOME/
    open_mmlab.json`` (mmengine's way to name local checkpoints)."""
    import json
    monkeypatch.setenv('MMENGINE_HOME', str(folder))
    (folder / 'open_mmlab.json').write_text(json.dumps({'evil': 'evil.pth'}))
    return 'open-mmlab://evil'


@pytest.mark.parametrize('scheme', ['s3', 'pavi', 'open-mmlab', 'local'])
def test_forced_unsafe_loading_env_reopens_nothing(no_weights_only, tmp_path,
                                                   monkeypatch, scheme):
    marker = tmp_path / 'ran'
    path = poison(tmp_path / 'evil.pth', marker)
    address = {'s3': _s3_to, 'pavi': _pavi_to, 'open-mmlab': _open_mmlab_to,
               'local': lambda folder, mp: path}[scheme](tmp_path, monkeypatch)
    with pytest.warns(UserWarning, match='TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'):
        torch.load(path)  # control: the variable turns weights-only loading off
    assert osp.isdir(marker)
    os.rmdir(marker)
    with pytest.raises(CheckpointMismatchError) as err:
        CheckpointLoader.load_checkpoint(address, map_location='cpu')
    assert_refused(err.value, marker)
    # a clean file through the same address still loads
    torch.save({'state_dict': {'w': torch.ones(2)}}, path)
    ckpt = CheckpointLoader.load_checkpoint(address, map_location='cpu')
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))
