#!/usr/bin/env python3
"""Python half of scripts/gpu-check.sh (the one-shot GPU lease script). Standard library + torch
(+ transformers for `bench`) only; no network.

Subcommands (all print to stdout and write JSON into --out as they go, so a timeout keeps data):

  env       python / torch / CUDA / transformers versions                 -> <out>/env.json
  parity    `janus generate --greedy` on the four tiny checkpoints vs assets/golden/t2i.json
            (f32: tokens must be identical; bf16: fraction reported), and `janus decode-tokens` of
            the golden `vq_tokens` vs `vq.pixels` (max abs diff must be <= 1), plus the CPU binary's
            decode when one is given and runs                              -> <out>/parity.json
  bench     builds a random full-size Janus-Pro (1b / 7b; `tiny` for dry runs) with transformers,
            saves it (safetensors) into --workdir, times transformers' `generate(generation_mode=
            "image")` + `decode_image_tokens` (reference) and the `janus` binary on the same
            checkpoint, and computes the HBM floor of docs §7             -> <out>/bench.json [size]
  report    markdown table of bench.json (+ parity verdict)              -> <out>/summary.md

Every step watches --deadline (unix time): optional parts are skipped when time runs short, and
each `janus` process gets a hard timeout (its whole process group is killed).

CPU dry run (this is what was tested without a GPU):
  python scripts/gpu_bench.py parity --device cpu --bin target/release/janus --out /tmp/o
  python scripts/gpu_bench.py bench --size tiny --device cpu --dtype f32 \
      --bin target/release/janus --out /tmp/o --workdir /tmp/w
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "assets" / "tiny"
TINY_HF = TINY / "janus-pro-tiny-hf"
GOLDEN_JSON = REPO / "assets" / "golden" / "t2i.json"
GOLDEN_ST = REPO / "assets" / "golden" / "t2i.safetensors"
VARIANTS = ["janus-pro-tiny", "janus-pro-tiny-sharded", "janus-pro-tiny-hf", "janus-pro-tiny-hf-bin"]
BENCH_PROMPT = "a photo of a red bicycle leaning against a brick wall"
HBM_BW = 4.8e12  # H200 HBM3e, bytes/s (docs/performance-and-users.md §7)
DOC_PROMPT_LEN = 50  # the P that §7 assumes

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
BOI, IMG = "<begin_of_image>", "<image_placeholder>"

T_START = time.time()


def log(*a) -> None:
    print(f"[gpu_bench {time.time() - T_START:6.1f}s]", *a, flush=True)


class Clock:
    def __init__(self, deadline: float | None):
        self.deadline = deadline if deadline else time.time() + 10 * 3600

    def left(self) -> float:
        return self.deadline - time.time()

    def timeout(self, cap: float, reserve: float = 3.0) -> float:
        """A subprocess timeout: at most `cap`, and ending `reserve` s before the deadline."""
        return max(1.0, min(cap, self.left() - reserve))


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def update_json(path: Path, key: str, value) -> None:
    """Read-modify-write one top-level key (the bench steps run as separate processes)."""
    data = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except Exception:
            data = {}
    data[key] = value
    write_json(path, data)


# ------------------------------------------------------------------------------------------------
# PNG reading without PIL (the GPU machine may not have it): 8-bit gray / RGB / RGBA, no interlace.
# ------------------------------------------------------------------------------------------------


def read_png(path: Path) -> tuple[int, int, bytes]:
    """Returns (height, width, RGB bytes row-major)."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat, hdr = 8, [], None
    while pos < len(data):
        (ln,) = struct.unpack(">I", data[pos : pos + 4])
        typ = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + ln]
        pos += 12 + ln
        if typ == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif typ == b"IDAT":
            idat.append(body)
        elif typ == b"IEND":
            break
    w, h, depth, ctype, _, _, interlace = hdr
    if depth != 8 or interlace != 0 or ctype not in (0, 2, 6):
        raise ValueError(f"{path}: unsupported PNG (depth {depth}, color type {ctype}, interlace {interlace})")
    bpp = {0: 1, 2: 3, 6: 4}[ctype]
    raw = zlib.decompress(b"".join(idat))
    stride = w * bpp
    out = bytearray(h * stride)
    prev = bytearray(stride)
    i = 0
    for y in range(h):
        f = raw[i]
        line = bytearray(raw[i + 1 : i + 1 + stride])
        i += 1 + stride
        if f == 1:
            for x in range(bpp, stride):
                line[x] = (line[x] + line[x - bpp]) & 255
        elif f == 2:
            for x in range(stride):
                line[x] = (line[x] + prev[x]) & 255
        elif f == 3:
            for x in range(stride):
                a = line[x - bpp] if x >= bpp else 0
                line[x] = (line[x] + ((a + prev[x]) >> 1)) & 255
        elif f == 4:
            for x in range(stride):
                a = line[x - bpp] if x >= bpp else 0
                b = prev[x]
                c = prev[x - bpp] if x >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
                line[x] = (line[x] + pr) & 255
        elif f != 0:
            raise ValueError(f"{path}: bad filter {f}")
        out[y * stride : (y + 1) * stride] = line
        prev = line
    if bpp == 3:
        return h, w, bytes(out)
    rgb = bytearray(h * w * 3)
    for k in range(h * w):
        if bpp == 1:
            rgb[3 * k : 3 * k + 3] = bytes([out[k]] * 3)
        else:
            rgb[3 * k : 3 * k + 3] = out[4 * k : 4 * k + 3]
    return h, w, bytes(rgb)


def max_abs_diff_png(path: Path, ref) -> int | None:
    """ref: uint8 torch tensor [H, W, 3] (or [1, H, W, 3])."""
    import torch

    h, w, rgb = read_png(path)
    img = torch.frombuffer(bytearray(rgb), dtype=torch.uint8).reshape(h, w, 3)
    ref = ref.reshape(-1, ref.shape[-3], ref.shape[-2], ref.shape[-1])[0]
    if tuple(ref.shape) != tuple(img.shape):
        return None
    return int((img.to(torch.int16) - ref.to(torch.int16)).abs().max())


def png_diff_paths(a: Path, b: Path) -> int | None:
    ha, wa, ra = read_png(a)
    hb, wb, rb = read_png(b)
    if (ha, wa) != (hb, wb):
        return None
    return max(abs(x - y) for x, y in zip(ra, rb))


# ------------------------------------------------------------------------------------------------
# running the janus binary
# ------------------------------------------------------------------------------------------------

TIME_RE = re.compile(r"\(([\d.]+)s tokens, ([\d.]+)s decode\)")
LOAD_RE = re.compile(r"janus::cli: loaded secs=([\d.eE+-]+)")  # from `janus --log info`
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


