"""Image inputs: paths or PIL images, their content keys, and resizing into a model's input box."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from features.content.cache import content_hash

ImageInput = Union[str, Path, Image.Image]


def image_key(image: ImageInput) -> str:
    """Content hash of an image: the file's bytes, or the decoded pixels of a PIL image.

    Args:
        image: a path or a PIL image.

    Returns:
        Its :func:`content_hash`.

    Raises:
        FileNotFoundError: the file cannot be read.
    """
    if isinstance(image, Image.Image):
        header = f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode()
        return content_hash(header + image.tobytes())
    path = Path(image)
    try:
        return content_hash(path.read_bytes())
    except OSError as exc:
        raise FileNotFoundError(f"cannot read image {path}: {exc}") from exc


def open_rgb(image: ImageInput) -> Image.Image:
    """Decode to RGB; a clear error names the file that fails.

    Args:
        image: a path or a PIL image.

    Returns:
        An RGB PIL image.

    Raises:
        ValueError: the file cannot be opened or decoded.
    """
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    try:
        with Image.open(image) as img:
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"cannot decode image {image}: {exc}") from exc


def letterbox(img: Image.Image, width: int, height: int, fill: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Resize into ``width x height`` keeping the aspect ratio, padding with ``fill``.

    Product photos sit on white, so white padding adds no content; a photo that already has the
    target aspect (H&M: 2:3) is simply resized.

    Args:
        img: the photo.
        width: output width in pixels.
        height: output height in pixels.
        fill: RGB padding colour.
    """
    w, h = img.size
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = img.resize((nw, nh), Image.Resampling.BILINEAR)
    if (nw, nh) == (width, height):
        return resized
    canvas = Image.new("RGB", (width, height), fill)
    canvas.paste(resized, ((width - nw) // 2, (height - nh) // 2))
    return canvas


def to_array(img: Image.Image, mean: float | tuple[float, float, float], std: float | tuple[float, float, float]) -> np.ndarray:
    """(3, H, W) float32, scaled to [0, 1] then normalised.

    Args:
        img: an RGB image.
        mean: per-channel (or shared) mean subtracted after scaling.
        std: per-channel (or shared) divisor.
    """
    a: np.ndarray = np.asarray(img, dtype=np.float32) / 255.0
    a = (a - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1))
