#!/usr/bin/env python3
"""Evaluate the trained tiny "coloured shapes" Janus (assets/shapes/janus-shapes-hf) with
transformers' JanusForConditionalGeneration (f32, CPU).

(a) generation: for prompts naming colours and positions ("a red circle on the left", "a red circle
    on the left and a blue square on the right"), images are sampled (temperature 1, seeded) with
    guidance weight 5, 1 (the conditional logits alone) and 0 (the unconditional logits alone: the
    prompt is ignored, a baseline). For every named object:
      in_region  = (pixels of that colour inside the named region) / (pixels of that colour)
                   (0 when the colour is absent); chance is about the region's share of the image
                   (0.5 for left/right/top/bottom, 0.25 for the centre box)
      present    = the colour covers at least --min-pixels pixels
      other      = share of coloured pixels that are NOT the named colour(s)
      shape_ok   = the largest blob of that colour inside the region has the named shape, by the
                   bounding-box fill ratio (dataset.classify_shape: about 0.56 triangle, 0.77 circle,
                   1.0 square); 0 when the colour is absent
    Pixel colours: nearest of the palette or the background (scripts/shapes/dataset.py
    classify_pixels); regions: dataset.REGIONS.
(b) understanding: greedy answers on held-out images (dataset seed --und-seed, not the training
    seed): colour questions ("What colour is the circle?", "What colour is the shape on the left?"),
    shape questions ("What shape is on the left?", "What shape is the red one?"), position questions
    ("Where is the red circle?"), the count and the description ("Describe the image." -> exact
    caption); accuracy = exact match of the stripped answer, also split by one / two shapes.

  /tmp/gold-venv/bin/python scripts/shapes/evaluate.py [--model DIR] [--out /tmp/shapes-eval] [--quick]
writes DIR/../eval.json (unless --no-write) and, with --out, PNG grids of the generated samples.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import dataset as ds  # noqa: E402

REPO = HERE.parent.parent

import transformers  # noqa: E402

transformers.logging.set_verbosity_error()
COLOUR_NAMES = list(ds.COLOURS)


def load(model_dir: Path):
    from transformers import JanusForConditionalGeneration, JanusProcessor
    from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

    model = JanusForConditionalGeneration.from_pretrained(str(model_dir), dtype=torch.float32)
    model.eval()
    proc = JanusProcessor.from_pretrained(str(model_dir), backend="pil")
    if not isinstance(proc.image_processor, JanusImageProcessorPil):
        proc.image_processor = JanusImageProcessorPil.from_pretrained(str(model_dir))
    return model, proc


@torch.no_grad()
def generate_tokens(model, proc, prompt: str, n: int, seed: int, guidance: float, greedy: bool = False):
    """n images for one prompt: classifier-free guidance with the reference rule (rows: n conditional,
    n unconditional = the prompt tokens other than BOS and BOI replaced by pad; guided = uncond +
    (cond - uncond) * guidance, so guidance 1 is the conditional logits alone), temperature 1
    sampling (torch.multinomial after torch.manual_seed(seed)) or greedy. transformers' generate
    does the same for guidance > 1 but cannot run guidance 1 (it keeps both rows)."""
    from transformers import DynamicCache

    chat = proc.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": prompt}]}],
                                    add_generation_prompt=True, tokenize=False)
    ids = proc(text=chat, generation_mode="image", return_tensors="pt").input_ids
    gc = model.generation_config
    unc = ids.clone()
    unc[(unc != gc.bos_token_id) & (unc != gc.generation_kwargs["boi_token_id"])] = gc.pad_token_id
    rows = torch.cat([ids.expand(n, -1), unc.expand(n, -1)])
    lm = model.model.language_model
    emb = lm.embed_tokens(rows)
    L = rows.shape[1]
    cache = DynamicCache(config=model.config.text_config)
    pos = torch.arange(L)[None].expand(2 * n, -1)
    g = torch.Generator().manual_seed(seed)
    steps = model.config.vision_config.num_image_tokens
    out = torch.zeros(n, steps, dtype=torch.long)
    for s in range(steps):
        h = lm(inputs_embeds=emb, position_ids=pos, cache=cache, use_cache=True).last_hidden_state[:, -1]
        logits = model.model.generation_head(h)
        guided = logits[n:] + (logits[:n] - logits[n:]) * guidance
        if greedy:
            t = guided.argmax(-1)
        else:
            t = torch.multinomial(torch.softmax(guided, -1), 1, generator=g).squeeze(-1)
        out[:, s] = t
        emb = model.prepare_embeddings_for_image_generation(torch.cat([t, t])[:, None])
        pos = torch.full((2 * n, 1), L + s)
    return out


@torch.no_grad()
def generate_images(model, proc, prompt: str, n: int, seed: int, guidance: float) -> np.ndarray:
    tokens = generate_tokens(model, proc, prompt, n, seed, guidance)
    x = model.decode_image_tokens(tokens)  # NHWC
    return ((x.float() + 1) / 2 * 255).clamp(0, 255).to(torch.uint8).numpy()


@torch.no_grad()
def check_against_transformers(model, proc, prompt: str = "a red circle on the left") -> None:
    """The loop above, greedy at guidance 5, must give transformers' generate tokens."""
    chat = proc.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": prompt}]}],
                                    add_generation_prompt=True, tokenize=False)
    inputs = proc(text=chat, generation_mode="image", return_tensors="pt")
    ref = model.generate(**inputs, generation_mode="image", do_sample=False, guidance_scale=5.0)
    mine = generate_tokens(model, proc, prompt, 1, 0, 5.0, greedy=True)
    assert torch.equal(ref, mine), (ref, mine)


