"""Product images: resolve an item's photo by id, and check which photos exist and decode.

Images are only ever located from an item id through the configured template below one root,
never from a user-supplied path, so nothing outside the image root can be reached.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
_FIELD = re.compile(r"\{item_id(?:\[(-?\d*):(-?\d*)\])?\}")


def render_template(template: str, item_id: str) -> str:
    """Fill ``{item_id}`` and slices such as ``{item_id[:3]}`` (str.format cannot slice).

    Args:
        template: a relative path pattern, e.g. ``"{item_id[:3]}/{item_id}.jpg"``.
        item_id: the id to substitute.

    Returns:
        The filled-in relative path.
    """

    def fill(m: re.Match[str]) -> str:
        if m.group(1) is None and m.group(2) is None:
            return item_id
        start = int(m.group(1)) if m.group(1) else None
        stop = int(m.group(2)) if m.group(2) else None
        return item_id[start:stop]

    return _FIELD.sub(fill, template)


@dataclass(frozen=True)
class ImageStore:
    """Maps item ids to image files: ``root / template.format(item_id=...)``.

    Args:
        root: the image folder, or None when the catalogue has no images.
        template: e.g. ``"{item_id[:3]}/{item_id}.jpg"`` (H&M).
    """

    root: Path | None
    template: str = "{item_id}.jpg"

    def path_for(self, item_id: str) -> Path | None:
        """The expected file for an item, or None if there is no image root or the id is unsafe."""
        if self.root is None or not _SAFE_ID.match(item_id) or item_id in {".", ".."}:
            return None
        # The id cannot contain a separator and the template is config, so the path stays below root.
        return self.root / render_template(self.template, item_id)

    def existing(self, item_ids: list[str]) -> list[bool]:
        """Which items have an image file; one directory walk instead of a stat per item."""
        if self.root is None or not self.root.is_dir():
            return [False] * len(item_ids)
        present: set[str] = set()
        for dirpath, _, files in os.walk(self.root):
            present.update(os.path.join(dirpath, f) for f in files)
        out = []
        for item_id in item_ids:
            p = self.path_for(item_id)
            out.append(p is not None and str(p) in present)
        return out


def check_decodable(path: Path) -> str | None:
    """Check that a file opens and decodes as an image.

    Args:
        path: the image file.

    Returns:
        None if the file is a readable image, else the reason it is not.
    """
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:  # verify() does not decode pixels; load() does
            img.load()
        return None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
