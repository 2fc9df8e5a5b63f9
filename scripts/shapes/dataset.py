#!/usr/bin/env python3
"""Synthetic "coloured shapes" dataset for the trained tiny Janus (assets/shapes/).

Every sample is a small square picture of one or two flat shapes on a plain white background,
with a caption and question/answer pairs, all made deterministically from a seed:

  one shape:   "a red circle on the left"
  two shapes:  "a red circle on the left and a blue square on the right"
               (two shapes are always left+right or top+bottom, and differ in colour AND shape, so
               that "What colour is the circle?" and "What shape is on the left?" have one answer)

Vocabulary
  colours    red, green, blue, yellow        (saturated RGB, see COLOURS)
  shapes     circle, square, triangle        (the triangle points up)
  positions  left, right, top, bottom, centre ("on the left", "on the right", "at the top",
             "at the bottom", "in the centre"); regions for checks: see REGIONS

Questions (answers are one word, or the position phrase, or the caption):
  "Describe the image." / "Describe this image in detail." / "What is in the image?" -> caption
  "What colour is the circle?" / "What color is the circle?"                         -> "red"
  "What shape is on the left?"                                                        -> "circle"
  "What shape is the red one?"                                                        -> "circle"
  "What colour is the shape on the left?" (and "color")                               -> "red"
  "Where is the red circle?"                                                          -> "on the left"
  "How many shapes are there?"                                                        -> "one" / "two"

Text-to-image prompts (`prompts`): the caption, the two objects in the other order, and for one
shape also the bare "a red circle" (no position).

Usage (preview): python scripts/shapes/dataset.py --n 64 --seed 0 --out /tmp/shapes-preview
  writes grid.png (8 per row, scaled x4) and samples.jsonl.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down (smooth edges)
BACKGROUND = (255, 255, 255)
COLOURS = {
    "red": (230, 20, 20),
    "green": (20, 170, 30),
    "blue": (20, 40, 230),
    "yellow": (250, 210, 0),
}
SHAPES = ["circle", "square", "triangle"]
POSITIONS = ["left", "right", "top", "bottom", "centre"]
# centre of each position as fractions of the side (x, y)
POS_XY = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "centre": (0.5, 0.5),
}
POS_PHRASE = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
PAIRS = [("left", "right"), ("top", "bottom")]  # the positions two shapes take (canonical order)
# half the side of a shape's bounding box, as a fraction of the image side: uniform in this range
HALF_SIZE = (0.15, 0.20)
JITTER = 0.05  # centre jitter, fraction of the side, uniform +-
TWO_SHAPE_FRACTION = 0.5

# regions (x0, y0, x1, y1) in fractions of the side, for "where is that colour" checks
REGIONS = {
    "left": (0.0, 0.0, 0.5, 1.0),
    "right": (0.5, 0.0, 1.0, 1.0),
    "top": (0.0, 0.0, 1.0, 0.5),
    "bottom": (0.0, 0.5, 1.0, 1.0),
    "centre": (0.25, 0.25, 0.75, 0.75),
}

DESCRIBE_QUESTIONS = ["Describe the image.", "Describe this image in detail.", "What is in the image?"]


@dataclass
class Obj:
    shape: str
    colour: str
    position: str
    cx: float  # centre, pixels
    cy: float
    half: float  # half side of the bounding box, pixels

    def phrase(self, with_position: bool = True) -> str:
        s = f"a {self.colour} {self.shape}"
        return f"{s} {POS_PHRASE[self.position]}" if with_position else s


@dataclass
class Sample:
    image: np.ndarray  # uint8 [S, S, 3]
    objects: list
    caption: str
    prompts: list  # text-to-image prompts that fit this image (caption first)
    qa: list = field(default_factory=list)  # (question, answer)

    def to_json(self) -> dict:
        return {
            "caption": self.caption,
            "prompts": self.prompts,
            "objects": [o.__dict__ for o in self.objects],
            "qa": self.qa,
        }


def caption_of(objects: list) -> str:
    return " and ".join(o.phrase() for o in objects)


def questions_of(objects: list, caption: str) -> list:
    qa = [(q, caption) for q in DESCRIBE_QUESTIONS]
    for o in objects:
        for word in ("colour", "color"):
            qa.append((f"What {word} is the {o.shape}?", o.colour))
            qa.append((f"What {word} is the shape {POS_PHRASE[o.position]}?", o.colour))
        qa.append((f"What shape is {POS_PHRASE[o.position]}?", o.shape))
        qa.append((f"What shape is the {o.colour} one?", o.shape))
        qa.append((f"Where is the {o.colour} {o.shape}?", POS_PHRASE[o.position]))
    qa.append(("How many shapes are there?", ["one", "two"][len(objects) - 1]))
    return qa


QUESTION_KINDS = ["describe", "colour_of_shape", "colour_at", "shape_at", "shape_of_colour", "where", "count"]


def question_kind(q: str) -> str:
    """Which template a question comes from (one of QUESTION_KINDS)."""
    if q in DESCRIBE_QUESTIONS:
        return "describe"
    if q.startswith(("What colour is the shape ", "What color is the shape ")):
        return "colour_at"
    if q.startswith(("What colour is the ", "What color is the ")):
        return "colour_of_shape"
    if q.startswith("What shape is the "):
        return "shape_of_colour"
    if q.startswith("What shape is "):
        return "shape_at"
    if q.startswith("Where is the "):
        return "where"
    if q.startswith("How many "):
        return "count"
    raise ValueError(q)


def draw(objects: list, size: int = IMAGE_SIZE) -> np.ndarray:
    k = SUPERSAMPLE
    im = Image.new("RGB", (size * k, size * k), BACKGROUND)
    d = ImageDraw.Draw(im)
    for o in objects:
        cx, cy, h = o.cx * k, o.cy * k, o.half * k
        col = COLOURS[o.colour]
        if o.shape == "circle":
            d.ellipse([cx - h, cy - h, cx + h, cy + h], fill=col)
        elif o.shape == "square":
            s = h * 0.9  # a square of the same bounding box looks bigger than the circle
            d.rectangle([cx - s, cy - s, cx + s, cy + s], fill=col)
        elif o.shape == "triangle":
            d.polygon([(cx, cy - h), (cx + h, cy + h * 0.85), (cx - h, cy + h * 0.85)], fill=col)
        else:
            raise ValueError(o.shape)
    im = im.resize((size, size), Image.BOX)
    return np.asarray(im, dtype=np.uint8).copy()


def make_object(rng: np.random.Generator, shape: str, colour: str, position: str, size: int) -> Obj:
    fx, fy = POS_XY[position]
    cx = (fx + rng.uniform(-JITTER, JITTER)) * size
    cy = (fy + rng.uniform(-JITTER, JITTER)) * size
    half = rng.uniform(*HALF_SIZE) * size
    return Obj(shape, colour, position, float(cx), float(cy), float(half))


def make_sample(rng: np.random.Generator, size: int = IMAGE_SIZE, n_objects: int | None = None) -> Sample:
    colours = list(COLOURS)
    if n_objects is None:
        n_objects = 2 if rng.random() < TWO_SHAPE_FRACTION else 1
    if n_objects == 1:
        objs = [make_object(rng, SHAPES[rng.integers(3)], colours[rng.integers(4)],
                            POSITIONS[rng.integers(len(POSITIONS))], size)]
    else:
        pair = PAIRS[rng.integers(len(PAIRS))]
        sh = rng.permutation(len(SHAPES))[:2]
        co = rng.permutation(len(colours))[:2]
        objs = [make_object(rng, SHAPES[sh[i]], colours[co[i]], pair[i], size) for i in range(2)]
    caption = caption_of(objs)
    prompts = [caption]
    if len(objs) == 2:
        prompts.append(" and ".join(o.phrase() for o in objs[::-1]))
    else:
        prompts.append(objs[0].phrase(with_position=False))
    return Sample(draw(objs, size), objs, caption, prompts, questions_of(objs, caption))


def make_dataset(n: int, seed: int, size: int = IMAGE_SIZE) -> list:
    """n samples, a pure function of (n, seed, size): sample i uses its own generator seeded with
    (seed, i), so a prefix of a larger set is the smaller set."""
    return [make_sample(np.random.default_rng([seed, i]), size) for i in range(n)]


def sample_for(shape: str, colour: str, position: str, seed: int, size: int = IMAGE_SIZE) -> Sample:
    """One chosen single-shape sample (for tests and evaluation)."""
    rng = np.random.default_rng([seed, 1_000_003])
    objs = [make_object(rng, shape, colour, position, size)]
    cap = caption_of(objs)
    return Sample(draw(objs, size), objs, cap, [cap, objs[0].phrase(False)], questions_of(objs, cap))


def all_prompt_texts() -> list:
    """Every caption/prompt/question/answer string the templates can make (tokenizer corpus)."""
    out = []
    colours = list(COLOURS)
    singles = [Obj(s, c, p, 0, 0, 0) for s in SHAPES for c in colours for p in POSITIONS]
    caps = [caption_of([o]) for o in singles] + [o.phrase(False) for o in singles]
    for a_pos, b_pos in PAIRS:
        for sa in SHAPES:
            for sb in SHAPES:
                for ca in colours:
                    for cb in colours:
                        if sa == sb or ca == cb:
                            continue
                        a, b = Obj(sa, ca, a_pos, 0, 0, 0), Obj(sb, cb, b_pos, 0, 0, 0)
                        caps += [caption_of([a, b]), caption_of([b, a])]
    out += caps
    for o in singles:
        for q, a in questions_of([o], caption_of([o])):
            out += [q, a]
    return out


# ----------------------------------------------------------------------------------------------
# pixel helpers shared by the evaluation (colour classification and regions)
# ----------------------------------------------------------------------------------------------


def classify_pixels(img: np.ndarray, max_dist: float = 90.0) -> np.ndarray:
    """Per pixel: index into list(COLOURS) of the nearest palette colour, or -1 when the pixel is
    nearer the background than any palette colour, or farther than max_dist (RGB Euclidean)."""
    x = img.reshape(-1, 3).astype(np.float32)
    pal = np.array(list(COLOURS.values()) + [BACKGROUND], np.float32)
    d = np.sqrt(((x[:, None, :] - pal[None]) ** 2).sum(-1))
    idx = d.argmin(1)
    ok = (idx < len(COLOURS)) & (d[np.arange(len(x)), idx] <= max_dist)
    return np.where(ok, idx, -1).reshape(img.shape[:2])


def region_mask(position: str, size: int) -> np.ndarray:
    x0, y0, x1, y1 = REGIONS[position]
    m = np.zeros((size, size), bool)
    m[int(round(y0 * size)):int(round(y1 * size)), int(round(x0 * size)):int(round(x1 * size))] = True
    return m


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask (empty mask -> empty)."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    best = np.zeros_like(mask)
    best_n = 0
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        comp = []
        stack = [(y0, x0)]
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            comp.append((y, x))
            for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                    seen[yy, xx] = True
                    stack.append((yy, xx))
        if len(comp) > best_n:
            best_n = len(comp)
            best = np.zeros_like(mask)
            ys, xs = zip(*comp)
            best[list(ys), list(xs)] = True
    return best


# bounding-box fill ratio of a drawn shape (classify_pixels mask, 32 px, 2000 samples of seed 77):
#   triangle 0.48-0.69 (99 % below 0.63), circle 0.67-0.88 (99 % above 0.67), square 0.96-1.0
SHAPE_FILL_THRESHOLDS = (0.65, 0.92)


def classify_shape(mask: np.ndarray) -> str | None:
    """circle / square / triangle from the fill ratio of the mask's bounding box (None: < 4 pixels)."""
    ys, xs = np.nonzero(mask)
    if len(ys) < 4:
        return None
    fill = len(ys) / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    lo, hi = SHAPE_FILL_THRESHOLDS
    return "triangle" if fill < lo else "circle" if fill < hi else "square"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=IMAGE_SIZE)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = make_dataset(args.n, args.seed, args.size)
    cols = 8
    rows = (len(data) + cols - 1) // cols
    s = args.size
    grid = np.full((rows * (s + 2), cols * (s + 2), 3), 80, np.uint8)
    for i, smp in enumerate(data):
        r, c = divmod(i, cols)
        grid[r * (s + 2) + 1:r * (s + 2) + 1 + s, c * (s + 2) + 1:c * (s + 2) + 1 + s] = smp.image
    Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST).save(args.out / "grid.png")
    with open(args.out / "samples.jsonl", "w") as f:
        for smp in data:
            f.write(json.dumps(smp.to_json()) + "\n")
    print(f"wrote {len(data)} samples to {args.out}")


if __name__ == "__main__":
    main()
