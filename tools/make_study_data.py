"""Generate the method study's data set (deterministic, seeded): 5 classes of
regular polygons whose colour only partly says the class, with pixel noise, so a small
network trained for 10 epochs reaches 85-95 %, not 100 % (docs/training_cost.md).

``OUT_DIR/train/<class>/000000.png ...``, ``OUT_DIR/val/<class>/...``
(mmpretrain ``CustomDataset`` layout), swapped in whole.

Usage::

    python tools/make_study_data.py [OUT_DIR] [--seed 0] [--noise 12] [--cue 0.65]
"""
import argparse
import math
import os
import random
import sys
from typing import Dict, Optional, Sequence, Tuple

from PIL import Image, ImageDraw

from lbc_mm.io import save_png, write_json, write_tree

#: The study set's classes: regular polygons by vertex count (a circle: 24), each
#: with a base colour that its shapes lean towards (``cue``).
STUDY_CLASSES: Dict[str, Tuple[int, Tuple[int, int, int]]] = {
    'triangle': (3, (215, 50, 50)), 'square': (4, (40, 160, 60)),
    'pentagon': (5, (50, 70, 210)), 'hexagon': (6, (200, 180, 40)),
    'circle': (24, (150, 60, 190))}
STUDY_BACKGROUND = (128, 128, 128)


def make_study_image(rng: random.Random, kind: str, image_size: int,
                     noise: float, cue: float) -> Image.Image:
    """One study image: a rotated regular polygon (``kind``) of random size on grey,
    its colour ``cue`` of the class colour and ``1 - cue`` random, with Gaussian
    pixel noise of std ``noise``."""
    import numpy as np
    big = image_size * 2  # drawn at 2x and downsampled: smooth edges
    k, base = STUDY_CLASSES[kind]
    fg = tuple(min(255, max(0, c + rng.choice((-1, 1)) * rng.randint(50, 110)))
               for c in STUDY_BACKGROUND)
    fg = tuple(round(cue * b + (1 - cue) * c) for b, c in zip(base, fg))
    img = Image.new('RGB', (big, big), STUDY_BACKGROUND)
    r = rng.uniform(0.28, 0.45) * big
    cx, cy = (rng.uniform(r + 1, big - r - 1) for _ in range(2))
    theta = rng.uniform(0, 2 * math.pi)
    pts = [(cx + r * math.cos(theta + 2 * math.pi * i / k),
            cy + r * math.sin(theta + 2 * math.pi * i / k)) for i in range(k)]
    ImageDraw.Draw(img).polygon(pts, fill=fg)
    img = img.resize((image_size, image_size), Image.BILINEAR)
    pixels = np.asarray(img, dtype=np.float32)
    gen = np.random.default_rng(rng.getrandbits(32))
    pixels = pixels + gen.normal(0.0, noise, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


def generate_study(out_dir: str, seed: int = 0, image_size: int = 32,
                   train_per_class: int = 60, val_per_class: int = 40,
                   noise: float = 12.0, cue: float = 0.65) -> str:
    """Write the method study's set (:data:`STUDY_CLASSES`) into ``out_dir``,
    replaced as a whole; ``ValueError`` on sizes that give no usable data set."""
    if (image_size < 16 or train_per_class < 1 or val_per_class < 1 or noise < 0
            or not 0 <= cue <= 1):
        raise ValueError(f'study set: need image_size >= 16 ({image_size}), at least '
                         f'one image per class and split, noise >= 0 ({noise}), '
                         f'0 <= cue <= 1 ({cue})')

    def fill(tmp: str) -> None:
        rng = random.Random(seed)
        for split, num in (('train', train_per_class), ('val', val_per_class)):
            for idx in range(num):
                for kind in STUDY_CLASSES:
                    save_png(make_study_image(rng, kind, image_size, noise, cue),
                             os.path.join(tmp, split, kind, f'{idx:06d}.png'))
        write_json(dict(classes=list(STUDY_CLASSES), seed=seed,
                        image_size=image_size, train_per_class=train_per_class,
                        val_per_class=val_per_class, noise=noise, cue=cue),
                   os.path.join(tmp, 'study_data.json'))

    return write_tree(out_dir, fill)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', nargs='?', default='data/demo_polygons')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--noise', type=float, default=12.0,
                        help='pixel noise std (0-255 scale)')
    parser.add_argument('--cue', type=float, default=0.65,
                        help='share of the class colour in a shape\'s colour')
    args = parser.parse_args(argv)
    try:
        out = generate_study(args.out_dir, args.seed, noise=args.noise, cue=args.cue)
    except ValueError as err:
        print(f'make_study_data: {err}', file=sys.stderr)
        return 2
    print(f'study set written to {out}: 60+40 images per class of 32px, classes '
          f'{", ".join(STUDY_CLASSES)}, noise {args.noise:g}, cue {args.cue:g}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
