"""Generate the embedded demo data sets (deterministic, seeded).

Two small synthetic data sets of coloured shapes (circle, rectangle, triangle) on a
plain background, so the demo configs train without any download:

``OUT_DIR/coco/``   COCO-format instance segmentation (polygon masks)::

    train/000000.png ...        val/000000.png ...
    annotations/instances_train.json   annotations/instances_val.json

``OUT_DIR/cls/``    mmpretrain ``CustomDataset`` layout (one shape per image)::

    train/<class>/000000.png ...   val/<class>/000000.png ...

The same arguments give the same bytes on every run. The tree is written into a
sibling folder and swapped into place (``lbc_mm.io.write_tree``): no half-written
data set, no stale files from an earlier run.

Usage::

    python tools/make_demo_data.py [OUT_DIR] [--seed 0] [--image-size 128]
"""
import argparse
import math
import os
import random
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw

from lbc_mm.io import save_png, write_json, write_tree

CLASSES: Tuple[str, ...] = ('circle', 'rectangle', 'triangle')
# Base colour per class (RGB); each shape jitters it a little.
CLASS_COLOURS: Dict[str, Tuple[int, int, int]] = {
    'circle': (215, 50, 50),
    'rectangle': (40, 160, 60),
    'triangle': (50, 70, 210),
}
BACKGROUND = (236, 236, 236)
CIRCLE_VERTICES = 24

Polygon = List[Tuple[float, float]]


def _shape_polygon(rng: random.Random, kind: str, image_size: int, size: float,
                   pad: float) -> Polygon:
    """The ``(x, y)`` vertices (0.1 px precision) of one shape of ``kind`` at a
    random place at least ``pad`` px inside the image, ``size`` the diameter of its
    circumscribed circle."""
    margin = size / 2 + pad
    cx = rng.uniform(margin, image_size - margin)
    cy = rng.uniform(margin, image_size - margin)
    r = size / 2
    if kind == 'circle':
        angles = [2 * math.pi * i / CIRCLE_VERTICES for i in range(CIRCLE_VERTICES)]
        pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]
    elif kind == 'rectangle':
        aspect = rng.uniform(0.55, 1.0)
        half_w, half_h = r * 0.85, r * 0.85 * aspect
        theta = math.radians(rng.uniform(-25, 25))
        c, s = math.cos(theta), math.sin(theta)
        corners = [(-half_w, -half_h), (half_w, -half_h), (half_w, half_h),
                   (-half_w, half_h)]
        pts = [(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners]
    else:  # triangle
        theta = rng.uniform(0, 2 * math.pi)
        pts = [(cx + r * math.cos(theta + k * 2 * math.pi / 3),
                cy + r * math.sin(theta + k * 2 * math.pi / 3)) for k in range(3)]
    return [(round(x, 1), round(y, 1)) for x, y in pts]


def _polygon_area(pts: Polygon) -> float:
    """Shoelace area of a simple polygon."""
    edges = zip(pts, pts[1:] + pts[:1])
    return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in edges)) / 2


def _bbox(pts: Polygon) -> List[float]:
    """COCO ``[x, y, w, h]`` box of a polygon."""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return [round(min(xs), 1), round(min(ys), 1), round(max(xs) - min(xs), 1),
            round(max(ys) - min(ys), 1)]


def _overlaps(box: List[float], others: Sequence[List[float]], margin: float) -> bool:
    """Whether ``box`` (xywh) comes within ``margin`` px of any of ``others``."""
    x, y, w, h = box
    return any(x < ox + ow + margin and ox < x + w + margin and y < oy + oh + margin
               and oy < y + h + margin for ox, oy, ow, oh in others)


def _colour(rng: random.Random, kind: str) -> Tuple[int, int, int]:
    """The class colour with a small random jitter."""
    return tuple(
        min(255, max(0, c + rng.randint(-25, 25))) for c in CLASS_COLOURS[kind])


