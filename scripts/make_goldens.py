#!/usr/bin/env python3
"""Build the tiny Janus-Pro test checkpoints and the golden reference outputs.

Everything is made locally and deterministically:

  * a tiny byte-level BPE tokenizer shaped like DeepSeek-LLM's tokenizer.json,
  * ONE set of tiny random weights (bf16-exact values) written in four on-disk layouts:
      assets/tiny/janus-pro-tiny-hf/        transformers `janus` format, f32 safetensors
      assets/tiny/janus-pro-tiny/           original deepseek `multi_modality` format, bf16 pytorch_model.bin
      assets/tiny/janus-pro-tiny-sharded/   original names, f32 safetensors, 2 shards + index
      assets/tiny/janus-pro-tiny-hf-bin/    transformers names, f32 pytorch pickle, 2 shards + index
  * a second, smaller transformers-format checkpoint whose generation grid does NOT follow from
    the vision image size and the VQ factor (vision patch 8, VQ upsampling 2: 16 tokens on a 4x4
    grid decoded into 8x8 images, where image_size / vq_factor would say 256 tokens and 32 px):
      assets/tiny/janus-pro-tiny-grid-hf/   transformers `janus` format, bf16 safetensors
  * golden outputs of transformers' JanusForConditionalGeneration (f32, CPU), loaded from the
    transformers-format directory:
      assets/golden/t2i.json + t2i.safetensors   text-to-image (greedy CFG) + VQ decode + tokenizer vectors
      assets/golden/und.json + und.safetensors   image understanding (preprocess, vision, greedy text)
      assets/golden/t2i_grid.json + t2i_grid.safetensors   text-to-image (greedy CFG) + VQ decode
                                                 on janus-pro-tiny-grid-hf
      assets/golden/vq_encode.json + vq_encode.safetensors   VQ encoder (JanusVQVAE encoder +
                                                 quant_conv) and the original quantizer rule, on
                                                 janus-pro-tiny-hf (the same weights as the other
                                                 tiny variants)
      assets/golden/vq_encode_grid.json + vq_encode_grid.safetensors   the same on janus-pro-tiny-grid-hf

`--only-vq-encode` writes just the vq_encode goldens from the tiny checkpoints already on disk
(nothing else is regenerated).

Run through scripts/make-goldens.sh (pins the exact package versions).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import safetensors
import tokenizers
import transformers
from safetensors.torch import load_file, save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoTokenizer,
    JanusConfig,
    JanusForConditionalGeneration,
    JanusProcessor,
    JanusVisionConfig,
    JanusVQVAEConfig,
    LlamaConfig,
)

# ----------------------------------------------------------------------------------------------
# constants of the tiny model
# ----------------------------------------------------------------------------------------------

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
BOI = "<begin_of_image>"
EOI = "<end_of_image>"
IMG = "<image_placeholder>"
# added (special) tokens, in id order, right after the trained base vocabulary
ADDED_TOKENS = [
    BOS,
    EOS,
    PAD,
    BOI,
    EOI,
    IMG,
    "<patch_placeholder>",
    "<|ref|>",
    "<|/ref|>",
    "<|det|>",
    "<|/det|>",
    "<|grounding|>",
    "<|User|>",
    "<|Assistant|>",
]
ADDITIONAL_SPECIAL = [IMG, "<patch_placeholder>", "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>",
                      "<|grounding|>", "<|User|>", "<|Assistant|>"]

BASE_VOCAB = 400
LM_VOCAB = 512
D = 64  # LLM hidden size
IMAGE_SIZE = 32
PATCH = 4
NUM_IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2  # 64
CODEBOOK = 128
GUIDANCE = 5.0
DEFAULT_SEED = 10

# the grid checkpoint (janus-pro-tiny-grid-hf): vision patch 8 != VQ factor 2
GRID_D = 32
GRID_PATCH = 8
GRID_NUM_PATCHES = IMAGE_SIZE // GRID_PATCH  # 4
GRID_TOKENS = GRID_NUM_PATCHES ** 2  # 16
GRID_VQ_MULT = [1, 1]  # one upsampling: factor 2
GRID_VQ_FACTOR = 2 ** (len(GRID_VQ_MULT) - 1)
GRID_PIXELS = GRID_NUM_PATCHES * GRID_VQ_FACTOR  # 8
GRID_CODEBOOK = 64
GRID_SEED_OFFSET = 100

T2I_PROMPTS = [
    "a red bicycle leaning against a brick wall",
    "two cats sleeping on a sofa, photo",
]
UND_CASES = [
    ("square.png", "Describe this image."),
    ("wide.png", "What color is it?"),
]
TOKENIZER_STRINGS = [
    "Hello, how are you?",
    "a photo of a bench",
    "The year 2025 has 365 days; 12 months.",
    "一只猫",
    "a cat 🐱 on a mat 🎉",
    "  leading spaces\tand\ttabs\nnew line",
    "<|User|>: draw a dog\n\n<|Assistant|>:<begin_of_image>",
    "before <image_placeholder> after",
    "<begin_of_image><image_placeholder><image_placeholder><end_of_image>",
    "Ünïcödé naïve café — «quotes»",
]

# A deliberately simple chat template, equivalent (for the messages used here) to the template the
# transformers conversion script attaches to the converted Janus processors: user turns render as
# "<|User|>: " + content + "\n\n", image items as <image_placeholder> separated by "\n" from
# neighbouring items, text items stripped at the ends of the message, and the generation prompt is
# "<|Assistant|>:".
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] | lower == 'user' -%}{{ '<|User|>: ' }}"
    "{%- elif message['role'] | lower == 'assistant' -%}{{ '<|Assistant|>:' }}"
    "{%- if message['content'] | length > 0 -%}{{ ' ' }}{%- endif -%}"
    "{%- else -%}{{ (message['role'] | capitalize) + ': ' }}{%- endif -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}"
    "{%- if not loop.first -%}{{ '\\n' }}{%- endif -%}<image_placeholder>"
    "{%- if not loop.last -%}{{ '\\n' }}{%- endif -%}"
    "{%- elif item['type'] == 'text' -%}"
    "{%- set t = item['text'] -%}"
    "{%- if loop.first -%}{%- set t = t | trim -%}{%- endif -%}"
    "{%- if loop.last -%}{%- set t = t | trim -%}{%- endif -%}"
    "{%- if not loop.first and message['content'][loop.index0 - 1]['type'] == 'text' -%}{{ ' ' + t }}"
    "{%- else -%}{{ t }}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if not loop.last or add_generation_prompt -%}"
    "{%- if message['role'] | lower == 'user' -%}{{ '\\n\\n' }}"
    "{%- else -%}{{ '<｜end▁of▁sentence｜>' }}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|Assistant|>:{%- endif -%}"
)

EXTRA_SENTENCES = """\
Hello, how are you? I am fine, thank you. How are you doing today?
Describe this image. What color is it? What is shown in this picture?
You are a helpful language and vision assistant. You are able to understand the visual content that
the user provides, and assist the user with a variety of tasks using natural language.
A red bicycle is leaning against an old brick wall in the afternoon sun.
Two cats are sleeping on a soft blue sofa; one of them is orange and the other one is black.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
It was the best of times, it was the worst of times, it was the age of wisdom.
Numbers like 1, 2, 3, 10, 42, 100 and 2025 appear in text all the time.
Please answer the question in one short sentence, and then explain your reasoning.
The picture shows a small house with a green door, a garden, and a tall tree next to it.
There is a dog in the park, playing with a ball near the river under a cloudy sky.
""".strip().splitlines()


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def top2_margin(scores: torch.Tensor) -> float:
    v = torch.topk(scores.float(), 2, dim=-1).values
    return float((v[..., 0] - v[..., 1]).min())


# ----------------------------------------------------------------------------------------------
# 1. tokenizer
# ----------------------------------------------------------------------------------------------


def bpe_tokenizer(corpus: list, vocab_size: int) -> Tokenizer:
    """A byte-level BPE of `vocab_size` tokens trained on `corpus`, built as DeepSeek-LLM's (no
    special tokens yet)."""
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = None
    # DeepSeek-LLM style: a sequence of isolating splits, individual digits, then byte-level mapping
    # without its own regex.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[\r\n]"), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"\s?\p{L}+"), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"\s?\p{P}+"), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"[一-龥ࠀ-一가-퟿]+"), behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def build_tokenizer(out_dir: Path, geneval_path: Path) -> dict:
    corpus = []
    with open(geneval_path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                corpus.append(json.loads(line)["prompt"])
    corpus += EXTRA_SENTENCES
    return write_tokenizer(out_dir, corpus, BASE_VOCAB)


def write_tokenizer(out_dir: Path, corpus: list, base_vocab: int) -> dict:
    """A BPE of `base_vocab` tokens on `corpus` (`bpe_tokenizer`) plus the special tokens at
    `base_vocab..`, written to `out_dir` with its tokenizer config and special-token map
    (scripts/shapes/train.py writes its own on another corpus with this)."""
    tok = bpe_tokenizer(corpus, base_vocab)
    assert tok.get_vocab_size() == base_vocab, tok.get_vocab_size()
    tok.add_special_tokens(ADDED_TOKENS)
    ids = {t: tok.token_to_id(t) for t in ADDED_TOKENS}
    for i, t in enumerate(ADDED_TOKENS):
        assert ids[t] == base_vocab + i, (t, ids[t])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS}:0 $A:0",
        pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1",
        special_tokens=[(BOS, ids[BOS])],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"), pretty=True)
    write_json(
        out_dir / "tokenizer_config.json",
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "bos_token": BOS,
            "clean_up_tokenization_spaces": False,
            "eos_token": EOS,
            "legacy": True,
            "model_max_length": 16384,
            "pad_token": None,
            "sp_model_kwargs": {},
            "tokenizer_class": "LlamaTokenizer",
            "unk_token": None,
            "use_default_system_prompt": False,
        },
    )
    write_json(
        out_dir / "special_tokens_map.json",
        {
            "additional_special_tokens": ADDITIONAL_SPECIAL,
            "bos_token": BOS,
            "eos_token": EOS,
            "pad_token": PAD,
        },
    )
    return {"len": tok.get_vocab_size(), "ids": ids, "raw": tok}


# ----------------------------------------------------------------------------------------------
# 2. config + weights
# ----------------------------------------------------------------------------------------------


def janus_config(tok_ids: dict, d: int, text: dict, vision: dict, vq: dict) -> JanusConfig:
    """One tiny Janus config of LM width `d`; `text`, `vision` and `vq` hold what differs between
    the tiny models (the rest is the same for all)."""
    text_config = LlamaConfig(
        vocab_size=LM_VOCAB,
        hidden_size=d,
        num_key_value_heads=text["num_attention_heads"],
        hidden_act="silu",
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=tok_ids[BOS],
        eos_token_id=tok_ids[EOS],
        pad_token_id=tok_ids[PAD],
        tie_word_embeddings=False,
        **text,
    )
    vision_config = JanusVisionConfig(
        hidden_size=32, num_attention_heads=2, image_size=IMAGE_SIZE, projection_dim=d, depth=2, **vision
    )
    vq_config = JanusVQVAEConfig(
        embed_dim=8, base_channels=32, projection_dim=d, num_hidden_layers=2, image_token_embed_dim=d, **vq
    )
    return JanusConfig(
        text_config=text_config,
        vision_config=vision_config,
        vq_config=vq_config,
        image_token_id=tok_ids[IMG],
        tie_word_embeddings=False,
    )


def make_config(tok_ids: dict) -> JanusConfig:
    return janus_config(
        tok_ids,
        D,
        text=dict(intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256),
        vision=dict(num_hidden_layers=2, patch_size=PATCH, mlp_ratio=4.0, num_image_tokens=NUM_IMAGE_TOKENS),
        vq=dict(
            num_embeddings=CODEBOOK,
            latent_channels=32,
            channel_multiplier=[1, 1, 2],
            num_res_blocks=2,
            num_patches=IMAGE_SIZE // PATCH,
        ),
    )


def make_grid_config(tok_ids: dict) -> JanusConfig:
    """A smaller model whose vision patch (8) differs from the VQ's factor (2)."""
    return janus_config(
        tok_ids,
        GRID_D,
        text=dict(intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=128),
        vision=dict(num_hidden_layers=1, patch_size=GRID_PATCH, mlp_ratio=2.0, num_image_tokens=GRID_TOKENS),
        vq=dict(
            num_embeddings=GRID_CODEBOOK,
            latent_channels=8,
            channel_multiplier=GRID_VQ_MULT,
            num_res_blocks=0,  # one residual block per decoder level (and none in the unused encoder)
            num_patches=GRID_NUM_PATCHES,
        ),
    )


