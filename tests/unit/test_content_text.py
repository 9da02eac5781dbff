"""Item text templates: rendering, nulls, unknown columns."""

from __future__ import annotations

import polars as pl
import pytest

from features.content.text import check_template, render_texts, template_fields, type_prompts


def test_render_texts_fills_columns_and_tidies_empty_fields() -> None:
    items = pl.DataFrame(
        {"prod_name": ["Strap top", "Ben dress"], "product_type_name": ["Vest top", None], "detail_desc": [None, "Short dress."]}
    )
    out = render_texts(items, "{prod_name}. {product_type_name}, Black. {detail_desc}")
    assert out == ["Strap top. Vest top, Black", "Ben dress. Black. Short dress"]
    assert template_fields("{a} and {b}, {a}") == ["a", "b", "a"]


def test_unknown_column_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"content.text_template: unknown catalogue column\(s\) \['colour'\]"):
        check_template("{prod_name} {colour}", ["prod_name", "detail_desc"])


def test_type_prompts() -> None:
    assert type_prompts("Dress", ["a photo of a {type}", "{type}"]) == ["a photo of a Dress", "Dress"]
