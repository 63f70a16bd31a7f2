#!/usr/bin/python3
"""Build imgvec's default extractor: ImageNet MobileNetV2 as TorchScript.

Run with Debian's python3 (it has torch + torchvision):
    /usr/bin/python3 scripts/make_default_model.py --weights mobilenet_v2-b0353104.pth --out mobilenet_v2.pt

With --maps (and optionally --until N for a mid-level layer) the module returns feature maps
[N, C, H, W] instead, for `imgvec ingest --model FILE --pooling gem|rmac`. With --layers A,B,...
it returns the maps after `features[:A]`, `features[:B]`, ... concatenated along channels (the
layers must share their spatial size): the `balanced` preset's model uses --layers 17,19, i.e.
160 mid-level channels + 1280 top-level channels at stride 32.

The module follows imgvec's extractor contract: float32 RGB NCHW in [0,1] -> [N, 1280]
(ImageNet normalisation inside, then MobileNetV2's features and global average pooling).
It is traced with a dynamic batch, frozen (batch norms folded into the convolutions, weights in
the channels-last layout oneDNN runs fastest) and checked against the eager model. With
--check-image, the full classifier must put a cat class (ImageNet 281-285) in its top 5 for that
photo (setup passes scikit-image's chelsea), which proves the weights are the real ImageNet ones.
"""
import argparse
import os

import torch
import torchvision


class Extractor(torch.nn.Module):
    """Normalisation + MobileNetV2 `features[:until]`; pooled to [N, C] unless `maps`."""

    def __init__(self, net, until=None, maps=False, layers=None):
        super().__init__()
        self.features = net.features[:until] if until else net.features
        self.maps = maps
        # Indexes into `features` after which maps are taken (empty: only the last one).
        self.taps = [l - 1 for l in layers] if layers else []
        if layers:
            self.features = net.features[: max(layers)]
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x):
        # Channels-last inside (oneDNN's fast layout on CPU: with the freeze below, the forward
        # is 1.7x as fast in imgvec); what goes in and comes out stays contiguous NCHW, as the
        # extractor contract says.
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        if self.taps:
            out = []
            for i, layer in enumerate(self.features):
                x = layer(x)
                if i in self.taps:
                    out.append(x)
            return torch.cat(out, dim=1).contiguous()
        x = self.features(x)
        return x.contiguous() if self.maps else x.mean(dim=(2, 3))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--check-image", help="a photo of a cat, e.g. scikit-image's chelsea.png")
    ap.add_argument("--until", type=int, help="keep features[:UNTIL] only (a mid-level layer)")
    ap.add_argument("--maps", action="store_true",
                    help="output [N, C, H, W] feature maps for the engine to pool (GeM, R-MAC)")
    ap.add_argument("--layers", help="comma-separated feature depths whose maps are concatenated")
    a = ap.parse_args()
    layers = [int(l) for l in a.layers.split(",")] if a.layers else None
    if layers:
        a.maps = True
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v2()
    state = torch.load(a.weights, map_location="cpu")
    net.load_state_dict(state, strict=True)
    net.eval()
    model = Extractor(net, a.until, a.maps, layers).eval().to(memory_format=torch.channels_last)
    if a.check_image:
        from PIL import Image

        img = Image.open(a.check_image).convert("RGB").resize((224, 224), Image.BILINEAR)
        x = torch.tensor(list(img.getdata()), dtype=torch.float32).view(224, 224, 3)
        x = (x.permute(2, 0, 1).unsqueeze(0) / 255.0 - model.mean) / model.std
        with torch.no_grad():
            top5 = net(x).topk(5).indices[0].tolist()
        assert any(281 <= c <= 285 for c in top5), f"weights look wrong: top-5 classes {top5}"
        print(f"classifier check passed on {a.check_image}: top-5 ImageNet classes {top5}")
    example = torch.rand(2, 3, 224, 224)
    # Traced at 224; the trace is size-generic (convolutions only), checked at 320 below.
    with torch.no_grad():
        # Frozen: weights become constants and batch norms fold into the convolutions.
        traced = torch.jit.freeze(torch.jit.trace(model, example))
        probe = torch.rand(5, 3, 224, 224)
        eager = model(probe)
        got = traced(probe)
        assert got.shape[0] == 5 and got.dim() == (4 if a.maps else 2), got.shape
        assert torch.allclose(eager, got, atol=1e-4), "traced model differs from eager"
        big = torch.rand(2, 3, 320, 320)
        assert torch.allclose(model(big), traced(big), atol=1e-4), "trace is not size-generic"
    tmp = a.out + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    traced.save(tmp)
    os.replace(tmp, a.out)
    print(f"wrote {a.out}: MobileNetV2 ImageNet features, [N,3,224,224] in [0,1] -> {list(got.shape[1:])}")


if __name__ == "__main__":
    main()
