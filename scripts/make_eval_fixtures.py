#!/usr/bin/env python3
"""Build the tiny scorer checkpoints for `janus-eval geneval score` and their golden outputs.

Everything is made locally and deterministically (no hub access):

  assets/tiny-eval/detr-tiny/    a tiny random DETR in the on-disk format of the hub's
                                 facebook/detr-resnet-50: config.json (hub-style, id2label with the
                                 91 COCO ids) + model.safetensors (f32) with the hub's tensor names
                                 (timm backbone `model.backbone.conv_encoder.model.*`, frozen batch
                                 norm buffers, `self_attn.out_proj`, `fc1`/`fc2`, ...)
  assets/tiny-eval/clip-tiny/    a tiny random CLIP in the layout of openai/clip-vit-large-patch14:
                                 config.json + model.safetensors (transformers' names) + a tiny
                                 byte-level BPE tokenizer.json built with CLIP's normaliser,
                                 pre-tokeniser, `</w>` suffix and start/end post-processor
  assets/tiny-eval/image.png     the fixed input image (320x240)
  assets/tiny-eval/detr.json     golden DETR outputs of transformers' DetrForObjectDetection
                                 (pixel values from DetrImageProcessor, logits, boxes, detections)
  assets/tiny-eval/clip.json     golden CLIP outputs of transformers' CLIPModel (token ids, text and
                                 image embeddings, colour probabilities) with open_clip's ViT-L-14
                                 transform done in PIL + numpy

The DETR backbone: transformers builds DETR's ResNet through timm, which needs torchvision (not
installed here, and it would change the processors' backends). The script therefore defines the
timm ResNet-50 modules it needs (stem conv1/bn1/maxpool, Bottleneck blocks with conv1..3, bn1..3,
downsample.0/1 and the stride on the 3x3 conv, as timm.models.resnet) with timm's module names,
plugs a tiny one into transformers' DetrConvEncoder, and freezes its batch norm with transformers'
own `replace_batch_norm`. The transformer, heads, position embedding and post-processing are
transformers' code.

Run through scripts/make_eval_fixtures.sh.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

import transformers
from transformers import CLIPConfig, CLIPModel, DetrConfig, DetrForObjectDetection
from transformers.models.detr import modeling_detr

COLOURS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"]

# facebook/detr-resnet-50 config.json `id2label`: COCO category ids, "N/A" where COCO has none.
COCO91 = [
    "N/A", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack",
    "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet",
    "N/A", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "N/A", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
]


# --- timm ResNet (names as timm.models.resnet), tiny ------------------------------------------


class Bottleneck(torch.nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride, downsample):
        super().__init__()
        nn = torch.nn
        width = planes
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = nn.ReLU()
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.act3 = nn.ReLU()
        self.downsample = (
            nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
            if downsample
            else None
        )

    def forward(self, x):
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act3(x + shortcut)


class TimmResNetFeatures(torch.nn.Module):
    """timm `resnet50(features_only=True)` layout: returns the stage outputs (DETR uses the last)."""

    def __init__(self, stem_width, channels, layers):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.act1 = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = stem_width
        for i, (planes, n) in enumerate(zip(channels, layers)):
            stride = 1 if i == 0 else 2
            blocks = []
            for b in range(n):
                blocks.append(
                    Bottleneck(inplanes, planes, stride if b == 0 else 1, downsample=(b == 0))
                )
                inplanes = planes * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.channels = [c * Bottleneck.expansion for c in channels]

    def forward(self, x):
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        out = []
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            out.append(x)
        return out


def randomise_batch_norm(module, gen):
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 1.0 + 0.2 * torch.randn(n, generator=gen)
            m.bias.data = 0.1 * torch.randn(n, generator=gen)
            m.running_mean.data = 0.1 * torch.randn(n, generator=gen)
            m.running_var.data = 0.5 + torch.rand(n, generator=gen)


# transformers-5 module names -> the names stored in the hub checkpoint (the inverse of
# transformers' conversion_mapping "DetrModel" renames).
def detr_hub_name(name: str) -> str:
    name = name.replace("model.backbone.model.", "model.backbone.conv_encoder.model.")
    name = name.replace(".o_proj.", ".out_proj.")
    name = name.replace(".mlp.fc1.", ".fc1.").replace(".mlp.fc2.", ".fc2.")
    return name


def make_image(path: Path):
    w, h = 320, 240
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([(xx * 255 // (w - 1)), (yy * 255 // (h - 1)), ((xx + yy) * 7) % 256], -1).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    d = ImageDraw.Draw(img)
    d.rectangle([30, 40, 130, 150], fill=(220, 30, 30))
    d.ellipse([170, 60, 290, 200], fill=(30, 60, 220))
    d.rectangle([140, 170, 200, 230], fill=(250, 250, 250))
    img.save(path)
    return img


def f32list(t):
    return [float(x) for x in t.detach().to(torch.float32).reshape(-1).tolist()]


def make_detr(out: Path, image: Image.Image):
    gen = torch.Generator().manual_seed(1234)
    torch.manual_seed(1234)
    d_model = 32
    cfg = DetrConfig(
        use_timm_backbone=False,
        backbone_config={"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 8, 8, 8], "depths": [1, 1, 1, 1]},
        d_model=d_model,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=12,
        id2label={i: n for i, n in enumerate(COCO91)},
    )
    model = DetrForObjectDetection(cfg).eval()
    backbone = TimmResNetFeatures(stem_width=8, channels=(8, 16, 32, 64), layers=(1, 2, 1, 1))
    randomise_batch_norm(backbone, gen)
    with torch.no_grad():
        modeling_detr.replace_batch_norm(backbone)
    model.model.backbone.model = backbone
    model.model.backbone.intermediate_channel_sizes = backbone.channels
    model.model.input_projection = torch.nn.Conv2d(backbone.channels[-1], d_model, 1)
    # Random, but not degenerate: larger weights so the outputs depend on the input, and a
    # "person" bias so the tiny detector finds something (meaningless, for the end-to-end test).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "backbone" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / max(1, p[0].numel())) ** 0.5)
            elif "layer_norm" in name or "layernorm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        model.class_labels_classifier.bias[1] += 6.0
        model.class_labels_classifier.bias[3] += 4.0
    model.eval()

    state = {detr_hub_name(k): v.contiguous() for k, v in model.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    d = out / "detr-tiny"
    d.mkdir(parents=True, exist_ok=True)
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    hub_config = {
        "_name_or_path": "tiny-random-detr (janus-rs test fixture)",
        "activation_dropout": 0.0,
        "activation_function": "relu",
        "architectures": ["DetrForObjectDetection"],
        "attention_dropout": 0.0,
        "auxiliary_loss": False,
        "backbone": "resnet50",
        "d_model": d_model,
        "decoder_attention_heads": 4,
        "decoder_ffn_dim": 64,
        "decoder_layers": 2,
        "dilation": False,
        "dropout": 0.1,
        "encoder_attention_heads": 4,
        "encoder_ffn_dim": 64,
        "encoder_layers": 2,
        "id2label": {str(i): n for i, n in enumerate(COCO91)},
        "label2id": {n: i for i, n in enumerate(COCO91) if n != "N/A"},
        "model_type": "detr",
        "num_queries": 12,
        "position_embedding_type": "sine",
        "torch_dtype": "float32",
        "use_pretrained_backbone": True,
        "use_timm_backbone": True,
    }
    (d / "config.json").write_text(json.dumps(hub_config, indent=2) + "\n")
    (d / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "do_resize": True, "format": "coco_detection",
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
        "image_processor_type": "DetrImageProcessor", "max_size": 1333, "size": 800,
    }, indent=2) + "\n")

    # Preprocessing: transformers' DetrImageProcessor (PIL backend: PIL bilinear resize to the
    # shortest edge 800 / longest 1333, rescale 1/255, ImageNet mean/std, no padding for one image).
    from transformers.models.detr.image_processing_pil_detr import DetrImageProcessorPil

    proc = DetrImageProcessorPil()
    enc = proc(images=image, return_tensors="pt")
    pixel_values = enc["pixel_values"]
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values, pixel_mask=enc["pixel_mask"])
    det = proc.post_process_object_detection(outputs, threshold=0.0, target_sizes=[(image.height, image.width)])[0]
    _, _, ph, pw = pixel_values.shape
    step = 997
    flat = pixel_values.reshape(-1)
    golden = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "image": "image.png",
        "pixel_shape": [3, ph, pw],
        "pixel_sample_step": step,
        "pixel_sample": f32list(flat[::step]),
        "pixel_mean": [float(pixel_values[0, c].mean()) for c in range(3)],
        "logits_shape": list(outputs.logits.shape[1:]),
        "logits": f32list(outputs.logits[0]),
        "pred_boxes": f32list(outputs.pred_boxes[0]),
        "detections": [
            {"label": int(l), "score": float(s), "box": [float(v) for v in b]}
            for s, l, b in zip(det["scores"], det["labels"], det["boxes"])
        ],
    }
    (out / "detr.json").write_text(json.dumps(golden) + "\n")


# --- CLIP ---------------------------------------------------------------------------------


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def open_clip_transform(img: Image.Image, size: int) -> torch.Tensor:
    """open_clip's ViT-L-14 eval transform: torchvision Resize(size, BICUBIC) on a PIL image
    (shorter side to `size`, longer side truncated), CenterCrop(size) (offsets rounded
    half-to-even), ToTensor, Normalize."""
    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    top = int(round((nh - size) / 2.0))
    left = int(round((nw - size) / 2.0))
    img = img.crop((left, top, left + size, top + size)).convert("RGB")
    a = np.asarray(img, dtype=np.float32) / 255.0
    a = (a - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


def make_clip_tokenizer(path: Path):
    # CLIP's tokenizer.json pipeline (as in openai/clip-vit-large-patch14), with a tiny vocabulary.
    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(
            Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
            behavior="removed",
            invert=True,
        ),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    names = [l.strip() for l in open(Path(__file__).resolve().parents[1] / "evals/data/geneval/object_names.txt") if l.strip()]
    corpus = []
    for c in COLOURS:
        for o in names[:20]:
            corpus += [f"a photo of a {c} {o}", f"a photo of a {c}-colored {o}", f"a photo of a {c} object"]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    # Rebuild with CLIP's special tokens as the two LAST ids (pooling takes the argmax id).
    model = json.loads(tok.to_str())["model"]
    vocab = dict(model["vocab"])
    n = len(vocab)
    vocab["<|startoftext|>"] = n
    vocab["<|endoftext|>"] = n + 1
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    final = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<|endoftext|>", end_of_word_suffix="</w>", continuing_subword_prefix=""))
    final.normalizer = tok.normalizer
    final.pre_tokenizer = tok.pre_tokenizer
    final.decoder = tok.decoder
    final.post_processor = processors.RobertaProcessing(
        ("<|endoftext|>", n + 1), ("<|startoftext|>", n), trim_offsets=False, add_prefix_space=False
    )
    from tokenizers import AddedToken

    final.add_special_tokens([
        AddedToken("<|startoftext|>", special=True, normalized=True),
        AddedToken("<|endoftext|>", special=True, normalized=True),
    ])
    final.save(str(path))
    return final, n + 2


def make_clip(out: Path, image: Image.Image):
    torch.manual_seed(99)
    d = out / "clip-tiny"
    d.mkdir(parents=True, exist_ok=True)
    tok, vocab_size = make_clip_tokenizer(d / "tokenizer.json")
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
            bos_token_id=vocab_size - 2, eos_token_id=2, pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            image_size=224, patch_size=14, hidden_act="quick_gelu",
        ),
        projection_dim=16,
    )
    model = CLIPModel(cfg).eval()
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=gen))
            elif name != "logit_scale":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    model.save_pretrained(str(d), safe_serialization=True)
    for extra in ["generation_config.json"]:
        (d / extra).unlink(missing_ok=True)

    # Text: every colour prompt for one class, as the classifier builds them.
    cls = "car"
    prompts = []
    for c in COLOURS:
        prompts += [f"a photo of a {c} {cls}", f"a photo of a {c}-colored {cls}", f"a photo of a {c} object"]
    ids = [tok.encode(p).ids for p in prompts]
    L = max(len(i) for i in ids)
    padded = torch.tensor([i + [0] * (L - len(i)) for i in ids])
    with torch.no_grad():
        text = model.get_text_features(input_ids=padded)
        text = text.pooler_output if hasattr(text, "pooler_output") else text
        text = text / text.norm(dim=-1, keepdim=True)
        w = text.reshape(10, 3, -1).mean(1)
        w = w / w.norm(dim=-1, keepdim=True)

    crops = [(30, 40, 130, 150), (170, 60, 290, 200), (0, 0, 320, 240), (140, 170, 145, 230), (10, 10, 234, 234)]
    pix = torch.stack([open_clip_transform(image.crop(b), 224) for b in crops])
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pix)
        img = img.pooler_output if hasattr(img, "pooler_output") else img
        img = img / img.norm(dim=-1, keepdim=True)
        logits = 100.0 * img @ w.T
        probs = logits.softmax(-1)
    golden = {
        "transformers": transformers.__version__,
        "class": cls,
        "prompts": prompts,
        "token_ids": ids,
        "text_embeds": f32list(text),
        "classifier": f32list(w),
        "crops": [list(b) for b in crops],
        "pixel_sample_step": 101,
        "pixel_sample": f32list(pix.reshape(-1)[::101]),
        "image_embeds": f32list(img),
        "logits": f32list(logits),
        "probs": f32list(probs),
        "argmax": [int(i) for i in logits.argmax(-1)],
    }
    (out / "clip.json").write_text(json.dumps(golden) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", default=str(Path(__file__).resolve().parents[1] / "assets/tiny-eval"))
    a = ap.parse_args()
    out = Path(a.assets)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)
    image = make_image(out / "image.png")
    make_detr(out, image)
    make_clip(out, image)
    print("wrote", out)


if __name__ == "__main__":
    main()
