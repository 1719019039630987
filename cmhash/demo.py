"""`cmhash demo`: the whole promise on one machine, with nothing but what the install brought.

A zoo hasher (`cmhash.zoo.registry`; by default the shipped DHaPH one) is exported to ONNX once into
the user cache, keyed by its name and weights, and validated there; then the torch-free runtime encodes a gallery of real photos and a caption list,
builds a `HammingIndex`, answers text→image and image→text queries, and draws a contact sheet.

The default gallery is the real photographs that scikit-image ships inside its wheel (the
`[demo]` extra); the captions are written here for the demo. `--images DIR` / `--texts FILE` swap in
the user's own.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from cmhash import constants
from cmhash.errors import DataFormatError, MissingDependencyError
from cmhash.zoo.pretrained import DEFAULT as DEFAULT_MODEL

# (file in skimage/data, what it shows): the photographs among scikit-image's data files.
GALLERY = (
    ("astronaut.png", "astronaut Eileen Collins in an orange suit"),
    ("camera.png", "a man with a camera on a tripod (grayscale)"),
    ("chelsea.png", "Chelsea the cat"),
    ("coffee.png", "a cup of coffee on a saucer"),
    ("motorcycle_left.png", "a red motorcycle in a workshop"),
    ("rocket.jpg", "a rocket on its launch pad at dusk"),
    ("coins.png", "Greek coins in rows (grayscale)"),
    ("hubble_deep_field.jpg", "the Hubble deep field"),
    ("moon.png", "the surface of the moon (grayscale)"),
    ("grass.png", "grass (grayscale)"),
    ("brick.png", "a brick wall (grayscale)"),
    ("gravel.png", "gravel (grayscale)"),
    ("retina.jpg", "a retina photographed through the eye"),
    ("page.png", "a printed page (grayscale)"),
)

CAPTIONS = (
    "a woman in a space suit smiling in front of a flag",
    "a man looking through a camera on a tripod in a field",
    "a cat looking straight at the camera",
    "a cup of coffee on a saucer on a wooden table",
    "a red motorcycle parked in a garage",
    "a rocket standing on a launch pad at night",
    "old coins laid out on a table",
    "a night sky full of stars",
    "a plate of food with broccoli and rice",
    "a dog catching a frisbee in a park",
    "a bus driving down a city street",
    "a man riding a horse on a beach",
    "a bowl of fruit on a kitchen counter",
    "people sitting at a table with laptops",
)

TEXT_QUERIES = ("a cat", "a cup of coffee", "a person", "a motorcycle")
IMAGE_QUERY = "chelsea.png"


@dataclass
class Hit:
    item: str
    distance: int


@dataclass
class Query:
    kind: str  # "text→image" or "image→text"
    query: str
    hits: list[Hit]


@dataclass
class DemoResult:
    export_dir: Path
    sheet: Path
    queries: list[Query]
    stages: dict[str, float] = field(default_factory=dict)
    exported_now: bool = False


def skimage_gallery() -> list[Path]:
    """The real photographs scikit-image ships in its wheel (no download)."""
    try:
        import skimage
    except ImportError as exc:
        raise MissingDependencyError(
            "the demo gallery is scikit-image's bundled photographs, and scikit-image is not installed. "
            "Install it with: pip install 'cmhash[demo]', or pass your own photos with --images DIR") from exc
    folder = Path(skimage.__file__).parent / "data"
    paths = [folder / name for name, _ in GALLERY]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataFormatError(f"scikit-image {skimage.__version__} lacks {', '.join(missing)} in {folder}; "
                              "pass your own photos with --images DIR")
    return paths


def export_once(name: str, hasher_dir: Path, images: Sequence[Path], texts: Sequence[str],
                step: Callable[[str], None]) -> tuple[Path, bool]:
    """The zoo hasher `name`'s ONNX export in the cache, made (and validated) on first use only.

    The cache folder is keyed by the name and the weights' sha256, so two models never share one.
    """
    from cmhash.export.onnx import export_checkpoint
    from cmhash.runtime.io import sha256_file
    from cmhash.zoo.data.loose import loose_pairs

    digest = sha256_file(hasher_dir / "model.safetensors")[:16]
    dest = constants.CACHE_DIR / "exports" / f"{name}-{digest}"
    if (dest / "export.json").is_file():
        return dest, False
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".partial-") as tmp:
        export_checkpoint(hasher_dir, Path(tmp) / "export", dataset=loose_pairs(images, texts, "demo"),
                          on_step=step)
        try:
            (Path(tmp) / "export").rename(dest)  # the folder appears whole or not at all
        except OSError:
            if not (dest / "export.json").is_file():  # not another demo that finished first
                raise
    return dest, True


@contextmanager
def timed(stages: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    stages[name] = time.perf_counter() - start


def run(images: str | os.PathLike | None = None, texts: str | os.PathLike | None = None, k: int = 5,
        out: str | os.PathLike | None = None, step: Callable[[str], None] = lambda _m: None,
        model: str = DEFAULT_MODEL) -> DemoResult:
    """Load → export (once) → encode → index → query → contact sheet; returns what it did and the timings.

    `model`: a zoo name (`cmhash zoo list`); an unknown one is a CheckpointNotFoundError listing the names.
    """
    from cmhash.runtime.encoder import load_encoder
    from cmhash.runtime.index import HammingIndex
    from cmhash.runtime.input_files import image_folder, read_texts
    from cmhash.zoo.hub import load_hasher, resolve_source

    stages: dict[str, float] = {}
    gallery = image_folder(images) if images is not None else skimage_gallery()
    captions = read_texts(texts)[0] if texts is not None else list(CAPTIONS)
    with timed(stages, f"load the hasher {model}"):
        hasher_dir = resolve_source(f"zoo:{model}")  # checks manifest.json (downloads a published one)
        load_hasher(hasher_dir)  # loads the weights strictly
    with timed(stages, "export to ONNX + validate (first run only)"):
        export_dir, exported_now = export_once(model, hasher_dir, gallery, captions, step)
    with timed(stages, "load the runtime encoders"):
        image_encoder = load_encoder(export_dir, "image")
        text_encoder = load_encoder(export_dir, "text")
    with timed(stages, f"encode {len(gallery)} images"):
        image_codes = image_encoder.encode(gallery, progress=False).codes
    with timed(stages, f"encode {len(captions)} captions"):
        caption_codes = text_encoder.encode(captions, progress=False).codes
    with timed(stages, "build the indexes"):
        image_index = HammingIndex(image_encoder.bits)
        image_index.add(image_codes)
        caption_index = HammingIndex(text_encoder.bits)
        caption_index.add(caption_codes)
    queries: list[Query] = []
    with timed(stages, "search"):
        # the user's own captions are the text queries too (the first few: one table each)
        text_queries = captions[:len(TEXT_QUERIES)] if texts is not None else list(TEXT_QUERIES)
        codes = text_encoder.encode(text_queries, progress=False).codes
        dist, pos = image_index.search(codes, min(k, len(gallery)))
        for q, d, p in zip(text_queries, dist, pos):
            queries.append(Query("text→image", q, [Hit(str(gallery[i]), int(x)) for x, i in zip(d, p)]))
        probe = _image_query(gallery)
        codes = image_encoder.encode([probe], progress=False).codes
        dist, pos = caption_index.search(codes, min(k, len(captions)))
        hits = [Hit(captions[i], int(x)) for x, i in zip(dist[0], pos[0])]
        queries.append(Query("image→text", str(probe), hits))
    with timed(stages, "draw the contact sheet"):
        from cmhash.contact_sheet import draw

        sheet = Path(out) if out is not None else constants.CACHE_DIR / "demo" / "contact_sheet.png"
        draw(queries, sheet)
    return DemoResult(export_dir, sheet, queries, stages, exported_now)


def _image_query(gallery: Sequence[Path]) -> Path:
    """The cat photo in the default gallery; the first image of a user's folder."""
    named = [p for p in gallery if p.name == IMAGE_QUERY]
    return named[0] if named else gallery[0]
