"""End-to-end check of `janus serve` with the official `openai` Python client.

Run by scripts/e2e.sh against a server on the tiny model (assets/tiny/janus-pro-tiny) started with
--api-key e2e-key. Prints one line per check and a closing 'N passed, N failed' line; exits non-zero
if anything failed.
"""

import base64
import io
import json
import struct
import sys
import warnings
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


def images_sizes_and_formats():
    r = client.images.generate(model=MODEL, prompt="a red fox", size="1024x1024", extra_body={"seed": 3})
    data = base64.b64decode(r.data[0].b64_json)
    assert png_size(data) == (1024, 1024), png_size(data)
    r = client.images.generate(model=MODEL, prompt="a red fox", size="512x512", output_format="jpeg",
                               output_compression=80, extra_body={"seed": 3})
    data = base64.b64decode(r.data[0].b64_json)
    assert data[:3] == b"\xff\xd8\xff" and r.output_format == "jpeg", data[:4]
    try:
        client.images.generate(model=MODEL, prompt="x", size="1024x1536")
    except openai.BadRequestError as e:
        assert "1024x1024" in str(e)
        return
    raise AssertionError("a non-square size was accepted")


def rgba_png(w, h, pixel):
    raw = b"".join(b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(w)) for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def rgba_pixels(data):
    """The RGBA rows of a PNG written by rgba_png or by the server (8-bit RGB/RGBA, filter 0 only)."""
    w, h = struct.unpack(">II", data[16:24])
    colour = data[25]
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        if data[pos + 4:pos + 8] == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw, bpp = zlib.decompress(idat), 4 if colour == 6 else 3
    rows, prev = [], bytearray(w * bpp)
    for y in range(h):
        line = raw[y * (w * bpp + 1):(y + 1) * (w * bpp + 1)]
        f, cur = line[0], bytearray(line[1:])
        for i in range(len(cur)):
            a = cur[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1: cur[i] = (cur[i] + a) & 255
            elif f == 2: cur[i] = (cur[i] + b) & 255
            elif f == 3: cur[i] = (cur[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(cur))
        prev = cur
    return w, h, bpp, rows


def images_edit_with_mask():
    img = rgba_png(64, 32, lambda x, y: (x * 4, y * 8, 90, 255))
    mask = rgba_png(64, 32, lambda x, y: (0, 0, 0, 0 if x >= 32 else 255))
    r = client.images.edit(model=MODEL, image=("a.png", img), mask=("m.png", mask), prompt="a red hat",
                           extra_body={"seed": 4})
    out = base64.b64decode(r.data[0].b64_json)
    w, h, bpp, rows = rgba_pixels(out)
    assert (w, h) == (64, 32), (w, h)
    for y in range(h):
        for x in range(32):  # outside the mask: the input's pixels exactly
            assert tuple(rows[y][x * bpp:x * bpp + 3]) == (x * 4, y * 8, 90), (x, y)


def images_edit_without_mask_and_variation():
    img = rgba_png(40, 40, lambda x, y: (200, x * 6, y * 6, 255))
    r = client.images.edit(model=MODEL, image=("a.png", img), prompt="make it night", size="512x512")
    assert r.data[0].revised_prompt.startswith("make it night. "), r.data[0].revised_prompt
    assert png_size(base64.b64decode(r.data[0].b64_json)) == (512, 512)
    with warnings.catch_warnings():  # the client marks variations (dall-e-2's) deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        v = client.images.create_variation(model=MODEL, image=("a.png", img), n=2, extra_body={"seed": 1})
    assert len(v.data) == 2 and v.data[0].revised_prompt and v.data[0].b64_json != v.data[1].b64_json


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


TEXT_MSGS = [{"role": "user", "content": "Name a colour."}]
SCHEMA = {
    "type": "object",
    "properties": {"colour": {"enum": ["red", "green", "blue"]}, "round": {"type": "boolean"}},
    "required": ["colour", "round"],
    "additionalProperties": False,
}


def chat_stop():
    free = client.chat.completions.create(model=MODEL, messages=TEXT_MSGS, max_tokens=30, temperature=1, seed=3)
    text = free.choices[0].message.content
    assert len(text) > 4, repr(text)
    stop = text[2:4]
    cut = text[:text.index(stop)]
    r = client.chat.completions.create(model=MODEL, messages=TEXT_MSGS, max_tokens=30, temperature=1, seed=3,
                                       stop=["never here", stop])
    assert r.choices[0].message.content == cut, (r.choices[0].message.content, cut)
    assert r.choices[0].finish_reason == "stop"
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=MODEL, messages=TEXT_MSGS, max_tokens=30, temperature=1, seed=3, stop=stop, stream=True) if c.choices]
    assert "".join(pieces) == cut, ("".join(pieces), cut)


