"""Tests for tools/make_study_data.py (the method study's data set)."""
import importlib.util
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from test_make_demo_data import tree_digest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, 'tools', 'make_study_data.py')

_spec = importlib.util.spec_from_file_location('make_study_data', SCRIPT)
make_study_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_study_data)


def test_study_set(tmp_path):
    """5 classes, deterministic, the class colour only partly kept."""
    small = dict(train_per_class=3, val_per_class=2)
    a = make_study_data.generate_study(str(tmp_path / 'a'), seed=1, **small)
    assert tree_digest(a) == tree_digest(
        make_study_data.generate_study(str(tmp_path / 'b'), seed=1, **small))
    assert sorted(os.listdir(os.path.join(a, 'train'))) == sorted(
        make_study_data.STUDY_CLASSES)
    for split, num in (('train', 3), ('val', 2)):
        for kind in make_study_data.STUDY_CLASSES:
            names = sorted(os.listdir(os.path.join(a, split, kind)))
            assert names == [f'{i:06d}.png' for i in range(num)]
            img = Image.open(os.path.join(a, split, kind, names[0]))
            assert img.size == (32, 32) and img.mode == 'RGB'
    # cue=1: the shape has its class colour; cue=0: not (beyond noise).
    rng = random.Random(0)
    img = np.asarray(make_study_data.make_study_image(rng, 'square', 32, 0.0, 1.0))
    assert (img[16, 16] == make_study_data.STUDY_CLASSES['square'][1]).all()
    with pytest.raises(ValueError, match='cue'):
        make_study_data.generate_study(str(tmp_path / 'c'), cue=1.5)
    proc = subprocess.run([sys.executable, SCRIPT, str(tmp_path / 'd'), '--noise',
                           '-1'], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith('make_study_data: study')
