"""Hold the service being served and swap in a new bundle atomically.

A request takes ``holder.service`` once and uses that object to the end, so in-flight requests
finish on the old service while new ones see the new one; the swap itself is a single reference
assignment under a lock. A new bundle is loaded and checked (checksums via
``recsys.bundle.load_bundle``, plus a smoke query and a warm-up, :func:`warm_up`) *before* the
swap: a broken bundle raises :class:`ReloadError` and the old service keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from recsys.bundle import MANIFEST, POINTER, BundleError, resolve_bundle
from serving.bundle_service import BundleService
from serving.service import InvalidQueryError, Query, RecommendationService
from serving.synthetic_service import SyntheticService

log = logging.getLogger(__name__)

Loader = Callable[[Path], RecommendationService]


class ReloadError(RuntimeError):
    """A bundle could not be loaded; the previous service is still serving.

    Attributes:
        not_found: the named bundle (or the pointer) does not exist, as opposed to being broken.
    """

    def __init__(self, message: str, not_found: bool = False):
        super().__init__(message)
        self.not_found = not_found


def load_service(path: Path) -> RecommendationService:
    """Load a verified bundle with the service class its manifest names.

    ``"service": "synthetic"`` bundles (``bench/synthetic_catalogue.py``) are read by
    :class:`~serving.synthetic_service.SyntheticService`; every other bundle is a trained one read by
    :class:`~serving.bundle_service.BundleService`.

    Raises:
        BundleError: missing files or a checksum mismatch.
    """
    path = resolve_bundle(path)
    try:
        kind = json.loads((path / MANIFEST).read_text()).get("service")
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable {MANIFEST}: {exc}") from exc
    # Both loaders verify every checksum (recsys.bundle.load_bundle) before reading a component.
    if kind == "synthetic":  # bench/synthetic_catalogue.py: a large synthetic catalogue for the load benchmark
        return SyntheticService.load(path)
    return BundleService.load(path)


class ServiceHolder:
    """The current service, its bundle root, and an atomic, validated swap.

    Args:
        bundles_root: folder of bundle versions with a ``latest`` pointer (reload targets live here).
        loader: bundle path -> service.
        service: an already loaded service (else call :meth:`reload`).
        bundle_path: the bundle ``service`` came from.
    """

    def __init__(self, bundles_root: Path | None, loader: Loader = load_service, service: RecommendationService | None = None, bundle_path: Path | None = None):
        self.bundles_root = bundles_root
        self.loader = loader
        self._service = service
        self.bundle_path = bundle_path
        self._swap = threading.Lock()
        self._loading = threading.Lock()  # one reload at a time; others wait, then see the result
        self.on_swap: list[Callable[[str, str | None], None]] = []

    @property
    def service(self) -> RecommendationService | None:
        return self._service

    @property
    def version(self) -> str | None:
        return self._service.version if self._service is not None else None

    def resolve(self, version: str | None) -> Path:
        """The bundle folder for a version name (or the ``latest`` pointer) below the bundles root."""
        if self.bundles_root is None:
            raise ReloadError("this server was started without a bundles folder; nothing to reload from", not_found=True)
        try:
            return resolve_bundle(self.bundles_root, version)
        except BundleError as exc:
            raise ReloadError(str(exc), not_found=True) from exc

    def reload(self, version: str | None = None) -> tuple[str | None, str]:
        """Load ``version`` (default: ``latest``), check it, swap it in.

        Returns:
            (previous version, current version); equal when that bundle is already served.

        Raises:
            ReloadError: the bundle is missing, fails its checksums or cannot answer a query;
                the previous service stays in place.
        """
        with self._loading:
            path = self.resolve(version)
            previous = self.version
            if self.bundle_path is not None and path.resolve() == self.bundle_path.resolve() and self._service is not None:
                return previous, previous or ""
            try:
                service = self.loader(path)
                warm_up(service)
            except Exception as exc:  # any failure leaves the old service serving
                log.error("reload of %s rejected: %s", path, exc)
                raise ReloadError(f"bundle {path.name} rejected: {exc}") from exc
            with self._swap:
                self._service, self.bundle_path = service, path
            for callback in self.on_swap:
                callback(service.version, previous)
            log.info("serving bundle %s (was %s)", service.version, previous)
            return previous, service.version

    def pointer_target(self) -> Path | None:
        """Where ``latest`` points now (None without a root or pointer)."""
        if self.bundles_root is None or not (self.bundles_root / POINTER).is_file():
            return None
        with contextlib.suppress(BundleError):
            return resolve_bundle(self.bundles_root)
        return None

    async def watch_pointer(self, interval_s: float) -> None:
        """Poll the ``latest`` pointer; when it moves to a complete bundle, reload (in a thread)."""
        while True:
            await asyncio.sleep(interval_s)
            target = self.pointer_target()
            if target is None or not (target / MANIFEST).is_file():
                continue
            if self.bundle_path is not None and target.resolve() == self.bundle_path.resolve():
                continue
            try:
                await asyncio.to_thread(self.reload, None)
            except ReloadError as exc:
                log.error("pointer watch: %s (keeping %s)", exc, self.version)
                await asyncio.sleep(max(interval_s, 30.0))  # do not hammer a broken bundle


def warm_up(service: RecommendationService) -> None:
    """Check that a freshly loaded service answers, and pay its first-request costs before it takes traffic.

    A popularity query must return candidates (else the bundle is rejected). Then one customer's
    candidates and recommendations fill what requests would fill on first use: in the 1M-item
    benchmark a worker's first request computed the shared popularity list (~0.5 s) while every
    request queued behind it waited, which showed up in the p99.

    Raises:
        ReloadError: no version, or no candidates for a popularity query.
    """
    if not service.version:
        raise ReloadError("the service reports no version")
    if not service.candidates(Query(k=1)):
        raise ReloadError("the service returned no candidates for a popularity query")
    users = service.sample_users(1)
    if users:
        query = Query(user_id=users[0].user_id, k=12)
        service.candidates(query)
        with contextlib.suppress(InvalidQueryError):  # a catalogue without a reranker (the synthetic benchmark)
            service.recommendations(query)
