"""Image preprocessing: golden checks on coco-mini, and the image kinds users actually have.

The golden test compares `ImagePreprocess` (what both training and the runtime run) with an
independent re-statement of the transform written here: its own EXIF orientation table, integer
arithmetic for the resized size (shorter side = `resize`, longer side rounded half up), a numpy crop
of the centred window (an odd margin leaves the extra pixel on the right / bottom), and float64
scaling and normalization. Pillow still decodes and resamples in both (there is no independent
bicubic/bilinear resampler to 1e-5: torchvision cannot be imported next to this torch, see
docs/PLATFORM-NOTES.md, and its tensor resize differs from Pillow's by up to a few 1/255 steps).
A second test checks, with torch, that the training side (cmhash.zoo's image input) and the
runtime (preprocessing read back from the ONNX metadata the exporter writes) agree.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from cmhash.errors import DataFormatError, DataNotFoundError
from cmhash.runtime.preprocess import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, ImagePreprocess

# (resize, crop, interpolation, mean, std) of the image backbones in cmhash.zoo.backbones
CONFIGS = {
    "efficientnet-lite0": (256, 224, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "alexnet": (256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    "clip-vit-b32-image": (224, 224, "bicubic", CLIP_MEAN, CLIP_STD),
}
ORIENTATION = 0x0112
# EXIF orientation -> the transpose that makes the stored pixels upright (EXIF 2.3, tag 274).
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}
# ... and its inverse, to write test files whose stored pixels need that orientation.
STORE = {**UPRIGHT, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
TOL = 1e-5


def reference(rgb: np.ndarray, resize: int, crop: int, interpolation: str, mean, std) -> np.ndarray:
    """The transform as specified, from an upright uint8 RGB array (see the module docstring)."""
    h, w = rgb.shape[:2]
    short, long_ = min(w, h), max(w, h)
    long_new = max(resize, (2 * long_ * resize + short) // (2 * short))  # round half up, in integers
    size = (resize, long_new) if w <= h else (long_new, resize)
    resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[interpolation]
    resized = np.asarray(Image.fromarray(rgb).resize(size, resample), dtype=np.float64)
    top = (resized.shape[0] - crop) - (resized.shape[0] - crop + 1) // 2
    left = (resized.shape[1] - crop) - (resized.shape[1] - crop + 1) // 2
    window = resized[top:top + crop, left:left + crop]
    x = (window / 255.0 - np.array(mean)) / np.array(std)
    return np.einsum("hwc->chw", x)


def upright_rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        orientation = im.getexif().get(ORIENTATION, 1)
        rgb = im.convert("RGB")
    return np.asarray(rgb.transpose(UPRIGHT[orientation]) if orientation in UPRIGHT else rgb)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_golden_coco_mini_against_the_independent_reference(name, coco_images):
    pre = ImagePreprocess(*CONFIGS[name])
    worst = 0.0
    for path in coco_images:
        got = pre.one(path)
        want = reference(upright_rgb(path), *CONFIGS[name])
        assert got.dtype == np.float32 and got.shape == want.shape == (3, pre.crop, pre.crop)
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst <= TOL, f"{name}: max abs diff {worst} over {len(coco_images)} coco-mini images"


def test_training_side_transform_equals_the_runtime_one(coco_images):
    """zoo's ImageFileInput (training, torch tensors) vs the runtime's preprocessing read back from
    the ONNX metadata the exporter writes (onnx_metadata -> check_metadata -> ImagePreprocess)."""
    pytest.importorskip("torch")
    from cmhash.export.encoders import EncoderSpec
    from cmhash.export.onnx import onnx_metadata
    from cmhash.runtime.export_folder import check_metadata
    from cmhash.runtime.formats.export_manifest import EncoderEntry
    from cmhash.zoo.backbones import get_config
    from cmhash.zoo.inputs import ImageFileInput

    class Folder:
        bits = 64

    for name in CONFIGS:
        config = get_config(name)
        meta = onnx_metadata(EncoderSpec("image", None, config, 64), "dmsh", {})
        entry = EncoderEntry("image", "pixels", ("pixels",), {}, {"preprocess": config.preprocess.to_dict()})
        runtime = ImagePreprocess.from_dict(check_metadata(meta, Folder(), entry, "test")["preprocess"])
        assert runtime == ImagePreprocess(*CONFIGS[name])
        rows = np.arange(0, len(coco_images), 8)
        training = ImageFileInput(coco_images, config.preprocess).batch(rows)[0].numpy()
        got = runtime([coco_images[i] for i in rows])
        assert float(np.abs(got - training).max()) <= TOL


# ---------------------------------------------------------------------------- image kinds
@pytest.fixture(scope="module")
def photo(coco_images) -> np.ndarray:
    """A real upright RGB photo, cut to an odd, non-square size so that orientation errors show."""
    return upright_rgb(coco_images[3])[:301, :417].copy()


def save(tmp_path, image: Image.Image, name: str, **params):
    path = tmp_path / name
    image.save(path, **params)
    return path


PRE = ImagePreprocess(256, 224, "bicubic")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_png(orientation, photo, tmp_path):
    stored = Image.fromarray(photo)
    if orientation in STORE:
        stored = stored.transpose(STORE[orientation])
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    path = save(tmp_path, stored, "o.png", exif=exif)
    got = PRE.one(path)
    np.testing.assert_array_equal(got, PRE.one(Image.fromarray(photo)))
    assert np.abs(got - reference(photo, *CONFIGS["efficientnet-lite0"])).max() <= TOL


def test_exif_orientation_jpeg(photo, tmp_path):
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    path = save(tmp_path, Image.fromarray(photo).transpose(STORE[6]), "o.jpg", exif=exif, quality=95)
    with Image.open(path) as im:  # the decoded (lossy) stored pixels, turned upright by hand
        upright = np.asarray(im.convert("RGB").transpose(Image.Transpose.ROTATE_270))
    assert upright.shape == photo.shape
    assert np.abs(PRE.one(path) - reference(upright, *CONFIGS["efficientnet-lite0"])).max() <= TOL


def test_grayscale_is_replicated_to_three_channels(photo, tmp_path):
    gray = Image.fromarray(photo).convert("L")
    got = PRE.one(save(tmp_path, gray, "g.png"))
    want = reference(np.repeat(np.asarray(gray)[..., None], 3, axis=2), *CONFIGS["efficientnet-lite0"])
    assert np.abs(got - want).max() <= TOL
    unnormalized = got * np.array(IMAGENET_STD, np.float32)[:, None, None] + np.array(IMAGENET_MEAN, np.float32)[:, None, None]
    assert np.abs(unnormalized[0] - unnormalized[2]).max() <= TOL


def test_16_bit_grayscale_is_scaled_not_clipped(photo, tmp_path):
    gray8 = np.asarray(Image.fromarray(photo).convert("L"))
    path = save(tmp_path, Image.fromarray(gray8.astype(np.uint16) * 257), "g16.png")
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # Pillow's 16-bit mode, which convert("RGB") would clip
    want = reference(np.repeat(gray8[..., None], 3, axis=2), *CONFIGS["efficientnet-lite0"])
    assert np.abs(PRE.one(path) - want).max() <= TOL


def test_rgba_is_composited_on_white(photo, tmp_path):
    alpha = np.full(photo.shape[:2], 255, np.uint8)
    alpha[:, : photo.shape[1] // 2] = 0  # left half fully transparent
    rgba = Image.fromarray(np.dstack([photo, alpha]))
    want_rgb = photo.copy()
    want_rgb[alpha == 0] = 255
    want = reference(want_rgb, *CONFIGS["efficientnet-lite0"])
    assert np.abs(PRE.one(save(tmp_path, rgba, "a.png")) - want).max() <= TOL
    la = Image.fromarray(np.dstack([np.asarray(Image.fromarray(photo).convert("L")), alpha]))
    gray = np.asarray(la)[..., 0].copy()
    gray[alpha == 0] = 255
    assert np.abs(PRE.one(save(tmp_path, la, "la.png")) - reference(np.dstack([gray] * 3), *CONFIGS["efficientnet-lite0"])).max() <= TOL


def test_palette_images_with_and_without_transparency(photo, tmp_path):
    pal = Image.fromarray(photo).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    index = np.asarray(pal)
    colours = np.array(pal.getpalette(), np.uint8).reshape(-1, 3)
    want = reference(colours[index], *CONFIGS["efficientnet-lite0"])
    assert np.abs(PRE.one(save(tmp_path, pal, "p.png")) - want).max() <= TOL

    clear = int(index[0, 0])  # make the top-left pixel's palette entry transparent
    path = save(tmp_path, pal, "pt.png", transparency=clear)
    expected = colours[index].copy()
    expected[index == clear] = 255
    assert np.abs(PRE.one(path) - reference(expected, *CONFIGS["efficientnet-lite0"])).max() <= TOL


# ---------------------------------------------------------------------------- unreadable
def test_unreadable_images_are_typed_errors(tmp_path, coco_images, monkeypatch):
    with pytest.raises(DataNotFoundError, match="missing.jpg"):
        PRE.one(tmp_path / "missing.jpg")
    with pytest.raises(DataNotFoundError):
        PRE.one(tmp_path)  # a folder
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(DataFormatError, match="notes.png"):
        PRE.one(tmp_path / "notes.png")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(coco_images[0].read_bytes()[:3000])
    with pytest.raises(DataFormatError, match="cut.jpg"):
        PRE.one(cut)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # every coco image is now a "decompression bomb"
    with pytest.raises(DataFormatError, match="decompression bomb"):
        PRE.one(coco_images[0])


def test_in_memory_bytes_and_pil_images_agree(coco_images):
    data = coco_images[5].read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        np.testing.assert_array_equal(PRE.one(im), PRE.one(io.BytesIO(data)))
    np.testing.assert_array_equal(PRE.one(io.BytesIO(data)), PRE.one(coco_images[5]))


def test_preprocess_config_round_trips_through_json():
    pre = ImagePreprocess(*CONFIGS["clip-vit-b32-image"])
    assert ImagePreprocess.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
