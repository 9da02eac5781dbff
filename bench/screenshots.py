"""Screenshots of the web page on a real bundle, for the README (``make screenshots``).

Usage (from the repository root)::

    flock /work/locks/cpu.lock .venv/bin/python bench/screenshots.py --config configs/hm.yaml
    .venv/bin/python bench/screenshots.py --url http://127.0.0.1:8000      # a server that is already running

Starts ``recsys serve`` on a free loopback port with the bundle (default: the latest under
``<work_dir>/bundles``; always stopped, process group included), or uses ``--url``, then drives the
page in headless Chromium (Debian ``chromium`` via Playwright) and saves palette PNGs (< 400 KB)
to ``--out`` (default ``docs/screenshots/``):

- ``customer.png``: a sample customer with a rich history: recent purchases and the top cards;
- ``customer_cards.png``: a close-up of one row of cards with their reasons (candidate sources,
  image/text similarity meters, feature-contribution bars);
- ``visitor_text.png`` / ``visitor_photo.png``: a new visitor typing a preference, then adding a
  product photo with the text/image slider at 30/70;
- ``similar.png``: a recommended product's similar items.

Every screenshot waits until the images have loaded and checks that each rendered
(``naturalWidth > 0``; items without a photo show a placeholder). The sample customer is the one of
the page's sample customers whose purchases and recommendations have the most photos, unless
``--user`` names one. Page errors, console errors and failed API calls make the run fail.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.live import chromium, rendered, run_server, save_png, wait_images  # noqa: E402

VIEWPORT = {"width": 1360, "height": 900}
N_RECS = 12
DEFAULT_PHOTO = Path("images/078/0782128001.jpg")  # an H&M product photo (black leather ankle boots), under the data dir
DEFAULT_TEXT = "black leather ankle boots"


def default_bundle(config: Path) -> Path:
    """The bundles folder of the config's work dir (its ``latest`` pointer is served)."""
    from recsys.config import load_config

    return load_config(config).work_path / "bundles"


def data_dir(config: Path) -> Path:
    from recsys.config import expand_env, load_config

    return Path(expand_env(load_config(config).data.data_dir))


@contextlib.contextmanager
def server_url(args: argparse.Namespace) -> Iterator[str]:
    """The base URL of a running server: ``--url`` as given, or a server started here (always stopped)."""
    if args.url:
        yield args.url.rstrip("/")
        return
    bundle = args.bundle or default_bundle(args.config)
    log = ROOT / "artifacts" / "screenshots" / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"starting the server on {bundle} (log: {log}) ...", flush=True)
    start = time.perf_counter()
    with run_server(bundle, log, config=args.config, ready_timeout_s=args.ready_timeout) as server:
        print(f"ready after {time.perf_counter() - start:.0f} s at {server.url}", flush=True)
        yield server.url


def pick_customer(url: str) -> str:
    """The page's sample customer whose recent purchases and recommendations show the most photos."""
    with httpx.Client(base_url=url, timeout=60) as client:
        users = client.get("/v1/users/sample", params={"n": 6}).raise_for_status().json()["users"]
        best, best_photos = users[0]["user_id"], -1
        for user in users:
            recs = client.post("/v1/recommendations", json={"user_id": user["user_id"], "k": N_RECS, "n_candidates": 200}).raise_for_status().json()
            history = client.get(f"/v1/users/{user['user_id']}", params={"n_recent": 12}).raise_for_status().json()
            photos = sum(bool(e["item"] and e["item"].get("image_url")) for e in recs["items"]) + sum(bool(i.get("image_url")) for i in history["recent_items"])
            if photos > best_photos:
                best, best_photos = user["user_id"], photos
    return best


def pick_item(url: str, item_ids: list[str]) -> str:
    """Of the recommended products with a photo, the one whose similar items show the most photos."""
    best, best_photos = item_ids[0], -1
    with httpx.Client(base_url=url, timeout=60) as client:
        for item_id in item_ids:
            if not client.get(f"/v1/items/{item_id}").raise_for_status().json().get("image_url"):
                continue
            similar = client.get(f"/v1/items/{item_id}/similar", params={"k": 12}).raise_for_status().json()["items"]
            photos = sum(bool(e["item"] and e["item"].get("image_url")) for e in similar)
            if photos > best_photos:
                best, best_photos = item_id, photos
    return best


def settle(page: Any, selector: str) -> list[int]:
    """Wait for the images under ``selector``, check each rendered, and let transitions finish."""
    wait_images(page, selector, timeout_ms=30_000)
    widths = rendered(page, selector)
    assert all(w > 0 for w in widths), f"{selector}: images that did not render: {widths}"
    page.mouse.move(2, 2)  # no hover effect on a card in the picture
    page.wait_for_timeout(300)  # card hover/fade transitions
    return widths


def union_box(page: Any, selector: str, first: int, count: int, margin: float = 12) -> dict[str, float]:
    """A clip rectangle around elements ``first .. first+count-1`` matching ``selector`` (page coordinates)."""
    boxes = [page.locator(selector).nth(i).bounding_box() for i in range(first, first + count)]
    boxes = [b for b in boxes if b]
    x0, y0 = min(b["x"] for b in boxes) - margin, min(b["y"] for b in boxes) - margin
    x1, y1 = max(b["x"] + b["width"] for b in boxes) + margin, max(b["y"] + b["height"] for b in boxes) + margin
    scroll = page.evaluate("() => [window.scrollX, window.scrollY]")
    return {"x": max(0.0, x0 + scroll[0]), "y": max(0.0, y0 + scroll[1]), "width": x1 - x0, "height": y1 - y0}


def timed(label: str, start: float) -> None:
    print(f"  {label}: {time.perf_counter() - start:.2f} s", flush=True)