class GpuMemPoller:
    """Peak of `nvidia-smi --query-gpu=memory.used` (MiB, GPU 0) while active; None without nvidia-smi."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.peak = None
        self.baseline = None
        self.proc = None
        self.thread = None

    @staticmethod
    def query() -> int | None:
        try:
            r = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                capture_output=True, text=True, timeout=10,
            )
            return int(r.stdout.strip().splitlines()[0])
        except Exception:
            return None

    def __enter__(self):
        if not self.enabled:
            return self
        self.baseline = self.query()
        try:
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0", "-lms", "100"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )
        except Exception:
            self.proc = None
            return self

        def reader():
            for line in self.proc.stdout:
                try:
                    v = int(line.strip())
                except ValueError:
                    continue
                self.peak = v if self.peak is None else max(self.peak, v)

        self.thread = threading.Thread(target=reader, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except Exception:
                self.proc.kill()
            if self.thread:
                self.thread.join(timeout=2)
        return False

    def result(self) -> dict:
        if not self.enabled:
            return {}
        d = {"gpu_mem_used_peak_mib": self.peak, "gpu_mem_used_baseline_mib": self.baseline}
        if self.peak is not None and self.baseline is not None:
            d["gpu_mem_peak_delta_mib"] = self.peak - self.baseline
        return d


_CHILD_PGIDS: set[int] = set()


def _kill_children_and_exit(signum, frame):
    """SIGTERM/SIGINT (e.g. the shell's `timeout`): the janus child runs in its own session, so kill
    its process group here, or it would keep the GPU busy after we are gone."""
    for pg in list(_CHILD_PGIDS):
        try:
            os.killpg(pg, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    print(f"[gpu_bench] signal {signum}: stopping (partial results are in the JSON files)", flush=True)
    os._exit(128 + signum)


signal.signal(signal.SIGTERM, _kill_children_and_exit)
signal.signal(signal.SIGINT, _kill_children_and_exit)


def run_cmd(cmd: list[str], timeout: float, *, time_v: bool = True, poll_gpu: bool = False,
            label: str = "") -> dict:
    """Runs cmd in its own process group with a hard timeout; returns timings and the output tail."""
    use_time = time_v and os.access("/usr/bin/time", os.X_OK)
    full = (["/usr/bin/time", "-v"] if use_time else []) + [str(c) for c in cmd]
    log(f"$ {' '.join(full)}   (timeout {timeout:.0f}s)")
    res = {"cmd": " ".join(str(c) for c in cmd), "timeout_s": round(timeout, 1)}
    poller = GpuMemPoller(poll_gpu)
    t0 = time.perf_counter()
    with poller:
        p = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        _CHILD_PGIDS.add(p.pid)
        try:
            out, err = p.communicate(timeout=timeout)
            res["rc"] = p.returncode
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = p.communicate()
            res["rc"] = "timeout"
        finally:
            _CHILD_PGIDS.discard(p.pid)
    res["wall_s"] = round(time.perf_counter() - t0, 3)
    res.update(poller.result())
    err = err or ""
    m = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", err)
    if m:
        res["max_rss_mib"] = round(int(m.group(1)) / 1024, 1)
    # drop /usr/bin/time's report from the tail we keep
    body = err.split("\tCommand being timed:")[0]
    plain = ANSI_RE.sub("", body)
    m = LOAD_RE.search(plain)
    if m:
        res["load_s"] = round(float(m.group(1)), 3)
    m = TIME_RE.search(plain)
    if m:
        res["tokens_s"], res["decode_s"] = float(m.group(1)), float(m.group(2))
    res["stdout"] = (out or "")[-20000:]
    tail = (out or "")[-600:] + plain[-1500:]
    res["output_tail"] = tail.strip()
    status = "ok" if res["rc"] == 0 else f"FAILED rc={res['rc']}"
    extra = f" tokens {res['tokens_s']}s decode {res['decode_s']}s" if "tokens_s" in res else ""
    extra += f" load {res['load_s']}s" if "load_s" in res else ""
    extra += f" rss {res['max_rss_mib']}MiB" if "max_rss_mib" in res else ""
    extra += f" gpu+{res['gpu_mem_peak_delta_mib']}MiB" if res.get("gpu_mem_peak_delta_mib") is not None else ""
    log(f"  {label} {status} wall {res['wall_s']:.2f}s{extra}")
    if res["rc"] != 0:
        print("  | " + "\n  | ".join(plain.strip().splitlines()[-15:]), flush=True)
    return res


# ------------------------------------------------------------------------------------------------
# env
# ------------------------------------------------------------------------------------------------


def cmd_env(a) -> int:
    info = {"python": sys.version.split()[0], "executable": sys.executable}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info["gpu"] = p.name
            info["gpu_mem_gib"] = round(p.total_memory / 2**30, 1)
            info["compute_capability"] = f"{p.major}.{p.minor}"
    except Exception as e:
        info["torch_error"] = repr(e)
    for mod in ("transformers", "safetensors", "tokenizers", "numpy", "PIL"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as e:
            info[mod] = f"unavailable ({type(e).__name__})"
    try:
        import transformers

        info["has_JanusForConditionalGeneration"] = hasattr(transformers, "JanusForConditionalGeneration")
    except Exception:
        pass
    for k, v in info.items():
        print(f"  {k}: {v}", flush=True)
    if a.out:
        update_json(Path(a.out) / "env.json", "python", info)
    return 0


# ------------------------------------------------------------------------------------------------
# parity
# ------------------------------------------------------------------------------------------------


def cmd_parity(a) -> int:
    import torch
    from safetensors.torch import load_file

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.workdir) if a.workdir else out / "parity-work"
    work.mkdir(parents=True, exist_ok=True)
    clock = Clock(a.deadline)
    golden = json.loads(GOLDEN_JSON.read_text())
    gt = load_file(str(GOLDEN_ST))
    prompts = golden["prompts"]
    vq_tokens = golden["vq_tokens"]
    binp = Path(a.bin)
    res = {
        "binary": str(binp), "device": a.device, "cpu_binary": a.cpu_bin,
        "f32": [], "bf16": [], "decode": [], "skipped": [], "errors": [],
    }
    path = out / "parity.json"
    consecutive_fail = [0]

    def broken() -> bool:
        return consecutive_fail[0] >= 3

    first = [True]

    def janus(args: list, label: str, cap: float) -> dict:
        # the first CUDA process may JIT-compile the kernels' PTX (cached by the driver afterwards)
        if first[0]:
            cap, first[0] = max(cap, a.first_run_timeout), False
        r = run_cmd([binp] + args, clock.timeout(cap), time_v=False, label=label)
        consecutive_fail[0] = 0 if r["rc"] == 0 else consecutive_fail[0] + 1
        return r

    if not (binp.is_file() and os.access(binp, os.X_OK)):
        res["errors"].append(f"binary {binp} missing or not executable")
        log(res["errors"][-1])
        write_json(path, res)
        return 2

    def gen(dtype: str, variant: str, pi: int) -> dict:
        p = prompts[pi]
        d = work / f"{dtype}-{variant}-p{pi}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        r = janus(["generate", "--model", TINY / variant, "--device", a.device, "--dtype", dtype, "--greedy",
                   "--prompt", p["prompt"], "--out", d / "x.png", "--tokens-out", d / "t.json"],
                  f"{dtype} {variant} p{pi}", a.run_timeout)
        item = {"variant": variant, "prompt": pi, "rc": r["rc"], "wall_s": r["wall_s"]}
        if r["rc"] != 0:
            item["error"] = r["output_tail"][-800:]
            return item
        try:
            toks = json.loads((d / "t.json").read_text())
            ours, ref = toks[0], p["image_tokens"]
            n = min(len(ours), len(ref))
            same = sum(int(x == y) for x, y in zip(ours, ref))
            first = next((j for j in range(n) if ours[j] != ref[j]), None)
            item.update(identical=(ours == ref), match_fraction=round(same / max(len(ref), 1), 4),
                        first_mismatch=first, n_tokens=len(ours))
            key = f"p{pi}.pixels"
            if key in gt and (d / "x.png").is_file():
                item["pixels_max_abs_diff_vs_golden"] = max_abs_diff_png(d / "x.png", gt[key])
        except Exception as e:
            item["error"] = f"checking output: {e!r}"
        return item

    # 1) f32 greedy tokens must equal the goldens (the must-pass part, first)
    for variant in VARIANTS:
        for pi in range(len(prompts)):
            if broken() or clock.left() < 8:
                res["skipped"].append(f"f32 {variant} p{pi}")
                continue
            it = gen("f32", variant, pi)
            res["f32"].append(it)
            log(f"  f32 {variant} p{pi}: identical={it.get('identical')} "
                f"match={it.get('match_fraction')} first_mismatch={it.get('first_mismatch')} "
                f"px_diff_vs_golden={it.get('pixels_max_abs_diff_vs_golden')}")
            write_json(path, res)

    # 1b) understanding: greedy answers (f32) must equal the goldens of assets/golden/und.json
    und = json.loads((GOLDEN_JSON.parent / "und.json").read_text())
    res["describe"] = []
    eos = und["special_token_ids"]["<｜end▁of▁sentence｜>"]
    for variant in ("janus-pro-tiny", "janus-pro-tiny-hf"):
        for k, case in enumerate(und["cases"]):
            if broken() or clock.left() < 8:
                res["skipped"].append(f"describe {variant} u{k}")
                continue
            want = case["generated_ids"]
            img = REPO / und["images"][case["image"]]["file"]
            r = janus(["describe", "--model", TINY / variant, "--device", a.device, "--dtype", "f32", "--json",
                       "--image", img, "--question", case["question"], "--max-tokens", str(len(want))],
                      f"describe {variant} u{k}", a.run_timeout)
            item = {"variant": variant, "case": k, "rc": r["rc"], "wall_s": r["wall_s"]}
            if r["rc"] == 0:
                try:
                    line = [l for l in r["stdout"].splitlines() if l.startswith("{")][-1]
                    got = json.loads(line)["token_ids"] + ([eos] if case["hit_eos"] else [])
                    item["identical"] = got == want
                except Exception as e:
                    item["error"] = f"checking output: {e!r}"
            else:
                item["error"] = r["output_tail"][-800:]
            res["describe"].append(item)
            log(f"  describe {variant} u{k}: identical={item.get('identical')}")
            write_json(path, res)

    # 2) VQ decode of the golden vq_tokens, on this device and (if given and runnable) the CPU binary
    tok_file = work / "vq_tokens.json"
    tok_file.write_text(json.dumps([vq_tokens]))
    cpu_bin = Path(a.cpu_bin) if a.cpu_bin else None
    cpu_ok = bool(cpu_bin and cpu_bin.is_file() and os.access(cpu_bin, os.X_OK))
    if a.cpu_bin and not cpu_ok:
        res["skipped"].append(f"CPU comparison: {a.cpu_bin} not present")
    for variant in VARIANTS:
        if broken() or clock.left() < 8:
            res["skipped"].append(f"decode {variant}")
            continue
        png = work / f"vq-{variant}-{a.device}-main.png"
        png.unlink(missing_ok=True)
        # f32: the goldens are f32 (on CUDA the VQ decoder otherwise follows the default bf16)
        r = janus(["decode-tokens", "--model", TINY / variant, "--device", a.device, "--dtype", "f32", "--tokens", tok_file,
                   "--out", png], f"decode {variant}", a.run_timeout)
        item = {"variant": variant, "rc": r["rc"], "wall_s": r["wall_s"]}
        if r["rc"] == 0:
            item["max_abs_diff_vs_golden"] = max_abs_diff_png(png, gt["vq.pixels"])
            if cpu_ok and clock.left() > 8:
                cpng = work / f"vq-{variant}-cpu.png"
                cpng.unlink(missing_ok=True)
                rc = run_cmd([cpu_bin, "decode-tokens", "--model", TINY / variant, "--device", "cpu",
                              "--tokens", tok_file, "--out", cpng], clock.timeout(a.run_timeout),
                             time_v=False, label=f"cpu decode {variant}")
                if rc["rc"] == 0:
                    item["max_abs_diff_vs_cpu_binary"] = png_diff_paths(png, cpng)
                    item["cpu_max_abs_diff_vs_golden"] = max_abs_diff_png(cpng, gt["vq.pixels"])
                else:
                    item["cpu_error"] = rc["output_tail"][-400:]
        else:
            item["error"] = r["output_tail"][-800:]
        res["decode"].append(item)
        log(f"  decode {variant}: vs golden {item.get('max_abs_diff_vs_golden')} "
            f"vs cpu {item.get('max_abs_diff_vs_cpu_binary', '-')}")
        write_json(path, res)

    # 2a) the cuDNN build's VQ decode of the same tokens (report only: cuDNN may use TF32 for f32)
    cudnn = Path(a.bin_cudnn) if a.bin_cudnn else None
    if cudnn and cudnn.is_file() and os.access(cudnn, os.X_OK) and not broken() and clock.left() > 16:
        png = work / "vq-cudnn.png"
        png.unlink(missing_ok=True)
        r = run_cmd([cudnn, "decode-tokens", "--model", TINY / "janus-pro-tiny", "--device", a.device, "--dtype", "f32",
                     "--tokens", tok_file, "--out", png], clock.timeout(a.first_run_timeout), time_v=False,
                    label="cudnn decode")
        res["decode_cudnn"] = ({"max_abs_diff_vs_golden": max_abs_diff_png(png, gt["vq.pixels"])} if r["rc"] == 0
                               else {"error": r["output_tail"][-800:]})
        log(f"  cudnn decode: {res['decode_cudnn']}")
        write_json(path, res)
    elif a.bin_cudnn:
        res["skipped"].append(f"cudnn decode: {a.bin_cudnn} missing or no time")

    # 2b) sampled generation (the device sampler: softmax, prefix-sum matmuls, gathers; and with
    # --top-k the host rows) on this device vs the CPU binary, same seed, f32: the draws may differ
    # only where a uniform falls within rounding of a token boundary, so expect ~all tokens equal
    res["sampled"] = []
    for mode, extra in (("device sampler", []), ("host rows (top-k)", ["--top-k", "20"])):
        if not cpu_ok or broken() or clock.left() < 16:
            res["skipped"].append(f"sampled {mode}")
            continue
        outs = {}
        for which, b, dev in (("here", binp, a.device), ("cpu", cpu_bin, "cpu")):
            d = work / f"sampled-{which}-{len(extra)}"
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            r = run_cmd([b, "generate", "--model", TINY / "janus-pro-tiny", "--device", dev, "--dtype", "f32",
                         "-n", "4", "--seed", "7", "--prompt", prompts[0]["prompt"], "--out", d,
                         "--tokens-out", d / "t.json"] + extra, clock.timeout(a.run_timeout), time_v=False,
                        label=f"sampled {mode} {which}")
            outs[which] = json.loads((d / "t.json").read_text()) if r["rc"] == 0 else r["output_tail"][-600:]
        item = {"mode": mode}
        if all(isinstance(v, list) for v in outs.values()):
            pairs = [(x, y) for ih, ic in zip(outs["here"], outs["cpu"]) for x, y in zip(ih, ic)]
            item["match_fraction"] = round(sum(x == y for x, y in pairs) / max(len(pairs), 1), 4)
        else:
            item["error"] = {k: v for k, v in outs.items() if not isinstance(v, list)}
        res["sampled"].append(item)
        log(f"  sampled {mode}: match vs CPU {item.get('match_fraction')} {item.get('error', '')}")
        write_json(path, res)

    # 3) bf16: report only
    for variant in VARIANTS:
        for pi in range(len(prompts)):
            if broken() or clock.left() < 8:
                res["skipped"].append(f"bf16 {variant} p{pi}")
                continue
            it = gen("bf16", variant, pi)
            res["bf16"].append(it)
            log(f"  bf16 {variant} p{pi}: match={it.get('match_fraction')} first_mismatch={it.get('first_mismatch')}")
            write_json(path, res)

    # verdict
    f32_ok = bool(res["f32"]) and all(it.get("identical") for it in res["f32"]) \
        and len(res["f32"]) == len(VARIANTS) * len(prompts)
    dec_ok = bool(res["decode"]) and all(
        it.get("max_abs_diff_vs_golden") is not None and it["max_abs_diff_vs_golden"] <= 1 for it in res["decode"]
    ) and len(res["decode"]) == len(VARIANTS)
    und_ok = bool(res["describe"]) and all(it.get("identical") for it in res["describe"])
    bf = [it["match_fraction"] for it in res["bf16"] if "match_fraction" in it]
    res["summary"] = {
        "f32_tokens_identical": f32_ok,
        "f32_runs": f"{sum(bool(it.get('identical')) for it in res['f32'])}/{len(VARIANTS) * len(prompts)} identical",
        "decode_within_1": dec_ok,
        "decode_max_abs_diff": max([it.get("max_abs_diff_vs_golden") or 0 for it in res["decode"]], default=None),
        "bf16_match_fraction_mean": round(sum(bf) / len(bf), 4) if bf else None,
        "bf16_match_fraction_min": min(bf) if bf else None,
        "describe_identical": und_ok,
        "sampled_match_vs_cpu": {it["mode"]: it.get("match_fraction") for it in res["sampled"]},
        "cudnn_decode": res.get("decode_cudnn"),
        "pass": f32_ok and dec_ok and und_ok and all("error" not in it for it in res["sampled"]),
    }
    write_json(path, res)
    s = res["summary"]
    print(f"PARITY {'PASS' if s['pass'] else 'FAIL'}: f32 {s['f32_runs']}; decode max|diff| "
          f"{s['decode_max_abs_diff']} (<=1: {dec_ok}); bf16 token match mean {s['bf16_match_fraction_mean']} "
          f"min {s['bf16_match_fraction_min']}; sampled vs CPU {s['sampled_match_vs_cpu']}; "
          f"skipped {len(res['skipped'])}", flush=True)
    return 0 if s["pass"] else 1


# ------------------------------------------------------------------------------------------------
# bench: random full-size model
# ------------------------------------------------------------------------------------------------

SIZES = {
    # hidden, intermediate, layers, heads
    "1b": dict(hidden=2048, inter=5632, layers=24, heads=16),
    "7b": dict(hidden=4096, inter=11008, layers=30, heads=32),
    # dry-run size: small LM and SigLIP, VQ at 32 px (64 image tokens) so it runs on a CPU in seconds
    "tiny": dict(hidden=64, inter=128, layers=2, heads=4),
    # the CPU comparison of issue 5: real vocabulary, VQ and SigLIP, a mid-sized LM
    "mid": dict(hidden=1024, inter=2816, layers=8, heads=8),
}


def special_ids(tok_json: Path) -> dict:
    d = json.loads(tok_json.read_text())
    ids = {t["content"]: t["id"] for t in d.get("added_tokens", [])}
    vocab = d.get("model", {}).get("vocab", {})
    out = {}
    for s in (BOS, EOS, PAD, BOI, IMG):
        if s in ids:
            out[s] = ids[s]
        elif isinstance(vocab, dict) and s in vocab:
            out[s] = vocab[s]
        else:
            raise KeyError(f"{tok_json}: no token {s!r}")
    return out


def make_config(size: str, ids: dict, layers: int | None, vision_layers: int | None):
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    s = SIZES[size]
    h = s["hidden"]
    text = LlamaConfig(
        vocab_size=102400 if size != "tiny" else 512,
        hidden_size=h,
        intermediate_size=s["inter"],
        num_hidden_layers=layers or s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["heads"],
        hidden_act="silu",
        max_position_embeddings=16384 if size != "tiny" else 256,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        pad_token_id=ids[PAD],
        tie_word_embeddings=False,
    )
    if size == "tiny":
        vision = JanusVisionConfig(hidden_size=32, num_hidden_layers=vision_layers or 2, num_attention_heads=2,
                                   image_size=32, patch_size=4, projection_dim=h, num_image_tokens=64)
        vq = JanusVQVAEConfig(embed_dim=8, num_embeddings=128, latent_channels=32, base_channels=32,
                              channel_multiplier=[1, 1, 2], num_res_blocks=2, projection_dim=h,
                              image_token_embed_dim=h, num_patches=8)
    else:
        vision = JanusVisionConfig(projection_dim=h, **({"num_hidden_layers": vision_layers} if vision_layers else {}))
        grid = vision.image_size // vision.patch_size  # 24: the VQ latent grid of a 384 px image
        # num_patches must match the 576 generated tokens (the class default, 32, is not Janus-Pro's)
        vq = JanusVQVAEConfig(projection_dim=h, image_token_embed_dim=h, num_patches=grid)
        assert vision.num_image_tokens == grid * grid, (vision.num_image_tokens, grid)
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=ids[IMG],
                       tie_word_embeddings=False)


def build_random_model(cfg, device, dtype, seed: int):
    """Constructs directly on `device` in `dtype` and fills every parameter with scaled normals
    (1/sqrt(fan_in); embeddings N(0,1); norm weights 1; biases 0) so the activations stay finite."""
    import torch
    from transformers import JanusForConditionalGeneration

    torch.manual_seed(seed)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = JanusForConditionalGeneration(cfg)
    finally:
        torch.set_default_dtype(prev)
    model = model.to(device=device, dtype=dtype).eval()
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim <= 1:
                p.fill_(0.0 if name.endswith("bias") else 1.0)
            elif "embed" in name or "embedding" in name:
                p.normal_(0.0, 1.0, generator=g)
            else:
                fan_in = p[0].numel()
                p.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=g)
    assert model.lm_head.weight.data_ptr() != model.model.language_model.embed_tokens.weight.data_ptr()
    return model


def set_generation_config(model, ids: dict) -> None:
    """The generation config the goldens use (CFG 5, temperature 1), from make_goldens.py."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_goldens import set_generation_config as shared

    shared(model, ids)


def param_counts(model) -> dict:
    def count(m):
        return sum(p.numel() for p in m.parameters())

    jm = model.model
    lm = jm.language_model
    c = {
        "total": count(model),
        "language_model": count(lm),
        "lm_embed_tokens": lm.embed_tokens.weight.numel(),
        "lm_head": model.lm_head.weight.numel(),
        "generation_head": count(jm.generation_head),
        "generation_aligner": count(jm.generation_aligner),
        "generation_embeddings": count(jm.generation_embeddings),
        "vision_model": count(jm.vision_model),
        "aligner": count(jm.aligner),
        "vqmodel": count(jm.vqmodel),
    }
    # docs §7: what one image-decode step reads = LM layers (+ final norm) + gen_head + gen_aligner;
    # the text embedding is only gathered at prefill, the lm_head is not used, the 16384x8 image
    # embedding is gathered (2 rows per step)
    c["per_step_read_doc"] = c["language_model"] - c["lm_embed_tokens"] + c["generation_head"] + c["generation_aligner"]
    # the brief's wider count (language_model incl. its embedding + gen head/aligner/embeddings)
    c["per_step_read_incl_embeddings"] = (c["language_model"] + c["generation_head"] + c["generation_aligner"]
                                          + c["generation_embeddings"])
    return c


def floor_model(n_params: int, bytes_per_param: int, hidden_kv: int, layers: int, rows: int, prompt_len: int,
                steps: int, bw: float = HBM_BW) -> dict:
    """docs/performance-and-users.md §7.3: bytes = steps*W + rows*KV/token*sum_t(P+t), time = bytes/BW."""
    w = n_params * bytes_per_param
    kv_tok = 2 * hidden_kv * bytes_per_param * layers
    sum_ctx = steps * prompt_len + (steps - 1) * steps // 2
    weight_bytes = steps * w
    kv_bytes = rows * kv_tok * sum_ctx
    return {
        "params_read_per_step": n_params, "weight_bytes_per_step": w, "kv_bytes_per_token": kv_tok,
        "prompt_len": prompt_len, "steps": steps, "rows": rows, "sum_ctx_tokens": sum_ctx,
        "weight_bytes_total": weight_bytes, "kv_bytes_total": kv_bytes,
        "weights_only_floor_s": weight_bytes / bw, "floor_s": (weight_bytes + kv_bytes) / bw,
    }


def print_floor(tag: str, f: dict) -> None:
    print(f"  floor[{tag}]: W = {f['params_read_per_step'] / 1e9:.4f}B params x {f['weight_bytes_per_step'] / f['params_read_per_step']:.0f} B"
          f" = {f['weight_bytes_per_step'] / 1e9:.3f} GB/step; KV/token = {f['kv_bytes_per_token']:,} B;"
          f" P = {f['prompt_len']}, rows = {f['rows']}, steps = {f['steps']}, sum_t(P+t) = {f['sum_ctx_tokens']:,}",
          flush=True)
    print(f"      {f['steps']} x {f['weight_bytes_per_step'] / 1e9:.3f} GB = {f['weight_bytes_total'] / 1e12:.3f} TB"
          f" + {f['rows']} x {f['kv_bytes_per_token']:,} B x {f['sum_ctx_tokens']:,} = {f['kv_bytes_total'] / 1e12:.3f} TB"
          f" -> {(f['weight_bytes_total'] + f['kv_bytes_total']) / 1e12:.3f} TB / 4.8 TB/s = {f['floor_s']:.3f} s"
          f" (weights only {f['weights_only_floor_s']:.3f} s)", flush=True)


def tokenize_prompt(model_dir: Path, prompt: str, ids: dict) -> list[int]:
    text = f"<|User|>: {prompt}\n\n<|Assistant|>:{BOI}"
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir))
        out = tok(text).input_ids
    except Exception as e:  # fall back to the raw tokenizers library
        log(f"AutoTokenizer failed ({e!r}); using tokenizers directly")
        from tokenizers import Tokenizer

        out = Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(text).ids
    if not out or out[0] != ids[BOS]:
        out = [ids[BOS]] + list(out)
    assert out[-1] == ids[BOI], f"prompt ids do not end with <begin_of_image>: {out[-5:]}"
    return list(out)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def patch_static_cache_signature() -> None:
    """transformers 5.17's Janus generate calls GenerationMixin._prepare_static_cache without the
    `prefill_chunk_size` argument that this version made required (TypeError); give it its
    neutral default so the reference runs unchanged otherwise."""
    import inspect
    from transformers.generation.utils import GenerationMixin

    orig = GenerationMixin._prepare_static_cache
    p = inspect.signature(orig).parameters.get("prefill_chunk_size")
    if p is None or p.default is not inspect.Parameter.empty or getattr(orig, "_janus_patched", False):
        return

    def patched(self, *args, **kwargs):
        kwargs.setdefault("prefill_chunk_size", None)
        return orig(self, *args, **kwargs)

    patched._janus_patched = True
    GenerationMixin._prepare_static_cache = patched
    log("patched GenerationMixin._prepare_static_cache: prefill_chunk_size defaults to None")