class PythonBackend:
    """transformers' model (f32, CPU)."""

    name = "python"

    def __init__(self, model_dir: Path):
        self.model, self.proc = load(model_dir)
        check_against_transformers(self.model, self.proc)

    def generate(self, prompt: str, n: int, seed: int, guidance: float) -> np.ndarray:
        return generate_images(self.model, self.proc, prompt, n, seed, guidance)

    def answer(self, image: np.ndarray, question: str) -> str:
        return answer(self.model, self.proc, image, question)


class RustBackend:
    """The janus binary (`generate` with --cfg/--seed, temperature 1; `describe --json`, greedy)."""

    name = "rust"

    def __init__(self, model_dir: Path, binary: Path, tmp: Path):
        self.model_dir, self.bin, self.tmp = model_dir, binary, tmp
        tmp.mkdir(parents=True, exist_ok=True)

    def run(self, *args: str) -> str:
        import subprocess

        r = subprocess.run([str(self.bin), *args, "--model", str(self.model_dir), "--device", "cpu"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {r.stderr}")
        return r.stdout

    def generate(self, prompt: str, n: int, seed: int, guidance: float) -> np.ndarray:
        import shutil

        d = self.tmp / "gen"
        if d.exists():
            shutil.rmtree(d)
        self.run("generate", "--prompt", prompt, "-n", str(n), "--seed", str(seed), "--cfg", str(guidance),
                 "--out", str(d) + "/" if n > 1 else str(d) + ".png")
        files = sorted(d.glob("*.png")) if n > 1 else [Path(str(d) + ".png")]
        return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])

    def answer(self, image: np.ndarray, question: str) -> str:
        p = self.tmp / "und.png"
        Image.fromarray(image).save(p)
        out = self.run("describe", "--image", str(p), "--question", question, "--max-tokens", "24", "--json")
        return json.loads(out)["text"].strip()