def customer_shots(page: Any, out: Path, user: str) -> None:
    page.goto("/")
    page.wait_for_selector(".sample-user")
    start = time.perf_counter()
    button = page.locator(f'.sample-user[data-user-id="{user}"]')
    if button.count():
        button.click()
    else:
        page.fill("#customer-id", user)
        page.click("#customer-form button[type=submit]")
    page.wait_for_selector("#recs .rec-card")
    timed("customer: cards shown", start)
    assert page.locator("#recs .rec-card").count() == N_RECS
    settle(page, "#history img.card-img")
    settle(page, "#recs img.card-img")
    timed("customer: photos loaded", start)
    assert all(page.locator("#recs .rec-card").nth(i).locator(".reasons .chip").count() for i in range(N_RECS)), "a card without sources"
    # the page from the top down to the end of the first row of recommendation cards
    page.evaluate("() => window.scrollTo(0, 0)")
    first = page.locator("#recs .rec-card").first.bounding_box()
    clip = {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": first["y"] + first["height"] + 16}
    print(f"  saved {save_png(page, out / 'customer.png', full_page=True, clip=clip)}", flush=True)
    # one row of cards, close up: the "why" block of each
    page.locator("#recs .rec-card").first.scroll_into_view_if_needed()
    columns = page.evaluate("() => getComputedStyle(document.querySelector('#recs')).gridTemplateColumns.split(' ').length")
    print(f"  saved {save_png(page, out / 'customer_cards.png', full_page=True, clip=union_box(page, '#recs .rec-card', 0, columns))}", flush=True)


def visitor_shots(page: Any, out: Path, text: str, photo: Path) -> None:
    page.goto("/")
    page.click("#tab-visitor")
    page.fill("#pref-text", text)
    start = time.perf_counter()
    page.click("#visitor-go")
    page.wait_for_selector("#visitor-recs .rec-card")
    page.wait_for_selector("#search-results .search-card")
    timed("visitor (words): cards shown", start)
    settle(page, "#visitor-recs img.card-img")
    settle(page, "#search-results img.card-img")
    print(f"  saved {save_png(page, out / 'visitor_text.png')}", flush=True)

    page.set_input_files("#pref-image", str(photo))
    page.wait_for_selector("#pref-preview:not([hidden])")
    page.eval_on_selector("#weight-slider", "s => { s.value = 70; s.dispatchEvent(new Event('input')); }")
    start = time.perf_counter()
    with page.expect_response(lambda r: "/v1/search" in r.url) as search, page.expect_response(lambda r: "/v1/recommendations" in r.url) as recs:
        page.click("#visitor-go")
    assert search.value.status == 200 and recs.value.status == 200, (search.value.status, recs.value.status)
    page.wait_for_selector("#search-results .search-card")
    timed("visitor (words + photo): cards shown", start)
    settle(page, "#visitor-recs img.card-img")
    settle(page, "#search-results img.card-img")
    page.evaluate("() => window.scrollTo(0, 0)")
    print(f"  saved {save_png(page, out / 'visitor_photo.png')}", flush=True)
    page.evaluate("() => { document.querySelector('#search-results').previousElementSibling.scrollIntoView({ block: 'start' }); window.scrollBy(0, -16); }")
    print(f"  saved {save_png(page, out / 'visitor_search.png')}", flush=True)


def similar_shot(page: Any, url: str, out: Path, user: str, item: str | None) -> None:
    page.goto("/")
    page.wait_for_selector(".sample-user")
    page.fill("#customer-id", user)
    page.click("#customer-form button[type=submit]")
    page.wait_for_selector("#recs .rec-card")
    if item is None:
        item = pick_item(url, page.eval_on_selector_all("#recs .rec-card", "cards => cards.map(c => c.dataset.itemId)"))
    start = time.perf_counter()
    page.locator(f'#recs .rec-card[data-item-id="{item}"] .similar-btn').click()
    page.wait_for_selector("#similar-panel .sim-card")
    timed("similar items shown", start)
    settle(page, "#similar-panel img.card-img")
    print(f"  saved {save_png(page, out / 'similar.png')}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/hm.yaml"), help="project config (YAML)")
    parser.add_argument("--bundle", type=Path, default=None, help="a bundle folder, or a bundles folder whose 'latest' is served (default: <work_dir>/bundles)")
    parser.add_argument("--url", default=None, help="use this running server instead of starting one")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="where the PNGs go")
    parser.add_argument("--user", default=None, help="customer id (default: the sample customer with the most photos)")
    parser.add_argument("--item", default=None, help="item id for the similar-items shot (default: the customer's first recommendation with a photo)")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="the new visitor's words")
    parser.add_argument("--photo", type=Path, default=None, help=f"the new visitor's photo (default: <data dir>/{DEFAULT_PHOTO})")
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for the server to load the bundle")
    args = parser.parse_args(argv)
    photo = args.photo or data_dir(args.config) / DEFAULT_PHOTO
    if not photo.is_file():
        parser.error(f"no photo at {photo}: pass --photo")

    with server_url(args) as url:
        version = httpx.get(f"{url}/ready", timeout=10).raise_for_status().json()["model_version"]
        user = args.user or pick_customer(url)
        print(f"bundle {version}, customer {user}, photo {photo}", flush=True)
        problems: list[str] = []
        with chromium() as browser:
            context = browser.new_context(viewport=VIEWPORT, base_url=url)
            page = context.new_page()
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
            page.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
            try:
                customer_shots(page, args.out, user)
                visitor_shots(page, args.out, args.text, photo)
                similar_shot(page, url, args.out, user, args.item)
            finally:
                context.close()
        if problems:
            print("problems on the page:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
    print(f"screenshots of bundle {version} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
