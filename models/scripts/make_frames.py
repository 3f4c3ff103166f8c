"""Make the recorded camera sequence in tests/frames/ from the bundled sample photos.

    python models/scripts/make_frames.py

``tests/frames/demo.mjpeg``: 320x240 frames at a nominal 15 fps, concatenated JPEGs as a
webcam's MJPEG stream delivers them: an empty scene, Grace Hopper walks up (10 frames with
small shifts and zooms, as a hand-held or swaying camera gives), the scene empties for 9
frames (600 ms: long enough for the daemon to take the next face as a new person), the
astronaut steps up (10 frames), the scene empties again. Every other frame has its Huffman
tables removed, as many UVC webcams send them (the decoder must supply the JPEG standard
tables, ITU T.81 Annex K). The sources are public-domain photos from
``models/scripts/fetch_samples.py``. The bytes are deterministic for a given Pillow.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "tests" / "photos"
OUT = ROOT / "tests" / "frames"
SIZE = (320, 240)
SEQUENCE = [("empty", 4), ("grace_hopper.jpg", 10), ("empty", 9), ("astronaut.jpg", 10)]
SEQUENCE += [("empty", 4)]


def strip_huffman_tables(jpeg: bytes) -> bytes:
    """The JPEG without its DHT segments (marker 0xFFC4), up to the start of scan."""
    out = bytearray(jpeg[:2])
    i = 2
    while i + 4 <= len(jpeg):
        marker = jpeg[i + 1]
        length = int.from_bytes(jpeg[i + 2 : i + 4], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data follows, copy the rest
            out += jpeg[i:]
            return bytes(out)
        if marker != 0xC4:
            out += jpeg[i : i + 2 + length]
        i += 2 + length
    raise ValueError("no start-of-scan marker")


def scene(background: Image.Image, person: Image.Image | None, rng: random.Random):
    frame = background.copy()
    if person is not None:
        zoom = 1.0 + rng.uniform(-0.04, 0.04)
        h = int(SIZE[1] * zoom)
        w = int(person.width * h / person.height)
        face = person.resize((w, h), Image.BILINEAR)
        x = (SIZE[0] - w) // 2 + rng.randint(-8, 8)
        y = (SIZE[1] - h) // 2 + rng.randint(-6, 6)
        frame.paste(face, (x, y))
    return frame


def main() -> None:
    rng = random.Random(7)
    background = Image.open(PHOTOS / "rocket_no_face.jpg").convert("RGB").resize(SIZE)
    stream = bytearray()
    index = 0
    for name, count in SEQUENCE:
        person = None if name == "empty" else Image.open(PHOTOS / name).convert("RGB")
        for _ in range(count):
            buf = io.BytesIO()
            scene(background, person, rng).save(buf, "JPEG", quality=75)
            jpeg = buf.getvalue()
            stream += strip_huffman_tables(jpeg) if index % 2 else jpeg
            index += 1
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "demo.mjpeg").write_bytes(bytes(stream))
    print(f"{OUT / 'demo.mjpeg'}: {index} frames, {len(stream)} bytes")


if __name__ == "__main__":
    main()