def object_scores(img: np.ndarray, objects: list, min_pixels: int) -> list:
    """objects: (colour, position, shape) per named object."""
    cls = ds.classify_pixels(img)
    size = img.shape[0]
    named = {COLOUR_NAMES.index(o[0]) for o in objects}
    coloured = cls >= 0
    other = float((coloured & ~np.isin(cls, list(named))).sum() / max(1, coloured.sum()))
    out = []
    for colour, pos, shape in objects:
        m = cls == COLOUR_NAMES.index(colour)
        total = int(m.sum())
        region = m & ds.region_mask(pos, size)
        inside = int(region.sum())
        present = total >= min_pixels
        got = ds.classify_shape(ds.largest_component(region)) if present else None
        out.append(dict(in_region=inside / total if total else 0.0, present=present, pixels=total,
                        other=other, shape_ok=got == shape))
    return out


def gen_prompts(quick: bool) -> list:
    """(prompt, [(colour, position), ...])"""
    out = []
    shapes = ds.SHAPES
    k = 0
    for colour in COLOUR_NAMES:
        for pos in ds.POSITIONS:
            sh = shapes[k % len(shapes)]
            k += 1
            out.append((f"a {colour} {sh} {ds.POS_PHRASE[pos]}", [(colour, pos, sh)]))
    pairs = [
        ("red", "circle", "left", "blue", "square", "right"),
        ("green", "triangle", "left", "yellow", "circle", "right"),
        ("blue", "square", "top", "red", "triangle", "bottom"),
        ("yellow", "triangle", "top", "green", "square", "bottom"),
    ]
    for c1, s1, p1, c2, s2, p2 in pairs:
        out.append((f"a {c1} {s1} {ds.POS_PHRASE[p1]} and a {c2} {s2} {ds.POS_PHRASE[p2]}",
                    [(c1, p1, s1), (c2, p2, s2)]))
    if quick:
        out = out[::2]
    return out


def eval_generation(be, quick: bool, seeds: int, per_seed: int, min_pixels: int, out: Path | None,
                    weights: tuple = (5.0, 1.0, 0.0)):
    res = {}
    prompts = gen_prompts(quick)
    for w in weights:
        rows, grids = [], []
        for prompt, objs in prompts:
            imgs = []
            for s in range(seeds):
                imgs.append(be.generate(prompt, per_seed, seed=1000 + s, guidance=w))
            imgs = np.concatenate(imgs)
            grids.append(imgs)
            for im in imgs:
                for (colour, pos, _), sc in zip(objs, object_scores(im, objs, min_pixels)):
                    rows.append(dict(prompt=prompt, colour=colour, position=pos, two=len(objs) == 2, **sc))

        def agg(sel):
            sel = list(sel)
            if not sel:
                return None
            return dict(n=len(sel),
                        in_region=float(np.mean([r["in_region"] for r in sel])),
                        present=float(np.mean([r["present"] for r in sel])),
                        other_colours=float(np.mean([r["other"] for r in sel])),
                        shape_ok=float(np.mean([r["shape_ok"] for r in sel])),
                        in_region_min_prompt=float(min(np.mean([r["in_region"] for r in sel if r["prompt"] == p])
                                                       for p in {r["prompt"] for r in sel})))

        res[f"cfg{w:g}"] = dict(
            all=agg(rows),
            one_shape=agg(r for r in rows if not r["two"]),
            one_shape_sides=agg(r for r in rows if not r["two"] and r["position"] != "centre"),
            one_shape_centre=agg(r for r in rows if not r["two"] and r["position"] == "centre"),
            two_shapes=agg(r for r in rows if r["two"]),
            per_colour={c: agg(r for r in rows if r["colour"] == c) for c in COLOUR_NAMES},
            per_position={p: agg(r for r in rows if r["position"] == p) for p in ds.POSITIONS},
        )
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            s = grids[0].shape[1]
            n = max(len(g) for g in grids)
            canvas = np.full((len(grids) * (s + 2), n * (s + 2), 3), 80, np.uint8)
            for i, g in enumerate(grids):
                for j, im in enumerate(g):
                    canvas[i * (s + 2) + 1:i * (s + 2) + 1 + s, j * (s + 2) + 1:j * (s + 2) + 1 + s] = im
            Image.fromarray(canvas).resize((canvas.shape[1] * 3, canvas.shape[0] * 3), Image.NEAREST).save(
                out / f"generated_{be.name}_cfg{w:g}.png")
            (out / "generated_prompts.txt").write_text("\n".join(p for p, _ in prompts) + "\n")
    return res


