#!/usr/bin/env python3
"""How long a streamed text answer stalls while an image batch beside it is VQ-decoded.

Against a running `janus serve`: one image request of --n images, and --chat-after seconds later
one streamed chat answer of up to --max-tokens tokens (sampled, seed 1). Prints the answer's token gaps
(median, p99, max) and when the images finished. Before the engine decoded one chunk per turn,
the longest gap was the decode of every image of the batch; now it is one --decode-chunk.

    python3 scripts/decode_stall.py --url http://127.0.0.1:8000 --n 8
"""

import argparse
import json
import threading
import time
import urllib.request


def post(url, body, stream=False):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    return urllib.request.urlopen(req, timeout=3600)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--chat-after", type=float, default=60.0)
    ap.add_argument("--max-tokens", type=int, default=500)
    # Sampled, so that a random-weight test model's answer is text (greedy tends to repeat one
    # special token, which decodes to nothing and sends no chunk).
    ap.add_argument("--temperature", type=float, default=1.0)
    a = ap.parse_args()

    t0 = time.monotonic()
    images = {}

    def gen():
        with post(a.url + "/v1/images/generations", {"prompt": "a red bicycle", "n": a.n, "seed": 1}) as r:
            r.read()
        images["done"] = time.monotonic() - t0

    th = threading.Thread(target=gen)
    th.start()
    time.sleep(a.chat_after)
    body = {"messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": a.max_tokens,
            "temperature": a.temperature, "seed": 1, "stream": True}
    stamps = []
    with post(a.url + "/v1/chat/completions", body) as r:
        for line in r:
            line = line.strip()
            if line.startswith(b"data: {") and b'"content"' in line:
                stamps.append(time.monotonic() - t0)
    th.join()
    gaps = sorted(b - a_ for a_, b in zip(stamps, stamps[1:]))
    worst = max(zip(stamps, stamps[1:]), key=lambda p: p[1] - p[0])
    print(json.dumps({
        "n": a.n,
        "chunks": len(stamps),
        "chat_from_s": round(stamps[0], 2),
        "chat_to_s": round(stamps[-1], 2),
        "images_done_s": round(images["done"], 2),
        "gap_median_ms": round(1000 * gaps[len(gaps) // 2], 1),
        "gap_p99_ms": round(1000 * gaps[int(len(gaps) * 0.99)], 1),
        "gap_max_ms": round(1000 * gaps[-1], 1),
        "gap_max_at_s": [round(worst[0], 2), round(worst[1], 2)],
    }))


if __name__ == "__main__":
    main()
