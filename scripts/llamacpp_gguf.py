#!/usr/bin/env python3
"""Write Janus-Pro's language model as a llama.cpp `llama` GGUF, for speed comparisons only.

    python scripts/llamacpp_gguf.py MODEL_DIR OUT.gguf --type {f32,f16,bf16} [--head {lm,gen}]

MODEL_DIR is a transformers-format Janus checkpoint (`model_type: janus`, bf16 safetensors with
`model.language_model.*`, `lm_head.weight`, `model.generation_head.vision_head.weight`).
Janus-Pro's language model is a LLaMA (DeepSeek-LLM), so its tensors map one to one onto
llama.cpp's `llama` architecture:

    embed_tokens -> token_embd, q/k/v/o_proj -> attn_q/k/v/output, gate/up/down_proj ->
    ffn_gate/up/down, input/post_attention_layernorm -> attn_norm/ffn_norm, norm -> output_norm,
    lm_head -> output

`--head gen` writes the variant whose `output` is the generation head's 16,384-row
`vision_head` (the vocabulary, and so `token_embd`, shrink to 16,384 rows with it), so that one
llama.cpp decode step does the work of one of our image-token steps: the decoder layers plus a
16,384-wide head. It leaves out the head's 2048x2048 `proj_out` + GELU in front of `vision_head`
and the image-token embedding MLP (`generation_aligner`), about 0.6% of a step's weights.

Q and K are permuted the way llama.cpp's own HF converter does (HF's rotate-half RoPE layout to
llama.cpp's interleaved one), so the file computes what the checkpoint does; speed would not
depend on it. The tokenizer is synthetic (this is measured for speed only): an SPM (`llama`)
vocabulary of the right size made of `<unk>`, `<s>`, `</s>`, the 256 byte tokens and
placeholders. Norm weights are written as F32 (as llama.cpp's converter does), the matrices in
`--type`. Tensors are streamed one at a time from a memory map, so memory stays near one tensor.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("llamacpp_gguf.py: the `gguf` package is missing (pip install gguf, or llama.cpp's gguf-py)")

GEN_VOCAB = 16384
# Candidate names, transformers `janus` format first, then the original DeepSeek layout.
LM_PREFIXES = ("model.language_model.", "language_model.model.")
LM_HEADS = ("lm_head.weight", "language_model.lm_head.weight")
GEN_HEADS = ("model.generation_head.vision_head.weight", "gen_head.vision_head.weight")


class SafeTensors:
    """The tensors of every `*.safetensors` file in a directory, memory-mapped (no torch)."""

    DTYPES = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32}

    def __init__(self, directory: Path):
        self.entries: dict[str, tuple[Path, int, str, list[int], int]] = {}
        files = sorted(directory.glob("*.safetensors"))
        if not files:
            sys.exit(f"llamacpp_gguf.py: no *.safetensors in {directory}")
        for f in files:
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(n))
            for name, e in header.items():
                if name != "__metadata__":
                    self.entries[name] = (f, 8 + n + e["data_offsets"][0], e["dtype"], e["shape"],
                                          e["data_offsets"][1] - e["data_offsets"][0])

    def first(self, names) -> str | None:
        return next((n for n in names if n in self.entries), None)

    def shape(self, name: str) -> list[int]:
        return self.entries[name][3]

    def raw(self, name: str) -> tuple[np.ndarray, str]:
        """The tensor as stored (bf16 as uint16), and its safetensors dtype."""
        path, offset, dtype, shape, _ = self.entries[name]
        if dtype not in self.DTYPES:
            sys.exit(f"llamacpp_gguf.py: {name} is {dtype}; only BF16, F16 and F32 are handled")
        arr = np.memmap(path, dtype=self.DTYPES[dtype], mode="r", offset=offset, shape=tuple(shape))
        return arr, dtype


def to_f32(arr: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(np.float32)


def to_bf16(arr: np.ndarray, dtype: str) -> np.ndarray:
    """bf16 bits as uint16 (round to nearest even from f16/f32 sources)."""
    if dtype == "BF16":
        return np.ascontiguousarray(arr)
    bits = to_f32(arr, dtype).view(np.uint32)
    bits = bits + 0x7FFF + ((bits >> 16) & 1)
    return (bits >> 16).astype(np.uint16)


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's `LlamaModel.permute`: HF rotate-half rows to interleaved RoPE pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def text_config(model_dir: Path) -> dict:
    cfg = json.loads((model_dir / "config.json").read_text())
    tc = cfg.get("text_config") or cfg.get("language_config") or cfg
    if "hidden_size" not in tc:
        sys.exit(f"llamacpp_gguf.py: {model_dir}/config.json has no text_config.hidden_size")
    return tc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--type", choices=("f32", "f16", "bf16"), default="f16", help="matrices' type")
    ap.add_argument("--head", choices=("lm", "gen"), default="lm",
                    help="`output`: the LM head (102,400 rows) or the 16,384-row image-token head")
    args = ap.parse_args()

    tc = text_config(args.model_dir)
    st = SafeTensors(args.model_dir)
    prefix = next((p for p in LM_PREFIXES if f"{p}embed_tokens.weight" in st.entries), None)
    if prefix is None:
        sys.exit(f"llamacpp_gguf.py: no language model tensors ({' or '.join(LM_PREFIXES)}embed_tokens.weight)")

    hidden = tc["hidden_size"]
    n_layer = tc["num_hidden_layers"]
    n_head = tc["num_attention_heads"]
    n_kv = tc.get("num_key_value_heads") or n_head
    head_dim = tc.get("head_dim") or hidden // n_head
    rope = tc.get("rope_parameters") or {}
    rope_theta = float(rope.get("rope_theta", tc.get("rope_theta", 10000.0)))

    # (gguf name, source name or None, transform, keep-f32) in file order.
    plan: list[tuple[str, str | None, object, bool]] = []
    embd = f"{prefix}embed_tokens.weight"
    if args.head == "lm":
        head = st.first(LM_HEADS)
        if head is None:
            sys.exit(f"llamacpp_gguf.py: no LM head ({' or '.join(LM_HEADS)})")
        n_vocab = st.shape(head)[0]
    else:
        head = st.first(GEN_HEADS)
        n_vocab = GEN_VOCAB
        if head is None or st.shape(head) != [GEN_VOCAB, hidden]:
            print(f"llamacpp_gguf.py: no {GEN_VOCAB}x{hidden} vision_head; using a random matrix", file=sys.stderr)
            head = None
    rows = slice(0, n_vocab)
    plan.append(("token_embd.weight", embd, lambda a: a[rows], False))
    for i in range(n_layer):
        p = f"{prefix}layers.{i}."
        plan += [
            (f"blk.{i}.attn_norm.weight", p + "input_layernorm.weight", None, True),
            (f"blk.{i}.attn_q.weight", p + "self_attn.q_proj.weight", lambda a: permute_qk(a, n_head), False),
            (f"blk.{i}.attn_k.weight", p + "self_attn.k_proj.weight", lambda a: permute_qk(a, n_kv), False),
            (f"blk.{i}.attn_v.weight", p + "self_attn.v_proj.weight", None, False),
            (f"blk.{i}.attn_output.weight", p + "self_attn.o_proj.weight", None, False),
            (f"blk.{i}.ffn_norm.weight", p + "post_attention_layernorm.weight", None, True),
            (f"blk.{i}.ffn_gate.weight", p + "mlp.gate_proj.weight", None, False),
            (f"blk.{i}.ffn_up.weight", p + "mlp.up_proj.weight", None, False),
            (f"blk.{i}.ffn_down.weight", p + "mlp.down_proj.weight", None, False),
        ]
    plan.append(("output_norm.weight", f"{prefix}norm.weight", None, True))
    plan.append(("output.weight", head, None, False))
    for _, src, _, _ in plan:
        if src is not None and src not in st.entries:
            sys.exit(f"llamacpp_gguf.py: tensor {src} is missing")

    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16}[args.type]
    w = gguf.GGUFWriter(args.out, "llama")
    w.add_name(f"janus-lm-{args.head}-head")
    w.add_context_length(tc.get("max_position_embeddings", 4096))
    w.add_embedding_length(hidden)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(tc["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(rope_theta)
    w.add_layer_norm_rms_eps(float(tc.get("rms_norm_eps", 1e-6)))
    w.add_vocab_size(n_vocab)
    w.add_file_type(int(file_type))
    # Synthetic SPM vocabulary: <unk> <s> </s>, 256 byte tokens, placeholders.
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    tokens += [f"\u2581t{i}" for i in range(len(tokens), n_vocab)]
    types += [gguf.TokenType.NORMAL] * (n_vocab - len(types))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([-float(i) for i in range(n_vocab)])
    w.add_token_types([int(t) for t in types])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)

    def shape_of(src: str | None, gname: str) -> list[int]:
        if src is None:
            return [n_vocab, hidden]
        s = list(st.shape(src))
        return [n_vocab, s[1]] if gname == "token_embd.weight" else s

    def tensor(src: str | None, fn, keep_f32: bool) -> np.ndarray:
        if src is None:
            rng = np.random.default_rng(0)
            a, dt = (rng.standard_normal((n_vocab, hidden), dtype=np.float32) * 0.02), "F32"
        else:
            a, dt = st.raw(src)
        if fn is not None:
            a = fn(a)
        if keep_f32 or args.type == "f32":
            return np.ascontiguousarray(to_f32(a, dt))
        if args.type == "f16":
            return np.ascontiguousarray(to_f32(a, dt).astype(np.float16))
        return to_bf16(np.ascontiguousarray(a), dt)

    def out_type(keep_f32: bool):
        if keep_f32 or args.type == "f32":
            return np.dtype(np.float32), None, 4
        if args.type == "f16":
            return np.dtype(np.float16), None, 2
        return np.dtype(np.uint16), gguf.GGMLQuantizationType.BF16, 2

    for gname, src, _, keep in plan:
        shape = shape_of(src, gname)
        dtype, raw, size = out_type(keep)
        w.add_tensor_info(gname, shape, dtype, int(np.prod(shape)) * size, raw_dtype=raw)
    tmp = args.out.with_name(args.out.name + ".part")
    w.write_header_to_file(tmp)
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for i, (gname, src, fn, keep) in enumerate(plan):
        w.write_tensor_data(tensor(src, fn, keep))
        if i % 45 == 0:
            print(f"  {args.out.name}: {i + 1}/{len(plan)} tensors", file=sys.stderr)
    w.close()
    tmp.rename(args.out)
    print(f"llamacpp_gguf.py: wrote {args.out} ({args.out.stat().st_size / 2**30:.2f} GiB, "
          f"{args.type}, {args.head} head, vocab {n_vocab})", file=sys.stderr)


if __name__ == "__main__":
    main()
