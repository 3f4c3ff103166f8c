"""NumPy reference of MediaPipe's BlazeFace pre- and post-processing.

This is the specification the Rust runtime ports. It runs the ONNX files written by
``convert_blazeface.py`` with onnxruntime; everything around the network is plain NumPy.

Pipeline (MediaPipe ``face_detection_{short,full}_range`` graphs):

1. **Letterbox.** The RGB image (w x h) is placed, centred, on a black square canvas of side
   ``L = floor(max(w, h) * pad + 0.5)`` (``pad >= 1``; ``pad = 1`` is MediaPipe's own letterbox),
   at integer offsets ``off_x = (L - w) // 2``, ``off_y = (L - h) // 2``.
2. **Resample** the canvas to ``S x S`` (S = 128 short, 192 full) by bilinear *point
   sampling* with pixel centres at ``+0.5`` (OpenCV ``warpAffine``/``resize`` INTER_LINEAR
   convention, what MediaPipe's CPU ``ImageToTensorCalculator`` does; no anti-aliasing).
   Output pixel (row i, col j) samples the image at
   ``x = (j + 0.5) * L / S - 0.5 - off_x``, ``y = (i + 0.5) * L / S - 0.5 - off_y``;
   taps outside the image read black (0). Values map to ``p / 127.5 - 1`` (range [-1, 1]),
   laid out NCHW ``[1, 3, S, S]``, RGB order.
3. **Anchors** (``SsdAnchorsCalculator``, fixed_anchor_size = true, so every anchor is 1x1
   and only its centre matters): for each run of equal strides, a ``S/stride`` square grid,
   rows outer, columns inner, centre ``((x + 0.5) / grid, (y + 0.5) / grid)``, repeated
   ``2 * (layers with that stride)`` times per cell when interpolated_scale_aspect_ratio is
   1.0 (short range) or once per cell when it is 0.0 (full range).
   Short: S=128, strides [8, 16, 16, 16] -> 16*16*2 + 8*8*6 = 512 + 384 = 896 anchors.
   Full:  S=192, strides [4]             -> 48*48*1 = 2304 anchors.
   Both counts match the models' output shapes.
4. **Decode** (``TensorsToDetectionsCalculator``, reverse_output_order = true, all four
   scales = S): per anchor a, row r of the regressor output (16 values):
   ``xc = r[0]/S + ax, yc = r[1]/S + ay, w = r[2]/S, h = r[3]/S`` and keypoint k
   ``(r[4+2k]/S + ax, r[5+2k]/S + ay)``; box = ``(xc - w/2, yc - h/2, xc + w/2, yc + h/2)``,
   all normalised to the S x S letterboxed square. Score = ``sigmoid(clip(logit, -100,
   100))``; keep ``score >= min_score`` (0.5 short, 0.6 full) and ``w >= 0 and h >= 0``.
5. **Weighted NMS** (``NonMaxSuppressionCalculator``, algorithm WEIGHTED, IoU,
   min_suppression_threshold 0.3): sort by score descending (stable: ties keep anchor
   order); take the best remaining detection, gather every remaining detection (itself
   included) whose IoU with it is ``> 0.3``; output the score-weighted mean of their box
   corners and keypoints with the best one's score; drop the gathered ones; repeat.
6. **Un-letterbox**: normalised ``n`` -> original pixels ``n * L - off``, per axis.

Recommended scheme ("two_pass", 0 misses on the 2,311 UTKFace val crops): run the short-
range model with ``pad = 1``; if that finds nothing, run it again with ``pad = 2``. Several
detections can come back (6 of 2,311 val crops at ``pad = 1``, e.g. a second, smaller box
on a partly visible face): take the first one (highest score). Boxes and keypoints are not
clipped to the image and can lie outside it (ear tragions often do on tight crops).

Keypoints (verified on UTKFace: keypoint 0 has the smaller x in image coordinates):
0 right eye, 1 left eye, 2 nose tip, 3 mouth centre, 4 right ear tragion, 5 left ear
tragion, "right/left" being the *subject's* (the image is not mirrored).

Usage:

    python models/scripts/blazeface_ref.py detect IMAGE [--model short|full] [--pad 1.0]
    python models/scripts/blazeface_ref.py measure [--csv .../utkface/val.csv]
    python models/scripts/blazeface_ref.py fixture      # writes tests/fixtures/blazeface_ref.json
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / "models"
FIXTURE_DIR = REPO / "tests" / "fixtures"
UTKFACE_DIR = REPO.parent / "shared" / "data" / "utkface"

KEYPOINT_NAMES = (
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth_center",
    "right_ear_tragion",
    "left_ear_tragion",
)

SCORE_CLIP = 100.0  # MediaPipe's score_clipping_thresh
MIN_SUPPRESSION_THRESHOLD = 0.3  # weighted NMS, IoU


@dataclass(frozen=True)
class ModelSpec:
    """Everything that differs between the two detectors."""

    name: str
    onnx_file: str
    size: int  # S: input is S x S
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float  # 1.0 -> 2 anchors per layer per cell, 0.0 -> 1
    min_score: float
    num_anchors: int
    boxes_output: str
    scores_output: str


SHORT = ModelSpec(
    name="short",
    onnx_file="blazeface_short.onnx",
    size=128,
    strides=(8, 16, 16, 16),
    interpolated_scale_aspect_ratio=1.0,
    min_score=0.5,
    num_anchors=896,
    boxes_output="regressors",
    scores_output="classificators",
)
FULL = ModelSpec(
    name="full",
    onnx_file="blazeface_full.onnx",
    size=192,
    strides=(4,),
    interpolated_scale_aspect_ratio=0.0,
    min_score=0.6,
    num_anchors=2304,
    boxes_output="reshaped_regressor_face_4",
    scores_output="reshaped_classifier_face_4",
)
SPECS = {"short": SHORT, "full": FULL}


# --------------------------------------------------------------------------------------
# 1-2. letterbox + resample
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Letterbox:
    """Square canvas of side ``side`` holding the image at (off_x, off_y), in pixels."""

    side: int
    off_x: int
    off_y: int


def letterbox(width: int, height: int, pad: float = 1.0) -> Letterbox:
    # half rounds up (not Python's round-half-even), as (x + 0.5).floor() does in Rust
    side = math.floor(max(width, height) * pad + 0.5)
    return Letterbox(side, (side - width) // 2, (side - height) // 2)


def preprocess(image: np.ndarray, size: int, lb: Letterbox) -> np.ndarray:
    """HxWx3 uint8 RGB -> float32 [1, 3, size, size] in [-1, 1] (see module doc, step 2)."""
    h, w = image.shape[:2]
    scale = lb.side / size
    centres = (np.arange(size, dtype=np.float64) + 0.5) * scale - 0.5
    xs = centres - lb.off_x
    ys = centres - lb.off_y

    def taps(coords: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
        i0 = np.floor(coords).astype(np.int64)
        frac = coords - i0
        i1 = i0 + 1
        # weights of taps outside [0, n) are zeroed: they read black
        w0 = np.where((i0 >= 0) & (i0 < n), 1.0 - frac, 0.0)
        w1 = np.where((i1 >= 0) & (i1 < n), frac, 0.0)
        return np.clip(i0, 0, n - 1), np.clip(i1, 0, n - 1), w0, w1

    x0, x1, wx0, wx1 = taps(xs, w)
    y0, y1, wy0, wy1 = taps(ys, h)
    img = image.astype(np.float64)
    rows = img[y0] * wy0[:, None, None] + img[y1] * wy1[:, None, None]  # [S, W, 3]
    out = rows[:, x0] * wx0[None, :, None] + rows[:, x1] * wx1[None, :, None]  # [S, S, 3]
    out = out / 127.5 - 1.0
    return np.ascontiguousarray(out.transpose(2, 0, 1)[None], dtype=np.float32)


def preprocess_antialiased(image: np.ndarray, size: int, lb: Letterbox) -> np.ndarray:
    """Alternative to :func:`preprocess`, for comparison only: paste on a black canvas and
    shrink with PIL's anti-aliased bilinear (triangle) filter, which is what the Rust
    ``image`` crate's ``resize(.., FilterType::Triangle)`` does."""
    from PIL import Image

    canvas = Image.new("RGB", (lb.side, lb.side))
    canvas.paste(Image.fromarray(image), (lb.off_x, lb.off_y))
    out = np.asarray(canvas.resize((size, size), Image.BILINEAR), dtype=np.float64)
    out = out / 127.5 - 1.0
    return np.ascontiguousarray(out.transpose(2, 0, 1)[None], dtype=np.float32)


