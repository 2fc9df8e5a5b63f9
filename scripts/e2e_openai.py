"""End-to-end check of `janus serve` with the official `openai` Python client.

Run by scripts/e2e.sh against a server on the tiny model (assets/tiny/janus-pro-tiny) started with
--api-key e2e-key. Prints one line per check and a closing 'N passed, N failed' line; exits non-zero
if anything failed.
"""

import base64
import io
import struct
import sys
import zlib

import openai
from openai import OpenAI

BASE = sys.argv[1]  # e.g. http://127.0.0.1:8123/v1
IMAGE = sys.argv[2]  # a PNG to describe
KEY = "e2e-key"

passed, failed = 0, 0


def check(name, fn):
    global passed, failed
    try:
        fn()
        passed += 1
        print(f"ok   {name}", flush=True)
    except Exception as e:  # noqa: BLE001 - report every failure and go on
        failed += 1
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    w, h = struct.unpack(">II", data[16:24])
    # walk the chunks so that a truncated file fails here
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    assert len(raw) == h * (1 + 3 * w), "unexpected pixel data size"
    return w, h


client = OpenAI(base_url=BASE, api_key=KEY, max_retries=0, timeout=120)
image_url = "data:image/png;base64," + base64.b64encode(open(IMAGE, "rb").read()).decode()
models = client.models.list()
MODEL = models.data[0].id


def images_b64():
    r = client.images.generate(model=MODEL, prompt="a red fox in the snow", n=2, response_format="b64_json",
                               extra_body={"seed": 7})
    assert len(r.data) == 2, len(r.data)
    sizes = {png_size(base64.b64decode(d.b64_json)) for d in r.data}
    assert len(sizes) == 1 and list(sizes)[0][0] == list(sizes)[0][1], sizes
    assert r.data[0].b64_json != r.data[1].b64_json, "the two images are identical"


def images_same_seed_same_bytes():
    a = client.images.generate(model=MODEL, prompt="a lighthouse", n=1, extra_body={"seed": 11})
    b = client.images.generate(model=MODEL, prompt="a lighthouse", n=1, extra_body={"seed": 11})
    assert a.data[0].b64_json == b.data[0].b64_json


def images_bad_n():
    try:
        client.images.generate(model=MODEL, prompt="x", n=100)
    except openai.BadRequestError as e:
        assert "n" in str(e)
        return
    raise AssertionError("n=100 was accepted")


def chat_plain():
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_url}},
            {"type": "text", "text": "Describe this image."},
        ]}],
        max_tokens=12,
    )
    c = r.choices[0]
    assert isinstance(c.message.content, str) and c.message.content, repr(c.message.content)
    assert c.finish_reason in ("stop", "length"), c.finish_reason
    assert r.usage.prompt_tokens > 64 and 0 < r.usage.completion_tokens <= 12, r.usage


def chat_stream_matches_plain():
    msgs = [{"role": "user", "content": [
        {"type": "text", "text": "What colour is it?"},
        {"type": "image_url", "image_url": {"url": image_url}},
    ]}]
    plain = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=10).choices[0].message.content
    pieces, finish = [], None
    for chunk in client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=10, stream=True):
        if chunk.choices:
            d = chunk.choices[0].delta
            if d.content:
                pieces.append(d.content)
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == plain, ("".join(pieces), plain)
    assert finish in ("stop", "length"), finish


def wrong_key():
    bad = OpenAI(base_url=BASE, api_key="nope", max_retries=0)
    try:
        bad.models.list()
    except openai.AuthenticationError:
        return
    raise AssertionError("a wrong key was accepted")


check("images.generate b64_json, n=2: decodable PNGs", images_b64)
check("images.generate: same seed, same bytes", images_same_seed_same_bytes)
check("images.generate: n=100 is a 400", images_bad_n)
check("chat.completions with a data-URL image", chat_plain)
check("chat.completions streamed equals not streamed", chat_stream_matches_plain)
check("a wrong API key is a 401", wrong_key)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
