"""export_checkpoint: stock checkpoint, stock-config loading, refusals."""
import os
import subprocess
import sys

import pytest
import torch
from mmengine.runner import load_checkpoint

from lbc_mm.apis import build_model, load_config
from lbc_mm.checkpoint_io import CheckpointMismatchError
from lbc_mm.export import NotNMError, export_checkpoint, format_table, load_compressed
from lbc_mm.layers import sparse_layers
from lbc_mm.sparsity.patterns import parse_pattern

from .conftest import make_checkpoint, sparse_cfg_text, write_cfg


@pytest.fixture(scope='module')
def exported(tiny):
    out = str(tiny['folder'] / 'stock.pth')
    report = export_checkpoint(tiny['sparse'], tiny['ckpt'], out)
    return dict(tiny, out=out, report=report)


def test_stock_checkpoint_has_the_stock_keys_and_shapes(exported):
    stock_model, _ = build_model(load_config(exported['stock']))
    ckpt = torch.load(exported['out'], weights_only=True)
    assert set(ckpt) == {'state_dict', 'meta'}
    want = stock_model.state_dict()
    got = ckpt['state_dict']
    assert list(got) == list(want)
    assert all(got[k].shape == want[k].shape for k in want)
    assert not any(k.endswith(('.scores', '.alive', '.asp_mask')) for k in got)
    assert ckpt['meta']['epoch'] == 3
    assert 'layer1.0.conv1' in ' '.join(ckpt['meta']['lbc_mm_export']['sparse_layers'])