def ref_generate(model, ids: list[int], n: int, device, seed: int) -> dict:
    """transformers' reference: generate(generation_mode="image") + decode_image_tokens, timed."""
    import torch

    patch_static_cache_signature()

    input_ids = torch.tensor([ids], device=device)
    attn = torch.ones_like(input_ids)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(seed)
    sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        toks = model.generate(input_ids, attention_mask=attn, generation_mode="image", do_sample=True,
                              guidance_scale=5.0, num_return_sequences=n, top_k=0, temperature=1.0)
    sync(device)
    t1 = time.perf_counter()
    with torch.no_grad():
        img = model.decode_image_tokens(toks)
    sync(device)
    t2 = time.perf_counter()
    r = {"tokens_s": round(t1 - t0, 3), "decode_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3),
         "shape": list(toks.shape), "image_shape": list(img.shape),
         "unique_tokens_image0": int(toks[0].unique().numel()),
         "images_finite": bool(torch.isfinite(img).all())}
    if device.type == "cuda":
        r["peak_mem_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        r["peak_mem_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / 2**30, 2)
    del toks, img
    return r


def copy_tokenizer_files(dst: Path, vision_cfg, n_tokens: int) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                 "preprocessor_config.json", "processor_config.json"):
        src = TINY_HF / name
        if src.is_file():
            shutil.copy(src, dst / name)
    # the processor files describe the tiny 32 px model; make them match this one
    size = {"height": vision_cfg.image_size, "width": vision_cfg.image_size}
    pre = dst / "preprocessor_config.json"
    if pre.is_file():
        d = json.loads(pre.read_text())
        d["size"] = size
        pre.write_text(json.dumps(d, indent=2))
    proc = dst / "processor_config.json"
    if proc.is_file():
        d = json.loads(proc.read_text())
        d["num_image_tokens"] = n_tokens
        if isinstance(d.get("image_processor"), dict):
            d["image_processor"]["size"] = size
        proc.write_text(json.dumps(d, indent=2))


