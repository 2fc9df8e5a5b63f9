#!/usr/bin/env python3
"""Train the tiny "coloured shapes" Janus (issue 27) on the CPU, from scratch, and write it as

  assets/shapes/janus-shapes-hf/   transformers `janus` format (bf16 safetensors of bf16-exact
                                   weights, processor + tokenizer files, like assets/tiny/janus-pro-tiny-hf)
  assets/shapes/janus-shapes/      original deepseek `multi_modality` format (bf16 pytorch_model.bin;
                                   names and config written by scripts/make_goldens.py's code)
  assets/shapes/train-log.txt      losses and wall time
  assets/shapes/train-settings.json   the settings of the run (= the argparse defaults unless overridden)

Stages (one process; the data is scripts/shapes/dataset.py, deterministic from the seed):

  0. tokenizer: a byte-level BPE in the DeepSeek style (the same pre-tokenizer, decoder and special
     tokens as the tiny tokenizer of scripts/make_goldens.py), trained on the shapes templates and
     the understanding system prompt, so that every word of a caption is one token.
  1. VQ tokenizer (model.vqmodel): reconstruction (MSE + L1) + codebook + commitment losses with the
     straight-through estimator, using the ORIGINAL Janus quantizer rule (deepseek VectorQuantizer,
     codebook_l2_norm=True): the encoder vectors and the codebook rows are both L2-normalised before
     the nearest-neighbour search and the decoder gets the normalised codebook row (which is what
     transformers' get_codebook_entry and the Rust decoder feed it). transformers' own
     JanusVQVAEVectorQuantizer.forward does NOT normalise; it is not used. Unused codes are restarted
     from encoder outputs during the first part of training.
  2. LM (frozen VQ): generation and understanding trained jointly, one batch of each per step:
       t2i: "<BOS><|User|>: {prompt}\\n\\n<|Assistant|>:<begin_of_image>" + the 64 VQ tokens of the
            image (teacher forcing; embedded by generation_embeddings -> generation_aligner; logits by
            generation_head). With probability p_uncond the prompt tokens (all but BOS and BOI) are
            replaced by pad, the unconditional row of classifier-free guidance.
       und: "<BOS>{system prompt}\\n\\n<|User|>: <begin_of_image><image_placeholder>*64<end_of_image>\\n
            {question}\\n\\n<|Assistant|>:" + " {answer}<EOS>", image features from vision_model ->
            aligner at the placeholders; loss on the answer tokens (and EOS) only. Question kinds are
            drawn with und_kind_weights. An auxiliary linear head (training only, not saved) makes
            every vision patch token classify the shape covering it (background/circle/square/triangle).
  3. weights rounded to bf16, written in both formats, reloaded and checked, a short evaluation.

Run (final, about 45-55 min on two shared cores):
  nice -n 10 /tmp/gold-venv/bin/python scripts/shapes/train.py
Smoke (2 min):
  nice -n 10 /tmp/gold-venv/bin/python scripts/shapes/train.py --threads 1 --vq-steps 60 --lm-steps 60 \\
      --n-train 512 --out-root /tmp/shapes-smoke
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import dataset as ds  # noqa: E402
import make_goldens as mg  # noqa: E402  (tokenizer constants, chat template, format conversion)
from transformers import (  # noqa: E402
    AutoTokenizer,
    JanusConfig,
    JanusForConditionalGeneration,
    JanusProcessor,
    JanusVisionConfig,
    JanusVQVAEConfig,
    LlamaConfig,
)
from transformers.models.janus.processing_janus import DEFAULT_SYSTEM_PROMPT  # noqa: E402

BOS, EOS, PAD, BOI, EOI, IMG = mg.BOS, mg.EOS, mg.PAD, mg.BOI, mg.EOI, mg.IMG

DEFAULTS = dict(
    seed=27,
    threads=1,  # one thread was twice as fast as two on the shared (loaded) two-core machine
    # tokenizer
    base_vocab=448,  # + 14 special tokens (ids 448..461) < the LM vocab 512
    lm_vocab=512,
    # sizes
    image_size=32,  # vision input and VQ output
    patch=4,  # vision patch -> 8x8 = 64 image tokens; the VQ downsamples 4x (channel_multiplier [1,1,2]) -> 8x8
    hidden=128,
    layers=4,
    heads=4,
    intermediate=256,
    max_positions=256,
    vision_hidden=64,
    vision_layers=4,
    vision_heads=4,
    vq_base_channels=32,
    vq_channel_multiplier=[1, 1, 2],
    vq_res_blocks=1,
    vq_latent_channels=32,
    vq_embed_dim=8,
    codebook=128,
    guidance=5.0,
    # data
    n_train=20000,  # images of the LM stage (seed `seed`); the VQ stage draws fresh ones (seed + 1)
    # VQ stage
    vq_steps=1200,
    vq_batch=32,
    vq_lr=2e-3,
    vq_beta=0.25,
    vq_restart_every=100,
    vq_restart_until=0.6,  # fraction of vq_steps during which dead codes are restarted
    # LM stage
    lm_steps=3000,
    lm_batch=32,
    lm_lr=2e-3,
    lm_warmup=150,
    lm_min_lr_ratio=0.05,
    weight_decay=0.01,
    grad_clip=1.0,
    p_uncond=0.12,
    p_alt_prompt=0.3,  # t2i: the second prompt of the sample (other order / no position) instead of the caption
    # und: the share of each question kind (dataset.QUESTION_KINDS), then a question of that kind
    und_kind_weights=dict(describe=0.25, colour_of_shape=0.2, colour_at=0.1, shape_at=0.15, shape_of_colour=0.1,
                          where=0.1, count=0.1),
    # auxiliary loss during training only (the head is not saved): every vision patch token
    # classifies the shape covering it (background / circle / square / triangle)
    aux_shape_weight=0.5,
    und_weight=1.0,
    log_every=50,
)


def log(fh, *a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    if fh is not None:
        fh.write(s + "\n")
        fh.flush()


# ----------------------------------------------------------------------------------------------
# tokenizer (the construction of scripts/make_goldens.py's build_tokenizer, on another corpus)
# ----------------------------------------------------------------------------------------------


def tokenizer_corpus() -> list:
    qs = sorted({q for s in ds.make_dataset(200, 0) for q, _ in s.qa} | set(ds.DESCRIBE_QUESTIONS))
    return (ds.all_prompt_texts() + [DEFAULT_SYSTEM_PROMPT.strip()] * 100 + qs * 40
            + ["\n\n<|Assistant|>:", "<|User|>: "] * 40 + mg.EXTRA_SENTENCES)


def build_tokenizer(out_dir: Path, base_vocab: int) -> dict:
    return mg.write_tokenizer(out_dir, tokenizer_corpus(), base_vocab)


# ----------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------


def make_config(a, ids: dict) -> JanusConfig:
    grid = a.image_size // a.patch
    f = 2 ** (len(a.vq_channel_multiplier) - 1)
    assert grid * f == a.image_size, "the VQ grid must match the vision grid"
    text = LlamaConfig(
        vocab_size=a.lm_vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
        num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.heads,
        max_position_embeddings=a.max_positions, hidden_act="silu", rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=ids[BOS], eos_token_id=ids[EOS], pad_token_id=ids[PAD], tie_word_embeddings=False,
    )
    vision = JanusVisionConfig(
        hidden_size=a.vision_hidden, num_attention_heads=a.vision_heads, image_size=a.image_size,
        patch_size=a.patch, num_hidden_layers=a.vision_layers, projection_dim=a.hidden, depth=2,
        mlp_ratio=4.0, num_image_tokens=grid * grid,
    )
    vq = JanusVQVAEConfig(
        embed_dim=a.vq_embed_dim, base_channels=a.vq_base_channels, projection_dim=a.hidden,
        num_hidden_layers=2, image_token_embed_dim=a.hidden, num_embeddings=a.codebook,
        latent_channels=a.vq_latent_channels, channel_multiplier=list(a.vq_channel_multiplier),
        num_res_blocks=a.vq_res_blocks, num_patches=grid,
    )
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=ids[IMG],
                       tie_word_embeddings=False)


def to_vq_input(images: np.ndarray) -> torch.Tensor:
    """uint8 [N,S,S,3] -> [N,3,S,S] f32 in [-1, 1]: x / 127.5 - 1 (the Rust VQ encoder's input)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_vision_input(images: np.ndarray) -> torch.Tensor:
    """uint8 [N,S,S,3] -> [N,3,S,S]: (x / 255 - 0.5) / 0.5 (the Janus image processor, no resize)."""
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() * (1 / 255) - 0.5) / 0.5