def make_scene(rng: random.Random, image_size: int,
               max_shapes: int = 3) -> Tuple[Image.Image, List[Tuple[str, Polygon]]]:
    """One detection image with 1..``max_shapes`` non-overlapping shapes, and its
    ``(class name, polygon)`` list."""
    img = Image.new('RGB', (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    shapes: List[Tuple[str, Polygon]] = []
    boxes: List[List[float]] = []
    want = rng.randint(1, max_shapes)
    lo, hi = 0.22 * image_size, 0.48 * image_size
    for _ in range(want * 20):  # rejection sampling for free space
        if len(shapes) == want:
            break
        kind = rng.choice(CLASSES)
        pts = _shape_polygon(rng, kind, image_size, rng.uniform(lo, hi), 2)
        box = _bbox(pts)
        if _overlaps(box, boxes, margin=3):
            continue
        draw.polygon(pts, fill=_colour(rng, kind))
        shapes.append((kind, pts))
        boxes.append(box)
    return img, shapes


def make_coco_split(out_dir: str, split: str, num_images: int, image_size: int,
                    rng: random.Random) -> Dict:
    """Write one COCO split's images under ``out_dir/split``; its annotation dict."""
    images, annotations = [], []
    for idx in range(num_images):
        img, shapes = make_scene(rng, image_size)
        file_name = f'{idx:06d}.png'
        save_png(img, os.path.join(out_dir, split, file_name))
        images.append(dict(id=idx + 1, file_name=file_name, width=image_size,
                           height=image_size))
        for kind, pts in shapes:
            annotations.append(
                dict(id=len(annotations) + 1, image_id=idx + 1,
                     category_id=CLASSES.index(kind) + 1,
                     segmentation=[[c for p in pts for c in p]],
                     area=round(_polygon_area(pts), 2), bbox=_bbox(pts), iscrowd=0))
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(CLASSES)]
    return dict(images=images, annotations=annotations, categories=categories)


def make_cls_split(out_dir: str, split: str, per_class: int, image_size: int,
                   rng: random.Random) -> None:
    """Write one classification split in ``CustomDataset`` layout."""
    for kind in CLASSES:
        for idx in range(per_class):
            img = Image.new('RGB', (image_size, image_size), BACKGROUND)
            size = rng.uniform(0.45, 0.8) * image_size
            pts = _shape_polygon(rng, kind, image_size, size, 1)
            ImageDraw.Draw(img).polygon(pts, fill=_colour(rng, kind))
            save_png(img, os.path.join(out_dir, split, kind, f'{idx:06d}.png'))


def generate(out_dir: str, seed: int = 0, image_size: int = 128, num_train: int = 48,
             num_val: int = 16, cls_image_size: int = 64, cls_train_per_class: int = 16,
             cls_val_per_class: int = 6) -> str:
    """Generate both demo data sets into ``out_dir`` (replaced as a whole); the
    absolute folder. ``image_size`` / ``num_*``: detection images, ``cls_*``: the
    classification set.

    Raises:
        ValueError: On sizes that cannot produce a usable data set.
    """
    if image_size < 32 or cls_image_size < 16:
        raise ValueError(f'image sizes too small: image_size={image_size} (>= 32), '
                         f'cls_image_size={cls_image_size} (>= 16)')
    for name, val in (('num_train', num_train), ('num_val', num_val),
                      ('cls_train_per_class', cls_train_per_class),
                      ('cls_val_per_class', cls_val_per_class)):
        if val < 1:
            raise ValueError(f'{name} must be >= 1, got {val}')

    def fill(tmp: str) -> None:
        # Separate streams so changing one set's size leaves the other's bytes alone.
        det_rng, cls_rng = random.Random(seed), random.Random(seed + 1_000_003)
        for split, num in (('train', num_train), ('val', num_val)):
            ann = make_coco_split(os.path.join(tmp, 'coco'), split, num, image_size,
                                  det_rng)
            write_json(ann, os.path.join(tmp, 'coco', 'annotations',
                                         f'instances_{split}.json'))
        for split, num in (('train', cls_train_per_class), ('val', cls_val_per_class)):
            make_cls_split(os.path.join(tmp, 'cls'), split, num, cls_image_size,
                           cls_rng)
        write_json(dict(classes=list(CLASSES), seed=seed, image_size=image_size,
                        num_train=num_train, num_val=num_val,
                        cls_image_size=cls_image_size,
                        cls_train_per_class=cls_train_per_class,
                        cls_val_per_class=cls_val_per_class),
                   os.path.join(tmp, 'demo_data.json'))

    return write_tree(out_dir, fill)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', nargs='?', default='data/demo',
                        help='output folder (default: data/demo)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--image-size', type=int, default=128,
                        help='detection image side in pixels')
    parser.add_argument('--num-train', type=int, default=48)
    parser.add_argument('--num-val', type=int, default=16)
    parser.add_argument('--cls-image-size', type=int, default=64)
    parser.add_argument('--cls-train-per-class', type=int, default=16)
    parser.add_argument('--cls-val-per-class', type=int, default=6)
    args = parser.parse_args(argv)
    try:
        out = generate(**vars(args))
    except ValueError as err:
        print(f'make_demo_data: {err}', file=sys.stderr)
        return 2
    except OSError as err:  # a read-only or full folder, a file in the way
        where = f' {err.filename}' if err.filename else ''
        print(f'make_demo_data: cannot write{where}: {err.strerror or err}',
              file=sys.stderr)
        return 1
    print(f'demo data written to {out}: COCO {args.num_train}+{args.num_val} images '
          f'of {args.image_size}px, classification '
          f'{args.cls_train_per_class}+{args.cls_val_per_class} per class, '
          f'classes {", ".join(CLASSES)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