def test_stock_config_loads_it_and_matches_the_sparse_model(exported):
    stock_model, _ = build_model(load_config(exported['stock']))
    load_checkpoint(stock_model, exported['out'], map_location='cpu', strict=True)
    stock_model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = exported['model'](x, mode='tensor')
        out = stock_model(x, mode='tensor')
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_stock_checkpoint_loads_without_lbc_mm(exported):
    """Plain tensors/dicts only: weights-only loading with no allow-list works."""
    code = ('import sys, torch; c = torch.load(sys.argv[1], weights_only=True); '
            'assert "lbc_mm" not in sys.modules; print(len(c["state_dict"]))')
    proc = subprocess.run([sys.executable, '-c', code, exported['out']],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert int(proc.stdout.strip()) > 50


def test_compressed_file_restores_the_stock_weights_exactly(exported):
    comp = exported['report']['compressed_out']
    assert comp.endswith('stock.nm.pth') and os.path.isfile(comp)
    restored = load_compressed(comp)
    stock = torch.load(exported['out'], weights_only=True)['state_dict']
    assert list(restored) == list(stock)
    assert all(torch.equal(restored[k], stock[k]) for k in stock)


def test_table_and_totals(exported):
    rep = exported['report']
    rows = rep['rows']
    # every conv but the Cin=3 stem: 19 of ResNet-18 + the layer1 downsample that
    # base_channels=16 adds
    assert len(rows) == len(list(sparse_layers(exported['model']))) == 20
    assert all(r['pattern'] == '2:4' and r['sparsity'] >= 0.5 for r in rows)
    for r in rows:  # fp32 2:4: half the values + 1 bit per weight of indices
        numel = r['dense_bytes'] // 4
        assert r['compressed_bytes'] == numel // 2 * 4 + numel // 8
    t = rep['totals']
    assert t['sparse_compressed_bytes'] < 0.6 * t['sparse_dense_bytes']
    md = format_table(rep)
    assert md.count('\n') == len(rows) + 3 and '| 2:4 |' in md


def test_refuses_unfinished_lbc_listing_layers(tiny, tmp_path):
    ckpt = str(tmp_path / 'unfinished.pth')
    make_checkpoint(tiny['sparse'], ckpt, finish=False)
    out = tmp_path / 'o.pth'
    with pytest.raises(NotNMError) as info:
        export_checkpoint(tiny['sparse'], ckpt, str(out))
    assert len(info.value.violations) == 20
    name, pattern, bad, total = info.value.violations[0]
    assert pattern == '2:4' and bad == total > 0
    assert 'groups break it' in str(info.value) and '\n' not in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ['unfinished.pth']  # nothing written


@pytest.mark.parametrize('n,m', [(2, 8), (1, 16)])
def test_other_patterns_export(tmp_path, n, m):
    cfg = write_cfg(tmp_path, 'nm.py', sparse_cfg_text(n, m))
    ckpt = str(tmp_path / 'c.pth')
    make_checkpoint(cfg, ckpt)
    rep = export_checkpoint(cfg, ckpt, str(tmp_path / 'o.pth'), pattern=f'{n}:{m}')
    assert {r['pattern'] for r in rep['rows']} == {f'{n}:{m}'}
    restored = load_compressed(rep['compressed_out'])
    stock = torch.load(tmp_path / 'o.pth', weights_only=True)['state_dict']
    assert all(torch.equal(restored[k], stock[k]) for k in stock)
    # their weights are 2:4 too: --pattern 2:4 accepts them (stored as trained)
    rep = export_checkpoint(cfg, ckpt, str(tmp_path / 'p.pth'), pattern='2:4')
    assert {r['pattern'] for r in rep['rows']} == {f'{n}:{m}'}


def test_pattern_2of4_refuses_4of8_weights(tmp_path):
    cfg = write_cfg(tmp_path, 'nm48.py', sparse_cfg_text(4, 8))
    ckpt = str(tmp_path / 'c.pth')
    make_checkpoint(cfg, ckpt)
    with pytest.raises(ValueError, match=r'do not have the requested pattern 2:4 '
                       r'\(their weights break it\): .*\(4:8\)'):
        export_checkpoint(cfg, ckpt, str(tmp_path / 'p.pth'), pattern='2:4')
    assert not (tmp_path / 'p.pth').exists()


@pytest.mark.parametrize('text', ['4:4', '0:4', '2-4', 'x:y', '3:2'])
def test_bad_patterns(text):
    with pytest.raises(ValueError, match='N:M'):
        parse_pattern(text)


def test_checkpoint_of_another_config_is_a_clear_error(tiny, tmp_path):
    cfg = write_cfg(tmp_path, 'nm28.py', sparse_cfg_text(2, 8))
    with pytest.raises(CheckpointMismatchError, match='does not match the config') as e:
        export_checkpoint(cfg, tiny['ckpt'], str(tmp_path / 'o.pth'))
    assert 'shape mismatches' in str(e.value) and '\n' not in str(e.value)
    with pytest.raises(CheckpointMismatchError, match='missing keys'):
        export_checkpoint(tiny['sparse'], _stock_ckpt(tiny, tmp_path),
                          str(tmp_path / 'o.pth'))
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        export_checkpoint(tiny['sparse'], str(tmp_path / 'nope.pth'), 'x.pth')


def _stock_ckpt(tiny, tmp_path):
    model, _ = build_model(load_config(tiny['stock']))
    path = tmp_path / 'dense.pth'
    torch.save({'state_dict': model.state_dict()}, path)
    return str(path)


def test_refuses_outputs_that_are_inputs_or_each_other(tiny, tmp_path):
    before = open(tiny['ckpt'], 'rb').read()
    for out, comp in [(tiny['ckpt'], None), (str(tmp_path / 'o.pth'), tiny['ckpt']),
                      (str(tmp_path / 'o.pth'), str(tmp_path / 'o.pth')),
                      (tiny['sparse'], None)]:
        with pytest.raises(ValueError, match='is the same file as'):
            export_checkpoint(tiny['sparse'], tiny['ckpt'], out, comp)
    assert open(tiny['ckpt'], 'rb').read() == before
    assert os.listdir(tmp_path) == []


def test_pair_is_both_or_neither_when_the_second_write_fails(tiny, tmp_path):
    """The compressed file cannot be written (its folder is a file): the stock
    file, already complete, must not stay behind either."""
    (tmp_path / 'blocker').write_text('not a folder')
    with pytest.raises(OSError):
        export_checkpoint(tiny['sparse'], tiny['ckpt'], str(tmp_path / 'o.pth'),
                          str(tmp_path / 'blocker' / 'o.nm.pth'))
    assert os.listdir(tmp_path) == ['blocker']


def test_corrupted_checkpoint_names_the_entry(tiny, tmp_path):
    import zipfile
    with zipfile.ZipFile(tiny['ckpt']) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    data = bytearray(open(tiny['ckpt'], 'rb').read())
    at = info.header_offset  # local header: 30 bytes + name + extra, then the data
    start = at + 30 + int.from_bytes(data[at + 26:at + 28], 'little') + \
        int.from_bytes(data[at + 28:at + 30], 'little')
    data[start + info.file_size // 2] ^= 1
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointMismatchError,
                       match=f'^checkpoint {bad} is corrupted: entry '
                       f'{info.filename} does not match its CRC'):
        export_checkpoint(tiny['sparse'], str(bad), str(tmp_path / 'o.pth'))
    assert os.listdir(tmp_path) == ['bad.pth']


def test_load_compressed_checks_the_archive_too(exported, tmp_path):
    data = open(exported['report']['compressed_out'], 'rb').read()
    bad = tmp_path / 'cut.nm.pth'
    bad.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointMismatchError, match='corrupted'):
        load_compressed(str(bad))


@pytest.mark.parametrize('content,expect', [
    (b'', 'is empty'), (b'hello, not a checkpoint', 'not a torch checkpoint'),
    (b'\x80\x02garbage', 'not a weights-only loadable checkpoint')])
def test_files_that_are_no_checkpoint_are_one_line(tiny, tmp_path, content, expect):
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(content)
    with pytest.raises(CheckpointMismatchError, match=expect) as info:
        export_checkpoint(tiny['sparse'], str(bad), str(tmp_path / 'o.pth'))
    assert '\n' not in str(info.value) and 'Error' not in str(info.value)
