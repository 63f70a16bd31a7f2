#!/usr/bin/env python3
"""OpenCV SIFT as the oracle for imgvec's own SIFT (ingest/tests/sift_oracle.rs).

For each photo: a seeded homography (rotation, scale, perspective) warps it; both images are
written as PNG beside a JSON record holding the homography and what OpenCV's SIFT achieves on the
pair: ratio-test (0.8) matches and how many reproject within 3 px. The Rust test runs imgvec's
SIFT on the same files and compares.

usage: sift_oracle.py OUT_DIR IMAGE...   (needs opencv-python in the project venv: setup.sh)
"""
import json
import sys

import cv2
import numpy as np

MAX_SIDE = 512
RATIO = 0.8
TOLERANCE_PX = 3.0


def homography(rng, w, h):
    angle = rng.uniform(-30, 30)
    scale = rng.uniform(0.7, 1.1)
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    H = np.vstack([rot, [0, 0, 1]])
    persp = np.eye(3)
    persp[2, 0] = rng.uniform(-4e-4, 4e-4)
    persp[2, 1] = rng.uniform(-4e-4, 4e-4)
    # Perspective about the centre, so the image stays in frame.
    c = np.array([[1, 0, w / 2], [0, 1, h / 2], [0, 0, 1]])
    ci = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1]])
    return c @ persp @ ci @ H


def matches(kp_a, des_a, kp_b, des_b, H):
    if des_a is None or des_b is None or len(des_b) < 2:
        return 0, 0
    def root(d):
        d = d / (d.sum(1, keepdims=True) + 1e-7)
        return np.sqrt(d).astype(np.float32)
    a, b = root(des_a), root(des_b)
    sim = a @ b.T
    order = np.argsort(-sim, axis=1)[:, :2]
    rows = np.arange(len(a))
    d1 = np.sqrt(np.maximum(0, 2 - 2 * sim[rows, order[:, 0]]))
    d2 = np.sqrt(np.maximum(0, 2 - 2 * sim[rows, order[:, 1]]))
    keep = d1 < RATIO * d2
    pa = np.array([kp_a[i].pt for i in np.nonzero(keep)[0]], np.float64).reshape(-1, 2)
    pb = np.array([kp_b[j].pt for j in order[keep, 0]], np.float64).reshape(-1, 2)
    if len(pa) == 0:
        return 0, 0
    proj = cv2.perspectiveTransform(pa.reshape(-1, 1, 2), H).reshape(-1, 2)
    err = np.linalg.norm(proj - pb, axis=1)
    return int(len(pa)), int((err < TOLERANCE_PX).sum())


def main():
    out, images = sys.argv[1], sys.argv[2:]
    rng = np.random.default_rng(6)
    sift = cv2.SIFT_create(nfeatures=1000)
    records = []
    for i, path in enumerate(images):
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            sys.exit(f"{path}: cannot be read")
        h, w = img.shape[:2]
        s = min(1.0, MAX_SIDE / max(h, w))
        if s < 1:
            img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        h, w = img.shape[:2]
        H = homography(rng, w, h)
        warped = cv2.warpPerspective(img, H, (w, h), flags=cv2.INTER_LINEAR)
        a_path, b_path = f"{out}/{i:03d}_a.png", f"{out}/{i:03d}_b.png"
        cv2.imwrite(a_path, img)
        cv2.imwrite(b_path, warped)
        ga = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        gb = cv2.cvtColor(warped, cv2.COLOR_BGR2GRAY)
        kp_a, des_a = sift.detectAndCompute(ga, None)
        kp_b, des_b = sift.detectAndCompute(gb, None)
        m, correct = matches(kp_a, des_a, kp_b, des_b, H)
        records.append({
            "source": path, "a": a_path, "b": b_path, "h": H.tolist(),
            "opencv": {"keypoints_a": len(kp_a), "keypoints_b": len(kp_b),
                       "matches": m, "correct": correct},
        })
    json.dump({"ratio": RATIO, "tolerance_px": TOLERANCE_PX, "pairs": records},
              open(f"{out}/oracle.json", "w"), indent=1)


if __name__ == "__main__":
    main()
