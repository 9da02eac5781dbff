"""Item texts from catalogue columns: the one template implementation used everywhere.

Training, item vectors, search and serving all build an item's text with :func:`render_texts`,
so the text a query is matched against is the text the heads were trained on.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

import polars as pl

_SPACES = re.compile(r"\s+")
_EMPTY_PUNCT = re.compile(r"([.,;:])(?:\s*[.,;:])+")


def template_fields(template: str) -> list[str]:
    """The ``{column}`` names a template uses.

    Args:
        template: a ``str.format`` template.

    Returns:
        Field names in order of appearance (repeats kept).
    """
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def check_template(template: str, columns: list[str], where: str = "content.text_template") -> None:
    """Raise a clear error when a template names a column the catalogue does not have.

    Args:
        template: a ``str.format`` template with ``{column}`` fields.
        columns: the catalogue's columns.
        where: the config key named in the message.

    Raises:
        ValueError: a field is not in ``columns``.
    """
    missing = [f for f in template_fields(template) if f not in columns]
    if missing:
        raise ValueError(f"{where}: unknown catalogue column(s) {missing}; available: {', '.join(columns)}")


def clean(text: str) -> str:
    """Collapse whitespace and punctuation left behind by empty fields.

    Args:
        text: a rendered template.

    Returns:
        The text without repeated spaces or punctuation runs, and trimmed of spaces and ``.,;:``.
    """
    text = _SPACES.sub(" ", text).strip()
    text = re.sub(r"\s+([.,;:])", r"\1", text)
    text = _EMPTY_PUNCT.sub(r"\1", text)  # "name. , Black" (empty type) -> "name. Black"
    return text.strip(" .,;:")


def render_texts(items: pl.DataFrame, template: str) -> list[str]:
    """One text per catalogue row; null fields become empty strings.

    Args:
        items: the catalogue.
        template: e.g. ``"{prod_name}. {product_type_name}, {colour_group_name}"``.

    Returns:
        Texts in row order.

    Raises:
        ValueError: the template names a column not in ``items``.
    """
    check_template(template, items.columns)
    fields = template_fields(template)
    cols = {f: [("" if v is None else str(v)) for v in items[f].to_list()] for f in dict.fromkeys(fields)}
    return [clean(template.format(**{f: cols[f][i] for f in cols})) for i in range(items.height)]


def join_parts(parts: Sequence[str]) -> str:
    """One display text from an item's text parts (empty parts skipped).

    Args:
        parts: the item's text parts.

    Returns:
        The non-empty parts joined with ``". "``.
    """
    return ". ".join(p for p in parts if p)


def type_prompts(type_name: str, templates: list[str]) -> list[str]:
    """Zero-shot prompts for a product type: each template with ``{type}`` filled in (case kept).

    Args:
        type_name: the product type.
        templates: prompt templates containing ``{type}``.

    Returns:
        One prompt per template.
    """
    return [t.format(type=type_name) for t in templates]