def chat_logprobs():
    r = client.chat.completions.create(model=MODEL, messages=TEXT_MSGS, max_tokens=8, logprobs=True, top_logprobs=3)
    c = r.choices[0]
    content = c.logprobs.content
    assert len(content) == r.usage.completion_tokens, (len(content), r.usage)
    for t in content:
        assert bytes(t.bytes).decode(errors="replace") == t.token, t
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        assert t.top_logprobs[0].logprob >= t.logprob - 1e-6, "greedy picks the most likely"
    streamed = []
    for chunk in client.chat.completions.create(model=MODEL, messages=TEXT_MSGS, max_tokens=8, logprobs=True,
                                                top_logprobs=3, stream=True):
        if chunk.choices and chunk.choices[0].logprobs:
            streamed += chunk.choices[0].logprobs.content
    assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content]


def chat_n():
    kw = dict(model=MODEL, messages=TEXT_MSGS, max_tokens=10, temperature=1, seed=5)
    r = client.chat.completions.create(n=3, **kw)
    assert [c.index for c in r.choices] == [0, 1, 2]
    texts = [c.message.content for c in r.choices]
    assert len(set(texts)) > 1, texts
    assert texts[0] == client.chat.completions.create(**kw).choices[0].message.content, "answer 0 is the seed's"
    counted = client.chat.completions.create(n=3, logprobs=True, **kw)
    assert [c.message.content for c in counted.choices] == texts
    assert counted.usage.completion_tokens == sum(len(c.logprobs.content) for c in counted.choices), counted.usage
    streamed = ["", "", ""]
    for chunk in client.chat.completions.create(n=3, stream=True, **kw):
        for c in chunk.choices:
            streamed[c.index] += c.delta.content or ""
    assert streamed == texts, (streamed, texts)


def chat_penalties():
    kw = dict(model=MODEL, messages=TEXT_MSGS, max_tokens=20)
    plain = client.chat.completions.create(**kw).choices[0].message.content
    neutral = client.chat.completions.create(frequency_penalty=0, presence_penalty=0,
                                             extra_body={"repetition_penalty": 1}, **kw)
    assert neutral.choices[0].message.content == plain
    penalised = client.chat.completions.create(extra_body={"repetition_penalty": 3}, **kw)
    assert penalised.choices[0].message.content != plain, "the repetition penalty acts"
    client.chat.completions.create(frequency_penalty=2, presence_penalty=-2, **kw)


def chat_json_schema():
    for seed in range(3):
        r = client.chat.completions.create(
            model=MODEL, messages=TEXT_MSGS, max_tokens=60, temperature=1, seed=seed,
            response_format={"type": "json_schema", "json_schema": {"name": "shape", "schema": SCHEMA, "strict": True}})
        v = json.loads(r.choices[0].message.content)
        assert v["colour"] in ("red", "green", "blue") and isinstance(v["round"], bool) and len(v) == 2, v


def chat_json_object():
    r = client.chat.completions.create(model=MODEL, messages=TEXT_MSGS, max_tokens=100, temperature=1, seed=1,
                                       response_format={"type": "json_object"})
    c = r.choices[0]
    if c.finish_reason == "stop":
        assert isinstance(json.loads(c.message.content), dict), c.message.content
    else:
        assert c.message.content.startswith("{"), c.message.content


def chat_choice():
    for seed in range(4):
        r = client.chat.completions.create(model=MODEL, messages=TEXT_MSGS, max_tokens=10, temperature=1, seed=seed,
                                           extra_body={"structured_outputs": {"choice": ["yes", "no"]}})
        assert r.choices[0].message.content in ("yes", "no"), r.choices[0].message.content


