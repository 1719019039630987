"""Image preprocessing in Pillow and numpy: the one implementation used by training, export checks
and the runtime, so the codes a deployed encoder produces match the codes it was trained with.

The parameters are data (`ImagePreprocess`); each backbone's values live in its config
(cmhash.zoo.backbones) and travel into checkpoints and ONNX metadata as JSON.
"""

from __future__ import annotations

import math
import os
import reprlib
from dataclasses import asdict, dataclass
from typing import Iterable, Union

import numpy as np
from PIL import Image, ImageOps

from cmhash.errors import DataFormatError, DataNotFoundError, InvalidInputError

ImageInput = Union[str, os.PathLike, Image.Image]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

MAX_RESIZE = 8192  # a larger side would make a forged config allocate gigabytes per image
_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class ImagePreprocess:
    """Resize the shorter side to `resize`, center-crop `crop`×`crop`, scale to [0, 1], normalize."""

    resize: int
    crop: int
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.interpolation not in _RESAMPLE:
            raise InvalidInputError(
                f"interpolation must be one of {sorted(_RESAMPLE)}, got {self.interpolation!r}"
            )
        if not 0 < self.crop <= self.resize <= MAX_RESIZE:
            raise InvalidInputError(f"need 0 < crop <= resize <= {MAX_RESIZE}, got crop={self.crop}, "
                                    f"resize={self.resize}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise InvalidInputError(f"{name} must be 3 finite numbers (R, G, B), got {values!r}")
        if not all(v > 0 for v in self.std):
            raise InvalidInputError(f"std must be positive, got {self.std!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ImagePreprocess":
        try:
            return cls(
                resize=int(data["resize"]),
                crop=int(data["crop"]),
                interpolation=str(data["interpolation"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(inf)
            raise DataFormatError(f"invalid image preprocessing config {reprlib.repr(data)}: {exc}") from exc

    def __call__(self, images: Iterable[ImageInput]) -> np.ndarray:
        """A float32 batch of shape (n, 3, crop, crop)."""
        return np.stack([self.one(image) for image in images])

    def one(self, image: ImageInput) -> np.ndarray:
        rgb = load_rgb(image)
        w, h = rgb.size
        scale = self.resize / min(w, h)
        size = (max(self.resize, round(w * scale)), max(self.resize, round(h * scale)))
        rgb = rgb.resize(size, _RESAMPLE[self.interpolation])
        left, top = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        rgb = rgb.crop((left, top, left + self.crop, top + self.crop))
        x = np.asarray(rgb, dtype=np.float32) / np.float32(255.0)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))


def load_rgb(image: ImageInput) -> Image.Image:
    """Open an image as RGB, applying EXIF orientation; grayscale, RGBA and palette are converted.

    Images over Pillow's `Image.MAX_IMAGE_PIXELS` raise DataFormatError before anything is decoded.
    """
    img = image if isinstance(image, Image.Image) else _open(image)
    try:
        img = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError) as exc:  # a malformed EXIF block
        raise DataFormatError(f"cannot apply the EXIF orientation of {_name(image)}: {exc}") from exc
    if img.mode in _WIDE_GRAY:
        img = _gray16_to_8(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode in ("P", "L", "RGB") and "transparency" in img.info):
        # Composite on white rather than dropping alpha, so transparent areas are not black noise.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def _open(path: str | os.PathLike) -> Image.Image:
    """Open and decode an image file. Pillow refuses images over twice MAX_IMAGE_PIXELS in `open` but
    only warns (DecompressionBombWarning) between once and twice, and would decode them (a 12 kB PNG of
    100 M pixels is 300 MB as RGB); so the size, read from the header by `open`, is checked before `load`.
    A check rather than turning the warning into an error: warnings filters are process-wide, not
    thread-safe."""
    try:
        img = Image.open(path)
        _check_pixels(img, path)
        img.load()
    except DataFormatError:
        raise
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise DataNotFoundError(f"image file not found: {path} (check the path)") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:  # the warning is raised where warnings are errors (-W error)
        raise DataFormatError(f"cannot read image {path}: {exc}") from exc
    return img


def _check_pixels(img: Image.Image, path: str | os.PathLike) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    width, height = img.size
    if limit is not None and width * height > limit:
        img.close()
        raise DataFormatError(f"image {path} has {width} x {height} = {width * height:,} pixels, over Pillow's limit "
                              f"of {limit:,} (Image.MAX_IMAGE_PIXELS), so it is refused as a possible decompression "
                              "bomb; resize it, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file")


# Pillow opens 16-bit grayscale PNG/TIFF as "I;16" (or "I"), and its convert("RGB") clips those values
# to 255 instead of scaling them, which turns most 16-bit images white. Scale 0..65535 to 0..255.
_WIDE_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _gray16_to_8(img: Image.Image) -> Image.Image:
    wide = np.asarray(img).astype(np.int64)
    eight = np.clip((wide * 255 + 32767) // 65535, 0, 255).astype(np.uint8)  # round(v * 255 / 65535)
    return Image.fromarray(eight)  # uint8 2-D: mode "L"


def _name(image: ImageInput) -> str:
    return "the image" if isinstance(image, Image.Image) else str(image)
