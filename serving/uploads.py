"""Decode visitor-supplied images safely: size in bytes, pixel count and format are checked first.

The pixel count is read from the header *before* any pixel is decoded, so a small file that
claims 50,000 x 50,000 pixels (a decompression bomb) is refused without allocating memory.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image, UnidentifiedImageError

from serving.http_errors import ApiError
from serving.schemas import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
ALLOWED_CONTENT_TYPES = {"image/jpeg", "image/jpg", "image/png", "image/webp"}
# Content types that say nothing about the payload; the bytes are still checked.
NEUTRAL_CONTENT_TYPES = {"", "application/octet-stream"}


def decode_base64_image(data: str, field: str) -> Image.Image:
    """Decode a base64 string (optionally a ``data:image/...;base64,`` URL) into an RGB image.

    Raises:
        ApiError: 415 for a data URL of another type, 422 for bad base64 or a non-image,
            413 when too large in bytes or pixels.
    """
    text = data.strip()
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        mime = header[5:].split(";")[0].strip().lower()
        if mime not in ALLOWED_CONTENT_TYPES and mime not in NEUTRAL_CONTENT_TYPES:
            raise ApiError(415, "unsupported_media_type", f"unsupported image type {mime!r}; use JPEG, PNG or WebP", field)
    if len(text) > (MAX_IMAGE_BYTES * 4) // 3 + 4:
        raise ApiError(413, "payload_too_large", f"image larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB", field)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(422, "invalid_image", f"not valid base64 ({exc})", field) from exc
    return decode_image(raw, field)


def check_content_type(content_type: str | None, field: str) -> None:
    """Refuse an upload whose declared type is not an accepted image type (415)."""
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared not in ALLOWED_CONTENT_TYPES and declared not in NEUTRAL_CONTENT_TYPES:
        raise ApiError(415, "unsupported_media_type", f"unsupported upload type {declared!r}; use image/jpeg, image/png or image/webp", field)


def decode_image(raw: bytes, field: str) -> Image.Image:
    """Bytes -> decoded RGB image within the byte and pixel limits.

    Raises:
        ApiError: 413 too large (bytes or pixels), 422 empty / not an image / corrupt,
            415 an image format other than JPEG, PNG or WebP.
    """
    if len(raw) > MAX_IMAGE_BYTES:
        raise ApiError(413, "payload_too_large", f"image is {len(raw):,} bytes; the limit is {MAX_IMAGE_BYTES:,}", field)
    if not raw:
        raise ApiError(422, "invalid_image", "empty file, expected an image", field)
    try:
        with warnings.catch_warnings():
            # PIL warns (or raises) on huge images; the explicit pixel check below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "image_too_large", f"image has too many pixels (limit {MAX_IMAGE_PIXELS:,})", field) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ApiError(422, "invalid_image", "not an image (could not identify a JPEG, PNG or WebP file)", field) from exc
    if image.format not in ALLOWED_FORMATS:
        raise ApiError(415, "unsupported_media_type", f"image format {image.format} is not supported; use JPEG, PNG or WebP", field)
    width, height = image.size
    if width < 1 or height < 1 or width * height > MAX_IMAGE_PIXELS:
        raise ApiError(413, "image_too_large", f"image is {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS:,} pixels", field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
        return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ApiError(422, "invalid_image", f"image data is corrupt or truncated ({type(exc).__name__})", field) from exc
