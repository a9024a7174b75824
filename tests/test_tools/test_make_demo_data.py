"""Tests for tools/make_demo_data.py (deterministic synthetic demo data)."""
import hashlib
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, 'tools', 'make_demo_data.py')

_spec = importlib.util.spec_from_file_location('make_demo_data', SCRIPT)
make_demo_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_demo_data)

SMALL = dict(image_size=64, num_train=5, num_val=3, cls_image_size=24,
             cls_train_per_class=2, cls_val_per_class=1)


def tree_digest(root):
    """Map relative path -> sha256 of every file under root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_same_bytes_every_run_and_seed_matters(tmp_path):
    a = make_demo_data.generate(str(tmp_path / 'a'), seed=3, **SMALL)
    b = make_demo_data.generate(str(tmp_path / 'b'), seed=3, **SMALL)
    c = make_demo_data.generate(str(tmp_path / 'c'), seed=4, **SMALL)
    da, db, dc = tree_digest(a), tree_digest(b), tree_digest(c)
    assert da == db
    assert len(da) == 2 + 5 + 3 + 3 * (2 + 1) + 1  # jsons + det + cls + manifest
    assert da.keys() == dc.keys() and da != dc


def test_coco_annotations_match_pixels(tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    root = make_demo_data.generate(str(tmp_path / 'd'), **SMALL)
    for split, num in (('train', 5), ('val', 3)):
        coco = COCO(
            os.path.join(root, 'coco', 'annotations', f'instances_{split}.json'))
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(
            make_demo_data.CLASSES)
        assert len(coco.getImgIds()) == num
        for img_id in coco.getImgIds():
            info = coco.loadImgs(img_id)[0]
            pixels = np.asarray(Image.open(
                os.path.join(root, 'coco', split, info['file_name'])).convert('RGB'))
            assert pixels.shape == (64, 64, 3)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
            assert 1 <= len(anns) <= 3
            for ann in anns:
                rle = mask_utils.frPyObjects(ann['segmentation'], 64, 64)
                mask = mask_utils.decode(mask_utils.merge(rle)).astype(bool)
                # Polygon area and rasterised area agree; the box encloses the mask.
                assert abs(mask.sum() - ann['area']) <= 0.25 * ann['area'] + 10
                ys, xs = np.nonzero(mask)
                x, y, w, h = ann['bbox']
                assert xs.min() >= x - 1 and xs.max() <= x + w + 1
                assert ys.min() >= y - 1 and ys.max() <= y + h + 1
                # Pixels under the mask are drawn in the class colour, not background.
                inside = pixels[mask].astype(int)
                base = np.array(make_demo_data.CLASS_COLOURS[
                    make_demo_data.CLASSES[ann['category_id'] - 1]])
                close = (np.abs(inside - base) <= 25).all(axis=1)
                assert close.mean() > 0.9


def test_classification_layout(tmp_path):
    root = make_demo_data.generate(str(tmp_path / 'e'), **SMALL)
    for split, per_class in (('train', 2), ('val', 1)):
        assert sorted(os.listdir(os.path.join(root, 'cls', split))) == sorted(
            make_demo_data.CLASSES)
        for cls in make_demo_data.CLASSES:
            files = sorted(os.listdir(os.path.join(root, 'cls', split, cls)))
            assert len(files) == per_class
            with Image.open(os.path.join(root, 'cls', split, cls, files[0])) as im:
                assert im.size == (24, 24)


def test_regeneration_replaces_stale_files(tmp_path):
    out = str(tmp_path / 'f')
    make_demo_data.generate(out, **SMALL)
    stale = os.path.join(out, 'cls', 'train', 'circle', 'stale.png')
    open(stale, 'w').close()
    make_demo_data.generate(out, **dict(SMALL, num_train=2))
    assert not os.path.exists(stale)
    with open(os.path.join(out, 'coco', 'annotations', 'instances_train.json')) as f:
        assert len(json.load(f)['images']) == 2
    assert [p for p in os.listdir(tmp_path) if p.startswith('.')] == []


@pytest.mark.parametrize('bad', [dict(num_train=0), dict(image_size=8)])
def test_bad_sizes_raise(tmp_path, bad):
    with pytest.raises(ValueError):
        make_demo_data.generate(str(tmp_path / 'g'), **dict(SMALL, **bad))
    assert not os.path.exists(tmp_path / 'g')


def test_cli(tmp_path):
    ok = subprocess.run([sys.executable, SCRIPT, str(tmp_path / 'h'), '--num-train',
                         '2', '--num-val', '1', '--image-size', '48'],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert os.path.isfile(tmp_path / 'h' / 'coco' / 'train' / '000001.png')
    bad = subprocess.run([sys.executable, SCRIPT, str(tmp_path / 'i'), '--num-val',
                          '0'],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and 'num_val' in bad.stderr
