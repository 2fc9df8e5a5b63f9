#!/usr/bin/env python3
"""PyTorch's f32 image-token step on a Janus checkpoint, for comparison with `janus bench`.

Loads the model with transformers (`JanusForConditionalGeneration`, f32, CPU by default), runs the
CFG prefill of n images (cond + uncond rows) and then `--steps` decode steps the way transformers'
image generation does: language model with its KV cache, `generation_head`, guided logits, argmax,
the token's `generation_embeddings` + `generation_aligner` fed back. Prints the median and mean
step in ms. Needs torch and transformers (scripts/make-goldens.sh's venv has both).

  .venv-goldens/bin/python scripts/torch_step.py --model DIR [--n 1] [--steps 60] [--threads 2]
"""

import argparse
import statistics
import time

import torch
from transformers import DynamicCache, JanusForConditionalGeneration


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=32, help="janus bench's prompt is 32 tokens with the tiny tokenizer")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = JanusForConditionalGeneration.from_pretrained(a.model, dtype=torch.float32).to(a.device).eval()
    lm, m = model.model.language_model, model.model
    rows = 2 * a.n
    ids = torch.randint(0, 400, (rows, a.prompt_len), device=a.device)
    times = []
    with torch.no_grad():
        cache = DynamicCache()
        out = lm(input_ids=ids, past_key_values=cache, use_cache=True)
        hidden = out.last_hidden_state[:, -1, :]
        for i in range(a.warmup + a.steps):
            t = time.perf_counter()
            logits = m.generation_head(hidden).float()
            cond, uncond = logits[0::2], logits[1::2]
            tok = (uncond + 5.0 * (cond - uncond)).argmax(-1)
            emb = m.generation_aligner(m.generation_embeddings(tok.repeat_interleave(2)))
            out = lm(inputs_embeds=emb.unsqueeze(1), past_key_values=cache, use_cache=True)
            hidden = out.last_hidden_state[:, -1, :]
            if i >= a.warmup:
                times.append((time.perf_counter() - t) * 1e3)
    print(f"torch {torch.__version__}, {a.threads} threads, n={a.n}: step median {statistics.median(times):.1f} ms, "
          f"mean {statistics.mean(times):.1f} ms over {len(times)} steps")


if __name__ == "__main__":
    main()