def cmd_bench(a) -> int:
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    bench_path = out / "bench.json"
    clock = Clock(a.deadline)
    device = torch.device(a.device)
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32, "f16": torch.float16}[a.dtype]
    bpp = torch.tensor([], dtype=dtype).element_size()
    key = a.tag or (a.size + (f"-{a.layers}L" if a.layers else ""))
    ns = [int(x) for x in a.n.split(",") if x]
    rec = {"size": a.size, "layers_override": a.layers, "device": a.device, "dtype": a.dtype, "ns": ns,
           "prompt": BENCH_PROMPT, "torch": torch.__version__, "transformers": transformers.__version__,
           "runs": {}, "skipped": [], "errors": []}

    def save():
        update_json(bench_path, key, rec)

    ids = special_ids(TINY_HF / "tokenizer.json")
    rec["special_ids"] = ids
    cfg = make_config(a.size, ids, a.layers, a.vision_layers)
    tc = cfg.text_config
    n_img_tokens = cfg.vision_config.num_image_tokens
    log(f"[{key}] building random model on {device} ({a.dtype}): hidden {tc.hidden_size}, inter "
        f"{tc.intermediate_size}, layers {tc.num_hidden_layers}, heads {tc.num_attention_heads}, "
        f"image tokens {n_img_tokens}")
    t = time.perf_counter()
    model = build_random_model(cfg, device, dtype, a.seed)
    set_generation_config(model, ids)
    sync(device)
    rec["build_s"] = round(time.perf_counter() - t, 2)
    pc = param_counts(model)
    rec["params"] = pc
    log(f"[{key}] built in {rec['build_s']}s; params: " + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in pc.items()))
    if device.type == "cuda":
        rec["weights_gib"] = round(torch.cuda.memory_allocated(device) / 2**30, 2)

    # prompt ids (the tiny tokenizer is char-level-ish, so P is longer than the real ~50)
    model_dir = Path(a.workdir) / f"janus-random-{key}"
    shutil.rmtree(model_dir, ignore_errors=True)
    model_dir.mkdir(parents=True)
    copy_tokenizer_files(model_dir, cfg.vision_config, n_img_tokens)
    prompt_ids = tokenize_prompt(model_dir, BENCH_PROMPT, ids)
    rec["prompt_len"] = len(prompt_ids)

    # sanity: logits of the first image step are finite and not degenerate
    with torch.no_grad():
        x = torch.tensor([prompt_ids], device=device)
        hs = model.model.language_model(input_ids=x).last_hidden_state[:, -1, :]
        logits = model.model.generation_head(hs).float()
    rec["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    rec["sanity"] = {"logits_finite": bool(torch.isfinite(logits).all()), "logits_std": float(logits.std()),
                     "hidden_std": float(hs.float().std())}
    log(f"[{key}] sanity: {rec['sanity']}")
    if not rec["sanity"]["logits_finite"]:
        rec["errors"].append("non-finite logits from the random model")
        save()
        return 1

    # floor (docs §7): per-step read params x bytes, KV = 2*h*bytes*L per token, rows = 2n
    rec["floor"] = {}
    hkv = tc.num_key_value_heads * (getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads)
    L = tc.num_hidden_layers
    for n in ns:
        f = floor_model(pc["per_step_read_doc"], bpp, hkv, L, 2 * n, len(prompt_ids), n_img_tokens)
        f_brief = floor_model(pc["per_step_read_incl_embeddings"], bpp, hkv, L, 2 * n, len(prompt_ids), n_img_tokens)
        f_doc50 = floor_model(pc["per_step_read_doc"], bpp, hkv, L, 2 * n, DOC_PROMPT_LEN, n_img_tokens)
        rec["floor"][str(n)] = {"doc": f, "incl_embeddings": f_brief, "doc_P50": f_doc50}
        print(f"[{key}] HBM floor for n={n} (docs §7.3 arithmetic, 4.8 TB/s, {bpp} B/param):", flush=True)
        print_floor(f"n={n}, actual P", f)
        print_floor(f"n={n}, P=50 as in the doc", f_doc50)
        print(f"      weights-only with embeddings counted (language_model+gen head/aligner/embeddings = "
              f"{pc['per_step_read_incl_embeddings'] / 1e9:.4f}B): {f_brief['weights_only_floor_s']:.3f} s", flush=True)
    save()

    t = time.perf_counter()
    model.save_pretrained(str(model_dir), safe_serialization=True)
    rec["save_s"] = round(time.perf_counter() - t, 2)
    rec["model_dir"] = str(model_dir)
    rec["model_dir_bytes"] = sum(p.stat().st_size for p in model_dir.iterdir() if p.is_file())
    gc_saved = json.loads((model_dir / "generation_config.json").read_text())
    cfg_saved = json.loads((model_dir / "config.json").read_text())
    rec["saved_ids"] = {"image_token_id": cfg_saved.get("image_token_id"),
                        "generation_config": {k: gc_saved.get(k) for k in ("bos_token_id", "eos_token_id",
                                                                           "pad_token_id", "generation_kwargs")}}
    log(f"[{key}] saved to {model_dir} in {rec['save_s']}s ({rec['model_dir_bytes'] / 1e9:.2f} GB): "
        f"{sorted(p.name for p in model_dir.iterdir())}; ids {rec['saved_ids']}")
    save()

    binp = Path(a.bin) if a.bin else None
    have_bin = bool(binp and binp.is_file() and os.access(binp, os.X_OK))
    if not have_bin:
        rec["skipped"].append(f"ours: binary {a.bin} missing")
        log(rec["skipped"][-1])
    ours_broken = [False]
    run_dir = Path(a.workdir) / f"runs-{key}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)

    def ours(n: int, tag: str, cap: float) -> None:
        if not have_bin or ours_broken[0]:
            return
        if clock.left() < 15:
            rec["skipped"].append(f"ours {tag}: out of time")
            return
        o = run_dir / (f"{tag}.png" if n == 1 else tag)
        tk = run_dir / f"{tag}.tokens.json"
        r = run_cmd([binp, "--log", "info", "generate", "--model", model_dir, "--device", a.device, "--dtype", a.dtype, "-n", str(n),
                     "--seed", "1", "--prompt", BENCH_PROMPT, "--out", o, "--tokens-out", tk],
                    clock.timeout(cap), poll_gpu=(device.type == "cuda"), label=f"ours {tag}")
        if r["rc"] == 0 and "tokens_s" in r:
            r["total_s"] = round(r["tokens_s"] + r["decode_s"], 3)
            try:
                toks = json.loads(tk.read_text())
                r["n_images"] = len(toks)
                r["tokens_per_image"] = sorted({len(t) for t in toks})
                r["unique_tokens_image0"] = len(set(toks[0]))
                cb = cfg.vq_config.num_embeddings
                r["tokens_in_range"] = all(0 <= v < cb for t in toks for v in t)
            except Exception as e:
                r["tokens_check_error"] = repr(e)
        else:
            ours_broken[0] = True
            rec["errors"].append(f"ours {tag} failed (rc {r['rc']}); further runs of ours skipped")
        rec["runs"][f"ours_{tag}"] = r
        save()

    def ref(n: int, tag: str) -> None:
        if a.no_ref:
            return
        try:
            r = ref_generate(model, prompt_ids, n, device, a.seed)
            log(f"[{key}] ref {tag}: {r}")
            rec["runs"][f"ref_{tag}"] = r
        except Exception as e:
            rec["errors"].append(f"ref {tag}: {e!r}")
            log(f"[{key}] ref {tag} FAILED: {e!r}")
        save()

    big = ns[0]
    # ours: warm-up (load, driver caches), then timed
    ours(big, f"n{big}_warmup", a.ours_timeout)
    ours(big, f"n{big}", a.ours_timeout)

    def bench(binary: Path, tag: str, extra: list) -> None:
        """`janus bench` of one build: prefill, per-step latency, VQ decode, device memory."""
        r = run_cmd([binary, "bench", "--model", model_dir, "--device", a.device, "--dtype", a.dtype, "-n", str(big),
                     "--json"] + extra, clock.timeout(a.ours_timeout), label=tag.replace("_", " "))
        try:
            r["report"] = json.loads(r["stdout"][r["stdout"].index("{"):])
            log(f"  {tag}: {r['report']}")
        except Exception as e:
            r["report_error"] = repr(e)
        r.pop("stdout", None)
        rec["runs"][tag] = r
        save()

    if have_bin and not ours_broken[0] and clock.left() > 30:
        bench(binp, "ours_bench", [])
    # the same from the cuDNN build (VQ convolutions through cuDNN), when one was carried
    cudnn = Path(a.bin_cudnn) if a.bin_cudnn else None
    if cudnn and cudnn.is_file() and os.access(cudnn, os.X_OK) and clock.left() > 40:
        bench(cudnn, "ours_cudnn_bench", ["--steps", "32", "--warmup", "4"])
    elif a.bin_cudnn:
        rec["skipped"].append(f"cudnn bench: {a.bin_cudnn} missing or no time")
    # reference: warm-up then timed (skip the timed one if there is clearly no time for it)
    ref(big, f"n{big}_warmup")
    w = rec["runs"].get(f"ref_n{big}_warmup", {}).get("total_s")
    if w is not None and clock.left() < 1.3 * w + 10:
        rec["skipped"].append(f"ref n{big} timed run: {clock.left():.0f}s left (warm-up took {w}s)")
        log(rec["skipped"][-1])
    else:
        ref(big, f"n{big}")
    # the other n (n=1), ours then reference, if time allows
    for n in ns[1:]:
        ours(n, f"n{n}", a.ours_timeout)
        est = (rec["runs"].get(f"ref_n{big}", {}) or rec["runs"].get(f"ref_n{big}_warmup", {})).get("total_s")
        if est is not None and clock.left() < est + 10:
            rec["skipped"].append(f"ref n{n}: {clock.left():.0f}s left")
            log(rec["skipped"][-1])
        else:
            ref(n, f"n{n}")
    rec["done"] = True
    save()
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if not a.keep:
        shutil.rmtree(model_dir, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    print_table(json.loads(bench_path.read_text()), keys=[key])
    return 0 if not rec["errors"] else 1


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------


def _f(v, nd=2):
    return "-" if v is None else f"{v:.{nd}f}"


def table_rows(bench: dict, keys=None) -> list[str]:
    rows = ["| model | n | ours tokens s | ours decode s | ours total s | ours process wall s | ours load s | "
            "ref tokens s | ref decode s | ref total s | floor s | ratio ours/ref (total) | "
            "ratio ours/ref (tokens) | ours tokens / floor |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, rec in bench.items():
        if keys and key not in keys:
            continue
        for n in rec.get("ns", []):
            runs = rec.get("runs", {})
            o = runs.get(f"ours_n{n}") or {}
            oflag = ""
            if "tokens_s" not in o and "tokens_s" in runs.get(f"ours_n{n}_warmup", {}):
                o, oflag = runs[f"ours_n{n}_warmup"], " (warm-up)"
            r = runs.get(f"ref_n{n}") or {}
            rflag = ""
            if "tokens_s" not in r and "tokens_s" in runs.get(f"ref_n{n}_warmup", {}):
                r, rflag = runs[f"ref_n{n}_warmup"], " (warm-up)"
            fl = (rec.get("floor", {}).get(str(n)) or {}).get("doc", {}).get("floor_s")
            ot, rt = o.get("total_s"), r.get("total_s")
            ratio = ot / rt if ot is not None and rt else None
            ratio_t = o["tokens_s"] / r["tokens_s"] if o.get("tokens_s") is not None and r.get("tokens_s") else None
            of = o["tokens_s"] / fl if o.get("tokens_s") is not None and fl else None
            name = f"random Janus-Pro-{key} {rec.get('dtype', '')}"
            rows.append(f"| {name} | {n} | {_f(o.get('tokens_s'), 1)}{oflag} | {_f(o.get('decode_s'), 1)} | "
                        f"{_f(ot, 1)} | {_f(o.get('wall_s'))} | {_f(o.get('load_s'))} | {_f(r.get('tokens_s'))}{rflag} | "
                        f"{_f(r.get('decode_s'))} | {_f(rt)} | {_f(fl, 3)} | {_f(ratio)} | {_f(ratio_t)} | {_f(of, 1)} |")
    return rows


def print_table(bench: dict, keys=None) -> str:
    text = "\n".join(table_rows(bench, keys))
    print(text, flush=True)
    return text


def cmd_report(a) -> int:
    out = Path(a.out)
    lines = ["# gpu-check summary", ""]
    env = out / "env.json"
    if env.is_file():
        e = json.loads(env.read_text()).get("python", {})
        lines.append(f"GPU {e.get('gpu')} | torch {e.get('torch')} (CUDA {e.get('torch_cuda')}) | "
                     f"transformers {e.get('transformers')}")
        lines.append("")
    par = out / "parity.json"
    if par.is_file():
        p = json.loads(par.read_text())
        s = p.get("summary")
        if s:
            lines.append(f"Parity: {'PASS' if s['pass'] else 'FAIL'}; f32 {s['f32_runs']}; decode max|diff| "
                         f"{s['decode_max_abs_diff']}; bf16 token match mean {s['bf16_match_fraction_mean']} "
                         f"min {s['bf16_match_fraction_min']}; sampled vs CPU {s.get('sampled_match_vs_cpu')}; "
                         f"cuDNN decode {s.get('cudnn_decode')}")
        else:
            lines.append(f"Parity: incomplete ({len(p.get('f32', []))} f32 runs, {len(p.get('decode', []))} decodes, "
                         f"{len(p.get('bf16', []))} bf16 runs recorded)")
        lines.append("")
    else:
        lines += ["Parity: no parity.json", ""]
    bp = out / "bench.json"
    if bp.is_file():
        bench = json.loads(bp.read_text())
        lines += table_rows(bench)
        for key, rec in bench.items():
            extra = []
            for tag, r in rec.get("runs", {}).items():
                bits = []
                if r.get("rc", 0) != 0:
                    bits.append(f"rc {r.get('rc')}")
                for k, unit in (("wall_s", "s wall"), ("load_s", "s load"), ("max_rss_mib", "MiB RSS"),
                                ("gpu_mem_peak_delta_mib", "MiB GPU (nvidia-smi delta)"),
                                ("peak_mem_allocated_gib", "GiB torch peak allocated"),
                                ("unique_tokens_image0", "unique tokens in image 0")):
                    if r.get(k) is not None:
                        bits.append(f"{r[k]} {unit}")
                extra.append(f"{tag}: " + ", ".join(bits))
            lines.append("")
            lines.append(f"**{key}**: build {rec.get('build_s')} s, save {rec.get('save_s')} s "
                         f"({(rec.get('model_dir_bytes') or 0) / 1e9:.1f} GB), prompt length P = {rec.get('prompt_len')}, "
                         f"weights on GPU {rec.get('weights_gib', '-')} GiB, attention {rec.get('attn_implementation')}")
            for n, fl in (rec.get("floor") or {}).items():
                d = fl["doc"]
                lines.append(f"- floor n={n} (docs §7.3): ({d['steps']} x {d['weight_bytes_per_step'] / 1e9:.3f} GB + "
                             f"{d['rows']} rows x {d['kv_bytes_per_token']:,} B x {d['sum_ctx_tokens']:,}) / 4.8 TB/s = "
                             f"{d['floor_s']:.3f} s (weights only {d['weights_only_floor_s']:.3f} s; with P=50 "
                             f"{fl['doc_P50']['floor_s']:.3f} s; weights-only counting all LM/gen embeddings "
                             f"{fl['incl_embeddings']['weights_only_floor_s']:.3f} s)")
            lines += [f"- {e}" for e in extra]
            for tag in ("ours_bench", "ours_cudnn_bench"):
                rep = rec.get("runs", {}).get(tag, {}).get("report")
                if rep:
                    lines.append(f"- {tag}: prefill {rep['prefill_ms']:.1f} ms, step median {rep['step_ms_median']:.2f} ms "
                                 f"(p90 {rep['step_ms_p90']:.2f}, pipelined {rep.get('step_ms_pipelined')}), "
                                 f"VQ decode {rep['vq_decode_s']:.3f} s, peak {rep.get('peak_memory_gib')} GiB")
            if rec.get("skipped"):
                lines.append(f"{key} skipped: {rec['skipped']}")
            if rec.get("errors"):
                lines.append(f"{key} errors: {rec['errors']}")
    else:
        lines.append("Bench: no bench.json")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    print(text, flush=True)
    return 0


# ------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("env")
    p.add_argument("--out")

    p = sub.add_parser("parity")
    p.add_argument("--bin", default=str(REPO / "target/cuda/release/janus"))
    p.add_argument("--bin-cudnn", default=None, help="janus built with --features cudnn: its VQ decode is checked too (optional)")
    p.add_argument("--cpu-bin", default=None, help="CPU janus binary to compare the VQ decode with (optional)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", required=True)
    p.add_argument("--workdir", default=None)
    p.add_argument("--deadline", type=float, default=None, help="unix time by which to stop")
    p.add_argument("--run-timeout", type=float, default=45.0, help="cap per janus process (s)")
    p.add_argument("--first-run-timeout", type=float, default=90.0, help="cap for the first janus process (s)")

    p = sub.add_parser("bench")
    p.add_argument("--size", choices=sorted(SIZES), default="1b")
    p.add_argument("--layers", type=int, default=None, help="override the LM depth (CPU dry runs)")
    p.add_argument("--vision-layers", type=int, default=None, help="override the SigLIP depth (CPU dry runs)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "f32", "f16"])
    p.add_argument("--n", default="16,1", help="image counts, the first one gets warm-ups (default 16,1)")
    p.add_argument("--bin", default=str(REPO / "target/cuda/release/janus"))
    p.add_argument("--bin-cudnn", default=None, help="janus built with --features cudnn: its bench is recorded too (optional)")
    p.add_argument("--out", required=True)
    p.add_argument("--workdir", default="/tmp/janus-gpu-bench")
    p.add_argument("--deadline", type=float, default=None)
    p.add_argument("--ours-timeout", type=float, default=120.0, help="cap per janus process (s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tag", default=None, help="key in bench.json (default: the size)")
    p.add_argument("--no-ref", action="store_true", help="skip the transformers reference timing")
    p.add_argument("--keep", action="store_true", help="keep the saved model and outputs in --workdir")

    p = sub.add_parser("report")
    p.add_argument("--out", required=True)

    a = ap.parse_args()
    return {"env": cmd_env, "parity": cmd_parity, "bench": cmd_bench, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
