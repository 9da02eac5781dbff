"""The web page in headless Chromium (Debian package, driven by Playwright) against the real server.

Screenshots are written to ``artifacts/screenshots/`` (palette PNGs, well under 400 KB).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.config import PROJECT_ROOT
from tests.e2e.conftest import Server
from tests.e2e.live import CHROMIUM, chromium, rendered, save_png, wait_images

pytestmark = pytest.mark.e2e

SHOTS = PROJECT_ROOT / "artifacts" / "screenshots"
N_RECS = 12


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.is_file() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"Chromium is not installed at {CHROMIUM}: run `make browsers` (apt-get install chromium)")
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser, server: Server):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=server.url)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    try:
        yield page
    finally:
        context.close()
    assert not [p for p in problems if "Failed to load resource" not in p], problems  # failing API calls are tested on purpose


def screenshot(page, name: str, full_page: bool = False) -> Path:  # type: ignore[no-untyped-def]
    """A palette PNG under ``artifacts/screenshots/`` (asserted < 400 KB)."""
    return save_png(page, SHOTS / f"{name}.png", full_page=full_page)


def test_customer_recommendations_render_with_reasons(page) -> None:  # type: ignore[no-untyped-def]
    page.goto("/")
    page.wait_for_selector(".sample-user")
    assert page.locator("#model-version").inner_text().startswith("model v-e2e")
    page.locator(".sample-user").first.click()
    page.wait_for_selector("#recs .rec-card")
    cards = page.locator("#recs .rec-card")
    assert cards.count() == N_RECS
    wait_images(page, "#recs img.card-img")
    widths = rendered(page, "#recs img.card-img")
    placeholders = page.locator("#recs .rec-card [data-placeholder]").count()
    assert len(widths) + placeholders == N_RECS  # every card shows a photo or a clear placeholder
    assert len(widths) >= N_RECS // 2 and all(w > 0 for w in widths), widths
    for i in range(N_RECS):
        card = cards.nth(i)
        assert card.locator(".reasons .chip").count() >= 1
        assert card.locator(".reasons .contrib").count() >= 1
        assert card.locator(".name").inner_text().strip()
        assert "score" in card.locator(".score").inner_text()
    history = rendered(page, "#history img.card-img")
    assert history and all(w > 0 for w in history)
    screenshot(page, "customer")
    page.locator("#recs .rec-card").first.scroll_into_view_if_needed()
    screenshot(page, "customer_cards")


def test_customer_search_by_id_and_unknown_id(page, server: Server) -> None:  # type: ignore[no-untyped-def]
    import httpx

    user = httpx.get(f"{server.url}/v1/users/sample?n=4").json()["users"][3]["user_id"]
    page.goto("/")
    page.fill("#customer-id", "no-such-customer")
    page.click("#customer-form button[type=submit]")
    page.wait_for_selector("#error:not([hidden])")
    assert "No customer" in page.locator("#error").inner_text()
    page.fill("#customer-id", user)
    page.click("#customer-form button[type=submit]")
    page.wait_for_selector("#recs .rec-card")
    assert page.locator("#error").is_hidden()
    assert page.locator("#recs .rec-card").count() == N_RECS


def test_visitor_text_photo_and_slider(page, hm_dir: Path) -> None:  # type: ignore[no-untyped-def]
    page.goto("/")
    page.click("#tab-visitor")
    assert page.locator("#visitor-hint").is_visible()  # an empty state, not a blank page
    page.fill("#pref-text", "black leather ankle boots")
    page.click("#visitor-go")
    page.wait_for_selector("#visitor-recs .rec-card")
    page.wait_for_selector("#search-results .search-card")
    assert page.locator("#visitor-recs .rec-card").count() == N_RECS
    assert "boot" in page.locator("#search-results .search-card .name").first.inner_text().lower()
    assert page.locator("#visitor-recs .rec-card").first.locator(".reasons .chip").count() >= 1
    screenshot(page, "visitor_text")

    photo = next(iter(sorted((hm_dir / "images").glob("*/*.jpg"))))
    page.set_input_files("#pref-image", str(photo))
    page.wait_for_selector("#pref-preview:not([hidden])")
    page.eval_on_selector("#weight-slider", "s => { s.value = 70; s.dispatchEvent(new Event('input')); }")
    assert page.locator("#weight-label").inner_text() == "30% · 70%"
    with page.expect_response(lambda r: "/v1/search" in r.url) as search_response, page.expect_request(lambda r: "/v1/recommendations" in r.url) as recs_request:
        page.click("#visitor-go")
    assert search_response.value.status == 200
    payload = recs_request.value.post_data_json
    assert payload["image_base64"].startswith("data:image/jpeg;base64,")  # the photo was sent
    assert (payload["text_weight"], payload["image_weight"]) == (0.3, 0.7)
    page.wait_for_selector("#search-results .search-card")
    wait_images(page, "#search-results img.card-img")
    widths = rendered(page, "#search-results img.card-img")
    assert widths and all(w > 0 for w in widths)
    screenshot(page, "visitor_photo")


def test_click_through_to_similar_items(page) -> None:  # type: ignore[no-untyped-def]
    page.goto("/")
    page.wait_for_selector(".sample-user")
    page.locator(".sample-user").nth(1).click()
    page.wait_for_selector("#recs .rec-card")
    first_id = page.locator("#recs .rec-card").first.get_attribute("data-item-id")
    page.locator("#recs .rec-card .similar-btn").first.click()
    page.wait_for_selector("#similar-panel .sim-card")
    assert page.locator("#similar-focus .name").inner_text().strip()
    sims = page.locator("#similar-panel .sim-card")
    assert sims.count() == 12
    assert first_id not in [sims.nth(i).get_attribute("data-item-id") for i in range(sims.count())]
    wait_images(page, "#similar-panel img.card-img")
    assert all(w > 0 for w in rendered(page, "#similar-panel img.card-img"))
    screenshot(page, "similar")
    # and onwards: a similar item's photo opens its own neighbours
    second_id = sims.nth(0).get_attribute("data-item-id")
    sims.nth(0).locator(".photo").click()
    page.wait_for_function("id => document.querySelector('#similar-focus .muted:last-child')?.textContent.includes(id)", arg=second_id)
    page.keyboard.press("Escape")
    assert page.locator("#similar-panel").is_hidden()


def test_errors_and_empty_results_are_shown(page) -> None:  # type: ignore[no-untyped-def]
    def fail(route) -> None:  # type: ignore[no-untyped-def]
        route.fulfill(status=503, content_type="application/json", body=json.dumps({"error": "not_ready", "message": "no model bundle is loaded yet"}))

    page.route("**/v1/recommendations", fail)
    page.route("**/v1/search", lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps({"model_version": "x", "items": []})))
    page.goto("/")
    page.click("#tab-visitor")
    page.fill("#pref-text", "anything")
    page.click("#visitor-go")
    page.wait_for_selector("#error:not([hidden])")
    assert "no model bundle" in page.locator("#error").inner_text()
    assert "Nothing matched" in page.locator("#search-results").inner_text()
    assert page.locator("#visitor-recs .empty").is_visible()
    screenshot(page, "error_state")
