#!/usr/bin/env python3
"""Computed memory of Janus-Pro runs: model x quant x n -> weights + KV cache + VQ decode workspace.

Standard library only. The parameter counts are those of the published configs (they match the
random full-size checkpoints `scripts/gpu_bench.py` builds; see docs/PERF.md). What janus-rs holds:

* the quantized linears: every LM layer's q/k/v/o and gate/up/down, `lm_head` (not loaded by
  `generate`/`bench`), and `gen_head`'s two
  projections, at the block type's bits per weight (q8_0 8.5, q6k 6.5625, q5k 5.5, q4k 4.5);
  `none` keeps them in the model dtype, except on the CPU, where the exact mode keeps the
  published checkpoints' bf16 (widened inside the kernels);
* dense in the model dtype: SigLIP + aligner and the VQ encoder (edits; neither loaded by
  `generate`/`bench`), the VQ decoder (not loaded by `describe`), `gen_embed` + `gen_aligner`, norms; the token embedding table in the
  checkpoint's dtype (bf16) even when the model runs in f32;
* the KV cache: 2 x layers x hidden x dtype bytes per position and row, 2n rows (CFG), prompt + 576
  positions;
* the VQ decode workspace of one chunk (`--decode-chunk`, default 4): on CUDA candle's im2col of
  the widest 3x3 convolution (384 x 384 x 128 x 9 values) plus three feature maps, per image; on
  the CPU three f32 feature maps per image and one 16 MiB im2col band.

  python3 scripts/memory-budget.py                 # CUDA (bf16) table, Markdown
  python3 scripts/memory-budget.py --device cpu    # CPU (f32 model, bf16 embeddings), generate only
"""

import argparse

GIB = 2**30
BITS = {"none": None, "q8_0": 8.5, "q6k": 6.5625, "q5k": 5.5, "q4k": 4.5}
MODELS = {
    # hidden, intermediate, layers, vocab, SigLIP+aligner params, VQ decoder and encoder params
    "1B": dict(h=2048, f=5632, layers=24, vocab=102400, vision=303.7e6 + 6.3e6, vq=42.5e6, vq_enc=29.3e6),
    "7B": dict(h=4096, f=11008, layers=30, vocab=102400, vision=303.7e6 + 21.0e6, vq=42.5e6, vq_enc=29.3e6),
}
IMAGE_TOKENS, PROMPT, CODEBOOK = 576, 50, 16384


def budget(m: dict, quant: str, n: int, cuda: bool, chunk: int) -> dict:
    dtype_bytes, embed_bytes, vision = (2, 2, True) if cuda else (4, 2, False)
    h, f, L, v = m["h"], m["f"], m["layers"], m["vocab"]
    # lm_head only where text is answered (serve, describe): not in a generation-only process
    linears = L * (4 * h * h + 3 * h * f) + (v * h if vision else 0) + (h * h + h * CODEBOOK)
    bits = BITS[quant]
    # the exact mode: bf16 on CUDA, and kept bf16 (the checkpoint's) on the CPU
    lin_bytes = linears * (2 if bits is None else bits / 8)
    dense = (m["vision"] + m["vq_enc"] if vision else 0) + m["vq"] + (CODEBOOK * 8 + 8 * h + h * h)
    weights = lin_bytes + dense * dtype_bytes + v * h * embed_bytes
    kv = 2 * L * h * dtype_bytes * 2 * n * (PROMPT + IMAGE_TOKENS)
    feature_map = 384 * 384 * 128 * dtype_bytes
    # CUDA: a full im2col per image; CPU (vq_cpu): 16 MiB im2col bands, shared
    decode = feature_map * min(chunk, n) * (12 if cuda else 3) + (0 if cuda else 16 * 2**20)
    return {"weights": weights, "kv": kv, "decode": decode, "total": weights + kv + decode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cuda: a serving process (all parts, bf16); cpu: `generate` (f32, generation parts)")
    ap.add_argument("--decode-chunk", type=int, default=4)
    a = ap.parse_args()
    cuda = a.device == "cuda"
    print(f"| model | quant | n | weights GiB | KV cache GiB | VQ decode GiB | total GiB ({a.device}) |")
    print("|---|---|---|---|---|---|---|")
    for name, m in MODELS.items():
        for quant in BITS:
            for n in (1, 4, 16):
                b = budget(m, quant, n, cuda, a.decode_chunk)
                print(f"| {name} | {quant} | {n} | {b['weights'] / GIB:.2f} | {b['kv'] / GIB:.2f} | "
                      f"{b['decode'] / GIB:.2f} | {b['total'] / GIB:.2f} |")


if __name__ == "__main__":
    main()