def quantize_l2(vq, z: torch.Tensor):
    """The original quantizer rule on z [B,e,g,g]: returns (normalised z rows, normalised codebook
    rows chosen, indices [B*g*g], normalised codebook)."""
    e = z.shape[1]
    zf = z.permute(0, 2, 3, 1).reshape(-1, e)
    zn = F.normalize(zf, p=2, dim=-1)
    cbn = F.normalize(vq.quantize.embedding.weight, p=2, dim=-1)
    d = (zn * zn).sum(1, keepdim=True) + (cbn * cbn).sum(1)[None] - 2 * zn @ cbn.t()
    idx = d.argmin(1)
    return zn, cbn[idx], idx, cbn


@torch.no_grad()
def vq_encode(vq, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    out = []
    for i in range(0, len(images), batch):
        z = vq.quant_conv(vq.encoder(to_vq_input(images[i:i + batch])))
        out.append(quantize_l2(vq, z)[2].view(z.shape[0], -1))
    return torch.cat(out)


def vq_decode(vq, tokens: torch.Tensor) -> torch.Tensor:
    """tokens [B, g*g] -> [B,3,S,S] (transformers' decode: get_codebook_entry normalises)."""
    return vq.decode(tokens)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[B,3,S,S] decoder output -> uint8 [B,S,S,3], the postprocess formula (trunc of clip)."""
    y = ((x.permute(0, 2, 3, 1).float() + 1) / 2 * 255).clamp(0, 255)
    return y.to(torch.uint8).numpy()


# ----------------------------------------------------------------------------------------------
# stage 1: VQ
# ----------------------------------------------------------------------------------------------


def train_vq(model, a, fh) -> dict:
    vq = model.model.vqmodel
    vq.train()
    for m in vq.modules():  # PyTorch's default conv init trains faster than transformers' N(0, 0.02)
        if isinstance(m, torch.nn.Conv2d):
            m.reset_parameters()
    params = [p for p in vq.parameters()]
    opt = torch.optim.Adam(params, lr=a.vq_lr, betas=(0.9, 0.99))
    rng = np.random.default_rng([a.seed, 1])
    K = a.codebook
    usage = torch.zeros(K)
    t0 = time.time()
    hist = []
    for step in range(a.vq_steps):
        lr = a.vq_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / a.vq_steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        imgs = np.stack([ds.make_sample(rng, a.image_size).image for _ in range(a.vq_batch)])
        x = to_vq_input(imgs)
        z = vq.quant_conv(vq.encoder(x))
        zn, q, idx, _ = quantize_l2(vq, z)
        cb_loss = F.mse_loss(q, zn.detach())
        commit = F.mse_loss(zn, q.detach())
        q_st = zn + (q - zn).detach()
        B, e, g, _ = z.shape
        h = q_st.view(B, g, g, e).permute(0, 3, 1, 2)
        y = vq.decoder(vq.post_quant_conv(h))
        rec = F.mse_loss(y, x) + F.l1_loss(y, x)
        loss = rec + cb_loss + a.vq_beta * commit
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        usage += torch.bincount(idx, minlength=K).float()
        if (step + 1) % a.vq_restart_every == 0:
            dead = (usage == 0).nonzero().flatten()
            if len(dead) and step < a.vq_restart_until * a.vq_steps:
                with torch.no_grad():
                    pick = torch.from_numpy(rng.choice(zn.shape[0], len(dead), replace=len(dead) > zn.shape[0]))
                    vq.quantize.embedding.weight[dead] = zn.detach()[pick] + 0.01 * torch.randn(len(dead), e)
            used = int((usage > 0).sum())
            usage.zero_()
        else:
            used = None
        if step % a.log_every == 0 or step == a.vq_steps - 1 or used is not None and (step + 1) % (a.log_every * 4) == 0:
            hist.append(dict(step=step, rec=rec.item(), codebook=cb_loss.item(), commit=commit.item(), lr=lr,
                             time=time.time() - t0))
            log(fh, f"vq step {step:5d} rec {rec.item():.4f} codebook {cb_loss.item():.4f} commit "
                    f"{commit.item():.4f} lr {lr:.2e}" + (f" codes used (last {a.vq_restart_every} steps) {used}"
                                                          if used is not None else "")
                + f" t {time.time() - t0:.0f}s")
    vq.eval()
    # held-out reconstruction quality
    test = np.stack([s.image for s in ds.make_dataset(256, a.seed + 1000, a.image_size)])
    with torch.no_grad():
        tokens = vq_encode(vq, test)
        rec = to_uint8(vq_decode(vq, tokens))
    err = np.abs(rec.astype(np.int32) - test.astype(np.int32))
    ctest = ds.classify_pixels(test.reshape(-1, a.image_size, 3))
    crec = ds.classify_pixels(rec.reshape(-1, a.image_size, 3))
    stats = dict(vq_time_s=time.time() - t0, heldout_mean_abs_err=float(err.mean()),
                 heldout_psnr=float(10 * np.log10(255 ** 2 / ((err.astype(np.float64) ** 2).mean()))),
                 heldout_pixel_class_agreement=float((ctest == crec).mean()),
                 heldout_codes_used=int(len(torch.unique(tokens))))
    log(fh, "vq held-out:", json.dumps(stats))
    return dict(stats, history=hist)


# ----------------------------------------------------------------------------------------------
# stage 2: LM (generation + understanding)
# ----------------------------------------------------------------------------------------------


class Batches:
    def __init__(self, a, tokenizer, ids: dict, pool: list, tokens: torch.Tensor, n_img: int):
        self.a, self.tok, self.ids, self.pool, self.tokens, self.n_img = a, tokenizer, ids, pool, tokens, n_img
        self.rng = np.random.default_rng([a.seed, 2])
        self.images = np.stack([s.image for s in pool])
        self.patch_shapes = patch_shape_labels(pool, a.patch)
        self._t2i, self._und, self._ans = {}, {}, {}
        self.kinds = list(a.und_kind_weights)
        w = np.array([a.und_kind_weights[k] for k in self.kinds], np.float64)
        self.kind_p = w / w.sum()

    def t2i_ids(self, prompt: str) -> list:
        if prompt not in self._t2i:
            self._t2i[prompt] = self.tok(t2i_text(prompt)).input_ids
        return self._t2i[prompt]

    def und_ids(self, question: str) -> list:
        if question not in self._und:
            self._und[question] = self.tok(und_text(question, self.n_img)).input_ids
        return self._und[question]

    def ans_ids(self, answer: str) -> list:
        if answer not in self._ans:
            self._ans[answer] = self.tok(" " + answer, add_special_tokens=False).input_ids + [self.ids[EOS]]
        return self._ans[answer]

    def t2i(self):
        a, r = self.a, self.rng
        idx = r.integers(len(self.pool), size=a.lm_batch)
        seqs = []
        for i in idx:
            p = self.pool[i].prompts
            ids = list(self.t2i_ids(p[1] if r.random() < a.p_alt_prompt else p[0]))
            if r.random() < a.p_uncond:
                ids = [ids[0]] + [self.ids[PAD]] * (len(ids) - 2) + [ids[-1]]
            seqs.append(ids)
        lens = torch.tensor([len(s) for s in seqs])
        text = torch.full((len(seqs), int(lens.max())), self.ids[PAD], dtype=torch.long)
        for b, s in enumerate(seqs):
            text[b, :len(s)] = torch.tensor(s)
        return text, lens, self.tokens[torch.from_numpy(idx)]

    def und(self):
        a, r = self.a, self.rng
        idx = r.integers(len(self.pool), size=a.lm_batch)
        seqs, labels = [], []
        for i in idx:
            kind = self.kinds[r.choice(len(self.kinds), p=self.kind_p)]
            qa = [x for x in self.pool[i].qa if ds.question_kind(x[0]) == kind]
            q, ans = qa[r.integers(len(qa))]
            p, t = self.und_ids(q), self.ans_ids(ans)
            seqs.append(p + t)
            labels.append([-100] * len(p) + t)
        L = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), L), self.ids[PAD], dtype=torch.long)
        lab = torch.full((len(seqs), L), -100, dtype=torch.long)
        for b, (s, l) in enumerate(zip(seqs, labels)):
            ids[b, :len(s)] = torch.tensor(s)
            lab[b, :len(l)] = torch.tensor(l)
        return ids, lab, to_vision_input(self.images[idx]), torch.from_numpy(self.patch_shapes[idx])


def patch_shape_labels(pool: list, patch: int) -> np.ndarray:
    """[N, patches] int64: per vision patch (raster order) 0 = background, else 1 + the index in
    dataset.SHAPES of the object whose colour covers most of the patch (at least 4 pixels)."""
    out = []
    for i in range(0, len(pool), 1000):
        chunk = pool[i:i + 1000]
        cls = np.stack([ds.classify_pixels(s.image) for s in chunk])  # [n, S, S]
        n, S, _ = cls.shape
        g = S // patch
        c = cls.reshape(n, g, patch, g, patch).transpose(0, 1, 3, 2, 4).reshape(n, g * g, patch * patch)
        counts = np.stack([(c == k).sum(-1) for k in range(len(ds.COLOURS))], -1)  # [n, P, 4]
        best = counts.argmax(-1)
        lab = np.zeros((n, g * g), np.int64)
        for j, s in enumerate(chunk):
            shape_of = {list(ds.COLOURS).index(o.colour): 1 + ds.SHAPES.index(o.shape) for o in s.objects}
            for k, v in shape_of.items():
                lab[j][(best[j] == k) & (counts[j].max(-1) >= 4)] = v
        out.append(lab)
    return np.concatenate(out)


def t2i_text(prompt: str) -> str:
    return f"<|User|>: {prompt}\n\n<|Assistant|>:{BOI}"


def und_text(question: str, n_img: int) -> str:
    chat = f"<|User|>: {IMG}\n{question}\n\n<|Assistant|>:"
    return (DEFAULT_SYSTEM_PROMPT + chat).replace(IMG, BOI + IMG * n_img + EOI)


def t2i_loss(model, text: torch.Tensor, lens: torch.Tensor, img_tokens: torch.Tensor):
    """Teacher-forced image-token loss; rows are [text (len l), image tokens (n)] + right padding."""
    B, Lt = text.shape
    n = img_tokens.shape[1]
    lm = model.model.language_model
    te = lm.embed_tokens(text)  # [B, Lt, d]
    ie = model.prepare_embeddings_for_image_generation(img_tokens)  # [B, n, d]
    both = torch.cat([te, ie], 1)  # [B, Lt + n, d]
    j = torch.arange(Lt + n)[None].expand(B, -1)
    l = lens[:, None]
    src = torch.where(j < l, j, torch.where(j < l + n, Lt + (j - l), j - n))
    emb = torch.gather(both, 1, src[..., None].expand(-1, -1, both.shape[-1]))
    h = lm(inputs_embeds=emb).last_hidden_state
    pos = (l - 1) + torch.arange(n)[None]  # the hidden state at BOI predicts token 0
    hp = torch.gather(h, 1, pos[..., None].expand(-1, -1, h.shape[-1]))
    logits = model.model.generation_head(hp)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), img_tokens.reshape(-1))


def und_loss(model, ids: torch.Tensor, labels: torch.Tensor, pixel_values: torch.Tensor,
             patch_shapes: torch.Tensor, aux_head: torch.nn.Module):
    """Answer-token loss, as JanusModel.forward merges the image (vision_model -> aligner at the
    placeholder ids), plus the auxiliary per-patch shape loss on the vision output."""
    vis = model.model.vision_model(pixel_values).last_hidden_state  # [B, P, v]
    feats = model.model.aligner(vis)
    emb = model.model.language_model.embed_tokens(ids)
    m_img = (ids == model.config.image_token_id)[..., None]
    emb = emb.masked_scatter(m_img, feats.reshape(-1, feats.shape[-1]).to(emb.dtype))
    h = model.model.language_model(inputs_embeds=emb).last_hidden_state
    tgt = labels[:, 1:]
    m = tgt != -100
    logits = model.lm_head(h[:, :-1][m])
    loss = F.cross_entropy(logits, tgt[m])
    acc = float((logits.argmax(-1) == tgt[m]).float().mean())
    aux_logits = aux_head(vis)
    aux = F.cross_entropy(aux_logits.reshape(-1, aux_logits.shape[-1]), patch_shapes.reshape(-1))
    aux_acc = float((aux_logits.argmax(-1) == patch_shapes).float().mean())
    return loss, acc, aux, aux_acc


def train_lm(model, a, fh, batches: Batches) -> dict:
    vq = model.model.vqmodel
    for p in vq.parameters():
        p.requires_grad_(False)
    model.train()
    vq.eval()
    aux_head = torch.nn.Linear(model.config.vision_config.hidden_size, 1 + len(ds.SHAPES))
    params = [p for p in model.parameters() if p.requires_grad] + list(aux_head.parameters())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=a.lm_lr, betas=(0.9, 0.98))
    t0 = time.time()
    hist = []
    acc_t2i = acc_und = acc_a = acc_aux = acc_aux_a = 0.0
    nacc = 0
    for step in range(a.lm_steps):
        if step < a.lm_warmup:
            lr = a.lm_lr * (step + 1) / a.lm_warmup
        else:
            pr = (step - a.lm_warmup) / max(1, a.lm_steps - a.lm_warmup)
            lr = a.lm_lr * (a.lm_min_lr_ratio + (1 - a.lm_min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * pr)))
        for g in opt.param_groups:
            g["lr"] = lr
        text, lens, toks = batches.t2i()
        lt = t2i_loss(model, text, lens, toks)
        ids, lab, pv, ps = batches.und()
        lu, acc, la, aacc = und_loss(model, ids, lab, pv, ps, aux_head)
        loss = lt + a.und_weight * lu + a.aux_shape_weight * la
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, a.grad_clip)
        opt.step()
        acc_t2i += lt.item()
        acc_und += lu.item()
        acc_a += acc
        acc_aux += la.item()
        acc_aux_a += aacc
        nacc += 1
        if (step + 1) % a.log_every == 0 or step == a.lm_steps - 1 or step == 0:
            rec = dict(step=step + 1, t2i=acc_t2i / nacc, und=acc_und / nacc, und_token_acc=acc_a / nacc,
                       aux_shape=acc_aux / nacc, aux_shape_acc=acc_aux_a / nacc,
                       grad_norm=float(gn), lr=lr, time=time.time() - t0)
            hist.append(rec)
            log(fh, f"lm step {step + 1:5d} t2i {rec['t2i']:.4f} und {rec['und']:.4f} und-acc "
                    f"{rec['und_token_acc']:.3f} aux {rec['aux_shape']:.3f} aux-acc {rec['aux_shape_acc']:.3f} |g| {float(gn):.2f} lr {lr:.2e} t {rec['time']:.0f}s cpu {time.process_time():.0f}s")
            acc_t2i = acc_und = acc_a = acc_aux = acc_aux_a = 0.0
            nacc = 0
    model.eval()
    return dict(lm_time_s=time.time() - t0, history=hist)


# ----------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------


def write_outputs(model, a, tok_dir: Path, d_hf: Path, d_orig: Path, ids: dict, fh) -> None:
    from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

    for d in (d_hf, d_orig):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    with torch.no_grad():  # bf16-exact values: the bf16 files hold exactly the weights evaluated
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    mg.set_generation_config(model, ids, a.guidance)
    n_img = model.config.vision_config.num_image_tokens
    tok = AutoTokenizer.from_pretrained(str(tok_dir), extra_special_tokens={
        "image_token": IMG, "boi_token": BOI, "eoi_token": EOI})
    ip = JanusImageProcessorPil(size={"height": a.image_size, "width": a.image_size}, min_size=14,
                                image_mean=[0.5] * 3, image_std=[0.5] * 3, do_normalize=True, rescale_factor=1 / 255)
    proc = JanusProcessor(image_processor=ip, tokenizer=tok, chat_template=mg.CHAT_TEMPLATE,
                          use_default_system_prompt=True, num_image_tokens=n_img)
    proc.save_pretrained(str(d_hf))
    ip.save_pretrained(str(d_hf))
    shutil.copy(tok_dir / "special_tokens_map.json", d_hf / "special_tokens_map.json")
    hf_sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    model.to(torch.bfloat16).save_pretrained(str(d_hf))
    model.to(torch.float32)

    # original format: the names, config and processor files of make_goldens.py's janus-pro-tiny
    assert mg.IMAGE_SIZE == a.image_size and mg.NUM_IMAGE_TOKENS == n_img, \
        "make_goldens.original_config writes IMAGE_SIZE / NUM_IMAGE_TOKENS of the tiny model"
    orig = mg.hf_to_original(hf_sd, attn_pool_seed=a.seed + 1)
    back = mg.original_to_hf(orig)
    assert set(back) == set(hf_sd) and all(torch.equal(back[k], hf_sd[k]) for k in hf_sd)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tok_dir / f, d_orig / f)
    mg.write_json(d_orig / "config.json", mg.original_config(model.config))
    mg.original_preprocessor_files(d_orig)
    torch.save({k: v.to(torch.bfloat16).contiguous().clone() for k, v in orig.items()}, d_orig / "pytorch_model.bin")

    # reload both and compare
    m2 = JanusForConditionalGeneration.from_pretrained(str(d_hf), dtype=torch.float32)
    sd2 = m2.state_dict()
    assert set(sd2) == set(hf_sd) and all(torch.equal(sd2[k], hf_sd[k]) for k in hf_sd)
    lo = torch.load(d_orig / "pytorch_model.bin", map_location="cpu", weights_only=True)
    chk = mg.original_to_hf({k: v.float() for k, v in lo.items()})
    assert set(chk) == set(hf_sd) and all(torch.equal(chk[k], hf_sd[k]) for k in hf_sd)
    size = sum(f.stat().st_size for f in d_hf.iterdir())
    log(fh, f"wrote {d_hf} ({size / 1e6:.1f} MB) and {d_orig}; both reload to the trained weights")


def check_prompt_format(d_hf: Path, batches: Batches) -> None:
    """The hand-built token sequences must equal what JanusProcessor makes."""
    from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

    proc = JanusProcessor.from_pretrained(str(d_hf), backend="pil")
    if not isinstance(proc.image_processor, JanusImageProcessorPil):
        proc.image_processor = JanusImageProcessorPil.from_pretrained(str(d_hf))
    s = batches.pool[0]
    chat = proc.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": s.caption}]}],
                                    add_generation_prompt=True, tokenize=False)
    inp = proc(text=chat, generation_mode="image", return_tensors="pt")
    assert inp.input_ids[0].tolist() == batches.t2i_ids(s.caption), "t2i prompt differs from the processor's"
    q = s.qa[3][0]
    chat = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
                                    add_generation_prompt=True, tokenize=False)
    from PIL import Image

    inp = proc(text=chat, images=Image.fromarray(s.image), generation_mode="text", return_tensors="pt")
    assert inp.input_ids[0].tolist() == batches.und_ids(q), "und prompt differs from the processor's"
    pv = to_vision_input(s.image[None])
    assert torch.allclose(inp.pixel_values, pv, atol=1e-6), float((inp.pixel_values - pv).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for k, v in DEFAULTS.items():
        if isinstance(v, dict):
            ap.add_argument("--" + k.replace("_", "-"), type=json.loads, default=v)
        elif isinstance(v, list):
            ap.add_argument("--" + k.replace("_", "-"), type=type(v[0]), nargs="+", default=v)
        else:
            ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    ap.add_argument("--out-root", type=Path, default=REPO / "assets" / "shapes",
                    help="writes janus-shapes-hf/, janus-shapes/, train-log.txt, train-settings.json here")
    ap.add_argument("--no-eval", action="store_true", help="skip the short evaluation at the end")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    root: Path = a.out_root
    root.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(a, k) for k in DEFAULTS}
    mg.write_json(root / "train-settings.json", settings)
    fh = open(root / "train-log.txt", "w")
    t_start = time.time()
    log(fh, "settings:", json.dumps(settings))
    log(fh, "versions:", json.dumps(mg.versions_now()))

    with tempfile.TemporaryDirectory(prefix="shapes-tok-") as td:
        tok_dir = Path(td)
        info = build_tokenizer(tok_dir, a.base_vocab)
        ids = info["ids"]
        tok = AutoTokenizer.from_pretrained(str(tok_dir), extra_special_tokens={
            "image_token": IMG, "boi_token": BOI, "eoi_token": EOI})
        log(fh, "tokenizer:", info["len"], "tokens; caption", tok.convert_ids_to_tokens(
            tok("a red circle on the left and a blue square on the right").input_ids))

        cfg = make_config(a, ids)
        model = JanusForConditionalGeneration(cfg)
        n_img = cfg.vision_config.num_image_tokens
        log(fh, "params:", {k: sum(p.numel() for p in m.parameters()) for k, m in [
            ("all", model), ("vq", model.model.vqmodel), ("lm", model.model.language_model),
            ("vision", model.model.vision_model)]})

        vq_stats = train_vq(model, a, fh)

        t = time.time()
        pool = ds.make_dataset(a.n_train, a.seed, a.image_size)
        tokens = vq_encode(model.model.vqmodel, np.stack([s.image for s in pool]))
        log(fh, f"pool: {len(pool)} images encoded in {time.time() - t:.0f}s; codes used "
                f"{len(torch.unique(tokens))}/{a.codebook}")
        batches = Batches(a, tok, ids, pool, tokens, n_img)
        lm_stats = train_lm(model, a, fh, batches)

        write_outputs(model, a, tok_dir, root / "janus-shapes-hf", root / "janus-shapes", ids, fh)
    check_prompt_format(root / "janus-shapes-hf", batches)
    total = time.time() - t_start
    cpu = time.process_time()
    log(fh, f"training wall time {total:.0f}s (vq {vq_stats['vq_time_s']:.0f}s, lm {lm_stats['lm_time_s']:.0f}s), "
            f"process CPU time {cpu:.0f}s, {a.threads} thread(s)")
    summary = dict(wall_time_s=total, cpu_time_s=cpu, vq={k: v for k, v in vq_stats.items() if k != "history"},
                   lm_time_s=lm_stats["lm_time_s"], lm_final=lm_stats["history"][-1],
                   vq_history=vq_stats["history"], lm_history=lm_stats["history"])
    if not a.no_eval:
        import evaluate as ev

        res = ev.evaluate(root / "janus-shapes-hf", quick=True, threads=a.threads)
        log(fh, "quick eval:", json.dumps(res))
        summary["quick_eval"] = res
    mg.write_json(root / "train-summary.json", summary)
    fh.close()


if __name__ == "__main__":
    main()
