#!/usr/bin/env python3
"""Drives a running `janus serve` as an abusive or sloppy client would (see scripts/abuse-test.sh),
checks the bars, and prints one line per scenario (`ABUSE <scenario> {json}`) for docs/PERF.md.
Standard library only.

  abuse_test.py --url http://127.0.0.1:PORT --pid PID [--quick] [--fuzz N] [--only a,b] [--cache DIR]
"""

import argparse
import base64
import concurrent.futures as futures
import json
import os
import random
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib

GIB = 1 << 30


def post(url, body, timeout=600):
    """POST a JSON body (bytes or an object); (status, seconds, parsed JSON or text)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    t = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    secs = time.monotonic() - t
    try:
        return status, secs, json.loads(raw)
    except ValueError:
        return status, secs, raw.decode("utf-8", "replace")


def proc_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid):
    """Resets the process's peak resident size (VmHWM) to its current one."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def png_one_colour(side, colour=(200, 30, 40)):
    """A side x side RGB PNG of one colour, compressed row by row (never whole in memory)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(colour) * side
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def user(text):
    return {"role": "user", "content": text}


def long_chat(args):
    """A chat of 2,000 user/assistant pairs beside a one-word chat (refused by --max-messages), and
    one of 1,000 pairs (within it: tokenized whole, then refused by the context's length)."""
    out, ok = {}, True
    for pairs_n in (2000, 1000):
        pairs = []
        for i in range(pairs_n):
            pairs += [user(f"question {i}: what next?"), {"role": "assistant", "content": f"answer {i}, then more."}]
        long_body = {"messages": pairs + [user("and now?")], "max_tokens": 4}
        results = {}

        def send(name, body):
            results[name] = post(args.url + "/v1/chat/completions", body)

        t = threading.Thread(target=send, args=("long", long_body))
        t.start()
        time.sleep(0.05)
        send("short", {"messages": [user("hi")], "max_tokens": 4})
        t.join()
        (ls, lsecs, lbody), (ss, ssecs, _) = results["long"], results["short"]
        run = {"body_bytes": len(json.dumps(long_body)), "long_status": ls, "long_s": round(lsecs, 3),
               "short_status": ss, "short_s": round(ssecs, 3)}
        if ls != 200:
            run["long_code"] = lbody["error"]["code"]
        out[f"{pairs_n}_pairs"] = run
        ok &= ss == 200 and ssecs < 1.0 and ls in (200, 400) and lsecs < 5.0
    return ok, out


def images(args):
    """Concurrent requests full of large one-colour PNGs; peak memory above idle."""
    n_req, per, side = (4, 2, 8000) if args.quick else (16, 8, 8000)
    path = os.path.join(args.cache, f"one-colour-{side}.png")
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(png_one_colour(side))
    png = open(path, "rb").read()
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    content = [{"type": "image_url", "image_url": {"url": url}} for _ in range(per)]
    body = json.dumps({"messages": [{"role": "user", "content": content + [{"type": "text", "text": "Same?"}]}],
                       "max_tokens": 2}).encode()
    time.sleep(0.5)
    idle = proc_kib(args.pid, "VmRSS")
    reset_peak(args.pid)
    t = time.monotonic()
    with futures.ThreadPoolExecutor(n_req) as pool:
        answers = list(pool.map(lambda _: post(args.url + "/v1/chat/completions", body), range(n_req)))
    secs = time.monotonic() - t
    peak = proc_kib(args.pid, "VmHWM")
    statuses = {}
    codes = {}
    for status, _, b in answers:
        statuses[status] = statuses.get(status, 0) + 1
        if status != 200:
            code = b["error"]["code"] if isinstance(b, dict) else str(b)[:60]
            codes[code] = codes.get(code, 0) + 1
    above = (peak - idle) * 1024
    out = {"requests": n_req, "images_each": per, "png_bytes": len(png), "body_bytes": len(body), "secs": round(secs, 1),
           "idle_mib": idle // 1024, "peak_above_idle_mib": above >> 20, "statuses": statuses, "refusals": codes}
    ok = above < 1.5 * GIB and set(statuses) <= {200, 400, 413, 429} and statuses.get(200, 0) >= 1
    return ok, out


SPECIALS = ["<image_placeholder>", "<|User|>", "<|Assistant|>", "<｜end▁of▁sentence｜>", "<begin_of_image>",
            "<｜begin▁of▁sentence｜>", "<end_of_image>"]


def mutate(rng, body, tiny_png_url):
    """One random change to a chat body: JSON-level edits that real clients and fuzzers make."""
    msgs = body.setdefault("messages", [])
    choice = rng.randrange(16)
    if choice == 0:
        msgs.append(user(rng.choice(["", " ", "\n", "x" * rng.randrange(1, 5000)])))
    elif choice == 1 and msgs:
        rng.choice(msgs)["content"] = rng.choice(["", None, [], [{"type": "text", "text": ""}], 5, {"a": 1}])
    elif choice == 2:
        msgs.append({"role": rng.choice(["assistant", "system", "developer", "tool", "user", "bogus"]),
                     "content": rng.choice(["ok", "", None])})
    elif choice == 3 and msgs:
        m = rng.choice(msgs)
        m["content"] = (m.get("content") if isinstance(m.get("content"), str) else "") + rng.choice(SPECIALS)
    elif choice == 4:
        msgs.append({"role": "user", "content": [{"type": "image_url", "image_url": {"url": rng.choice(
            [tiny_png_url, "data:image/png;base64,", "data:image/png;base64,!!", "data:text/plain;base64,aGk=",
             "http://127.0.0.1/x.png", tiny_png_url[:-7]])}}, {"type": "text", "text": "?"}]})
    elif choice == 5:
        body["max_tokens"] = rng.choice([0, 1, -1, 2, 4096, 10 ** 12, "3", None, 2.5])
    elif choice == 6:
        body["temperature"] = rng.choice([0, 0.7, -1, 3, "hot", None, 1e-30])
    elif choice == 7:
        body["top_p"] = rng.choice([0, 0.5, 1, 2, None])
    elif choice == 8:
        body["seed"] = rng.choice([0, 1, -5, 2 ** 64, None])
    elif choice == 9 and msgs:
        del msgs[rng.randrange(len(msgs))]
    elif choice == 10:
        body["stream"] = rng.choice([True, False, None, "yes"])
    elif choice == 11:
        body[rng.choice(["n", "stop", "logprobs", "tools", "bogus"])] = rng.choice([1, 2, None, True, "x", []])
    elif choice == 12 and msgs:
        rng.shuffle(msgs)
    elif choice == 13:
        msgs.extend([user("q"), {"role": "assistant", "content": "a"}] * rng.randrange(1, 300))
    elif choice == 14:
        msgs.append(user("".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(1, 200)))))
    else:
        body["max_tokens"] = rng.choice([1, 2, 3])
    return body