# --------------------------------------------------------------------------------------
# 3. anchors
# --------------------------------------------------------------------------------------


def generate_anchors(spec: ModelSpec, anchor_offset: float = 0.5) -> np.ndarray:
    """Anchor centres [N, 2] (x, y), normalised; port of SsdAnchorsCalculator for
    fixed_anchor_size = true and aspect_ratios = [1.0]."""
    per_layer = 2 if spec.interpolated_scale_aspect_ratio == 1.0 else 1
    anchors = []
    layer = 0
    while layer < len(spec.strides):
        stride = spec.strides[layer]
        last = layer
        while last < len(spec.strides) and spec.strides[last] == stride:
            last += 1
        repeats = per_layer * (last - layer)
        grid = math.ceil(spec.size / stride)
        for y in range(grid):
            for x in range(grid):
                centre = ((x + anchor_offset) / grid, (y + anchor_offset) / grid)
                anchors.extend([centre] * repeats)
        layer = last
    out = np.asarray(anchors, dtype=np.float32)
    assert out.shape == (spec.num_anchors, 2), out.shape
    return out


# --------------------------------------------------------------------------------------
# 4. decode
# --------------------------------------------------------------------------------------


def decode(
    raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, spec: ModelSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw outputs -> (boxes [K,4] x0,y0,x1,y1, keypoints [K,6,2], scores [K]) for the
    anchors that pass the score and size filters, normalised to the letterboxed square."""
    r = raw_boxes.reshape(-1, 16).astype(np.float32) / np.float32(spec.size)
    logits = np.clip(raw_scores.reshape(-1).astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
    scores = 1.0 / (1.0 + np.exp(-logits))
    xc = r[:, 0] + anchors[:, 0]
    yc = r[:, 1] + anchors[:, 1]
    w, h = r[:, 2], r[:, 3]
    boxes = np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1)
    kps = r[:, 4:].reshape(-1, 6, 2) + anchors[:, None, :]
    keep = (scores >= spec.min_score) & (w >= 0) & (h >= 0)
    return boxes[keep], kps[keep], scores[keep]


# --------------------------------------------------------------------------------------
# 5. weighted NMS
# --------------------------------------------------------------------------------------


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box against [K,4]; 0 where there is no overlap or the union is empty."""
    ix = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    iy = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.where((ix > 0) & (iy > 0), ix * iy, 0.0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(
    boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe WEIGHTED non-max suppression -> [(box[4], keypoints[6,2], score)]."""
    order = np.argsort(-scores, kind="stable")
    remaining = list(order)
    out = []
    while remaining:
        best = remaining[0]
        sim = iou(boxes[best], boxes[remaining])
        group = [i for i, s in zip(remaining, sim, strict=True) if s > MIN_SUPPRESSION_THRESHOLD]
        rest = [i for i, s in zip(remaining, sim, strict=True) if s <= MIN_SUPPRESSION_THRESHOLD]
        if group:
            wts = scores[group].astype(np.float64)
            total = wts.sum()
            box = (boxes[group] * wts[:, None]).sum(0) / total
            kp = (kps[group] * wts[:, None, None]).sum(0) / total
        else:
            # Only when the best box is degenerate (zero area: IoU with itself is 0).
            # MediaPipe then emits it unchanged and stops, since nothing was removed.
            out.append(
                (boxes[best].astype(np.float64), kps[best].astype(np.float64), float(scores[best]))
            )
            break
        out.append((box, kp, float(scores[best])))
        remaining = rest
    return out


# --------------------------------------------------------------------------------------
# the detector
# --------------------------------------------------------------------------------------


@dataclass
class Detection:
    box: list[float]  # x0, y0, x1, y1 in original image pixels
    score: float
    keypoints: list[list[float]]  # 6 x (x, y) in original image pixels, KEYPOINT_NAMES order

    def to_json(self, digits: int = 3) -> dict:
        return {
            "box": [round(v, digits) for v in self.box],
            "score": round(self.score, 5),
            "keypoints": [[round(x, digits), round(y, digits)] for x, y in self.keypoints],
        }


class BlazeFace:
    def __init__(
        self, spec: ModelSpec, models_dir: Path = MODELS_DIR, antialias: bool = False
    ) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.spec = spec
        self.session = ort.InferenceSession(
            str(models_dir / spec.onnx_file), opts, providers=["CPUExecutionProvider"]
        )
        self.anchors = generate_anchors(spec)
        self.preprocess = preprocess_antialiased if antialias else preprocess

    def raw(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, scores = self.session.run(
            [self.spec.boxes_output, self.spec.scores_output], {"input": tensor}
        )
        return boxes, scores

    def detect(self, image: np.ndarray, pad: float = 1.0) -> list[Detection]:
        """All faces in an HxWx3 uint8 RGB image, best score first."""
        h, w = image.shape[:2]
        lb = letterbox(w, h, pad)
        raw_boxes, raw_scores = self.raw(self.preprocess(image, self.spec.size, lb))
        found = weighted_nms(*decode(raw_boxes, raw_scores, self.anchors, self.spec))
        dets = []
        for box, kp, score in found:
            sx = box[[0, 2]] * lb.side - lb.off_x
            sy = box[[1, 3]] * lb.side - lb.off_y
            kx = kp[:, 0] * lb.side - lb.off_x
            ky = kp[:, 1] * lb.side - lb.off_y
            dets.append(
                Detection(
                    box=[float(sx[0]), float(sy[0]), float(sx[1]), float(sy[1])],
                    score=score,
                    keypoints=[[float(x), float(y)] for x, y in zip(kx, ky, strict=True)],
                )
            )
        return dets


# The schemes measured on UTKFace; "two_pass" is the recommended one.
SCHEMES: dict[str, tuple[tuple[str, float], ...]] = {
    "short_pad1.0": (("short", 1.0),),
    "short_pad1.5": (("short", 1.5),),
    "short_pad2.0": (("short", 2.0),),
    "full_pad1.0": (("full", 1.0),),
    "full_pad2.0": (("full", 2.0),),
    "short_pad1.5_full_pad2.0": (("short", 1.5), ("full", 2.0)),
    # try as-is; if nothing is found, retry with the image in a canvas 2x its size
    "two_pass": (("short", 1.0), ("short", 2.0)),
}
BEST_SCHEME = "two_pass"


def run_scheme(detectors: dict[str, BlazeFace], image: np.ndarray, scheme: str) -> list[Detection]:
    for model, pad in SCHEMES[scheme]:
        dets = detectors[model].detect(image, pad)
        if dets:
            return dets
    return []


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def cmd_detect(args: argparse.Namespace) -> None:
    det = BlazeFace(SPECS[args.model])
    dets = det.detect(load_rgb(args.image), args.pad)
    print(json.dumps([d.to_json() for d in dets], indent=1))


def cmd_measure(args: argparse.Namespace) -> None:
    import csv

    detectors = {name: BlazeFace(spec, antialias=args.antialias) for name, spec in SPECS.items()}
    print("resampling:", "PIL anti-aliased" if args.antialias else "reference (point bilinear)")
    root = args.csv.parent
    with open(args.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if args.limit:
        rows = rows[: args.limit]
    misses = {s: [] for s in SCHEMES}
    multi = {s: 0 for s in SCHEMES}
    kps, boxes, scores = [], [], []
    eye_order_ok = 0
    for n, row in enumerate(rows):
        image = load_rgb(root / row["path"])
        h, w = image.shape[:2]
        # each distinct (model, pad) pass is run once per image and shared by the schemes
        cache: dict[tuple[str, float], list[Detection]] = {}
        for scheme, passes in SCHEMES.items():
            dets: list[Detection] = []
            for p in passes:
                if p not in cache:
                    cache[p] = detectors[p[0]].detect(image, p[1])
                dets = cache[p]
                if dets:
                    break
            if not dets:
                misses[scheme].append(row["path"])
            elif len(dets) > 1:
                multi[scheme] += 1
            if scheme == BEST_SCHEME and dets:
                d = dets[0]
                kps.append(np.asarray(d.keypoints) / [w, h])
                boxes.append(np.asarray(d.box) / [w, h, w, h])
                scores.append(d.score)
                eye_order_ok += d.keypoints[0][0] < d.keypoints[1][0]
        if (n + 1) % 500 == 0:
            print(f"{n + 1}/{len(rows)}", flush=True)
    total = len(rows)
    print(f"\nmisses on {args.csv} ({total} images):")
    print("| scheme | passes (model, pad) | misses | images with >1 detection |")
    print("|---|---|---|---|")
    for scheme, passes in SCHEMES.items():
        p = ", ".join(f"{m} x{pad}" for m, pad in passes)
        print(f"| {scheme} | {p} | {len(misses[scheme])}/{total} | {multi[scheme]} |")
    print(f"\nmissed by {BEST_SCHEME}: {misses[BEST_SCHEME]}")
    k = np.mean(kps, axis=0)
    print(f"\n{BEST_SCHEME}: {len(kps)} faces, mean score {np.mean(scores):.4f}")
    print(f"keypoint 0 (right eye) left of keypoint 1 (left eye): {eye_order_ok}/{len(kps)}")
    print("mean keypoints (normalised x, y; best detection per image):")
    for name, (x, y) in zip(KEYPOINT_NAMES, k, strict=True):
        print(f"  {name:18s} {x:.4f} {y:.4f}")
    print("std of keypoints:", np.round(np.std(kps, axis=0), 4).tolist())
    print("mean box (x0, y0, x1, y1):", np.round(np.mean(boxes, axis=0), 4).tolist())


def fixture_images() -> dict[str, np.ndarray]:
    """The fixture inputs: 2 crops of the public-domain NASA portrait of Eileen Collins
    (``astronaut.png`` from scikit-image 0.26.0) and one synthetic image without a face.
    The tight 74x74 crop is missed as-is and found with 2x padding (the second pass)."""
    from PIL import Image

    out = {}
    for name in ("astronaut_320x240.png", "astronaut_tight_74.png"):
        p = FIXTURE_DIR / name
        if p.exists():
            out[name] = load_rgb(p)
    # deterministic, face-free: smooth colour gradients, 160 x 120 (non-square)
    yy, xx = np.mgrid[0:120, 0:160]
    grad = np.stack([xx * 255 // 159, yy * 255 // 119, (xx + yy) * 255 // 278], -1)
    grad = grad.astype(np.uint8)
    Image.fromarray(grad).save(FIXTURE_DIR / "gradient_160x120.png", optimize=True)
    out["gradient_160x120.png"] = load_rgb(FIXTURE_DIR / "gradient_160x120.png")
    return out


def cmd_fixture(args: argparse.Namespace) -> None:
    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    if args.astronaut:
        # one-off: cut the two crops from scikit-image's astronaut.png
        from PIL import Image

        with Image.open(args.astronaut) as im:
            im = im.convert("RGB")
            im.crop((40, 0, 360, 240)).save(FIXTURE_DIR / "astronaut_320x240.png", optimize=True)
            im.crop((188, 92, 262, 166)).save(FIXTURE_DIR / "astronaut_tight_74.png", optimize=True)
    detectors = {name: BlazeFace(spec) for name, spec in SPECS.items()}
    images = {("tests/fixtures", name): img for name, img in fixture_images().items()}
    if args.utkface:
        images[("../shared/data/utkface", args.utkface)] = load_rgb(UTKFACE_DIR / args.utkface)
    cases = []
    for (root, name), image in images.items():
        h, w = image.shape[:2]
        case = {"root": root, "image": name, "width": w, "height": h}
        for scheme in ("short_pad1.0", BEST_SCHEME):
            case[scheme] = [d.to_json() for d in run_scheme(detectors, image, scheme)]
        cases.append(case)
    fixture = {
        "about": "BlazeFace reference detections from models/scripts/blazeface_ref.py "
        "(onnxruntime, models/blazeface_short.onnx). Image path = root/image, root relative "
        "to the repo root; a case whose root is under ../shared is skipped when that data "
        "is absent. Boxes are x0,y0,x1,y1 and keypoints (x,y) in original image pixels, not "
        "clipped to the image; keypoint order: "
        + ", ".join(KEYPOINT_NAMES)
        + ". astronaut_* are crops of astronaut.png (NASA portrait of Eileen Collins, public "
        "domain) from the scikit-image 0.26.0 wheel; gradient_* is synthetic, no face. Schemes: "
        + "; ".join(
            f"{s} = " + " then ".join(f"{m} pad {p}" for m, p in SCHEMES[s])
            for s in ("short_pad1.0", BEST_SCHEME)
        ),
        "tolerance": {"box_px": 1.0, "keypoint_px": 1.0, "score": 0.002},
        "cases": cases,
    }
    out = FIXTURE_DIR / "blazeface_ref.json"
    out.write_text(dump_fixture(fixture))
    print(f"wrote {out}")
    print(out.read_text())


def dump_fixture(fixture: dict) -> str:
    """JSON with one detection per line (plain json.dumps(indent=..) is ~20 lines each)."""
    lines = ["{"]
    lines.append(f' "about": {json.dumps(fixture["about"])},')
    lines.append(f' "tolerance": {json.dumps(fixture["tolerance"])},')
    lines.append(' "cases": [')
    for i, case in enumerate(fixture["cases"]):
        lines.append("  {")
        items = list(case.items())
        for j, (k, v) in enumerate(items):
            comma = "," if j < len(items) - 1 else ""
            if isinstance(v, list):
                if not v:
                    lines.append(f"   {json.dumps(k)}: []{comma}")
                    continue
                lines.append(f"   {json.dumps(k)}: [")
                for n, det in enumerate(v):
                    c = "," if n < len(v) - 1 else ""
                    lines.append(f"    {json.dumps(det)}{c}")
                lines.append(f"   ]{comma}")
            else:
                lines.append(f"   {json.dumps(k)}: {json.dumps(v)}{comma}")
        lines.append("  }" + ("," if i < len(fixture["cases"]) - 1 else ""))
    lines.append(" ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == json.loads(json.dumps(fixture))
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("detect", help="print detections for one image")
    p.add_argument("image", type=Path)
    p.add_argument("--model", choices=sorted(SPECS), default="short")
    p.add_argument("--pad", type=float, default=1.0)
    p.set_defaults(func=cmd_detect)
    p = sub.add_parser("measure", help="miss counts and keypoint template on UTKFace")
    p.add_argument("--csv", type=Path, default=UTKFACE_DIR / "val.csv")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--antialias", action="store_true", help="PIL resize instead of reference")
    p.set_defaults(func=cmd_measure)
    p = sub.add_parser("fixture", help="write tests/fixtures/blazeface_ref.json")
    p.add_argument("--astronaut", type=Path, help="skimage astronaut.png, to (re)cut the crops")
    p.add_argument("--utkface", help="a val image path relative to shared/data/utkface")
    p.set_defaults(func=cmd_fixture)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