@torch.no_grad()
def answer(model, proc, image: np.ndarray, question: str, max_new_tokens: int = 24) -> str:
    chat = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
                                    add_generation_prompt=True, tokenize=False)
    inputs = proc(text=chat, images=Image.fromarray(image), generation_mode="text", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, generation_mode="text")
    return proc.tokenizer.decode(out[0, inputs.input_ids.shape[1]:], skip_special_tokens=True).strip()


def eval_understanding(be, n_images: int, seed: int) -> dict:
    data = ds.make_dataset(n_images, seed)
    kinds = {}
    examples = []
    for i, s in enumerate(data):
        objs = s.objects
        o = objs[(i // 2) % len(objs)]
        qs = [
            ("colour", f"What colour is the {o.shape}?", o.colour),
            ("colour_at", f"What colour is the shape {ds.POS_PHRASE[o.position]}?", o.colour),
            ("shape", f"What shape is {ds.POS_PHRASE[o.position]}?", o.shape),
            ("shape_of_colour", f"What shape is the {o.colour} one?", o.shape),
            ("where", f"Where is the {o.colour} {o.shape}?", ds.POS_PHRASE[o.position]),
            ("count", "How many shapes are there?", ["one", "two"][len(objs) - 1]),
            ("describe", "Describe the image.", s.caption),
            ("describe_detail", "Describe this image in detail.", s.caption),
        ]
        for kind, q, expect in qs:
            got = be.answer(s.image, q)
            kinds.setdefault(kind, []).append(got == expect)
            kinds.setdefault(f"{kind}/{len(objs)}_shape{'s' if len(objs) > 1 else ''}", []).append(got == expect)
            if len(examples) < 30 and (kind in ("colour", "describe") or got != expect):
                examples.append(dict(caption=s.caption, question=q, expected=expect, answer=got))
    res = {k: dict(n=len(v), accuracy=float(np.mean(v))) for k, v in sorted(kinds.items())}
    res["examples"] = examples
    return res


def evaluate(model_dir: Path, quick: bool = False, threads: int = 1, out: Path | None = None,
             und_seed: int = 4242, min_pixels: int = 10, rust: Path | None = None) -> dict:
    torch.set_num_threads(threads)
    t = time.time()
    be = PythonBackend(model_dir) if rust is None else RustBackend(model_dir, rust, Path(f"/tmp/shapes-eval-{os.getpid()}"))
    seeds, per_seed, n_und = (2, 2, 40) if quick else (4, 4, 200)
    res = dict(model=str(model_dir), backend=be.name, quick=quick, samples_per_prompt=seeds * per_seed,
               und_images=n_und, und_seed=und_seed, min_pixels=min_pixels)
    res["generation"] = eval_generation(be, quick, seeds, per_seed, min_pixels, out,
                                        (5.0, 1.0) if quick else (5.0, 1.0, 0.0))
    res["understanding"] = eval_understanding(be, n_und, und_seed)
    res["eval_time_s"] = time.time() - t
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "assets" / "shapes" / "janus-shapes-hf")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write PNG grids of generated samples here")
    ap.add_argument("--und-seed", type=int, default=4242)
    ap.add_argument("--rust", type=Path, nargs="?", const=REPO / "target" / "release" / "janus", default=None,
                    help="evaluate the janus binary (default target/release/janus) instead of transformers")
    ap.add_argument("--no-write", action="store_true", help="do not write eval[-rust].json next to the model")
    a = ap.parse_args()
    res = evaluate(a.model, a.quick, a.threads, a.out, a.und_seed, rust=a.rust)
    txt = json.dumps(res, indent=2)
    print(txt)
    if not a.no_write:
        name = "eval.json" if a.rust is None else "eval-rust.json"
        (a.model.parent / name).write_text(txt + "\n")


if __name__ == "__main__":
    main()