def fuzz(args, corpus_dir="server/fuzz/corpus/chat_completions"):
    """Mutated chat bodies (and raw byte flips of them) through the real server: no 5xx."""
    rng = random.Random(20261207)
    seeds = []
    for name in sorted(os.listdir(corpus_dir)):
        try:
            seeds.append(json.load(open(os.path.join(corpus_dir, name))))
        except ValueError:
            pass
    seeds.append({"messages": [user("hi")]})
    small = png_one_colour(3)
    tiny_png_url = "data:image/png;base64," + base64.b64encode(small).decode()
    n = args.fuzz or (300 if args.quick else 3000)
    statuses, fives = {}, []

    def make(i):
        body = json.loads(json.dumps(rng.choice(seeds)))
        for _ in range(rng.randrange(1, 4)):
            body = mutate(rng, body, tiny_png_url)
        if isinstance(body.get("max_tokens"), int) and body["max_tokens"] > 8:
            body["max_tokens"] = 8  # answers stay short: this is about what is refused
        body.setdefault("max_tokens", 4)
        raw = json.dumps(body).encode()
        if i % 10 == 0:  # a few byte-level corruptions too
            raw = bytearray(raw)
            for _ in range(rng.randrange(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            raw = bytes(raw)
        return raw

    bodies = [make(i) for i in range(n)]  # made in order, so a seed gives the same bodies
    t = time.monotonic()
    with futures.ThreadPoolExecutor(4) as pool:
        for raw, (status, _, b) in zip(bodies, pool.map(lambda raw: post(args.url + "/v1/chat/completions", raw, 120), bodies)):
            statuses[status] = statuses.get(status, 0) + 1
            if status >= 500:
                fives.append((raw[:300], b))
    out = {"bodies": n, "secs": round(time.monotonic() - t, 1), "statuses": statuses}
    for raw, b in fives[:5]:
        print("5xx for", raw, "->", b, file=sys.stderr)
    return not fives, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", required=True, type=int)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--fuzz", type=int)
    ap.add_argument("--only", default="long_chat,images,fuzz")
    ap.add_argument("--cache", default="/tmp")
    args = ap.parse_args()
    failed = []
    for name in args.only.split(","):
        ok, out = globals()[name](args)
        print(f"ABUSE {name} {'ok' if ok else 'FAILED'} {json.dumps(out)}", flush=True)
        if not ok:
            failed.append(name)
    if failed:
        sys.exit(f"abuse test failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