def make_grid_variant(out_dir: Path, tok, ids: dict, tok_info: dict, ip_kwargs: dict, seed: int,
                      special_tokens_map: Path) -> tuple:
    """Writes janus-pro-tiny-grid-hf (bf16 safetensors) and returns its t2i goldens."""
    from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

    cfg = make_grid_config(ids)
    assert cfg.vq_config.num_patches == GRID_NUM_PATCHES
    model = build_model(cfg, seed, tok_info["len"])
    set_generation_config(model, ids)
    image_processor = JanusImageProcessorPil(**ip_kwargs)
    processor = JanusProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        chat_template=CHAT_TEMPLATE,
        use_default_system_prompt=True,
        num_image_tokens=GRID_TOKENS,
    )
    processor.save_pretrained(str(out_dir))
    image_processor.save_pretrained(str(out_dir))
    shutil.copy(special_tokens_map, out_dir / "special_tokens_map.json")
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    model.to(torch.bfloat16).save_pretrained(str(out_dir))  # bf16-exact values: a lossless half-size file
    del model

    model = JanusForConditionalGeneration.from_pretrained(str(out_dir), dtype=torch.float32)
    model.eval()
    processor = JanusProcessor.from_pretrained(str(out_dir), backend="pil")
    if not isinstance(processor.image_processor, JanusImageProcessorPil):
        processor.image_processor = JanusImageProcessorPil.from_pretrained(str(out_dir))
    sd2 = model.state_dict()
    assert set(sd2) == set(sd) and all(torch.equal(sd2[k], sd[k]) for k in sd)
    assert model.config.vq_config.num_patches == GRID_NUM_PATCHES
    assert model.config.vision_config.num_image_tokens == GRID_TOKENS
    with torch.no_grad():
        meta, tensors, stats = t2i_goldens(model, processor, tok_info, n_tokens=GRID_TOKENS, hidden=GRID_D,
                                           codebook=GRID_CODEBOOK, tokenizer_vectors=False)
    for pi in range(len(T2I_PROMPTS)):
        assert tuple(tensors[f"p{pi}.pixels"].shape) == (1, GRID_PIXELS, GRID_PIXELS, 3)
    # the rule this checkpoint is here to pin down: image_size / vq_factor would say otherwise
    assert (IMAGE_SIZE // GRID_VQ_FACTOR) ** 2 != GRID_TOKENS
    return meta, tensors, stats


def init_scale(name: str, shape: tuple, gains: dict) -> tuple[str, float, float]:
    """Return (kind, mean, std) used to fill one parameter (HF name)."""
    if len(shape) == 1:
        if name.endswith(".bias"):
            return ("normal", 0.0, gains["bias"])
        return ("normal", 1.0, 0.1)  # LayerNorm / RMSNorm / GroupNorm weight
    if name.endswith("embed_tokens.weight"):
        return ("normal", 0.0, 1.0)
    if name.endswith("position_embedding.weight"):
        return ("normal", 0.0, 0.5)
    if name.endswith("generation_embeddings.weight") or name.endswith("quantize.embedding.weight"):
        return ("normal", 0.0, 1.0)
    fan_in = int(np.prod(shape[1:]))
    gain = 1.0
    for key, g in gains["by_suffix"].items():
        if name.endswith(key):
            gain = g
    return ("normal", 0.0, gain / math.sqrt(fan_in))


def fill_weights(model: torch.nn.Module, seed: int, gains: dict) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            _, mean, std = init_scale(name, tuple(p.shape), gains)
            t = torch.randn(tuple(p.shape), generator=g, dtype=torch.float32) * std + mean
            # bf16-exact: the same numbers are stored in the bf16 and the f32 checkpoints
            p.copy_(t.to(torch.bfloat16).to(torch.float32))


# ----------------------------------------------------------------------------------------------
# 3. original <-> transformers names
# ----------------------------------------------------------------------------------------------


def hf_to_original(sd: dict, attn_pool_seed: int, codebook_used_len: int = 1024) -> dict:
    """Invert transformers' conversion (spec §3.3): HF state dict -> original multi_modality names."""
    out = {}
    qkv = {}
    for k, v in sd.items():
        m = re.fullmatch(r"model\.vision_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", k)
        if m:
            qkv.setdefault((int(m.group(1)), m.group(3)), {})[m.group(2)] = v
            continue
        n = None
        if k.startswith("model.vision_model."):
            r = k[len("model.vision_model."):]
            if r == "embeddings.position_embedding.weight":
                out["vision_model.vision_tower.pos_embed"] = v.unsqueeze(0).contiguous()
                continue
            if r.startswith("embeddings.patch_embedding."):
                n = "patch_embed.proj." + r[len("embeddings.patch_embedding."):]
            elif r.startswith("post_layernorm."):
                n = "norm." + r[len("post_layernorm."):]
            else:
                m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.*)", r)
                assert m, k
                i, rest = m.group(1), m.group(2)
                rest = (rest.replace("self_attn.projection_layer.", "attn.proj.")
                        .replace("layer_norm1.", "norm1.").replace("layer_norm2.", "norm2."))
                assert rest.split(".")[0] in ("attn", "norm1", "norm2", "mlp"), k
                n = f"blocks.{i}.{rest}"
            n = "vision_model.vision_tower." + n
        elif k.startswith("model.aligner."):
            n = k.replace("model.aligner.fc1.", "aligner.layers.0.").replace(
                "model.aligner.hidden_layers.0.", "aligner.layers.2.")
        elif k.startswith("model.generation_aligner."):
            n = k.replace("model.generation_aligner.fc1.", "gen_aligner.layers.0.").replace(
                "model.generation_aligner.hidden_layers.0.", "gen_aligner.layers.2.")
        elif k.startswith("model.generation_head."):
            n = k.replace("model.generation_head.proj_out.", "gen_head.output_mlp_projector.").replace(
                "model.generation_head.vision_head.", "gen_head.vision_head.")
        elif k == "model.generation_embeddings.weight":
            n = "gen_embed.weight"
        elif k.startswith("model.vqmodel."):
            r = k[len("model.vqmodel."):]
            r = re.sub(r"^encoder\.down\.", "encoder.conv_blocks.", r)
            r = re.sub(r"^decoder\.up\.", "decoder.conv_blocks.", r)
            r = re.sub(r"\.block\.(\d+)\.", r".res.\1.", r)
            r = r.replace("mid.block_1.", "mid.0.").replace("mid.attn_1.", "mid.1.").replace("mid.block_2.", "mid.2.")
            n = "gen_vision_model." + r
        elif k.startswith("model.language_model."):
            n = "language_model.model." + k[len("model.language_model."):]
        elif k == "lm_head.weight":
            n = "language_model.lm_head.weight"
        assert n is not None and n not in out, k
        out[n] = v
    for (i, kind), parts in sorted(qkv.items()):
        out[f"vision_model.vision_tower.blocks.{i}.attn.qkv.{kind}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]], dim=0).contiguous()

    # original-only tensors: timm AttentionPoolLatent (MAP head, never executed) and the VQ usage buffer
    C = sd["model.vision_model.post_layernorm.weight"].shape[0]
    H = 4 * C
    g = torch.Generator().manual_seed(attn_pool_seed)

    def rnd(*shape, std=0.02, mean=0.0):
        return (torch.randn(shape, generator=g) * std + mean).to(torch.bfloat16).to(torch.float32)

    p = "vision_model.vision_tower.attn_pool."
    out[p + "latent"] = rnd(1, 1, C, std=C ** -0.5)
    out[p + "q.weight"] = rnd(C, C, std=C ** -0.5)
    out[p + "q.bias"] = rnd(C)
    out[p + "kv.weight"] = rnd(2 * C, C, std=C ** -0.5)
    out[p + "kv.bias"] = rnd(2 * C)
    out[p + "proj.weight"] = rnd(C, C, std=C ** -0.5)
    out[p + "proj.bias"] = rnd(C)
    out[p + "norm.weight"] = rnd(C, std=0.1, mean=1.0)
    out[p + "norm.bias"] = rnd(C)
    out[p + "mlp.fc1.weight"] = rnd(H, C, std=C ** -0.5)
    out[p + "mlp.fc1.bias"] = rnd(H)
    out[p + "mlp.fc2.weight"] = rnd(C, H, std=H ** -0.5)
    out[p + "mlp.fc2.bias"] = rnd(C)
    out["gen_vision_model.quantize.codebook_used"] = torch.zeros(codebook_used_len)
    return dict(sorted(out.items()))


def original_to_hf(sd: dict) -> dict:
    """Forward mapping original -> transformers (spec §3.3), written independently as a cross-check."""
    out = {}
    for k, v in sd.items():
        if k.startswith("vision_model.vision_tower.attn_pool.") or k == "gen_vision_model.quantize.codebook_used":
            continue
        if k.startswith("vision_model.vision_tower."):
            r = k[len("vision_model.vision_tower."):]
            if r == "pos_embed":
                out["model.vision_model.embeddings.position_embedding.weight"] = v.squeeze(0)
                continue
            m = re.fullmatch(r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r)
            if m:
                q, kk, vv = torch.chunk(v, 3, dim=0)
                base = f"model.vision_model.encoder.layers.{m.group(1)}.self_attn."
                out[base + f"q_proj.{m.group(2)}"] = q
                out[base + f"k_proj.{m.group(2)}"] = kk
                out[base + f"v_proj.{m.group(2)}"] = vv
                continue
            if r.startswith("patch_embed.proj."):
                out["model.vision_model.embeddings.patch_embedding." + r.split(".")[-1]] = v
                continue
            if r.startswith("norm."):
                out["model.vision_model.post_layernorm." + r.split(".")[-1]] = v
                continue
            m = re.fullmatch(r"blocks\.(\d+)\.(attn\.proj|norm1|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)", r)
            assert m, k
            sub = {"attn.proj": "self_attn.projection_layer", "norm1": "layer_norm1", "norm2": "layer_norm2",
                   "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}[m.group(2)]
            out[f"model.vision_model.encoder.layers.{m.group(1)}.{sub}.{m.group(3)}"] = v
            continue
        m = re.fullmatch(r"(gen_aligner|aligner)\.layers\.([02])\.(weight|bias)", k)
        if m:
            mod = "generation_aligner" if m.group(1) == "gen_aligner" else "aligner"
            lay = "fc1" if m.group(2) == "0" else "hidden_layers.0"
            out[f"model.{mod}.{lay}.{m.group(3)}"] = v
            continue
        if k.startswith("gen_head."):
            out["model.generation_head." + k[len("gen_head."):].replace("output_mlp_projector", "proj_out")] = v
            continue
        if k == "gen_embed.weight":
            out["model.generation_embeddings.weight"] = v
            continue
        if k.startswith("gen_vision_model."):
            r = k[len("gen_vision_model."):]
            parts = r.split(".")
            if parts[0] in ("encoder", "decoder") and parts[1] == "conv_blocks":
                parts[1] = "down" if parts[0] == "encoder" else "up"
                if parts[3] == "res":
                    parts[3] = "block"
            if parts[0] in ("encoder", "decoder") and parts[1] == "mid":
                parts[2] = {"0": "block_1", "1": "attn_1", "2": "block_2"}[parts[2]]
            out["model.vqmodel." + ".".join(parts)] = v
            continue
        if k.startswith("language_model.model."):
            out["model.language_model." + k[len("language_model.model."):]] = v
            continue
        if k == "language_model.lm_head.weight":
            out["lm_head.weight"] = v
            continue
        raise KeyError(k)
    return out


# ----------------------------------------------------------------------------------------------
# files of the original-format directory
# ----------------------------------------------------------------------------------------------


def original_config(cfg: JanusConfig) -> dict:
    t = cfg.text_config
    v = cfg.vision_config
    q = cfg.vq_config
    return {
        "aligner_config": {
            "cls": "MlpProjector",
            "model_type": "aligner",
            "params": {"depth": v.depth, "input_dim": v.hidden_size, "n_embed": v.projection_dim,
                       "projector_type": "mlp_gelu"},
        },
        "architectures": ["MultiModalityCausalLM"],
        "gen_aligner_config": {
            "cls": "MlpProjector",
            "model_type": "gen_aligner",
            "params": {"depth": q.num_hidden_layers, "input_dim": q.embed_dim, "n_embed": q.projection_dim,
                       "projector_type": "mlp_gelu"},
        },
        "gen_head_config": {
            "cls": "vision_head",
            "model_type": "gen_head",
            "params": {"image_token_embed": q.image_token_embed_dim, "image_token_size": q.num_embeddings,
                       "n_embed": q.projection_dim},
        },
        "gen_vision_config": {
            "cls": "VQ-16",
            "model_type": "gen_vision",
            "params": {
                "image_token_size": q.num_embeddings,
                "n_embed": q.embed_dim,
                # tiny-model convention (the released configs carry only the two keys above; the real
                # VQ-16 is built from code defaults): LlamaGen ModelArgs-style architecture keys.
                "encoder_ch_mult": list(q.channel_multiplier),
                "decoder_ch_mult": list(q.channel_multiplier),
                "z_channels": q.latent_channels,
                "ch": q.base_channels,
                "num_res_blocks": q.num_res_blocks,
                # tiny-model convention: the constants of the reference generation script
                # (generation_inference.py: 576 tokens, img_size 384, patch_size 16 = the VQ's
                # downsampling), which a released config never states, for this model's size.
                "image_token_num_per_image": NUM_IMAGE_TOKENS,
                "img_size": IMAGE_SIZE,
                "patch_size": 2 ** (len(q.channel_multiplier) - 1),
            },
        },
        "language_config": {
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "max_position_embeddings": t.max_position_embeddings,
            "model_type": "llama",
            "num_attention_heads": t.num_attention_heads,
            "num_hidden_layers": t.num_hidden_layers,
            "num_key_value_heads": t.num_key_value_heads,
            "rms_norm_eps": t.rms_norm_eps,
            "rope_theta": float(t.rope_parameters["rope_theta"]),
            "torch_dtype": "bfloat16",
            "vocab_size": t.vocab_size,
        },
        "model_type": "multi_modality",
        "torch_dtype": "bfloat16",
        "transformers_version": "4.38.2",
        "vision_config": {
            "cls": "CLIPVisionTower",
            "model_type": "vision",
            "params": {
                "image_size": v.image_size,
                "model_name": "siglip_tiny_test",
                "select_feature": "same",
                "select_layer": -1,
                "width": v.hidden_size,
                "layers": v.num_hidden_layers,
                "heads": v.num_attention_heads,
                "patch_size": v.patch_size,
                "mlp_ratio": float(v.mlp_ratio),
            },
        },
    }


def original_preprocessor_files(out_dir: Path) -> None:
    write_json(
        out_dir / "preprocessor_config.json",
        {
            "background_color": [127, 127, 127],
            "do_normalize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_processor_type": "VLMImageProcessor",
            "image_size": IMAGE_SIZE,
            "image_std": [0.5, 0.5, 0.5],
            "min_size": 14,
            "processor_class": "VLChatProcessor",
            "rescale_factor": 0.00392156862745098,
        },
    )
    write_json(
        out_dir / "processor_config.json",
        {
            "add_special_token": False,
            "ignore_id": -100,
            "image_tag": IMG,
            "mask_prompt": True,
            "num_image_tokens": NUM_IMAGE_TOKENS,
            "processor_class": "VLChatProcessor",
            "sft_format": "deepseek",
        },
    )


def split_two(names: list[str], sd: dict) -> tuple[list[str], list[str]]:
    total = sum(tensor_bytes(sd[n]) for n in names)
    acc, first = 0, []
    for n in names:
        if acc >= total / 2:
            break
        first.append(n)
        acc += tensor_bytes(sd[n])
    return first, [n for n in names if n not in set(first)]


# ----------------------------------------------------------------------------------------------
# test images
# ----------------------------------------------------------------------------------------------


def make_images(img_dir: Path) -> dict:
    img_dir.mkdir(parents=True, exist_ok=True)

    def pattern(w, h, phase):
        y, x = np.mgrid[0:h, 0:w].astype(np.float64)
        r = 127.5 + 120 * np.sin(2 * np.pi * (x / w) + phase)
        g = 127.5 + 120 * np.cos(2 * np.pi * (y / h) * 1.5 + phase)
        b = 255.0 * (x + y) / (w + h - 2)
        return np.clip(np.rint(np.stack([r, g, b], -1)), 0, 255).astype(np.uint8)

    Image.fromarray(pattern(32, 32, 0.0), "RGB").save(img_dir / "square.png")
    Image.fromarray(pattern(60, 24, 1.0), "RGB").save(img_dir / "wide.png")
    # portrait, resized to 19x32 (odd width -> pad offset 6); JPEG so that decoding is exercised too
    Image.fromarray(pattern(24, 40, 2.0), "RGB").save(img_dir / "tall.jpg", quality=95, subsampling=0)
    # 64x29 -> 29 * 0.5 = 14.5 exactly: Python round() (half to even) gives 14, not 15
    Image.fromarray(pattern(64, 29, 3.0), "RGB").save(img_dir / "half.png")
    # a CMYK JPEG (Adobe-style inverted CMYK, as Pillow writes it) of a plain gradient; the Rust
    # test checks its decoded colours against the gradient (model/tests/images.rs)
    grad = np.zeros((20, 30, 3), np.uint8)
    grad[..., 0] = np.arange(30)[None, :] * 8
    grad[..., 1] = np.arange(20)[:, None] * 12
    grad[..., 2] = 90
    Image.fromarray(grad).convert("CMYK").save(img_dir / "cmyk.jpg", quality=95)
    return {n: img_dir / n for n in ("square.png", "wide.png", "tall.jpg", "half.png")}


# ----------------------------------------------------------------------------------------------
# goldens
# ----------------------------------------------------------------------------------------------


def postprocess_pixels(processor, nhwc: torch.Tensor) -> np.ndarray:
    """uint8 [N, H, W, 3] exactly as processor.postprocess(..., return_tensors="PIL.Image.Image") makes them.

    The images are handed over channels-first: with transformers' PIL backend (no torchvision
    installed) postprocess mis-infers the channel axis of the NHWC tensors that
    post_process_multimodal_output passes and raises; channels-first input goes through the same
    unnormalize -> rescale -> clip -> astype(uint8) steps.
    """
    chw = [im.permute(2, 0, 1).float() for im in nhwc]
    pil = processor.postprocess(chw, return_tensors="PIL.Image.Image")["pixel_values"]
    out = np.stack([np.asarray(im) for im in pil]).astype(np.uint8)
    assert out.shape == tuple(nhwc.shape), out.shape
    return out


def manual_t2i(model, input_ids: torch.Tensor, uncond_ids: torch.Tensor, steps: int) -> tuple[list, list]:
    """Independent greedy CFG loop (dynamic cache, explicit positions 0..L-1 then L+s) used to
    cross-check what transformers' generate does."""
    from transformers import DynamicCache

    lm = model.model.language_model
    ids = torch.cat([input_ids, uncond_ids], 0)
    emb = lm.embed_tokens(ids)
    L = ids.shape[1]
    cache = DynamicCache(config=model.config.text_config)
    toks, hid = [], []
    pos = torch.arange(L).unsqueeze(0).expand(2, -1)
    for s in range(steps):
        out = lm(inputs_embeds=emb, position_ids=pos, cache=cache, use_cache=True)
        h = out.last_hidden_state[:, -1, :]
        hid.append(h)
        logits = model.model.generation_head(h)
        cond, unc = logits[0:1], logits[1:2]
        guided = unc + (cond - unc) * GUIDANCE
        t = int(torch.argmax(guided, -1))
        toks.append(t)
        emb = model.prepare_embeddings_for_image_generation(torch.tensor([[t], [t]]))
        pos = torch.full((2, 1), L + s)
    return toks, hid


def saved_steps(n_tokens: int) -> list[int]:
    return sorted({s for s in (0, 1, 2, 31, n_tokens - 1) if s < n_tokens})


def t2i_goldens(model, processor, tok_info, n_tokens: int = NUM_IMAGE_TOKENS, hidden: int = D,
                codebook: int = CODEBOOK, tokenizer_vectors: bool = True) -> tuple[dict, dict, dict]:
    tokenizer = processor.tokenizer
    bos_id, pad_id, boi_id = tok_info["ids"][BOS], tok_info["ids"][PAD], tok_info["ids"][BOI]
    tensors, meta_prompts, stats = {}, [], {"margins": [], "unique_tokens": []}
    save_steps = saved_steps(n_tokens)

    lm = model.model.language_model
    for pi, prompt in enumerate(T2I_PROMPTS):
        messages = [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
        chat = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        expected_chat = f"<|User|>: {prompt}\n\n<|Assistant|>:"
        assert chat == expected_chat, (chat, expected_chat)
        inputs = processor(text=chat, generation_mode="image", return_tensors="pt")
        full_text = chat + BOI
        ref_ids = tokenizer(full_text, return_tensors="pt").input_ids
        assert torch.equal(inputs.input_ids, ref_ids), (inputs.input_ids, ref_ids)
        input_ids = inputs.input_ids
        assert int(input_ids[0, 0]) == bos_id and int((input_ids == bos_id).sum()) == 1
        assert int(input_ids[0, -1]) == boi_id
        uncond = input_ids.clone()
        uncond[(uncond != bos_id) & (uncond != boi_id)] = pad_id

        caps_h, caps_l = [], []
        hooks = [
            lm.register_forward_hook(lambda m, a, o: caps_h.append(o.last_hidden_state.detach().clone())),
            model.model.generation_head.register_forward_hook(lambda m, a, o: caps_l.append(o.detach().clone())),
        ]
        try:
            tokens = model.generate(
                **inputs,
                generation_mode="image",
                do_sample=False,
                guidance_scale=GUIDANCE,
                num_return_sequences=1,
            )
        finally:
            for h in hooks:
                h.remove()
        assert tokens.shape == (1, n_tokens), tokens.shape
        assert len(caps_h) == n_tokens and len(caps_l) == n_tokens
        assert caps_h[0].shape == (2, input_ids.shape[1], hidden)
        tokens_l = tokens[0].tolist()

        margins = []
        for s in range(n_tokens):
            lg = caps_l[s]
            guided = lg[1:2] + (lg[0:1] - lg[1:2]) * GUIDANCE
            assert int(torch.argmax(guided)) == tokens_l[s]
            margins.append(top2_margin(guided))
        stats["margins"].append(min(margins))
        stats["unique_tokens"].append(len(set(tokens_l)))

        # independent re-implementation must agree with transformers' generate
        mtoks, mhid = manual_t2i(model, input_ids, uncond, n_tokens)
        assert mtoks == tokens_l, "manual CFG loop disagrees with transformers generate"
        max_hdiff = max(float((mhid[s] - caps_h[s][:, -1, :]).abs().max()) for s in range(n_tokens))
        assert max_hdiff < 1e-4, max_hdiff

        for s in save_steps:
            tensors[f"p{pi}.step{s}.hidden"] = caps_h[s][:, -1, :].contiguous().clone()
            tensors[f"p{pi}.step{s}.logits"] = caps_l[s].contiguous().clone()
        if pi == 0:
            tensors["p0.prefill_hidden"] = caps_h[0][0].contiguous().clone()
        tensors[f"p{pi}.tokens"] = tokens.to(torch.int64).contiguous().clone()

        with torch.no_grad():
            dec = model.decode_image_tokens(tokens)  # NHWC
        pix = postprocess_pixels(processor, dec)
        tensors[f"p{pi}.pixels"] = torch.from_numpy(pix.astype(np.uint8))
        stats.setdefault("gen_unsaturated_fraction", []).append(float(((pix >= 1) & (pix <= 254)).mean()))

        meta_prompts.append(
            {
                "prompt": prompt,
                "chat_text": chat,
                "text": full_text,
                "input_ids": input_ids[0].tolist(),
                "uncond_ids": uncond[0].tolist(),
                "attention_mask": inputs.attention_mask[0].tolist(),
                "image_tokens": tokens_l,
                "min_top2_margin": min(margins),
                "margins": margins,
                "manual_loop_max_abs_hidden_diff": max_hdiff,
            }
        )

    # VQ decode of a fixed grid
    vq_tokens = [(i * 37 + 11) % codebook for i in range(n_tokens)]
    with torch.no_grad():
        tt = torch.tensor([vq_tokens])
        decoded = model.model.vqmodel.decode(tt)  # NCHW
        nhwc = model.decode_image_tokens(tt)
    assert torch.equal(decoded.permute(0, 2, 3, 1), nhwc)
    pix = postprocess_pixels(processor, nhwc)
    # the formula the Rust side implements: trunc(clip(((x + 1) / 2) * 255, 0, 255)) in f32
    x = nhwc.float().numpy()
    formula = np.clip(((x + np.float32(1)) / np.float32(2)) * np.float32(255), 0, 255).astype(np.uint8)
    stats["postprocess_formula_mismatches"] = int((formula != pix).sum())
    tensors["vq.decoded"] = decoded.contiguous().clone()
    tensors["vq.pixels"] = torch.from_numpy(pix)
    stats["vq_unsaturated_fraction"] = float(((pix >= 1) & (pix <= 254)).mean())
    stats["vq_decoded_range"] = [float(decoded.min()), float(decoded.max())]

    tok_vectors = []
    for s in TOKENIZER_STRINGS if tokenizer_vectors else []:
        ids = tokenizer(s).input_ids
        raw = tok_info["raw"].encode(s).ids
        assert ids == raw, (s, ids, raw)
        tok_vectors.append(
            {
                "text": s,
                "ids": ids,
                "tokens": tokenizer.convert_ids_to_tokens(ids),
                "decoded_skip_special": tokenizer.decode(ids, skip_special_tokens=True),
                "decoded": tokenizer.decode(ids, skip_special_tokens=False),
            }
        )
    meta = {"prompts": meta_prompts, "vq_tokens": vq_tokens}
    if tokenizer_vectors:
        meta["tokenizer_vectors"] = tok_vectors
    return meta, tensors, stats


def und_goldens(model, processor, images: dict, tok_info) -> tuple[dict, dict, dict]:
    tensors, cases, stats = {}, [], {"margins": []}
    eos_id = tok_info["ids"][EOS]
    ip = processor.image_processor
    # preprocessing vectors for every test image
    prep = {}
    for name, path in images.items():
        img = Image.open(path).convert("RGB")
        pv = ip(images=img, return_tensors="pt").pixel_values
        assert pv.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE), pv.shape
        key = Path(name).stem
        with torch.no_grad():
            vis = model.model.vision_model(pv).last_hidden_state
            al = model.model.aligner(vis)
        tensors[f"{key}.pixel_values"] = pv.contiguous().clone()
        tensors[f"{key}.vision"] = vis.contiguous().clone()
        tensors[f"{key}.aligned"] = al.contiguous().clone()
        tensors[f"{key}.rgb"] = torch.from_numpy(np.asarray(img).copy())
        w, h = img.size
        delta = IMAGE_SIZE / max(w, h)
        rw, rh = max(round(w * delta), 14), max(round(h * delta), 14)
        prep[name] = {
            "file": f"assets/tiny/images/{name}",
            "width": w,
            "height": h,
            "resized_width": rw,
            "resized_height": rh,
            "pad_left": (IMAGE_SIZE - rw) // 2 if rw < IMAGE_SIZE else 0,
            "pad_top": (IMAGE_SIZE - rh) // 2 if rh < IMAGE_SIZE else 0,
        }

    for ci, (name, question) in enumerate(UND_CASES):
        img = Image.open(images[name]).convert("RGB")
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        chat = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert chat == f"<|User|>: <image_placeholder>\n{question}\n\n<|Assistant|>:", repr(chat)
        inputs = processor(text=chat, images=img, generation_mode="text", return_tensors="pt")
        from transformers.models.janus.processing_janus import DEFAULT_SYSTEM_PROMPT

        full_text = DEFAULT_SYSTEM_PROMPT + chat
        expanded = full_text.replace(IMG, BOI + IMG * NUM_IMAGE_TOKENS + EOI)
        ref_ids = processor.tokenizer(expanded, return_tensors="pt").input_ids
        assert torch.equal(ref_ids, inputs.input_ids)
        assert tok_info["raw"].encode(expanded).ids == inputs.input_ids[0].tolist()
        assert torch.equal(inputs.pixel_values, tensors[f"{Path(name).stem}.pixel_values"])
        n_img = int((inputs.input_ids == model.config.image_token_id).sum())
        assert n_img == NUM_IMAGE_TOKENS
        out = model.generate(
            **inputs,
            max_new_tokens=24,
            do_sample=False,
            generation_mode="text",
            return_dict_in_generate=True,
            output_logits=True,
        )
        L = inputs.input_ids.shape[1]
        new_ids = out.sequences[0, L:].tolist()
        margins = [top2_margin(lg[0]) for lg in out.logits]
        stats["margins"].append(min(margins))
        # prefill check: final hidden at all positions of the prompt (with image features merged)
        with torch.no_grad():
            fwd = model(**inputs)
        tensors[f"u{ci}.logits0"] = fwd.logits[0, -1].contiguous().clone()
        assert int(torch.argmax(fwd.logits[0, -1])) == new_ids[0]
        with torch.no_grad():
            base = model.model(**inputs)
        tensors[f"u{ci}.last_hidden"] = base.last_hidden_state[0, -1].contiguous().clone()
        tensors[f"u{ci}.prefill_hidden"] = base.last_hidden_state[0].contiguous().clone()
        cases.append(
            {
                "image": name,
                "question": question,
                "chat_text": chat,
                "text": full_text,
                "expanded_text_len": len(expanded),
                "input_ids": inputs.input_ids[0].tolist(),
                "num_image_tokens": n_img,
                "image_token_positions": [
                    int(inputs.input_ids[0].tolist().index(model.config.image_token_id)),
                    int(L - 1 - inputs.input_ids[0].tolist()[::-1].index(model.config.image_token_id)),
                ],
                "generated_ids": new_ids,
                "hit_eos": eos_id in new_ids,
                "generated_text": processor.tokenizer.decode(new_ids, skip_special_tokens=True),
                "min_top2_margin": min(margins),
                "margins": margins,
            }
        )
    meta = {"images": prep, "cases": cases, "system_prompt": DEFAULT_SYSTEM_PROMPT}
    return meta, tensors, stats


# ----------------------------------------------------------------------------------------------
# VQ encoder goldens (image -> z -> codebook indices)
# ----------------------------------------------------------------------------------------------

VQ_ENCODE_IMAGES = ["square.png", "wide.png"]
VQ_ENCODE_VARIANTS = [("vq_encode", "janus-pro-tiny-hf"), ("vq_encode_grid", "janus-pro-tiny-grid-hf")]


def vq_encode_pixels(path: Path, size: int) -> np.ndarray:
    """The encoder input, as the Rust side makes it: RGB, the whole image resized (no crop, no
    pad, aspect not kept) to size x size with PIL bicubic (skipped when already that size), then
    x / 127.5 - 1 in f32; [1, 3, S, S]."""
    im = Image.open(path).convert("RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.BICUBIC)
    a = np.asarray(im).astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return np.ascontiguousarray(a.transpose(2, 0, 1)[None])


def vq_encode_goldens(model, img_dir: Path) -> tuple[dict, dict]:
    """transformers' JanusVQVAE encoder + quant_conv on fixed images, then the ORIGINAL quantizer
    rule (deepseek-ai/Janus VectorQuantizer, codebook_l2_norm=True): z and the codebook rows
    F.normalize'd, squared distances (in f64, from the f32 z), argmin (first on ties).
    transformers' own encode() skips the normalisation; its indices are kept for comparison only."""
    vq = model.model.vqmodel
    grid = vq.config.num_patches
    f = 2 ** (len(vq.config.channel_multiplier) - 1)
    size = grid * f
    cb = vq.quantize.embedding.weight.detach()
    cbn = torch.nn.functional.normalize(cb.double(), p=2, dim=-1, eps=1e-12)
    tensors, cases = {}, []
    for name in VQ_ENCODE_IMAGES:
        stem = Path(name).stem
        src = Image.open(img_dir / name)
        px = torch.from_numpy(vq_encode_pixels(img_dir / name, size))
        with torch.no_grad():
            z = vq.quant_conv(vq.encoder(px))  # [1, e, g, g] f32
            hf_idx = vq.encode(px).image_tokens.reshape(-1).tolist()
        assert z.shape == (1, cb.shape[1], grid, grid), z.shape
        rows = z.permute(0, 2, 3, 1).reshape(-1, cb.shape[1]).double()
        zn = torch.nn.functional.normalize(rows, p=2, dim=-1, eps=1e-12)
        d = ((zn[:, None, :] - cbn[None, :, :]) ** 2).sum(-1)  # [g*g, K]
        idx = torch.argmin(d, dim=1)
        top2 = torch.topk(d, 2, dim=1, largest=False).values
        gaps = (top2[:, 1] - top2[:, 0]).tolist()
        # the raw rule (no normalisation), in f64, to show that the normalisation matters
        raw = torch.argmin(((rows[:, None, :] - cb.double()[None]) ** 2).sum(-1), dim=1).tolist()
        tensors[f"{stem}.pixels"] = px.contiguous()
        tensors[f"{stem}.z"] = z.contiguous().clone()
        cases.append(
            {
                "image": name,
                "source_size": list(src.size),
                "indices": idx.tolist(),
                "best_two_gap": gaps,
                "min_best_two_gap": min(gaps),
                "unnormalized_indices": raw,
                "transformers_encode_indices": hf_idx,
                "positions_where_normalization_changes_the_index": int(sum(a != b for a, b in zip(idx.tolist(), raw))),
                "unique_indices": len(set(idx.tolist())),
                "z_range": [float(z.min()), float(z.max())],
            }
        )
    meta = {
        "grid_size": grid,
        "image_size": size,
        "downsample": f,
        "codebook_size": cb.shape[0],
        "embed_dim": cb.shape[1],
        "codebook_row_norms_range": [float(cb.norm(dim=1).min()), float(cb.norm(dim=1).max())],
        "resize": "RGB; the whole image resized to image_size x image_size (aspect not kept, no crop or pad) with "
                  "PIL Image.resize BICUBIC, skipped when already that size",
        "normalize": "pixel = f32(u8) / 127.5 - 1 (f32), CHW; the pixels are stored as <image>.pixels",
        "z": "<image>.z = quant_conv(encoder(pixels)) of transformers' JanusVQVAE, f32",
        "rule": "original VectorQuantizer (codebook_l2_norm=True): F.normalize(z) and F.normalize(codebook) "
                "(eps 1e-12), squared Euclidean distances in f64, argmin (first on ties); best_two_gap = "
                "second-smallest minus smallest distance per position (raster order)",
        "cases": cases,
    }
    return meta, tensors


def write_vq_encode_goldens(tiny: Path, golden: Path, versions: dict) -> None:
    for out_name, variant in VQ_ENCODE_VARIANTS:
        model = JanusForConditionalGeneration.from_pretrained(str(tiny / variant), dtype=torch.float32)
        model.eval()
        meta, tensors = vq_encode_goldens(model, tiny / "images")
        js = {
            "generator": "scripts/make_goldens.py",
            "model_dir": f"assets/tiny/{variant}",
            "versions": versions,
            "dtype": "float32",
            "device": "cpu",
        }
        js.update(meta)
        write_json(golden / f"{out_name}.json", js)
        save_file(dict(sorted(tensors.items())), str(golden / f"{out_name}.safetensors"), metadata={"format": "pt"})
        for c in meta["cases"]:
            log(f"{out_name} {c['image']}: min gap {c['min_best_two_gap']:.3g}, unique {c['unique_indices']}, "
                f"normalisation changes {c['positions_where_normalization_changes_the_index']} of {len(c['indices'])}")


def versions_now() -> dict:
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "pillow": Image.__version__,
    }


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------


GAINS = {
    "bias": 0.02,
    "by_suffix": {
        "generation_head.vision_head.weight": 4.0,
        "lm_head.weight": 4.0,
        "decoder.conv_out.weight": 0.5,
        # sharper attention so that the context (prompt, image features) actually steers the output
        "self_attn.q_proj.weight": 2.0,
        "self_attn.k_proj.weight": 2.0,
    },
    # lm_head rows of ids the tokenizer does not have (tokenizer_len..vocab_size) are scaled by this
    # power of two (exact in bf16), so that greedy text decoding stays on real tokens
    "lm_head_unused_rows": 0.25,
}


def build_model(cfg: JanusConfig, seed: int, tokenizer_len: int) -> JanusForConditionalGeneration:
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(cfg)
    model.eval()
    fill_weights(model, seed, GAINS)
    with torch.no_grad():
        model.lm_head.weight[tokenizer_len:] *= GAINS["lm_head_unused_rows"]
    assert model.lm_head.weight.data_ptr() != model.model.language_model.embed_tokens.weight.data_ptr()
    return model


def set_generation_config(model, ids: dict, guidance: float = GUIDANCE) -> None:
    gc = model.generation_config
    gc._from_model_config = False
    gc.bos_token_id = ids[BOS]
    gc.eos_token_id = ids[EOS]
    gc.pad_token_id = ids[PAD]
    gc.temperature = 1.0
    gc.guidance_scale = guidance
    gc.generation_kwargs = {"boi_token_id": ids[BOI]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = Path(__file__).resolve().parent.parent
    ap.add_argument("--assets", type=Path, default=repo / "assets", help="output root (default: repo assets/)")
    ap.add_argument("--geneval", type=Path, default=repo.parent / "shared" / "geneval" / "evaluation_metadata.jsonl",
                    help="GenEval prompts used as part of the tokenizer training corpus")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--only-vq-encode", action="store_true",
                    help="write only the vq_encode goldens, from the tiny checkpoints already in --assets")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    assets: Path = args.assets
    tiny, golden = assets / "tiny", assets / "golden"
    if args.only_vq_encode:
        write_vq_encode_goldens(tiny, golden, versions_now())
        log("done")
        return
    d_hf = tiny / "janus-pro-tiny-hf"
    d_orig = tiny / "janus-pro-tiny"
    d_shard = tiny / "janus-pro-tiny-sharded"
    d_hfbin = tiny / "janus-pro-tiny-hf-bin"
    d_grid = tiny / "janus-pro-tiny-grid-hf"
    for d in (d_hf, d_orig, d_shard, d_hfbin, d_grid, golden, tiny / "images"):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)

    if not args.geneval.exists():
        sys.exit(f"error: {args.geneval} not found (the tokenizer is trained on these prompts; pass --geneval)")
    geneval = args.geneval
    # 1. tokenizer (original-style files) -> into the original-format dirs
    tok_info = build_tokenizer(d_orig, geneval)
    ids = tok_info["ids"]
    log("tokenizer:", tok_info["len"], ids)
    tok = AutoTokenizer.from_pretrained(
        str(d_orig),
        extra_special_tokens={"image_token": IMG, "boi_token": BOI, "eoi_token": EOI},
    )
    hello = tok("Hello, how are you?").input_ids
    assert hello[0] == ids[BOS] and hello.count(ids[BOS]) == 1, hello
    assert len(tok) == tok_info["len"] and len(tok) < LM_VOCAB

    # 2. config, weights, processor -> transformers dir
    cfg = make_config(ids)
    model = build_model(cfg, args.seed, tok_info["len"])
    set_generation_config(model, ids)
    from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

    ip_kwargs = dict(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        min_size=14,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_normalize=True,
        rescale_factor=1 / 255,
    )
    # transformers' PIL backend (PIL bicubic on uint8). It is what transformers picks when torchvision is
    # not installed (the pinned environment); the goldens are pinned to it either way.
    image_processor = JanusImageProcessorPil(**ip_kwargs)
    processor = JanusProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        chat_template=CHAT_TEMPLATE,
        use_default_system_prompt=True,
        num_image_tokens=NUM_IMAGE_TOKENS,
    )
    processor.save_pretrained(str(d_hf))
    # like the converted hub repos: also a standalone preprocessor_config.json and special_tokens_map.json
    image_processor.save_pretrained(str(d_hf))
    shutil.copy(d_orig / "special_tokens_map.json", d_hf / "special_tokens_map.json")
    model.save_pretrained(str(d_hf))
    hf_sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    del model

    # 3. reload exactly as a user would, and check the weights survived
    model = JanusForConditionalGeneration.from_pretrained(str(d_hf), dtype=torch.float32)
    model.eval()
    processor = JanusProcessor.from_pretrained(str(d_hf), backend="pil")
    if not isinstance(processor.image_processor, JanusImageProcessorPil):
        log(f"note: replacing {type(processor.image_processor).__name__} by JanusImageProcessorPil")
        processor.image_processor = JanusImageProcessorPil.from_pretrained(str(d_hf))
    sd2 = model.state_dict()
    assert set(sd2) == set(hf_sd), set(sd2) ^ set(hf_sd)
    for k in hf_sd:
        assert torch.equal(sd2[k], hf_sd[k]), k
    assert not torch.equal(sd2["lm_head.weight"], sd2["model.language_model.embed_tokens.weight"])
    on_disk = load_file(str(d_hf / "model.safetensors"))
    assert set(on_disk) == set(hf_sd), set(on_disk) ^ set(hf_sd)
    for k, v in on_disk.items():
        assert v.dtype == torch.float32 and torch.equal(v, hf_sd[k]), k
        assert torch.equal(v.to(torch.bfloat16).to(torch.float32), v), f"{k} not bf16-exact"

    # 4. original-format variants
    orig = hf_to_original(hf_sd, attn_pool_seed=args.seed + 1)
    back = original_to_hf(orig)
    assert set(back) == set(hf_sd), set(back) ^ set(hf_sd)
    for k in hf_sd:
        assert torch.equal(back[k], hf_sd[k]), k
    ocfg = original_config(model.config)
    for d in (d_orig, d_shard):
        if d != d_orig:
            for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                shutil.copy(d_orig / f, d / f)
        write_json(d / "config.json", ocfg)
        original_preprocessor_files(d)
    bf16 = {k: v.to(torch.bfloat16).contiguous().clone() for k, v in orig.items()}
    torch.save(bf16, d_orig / "pytorch_model.bin")
    names = list(orig)
    s1, s2 = split_two(names, orig)
    shard_files = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    weight_map = {}
    for fname, part in zip(shard_files, (s1, s2)):
        save_file({n: orig[n].contiguous() for n in part}, str(d_shard / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    write_json(d_shard / "model.safetensors.index.json",
               {"metadata": {"total_size": sum(tensor_bytes(orig[n]) for n in names)},
                "weight_map": dict(sorted(weight_map.items()))})

    # transformers names, sharded f32 pickle
    for f in os.listdir(d_hf):
        if not f.endswith(".safetensors") and f != "model.safetensors.index.json":
            shutil.copy(d_hf / f, d_hfbin / f)
    hnames = sorted(hf_sd)
    h1, h2 = split_two(hnames, hf_sd)
    bin_files = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    wm = {}
    for fname, part in zip(bin_files, (h1, h2)):
        torch.save({n: hf_sd[n].contiguous().clone() for n in part}, d_hfbin / fname)
        wm.update({n: fname for n in part})
    write_json(d_hfbin / "pytorch_model.bin.index.json",
               {"metadata": {"total_size": sum(tensor_bytes(hf_sd[n]) for n in hnames)},
                "weight_map": dict(sorted(wm.items()))})

    # every variant must load back to the same HF state dict
    loaded_orig = torch.load(d_orig / "pytorch_model.bin", map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.bfloat16 for v in loaded_orig.values())
    chk = original_to_hf({k: v.float() for k, v in loaded_orig.items()})
    assert all(torch.equal(chk[k], hf_sd[k]) for k in hf_sd) and set(chk) == set(hf_sd)
    sh = {}
    for f in shard_files:
        sh.update(load_file(str(d_shard / f)))
    chk = original_to_hf(sh)
    assert all(torch.equal(chk[k], hf_sd[k]) for k in hf_sd) and set(chk) == set(hf_sd)
    m2 = JanusForConditionalGeneration.from_pretrained(str(d_hfbin), dtype=torch.float32)
    assert all(torch.equal(v, hf_sd[k]) for k, v in m2.state_dict().items())
    del m2

    # 5. goldens
    images = make_images(tiny / "images")
    with torch.no_grad():
        t2i_meta, t2i_t, t2i_stats = t2i_goldens(model, processor, tok_info)
        und_meta, und_t, und_stats = und_goldens(model, processor, images, tok_info)
    grid_meta, grid_t, grid_stats = make_grid_variant(d_grid, tok, ids, tok_info, ip_kwargs,
                                                      args.seed + GRID_SEED_OFFSET, d_orig / "special_tokens_map.json")

    common = {
        "generator": "scripts/make_goldens.py",
        "model_dir": "assets/tiny/janus-pro-tiny-hf",
        "versions": versions_now(),
        "seed": args.seed,
        "tokenizer_corpus_sha256": hashlib.sha256(geneval.read_bytes()).hexdigest(),
        "init_gains": GAINS,
        "dtype": "float32",
        "device": "cpu",
        "special_token_ids": {t: ids[t] for t in ADDED_TOKENS},
        "tokenizer_len": tok_info["len"],
        "lm_vocab_size": LM_VOCAB,
        "image_token_id": model.config.image_token_id,
    }
    t2i_json = dict(common)
    t2i_json.update(
        {
            "guidance_scale": GUIDANCE,
            "num_image_tokens": NUM_IMAGE_TOKENS,
            "saved_steps": saved_steps(NUM_IMAGE_TOKENS),
            "cfg_layout": "block-wise: row 0 = conditional, row 1 = unconditional",
            "cfg_formula": "guided = uncond + (cond - uncond) * guidance_scale (f32), argmax",
            "min_top2_margin": min(t2i_stats["margins"]),
            "unique_image_tokens_per_prompt": t2i_stats["unique_tokens"],
            "vq_unsaturated_fraction": t2i_stats["vq_unsaturated_fraction"],
            "generated_unsaturated_fraction": t2i_stats["gen_unsaturated_fraction"],
            "vq_decoded_range": t2i_stats["vq_decoded_range"],
            "postprocess": "pixels = uint8(trunc(clip(((x + 1) / 2) * 255, 0, 255))) on the NHWC f32 decoder output",
            "postprocess_formula_mismatches": t2i_stats["postprocess_formula_mismatches"],
        }
    )
    t2i_json.update(t2i_meta)
    und_json = dict(common)
    und_json.update(
        {
            "image_processor_class": type(processor.image_processor).__name__,
            "resize": "long side -> 32: new = max(round(side * 32 / max(w, h)), 14) with Python round() "
                      "(half to even), PIL Image.resize BICUBIC on the uint8 RGB image; then centered pad to "
                      "32x32 with (127,127,127): offset (32 - short) // 2",
            "normalize": "v = f32(u8 * (1/255) computed in f64); pixel = (v - 0.5) / 0.5 in f32; CHW",
            "max_new_tokens": 24,
            "min_top2_margin": min(und_stats["margins"]),
        }
    )
    und_json.update(und_meta)

    write_json(golden / "t2i.json", t2i_json)
    save_file(dict(sorted(t2i_t.items())), str(golden / "t2i.safetensors"), metadata={"format": "pt"})
    write_json(golden / "und.json", und_json)
    save_file(dict(sorted(und_t.items())), str(golden / "und.safetensors"), metadata={"format": "pt"})
    grid_json = dict(common)
    grid_json.update(
        {
            "model_dir": "assets/tiny/janus-pro-tiny-grid-hf",
            "seed": args.seed + GRID_SEED_OFFSET,
            "guidance_scale": GUIDANCE,
            "num_image_tokens": GRID_TOKENS,
            "grid_size": GRID_NUM_PATCHES,
            "image_size": GRID_PIXELS,
            "vision_image_size": IMAGE_SIZE,
            "vision_patch_size": GRID_PATCH,
            "vq_upsampling": GRID_VQ_FACTOR,
            "rule": "transformers: vision_config.num_image_tokens tokens, decoded on the vq num_patches grid "
                    "(= vision image_size // patch_size); pixels = num_patches * VQ upsampling",
            "saved_steps": saved_steps(GRID_TOKENS),
            "min_top2_margin": min(grid_stats["margins"]),
            "unique_image_tokens_per_prompt": grid_stats["unique_tokens"],
            "vq_decoded_range": grid_stats["vq_decoded_range"],
            "postprocess_formula_mismatches": grid_stats["postprocess_formula_mismatches"],
        }
    )
    grid_json.update(grid_meta)
    write_json(golden / "t2i_grid.json", grid_json)
    save_file(dict(sorted(grid_t.items())), str(golden / "t2i_grid.safetensors"), metadata={"format": "pt"})
    write_vq_encode_goldens(tiny, golden, common["versions"])

    log("t2i min margin per prompt:", t2i_stats["margins"], "unique tokens:", t2i_stats["unique_tokens"])
    log("vq unsaturated fraction:", t2i_stats["vq_unsaturated_fraction"], "range", t2i_stats["vq_decoded_range"],
        "gen:", t2i_stats["gen_unsaturated_fraction"], "formula mismatches:", t2i_stats["postprocess_formula_mismatches"])
    log("und min margin per case:", und_stats["margins"])
    log("grid t2i min margin per prompt:", grid_stats["margins"], "unique tokens:", grid_stats["unique_tokens"])
    for c in und_meta["cases"]:
        log("und", c["image"], c["generated_ids"], "eos:", c["hit_eos"])
    log("done")


if __name__ == "__main__":
    main()