def chat_bad_schema():
    try:
        client.chat.completions.create(model=MODEL, messages=TEXT_MSGS, max_tokens=4,
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "x", "schema": {"type": 5}}})
    except openai.BadRequestError as e:
        assert e.body.get("param") == "response_format", e.body
        return
    raise AssertionError("a schema that does not compile was accepted")


def responses_plain_and_continued():
    r = client.responses.create(model=MODEL, input="Hello", max_output_tokens=8)
    assert r.status in ("completed", "incomplete") and r.output_text, (r.status, r.output_text)
    assert r.usage.input_tokens > 0 and 0 < r.usage.output_tokens <= 8, r.usage
    r2 = client.responses.create(
        model=MODEL, previous_response_id=r.id, max_output_tokens=5,
        input=[{"role": "user", "content": [{"type": "input_image", "image_url": image_url},
                                            {"type": "input_text", "text": "What is it?"}]}])
    assert r2.previous_response_id == r.id and r2.output_text
    assert r2.usage.input_tokens > r.usage.input_tokens + r.usage.output_tokens, "the history is part of the prompt"
    # the output passed back as input, as the SDK's examples do
    r3 = client.responses.create(model=MODEL, max_output_tokens=4, input=[{"role": "user", "content": "hi"}]
                                 + [o.model_dump() for o in r.output] + [{"role": "user", "content": "again"}])
    assert r3.output_text


def responses_stream():
    events = list(client.responses.create(model=MODEL, input="Stream me", max_output_tokens=6, stream=True))
    names = [e.type for e in events]
    assert names[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"], names
    assert names[-1] in ("response.completed", "response.incomplete"), names
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = [e for e in events if e.type == "response.output_text.done"][0]
    assert text == done.text == events[-1].response.output_text, (text, done.text)
    seq = [e.sequence_number for e in events]
    assert seq == sorted(seq) and len(set(seq)) == len(seq), seq


def responses_json_schema():
    r = client.responses.create(model=MODEL, input="json", max_output_tokens=60, text={"format": {
        "type": "json_schema", "name": "shape", "schema": SCHEMA, "strict": True}})
    v = json.loads(r.output_text)
    assert v["colour"] in ("red", "green", "blue") and isinstance(v["round"], bool), v


def responses_refusals():
    for kw, param in [(dict(tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}]), "tools"),
                      (dict(previous_response_id="resp_nope"), "previous_response_id")]:
        try:
            client.responses.create(model=MODEL, input="x", **kw)
        except (openai.BadRequestError, openai.NotFoundError) as e:
            assert e.body.get("param") == param, e.body
            continue
        raise AssertionError(f"{param} was accepted")


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
check("images.generate size 1024x1024 and 512x512 jpeg; non-square is a 400", images_sizes_and_formats)
check("images.edit with a mask: the input kept outside it", images_edit_with_mask)
check("images.edit without a mask (a redraw) and images.create_variation: revised_prompt", images_edit_without_mask_and_variation)
check("chat.completions with a data-URL image", chat_plain)
check("chat.completions streamed equals not streamed", chat_stream_matches_plain)
check("chat.completions stop: ends before the sequence, streamed too", chat_stop)
check("chat.completions logprobs and top_logprobs, streamed too", chat_logprobs)
check("chat.completions n=3: own seed streams, streamed too", chat_n)
check("chat.completions penalties: neutral ones change nothing, others act", chat_penalties)
check("chat.completions response_format json_schema validates", chat_json_schema)
check("chat.completions response_format json_object", chat_json_object)
check("chat.completions structured_outputs choice", chat_choice)
check("chat.completions: a schema that does not compile is a 400", chat_bad_schema)
check("responses.create: output_text, usage, previous_response_id, output as input", responses_plain_and_continued)
check("responses.create stream: the event sequence, deltas add up", responses_stream)
check("responses.create text.format json_schema validates", responses_json_schema)
check("responses.create: tools are a 400, an unknown previous_response_id a 404", responses_refusals)
check("a wrong API key is a 401", wrong_key)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
