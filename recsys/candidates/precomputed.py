"""Every known customer's merged candidates, computed in batches when the model is trained.

A known customer's candidates depend only on the fitted fold (their history and the fitted
sources), never on the request, so they are computed once for all customers in large batches
(the generator's source lists, fused by :func:`~recsys.candidates.merge.merge_rows`: the same
lists as :meth:`CandidateGenerator.generate`, the call offline evaluation scores) and stored as
arrays. Serving a known customer is then a row lookup instead of seven source queries (two ANN
searches, an exact ALS product over the catalogue, a sparse co-purchase product, the fusion):
~0.1 ms instead of ~25 ms of CPU on the H&M fold. Visitors, filtered queries and lists longer
than the stored depth still take the live path.

Storage is plain ``.npy`` files (no pickle) opened memory-mapped, so the server's worker
processes share one copy in the page cache. A build given a checkpoint folder writes its rows
there as it goes (memory-mapped ``.npy`` files and a done flag per batch): a build killed partway
(1.2M customers take ~1.5 hours on 2 cores) resumes with the batches it had not finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import multiprocessing as mp
import resource
import shutil
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np

from recsys.atomic import link_or_copy, write_dir, write_text
from recsys.candidates.generator import CandidateGenerator
from recsys.candidates.merge import Candidate, merge_rows
from recsys.forked import one_thread_per_library
from recsys.index.faiss_index import EXACT_BATCH_MIN

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CHECKPOINT_META = "layout.json"  # a checkpoint folder's layout, written once its arrays exist
PRECOMPUTED_DIR = "precomputed_candidates"  # its folder in a training stage and in a bundle
NO_RANK = 0  # ranks are stored 1-based; 0 = the source did not propose the item


class PrecomputedCandidates:
    """Merged candidate lists of every customer of a fitted generator, best first.

    Args:
        item_ids: the generator's item ids (``history.item_index`` order).
        sources: source names, the order of the last axis of ``ranks``.
        rows: (n_users, depth) int32 item rows, -1 after a shorter list.
        scores: (n_users, depth) float32 fused scores.
        ranks: (n_users, depth, n_sources) 1-based rank per source (0 = not proposed).
        users_digest: digest of the user ids the rows belong to (checked against the generator).
    """

    def __init__(self, item_ids: np.ndarray, sources: list[str], rows: np.ndarray, scores: np.ndarray, ranks: np.ndarray, users_digest: str):
        self.item_ids, self.sources = item_ids, list(sources)
        self.rows, self.scores, self.ranks = rows, scores, ranks
        self.users_digest = users_digest
        self.build_seconds: dict[str, float] = {}  # per source and "fusion", set by :meth:`build`
        self.worker_peak_rss_mb = 0.0  # the largest forked worker's peak resident set (its pages shared with the parent included)
        self.computed_users = 0  # customers :meth:`build` computed (a resumed build: those its checkpoint lacked)
        self.checkpoint: Path | None = None  # the folder whose .npy files are rows, scores and ranks (set by :meth:`build`)

    @property
    def depth(self) -> int:
        """Candidates stored per customer (the longest list served from here)."""
        return int(self.rows.shape[1])

    @classmethod
    def build(cls, generator: CandidateGenerator, depth: int, batch_size: int = 2048, workers: int = 1, checkpoint: Path | None = None) -> Self:
        """Generate and store the merged candidates of every customer the generator knows.

        Args:
            generator: a fitted generator.
            depth: candidates kept per customer.
            batch_size: customers per batch of source lists and fusion (progress is logged per
                batch); every batch has at least ``EXACT_BATCH_MIN`` customers (when there are that
                many), so all are searched the same way (exactly: see ``ItemIndex.search_exact``).
            workers: processes sharing the batches (forked after the first batch, so they share the
                generator and the search structures it set up). Much of a batch is single-threaded
                Python (fusion, per-customer rescoring), so two workers keep two cores busy. Each
                customer's row is the same whoever computes it.
            checkpoint: a folder for the rows as they are made; a build of the same generator,
                depth and batches finds the batches done there and computes only the others (the
                caller removes the folder once the table is saved). None: rows in memory only.

        Returns:
            The table; its arrays are the checkpoint's files when one was given.
        """
        user_ids = generator.history.user_index.ids
        sources: list[str] = [s for s in generator.config.sources if not (s == "history" and generator.exclude_seen)]
        n = len(user_ids)
        # A source's list is at most per_source long, so its ranks fit a byte at the usual sizes.
        rank_type = np.uint8 if generator.config.per_source < 256 else np.uint16
        bounds = list(range(0, n, batch_size)) + [n]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < EXACT_BATCH_MIN:
            del bounds[-2]  # a short last batch joins the one before, so every batch is searched exactly
        batches = list(zip(bounds[:-1], bounds[1:]))
        layout = _Layout(n, depth, sources, [*generator.config.sources, "fusion"], np.dtype(rank_type).name, len(batches), users_digest(user_ids))
        out = _Outputs(layout, shared=workers > 1, checkpoint=checkpoint)
        pending = [(b, lo, hi) for b, (lo, hi) in enumerate(batches) if not out.done[b]]
        workers = max(1, min(workers, len(pending) - 1)) if "fork" in mp.get_all_start_methods() else 1
        job = _Job(generator, user_ids, sources, depth, out, n, time.perf_counter())
        job.finished = job.resumed_with = n - sum(hi - lo for _, lo, hi in pending)
        if pending:
            job.run(pending[:1] if workers > 1 else pending, worker=0)
        peaks: list[float] = []
        if workers > 1:
            peaks = [r["peak_rss_mb"] for r in _fork_workers(job, pending[1:], workers)]
        seconds = out.seconds_per_part()
        log.info("precomputed candidates: seconds per part %s", ", ".join(f"{k} {v:.1f}" for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])))
        table = cls(generator.history.item_index.ids, sources, out.rows, out.scores, out.ranks, layout.users_digest)
        table.build_seconds = seconds
        table.worker_peak_rss_mb = max(peaks, default=0.0)
        table.computed_users = n - job.resumed_with
        table.checkpoint = checkpoint
        return table

    def lookup(self, user_row: int, size: int) -> list[Candidate]:
        """One customer's first ``size`` candidates.

        Args:
            user_row: the customer's row in the generator's ``history.user_index``.
            size: how many (at most :attr:`depth`).

        Returns:
            The candidates, best first, exactly as :meth:`CandidateGenerator.generate` made them.
        """
        row = np.asarray(self.rows[user_row, :size])
        kept = int(np.count_nonzero(row >= 0))
        ids = self.item_ids[row[:kept]].tolist()
        scores = np.asarray(self.scores[user_row, :kept], dtype=np.float64).tolist()
        sources = self.sources
        # Plain lists, not a numpy call per candidate: this is most of a known customer's request.
        return [
            Candidate(item, score, {sources[s]: r for s, r in enumerate(ranks) if r})
            for item, score, ranks in zip(ids, scores, np.asarray(self.ranks[user_row, :kept]).tolist())
        ]

    def matches(self, generator: CandidateGenerator) -> bool:
        """Whether this table belongs to ``generator`` (same customers and items, in the same order)."""
        return (
            self.users_digest == users_digest(generator.history.user_index.ids)
            and len(self.item_ids) == len(generator.history.item_index)
            and bool(np.array_equal(self.item_ids, generator.history.item_index.ids))
        )

    def save(self, directory: str | Path) -> Path:
        """Write ``meta.json`` and the arrays as ``.npy`` files (atomically: temp folder, then rename).

        A table built in a checkpoint folder already has its arrays there as ``.npy`` files (flushed
        batch by batch); they are hard-linked, not copied (3.6 GB for 1.2M customers), when the
        folders share a disk.
        """

        def populate(tmp: Path) -> None:
            for name, values in (("rows", self.rows), ("scores", self.scores), ("ranks", self.ranks)):
                if self.checkpoint is not None:  # the checkpoint is removed, never rewritten, once the table is saved
                    link_or_copy(self.checkpoint / f"{name}.npy", tmp / f"{name}.npy")
                else:
                    np.save(tmp / f"{name}.npy", values)
            np.save(tmp / "item_ids.npy", self.item_ids.astype(str))
            meta = {"format_version": FORMAT_VERSION, "sources": self.sources, "users_digest": self.users_digest, "depth": self.depth, "users": len(self.rows)}
            (tmp / "meta.json").write_text(json.dumps(meta))

        return write_dir(directory, populate)

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Open a saved table memory-mapped (pages are read as customers are served).

        Raises:
            ValueError: an unknown format version.
        """
        directory = Path(directory)
        meta = json.loads((directory / "meta.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{directory}: precomputed candidates format {meta.get('format_version')}, expected {FORMAT_VERSION}")
        arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in ("rows", "scores", "ranks")}
        item_ids = np.load(directory / "item_ids.npy", allow_pickle=False)
        return cls(item_ids, meta["sources"], arrays["rows"], arrays["scores"], arrays["ranks"], meta["users_digest"])


def users_digest(user_ids: np.ndarray) -> str:
    """A short digest of an ordered user-id list (ties a table to the fold it was built from).

    Args:
        user_ids: the ids, in row order.

    Returns:
        16 hex digits.
    """
    h = hashlib.sha256()
    for chunk in range(0, len(user_ids), 100_000):
        h.update("\n".join(user_ids[chunk : chunk + 100_000].tolist()).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class _Layout:
    """What a table's arrays hold: a checkpoint is resumed only by a build with the same layout."""

    users: int
    depth: int
    sources: list[str]  # the sources in the table (the last axis of ranks)
    parts: list[str]  # the timed parts: every configured source and the fusion
    rank_dtype: str
    batches: int
    users_digest: str


class _Outputs:
    """The table's arrays, a done flag and seconds per part for every batch.

    Plain arrays for one process; anonymous shared memory when forked workers write rows; files in
    the checkpoint folder (memory-mapped, shared with forked workers) when resuming is wanted. A
    batch's flag is set only after its rows are written and flushed, so a resumed build trusts
    every flagged batch and recomputes the rest.
    """

    def __init__(self, layout: _Layout, shared: bool, checkpoint: Path | None = None):
        self.layout, self.checkpoint = layout, checkpoint
        shapes: dict[str, tuple[tuple[int, ...], str, float]] = {
            "rows": ((layout.users, layout.depth), "int32", -1),
            "scores": ((layout.users, layout.depth), "float32", 0),
            "ranks": ((layout.users, layout.depth, len(layout.sources)), layout.rank_dtype, 0),
            "done": ((layout.batches,), "uint8", 0),
            "seconds": ((layout.batches, len(layout.parts)), "float64", np.nan),  # NaN: the part did not run
        }
        resumed = checkpoint is not None and self._matches(checkpoint)
        if checkpoint is not None and not resumed:
            shutil.rmtree(checkpoint, ignore_errors=True)  # another fold's or an older layout's: start over
            checkpoint.mkdir(parents=True)
        arrays = {name: self._array(name, shape, dtype, fill, shared, resumed) for name, (shape, dtype, fill) in shapes.items()}
        self.rows, self.scores, self.ranks, self.done, self.seconds = (arrays[k] for k in ("rows", "scores", "ranks", "done", "seconds"))
        if checkpoint is not None and not resumed:
            # Written last: a folder without it (killed while being created) is started over.
            write_text(checkpoint / CHECKPOINT_META, json.dumps(asdict(layout)))
        if resumed:
            log.info("precomputed candidates: resuming from %s, %d of %d batches done", checkpoint, int(self.done.sum()), layout.batches)

    def _matches(self, checkpoint: Path) -> bool:
        try:
            return bool(json.loads((checkpoint / CHECKPOINT_META).read_text()) == asdict(self.layout))
        except (OSError, ValueError):
            return False

    def _array(self, name: str, shape: tuple[int, ...], dtype: str, fill: float, shared: bool, resumed: bool) -> np.ndarray:
        if self.checkpoint is not None:
            path = self.checkpoint / f"{name}.npy"
            if resumed:
                values: np.ndarray = np.lib.format.open_memmap(path, mode="r+")
                if values.shape != shape or values.dtype != np.dtype(dtype):
                    raise ValueError(f"{path}: shape {values.shape} {values.dtype}, expected {shape} {dtype}")
                return values
            values = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        elif shared:
            size = int(np.prod(shape)) * np.dtype(dtype).itemsize
            buffer = mmap.mmap(-1, max(size, 1))  # anonymous and MAP_SHARED: a forked child's writes are seen here
            values = np.frombuffer(buffer, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
        else:
            values = np.empty(shape, dtype=dtype)
        values.fill(fill)
        return values

    def finish_batch(self, batch: int, lo: int, hi: int, rows: np.ndarray, scores: np.ndarray, ranks: np.ndarray, seconds: dict[str, float]) -> None:
        """Store one batch's rows and seconds, then flag it done (after a flush, with a checkpoint)."""
        self.rows[lo:hi], self.scores[lo:hi], self.ranks[lo:hi] = rows, scores, ranks
        parts = self.layout.parts
        self.seconds[batch] = [seconds.get(part, np.nan) for part in parts]
        for values in (self.rows, self.scores, self.ranks, self.seconds):
            if isinstance(values, np.memmap):
                values.flush()
        self.done[batch] = 1
        if isinstance(self.done, np.memmap):
            self.done.flush()

    def seconds_per_part(self) -> dict[str, float]:
        """Seconds per part summed over every batch (those of earlier, resumed builds included)."""
        ran = ~np.all(np.isnan(self.seconds), axis=0)
        return {part: float(np.nansum(self.seconds[:, j])) for j, part in enumerate(self.layout.parts) if ran[j]}


class _Job:
    """Batches of customers -> their rows of the table (in one process)."""

    def __init__(self, generator: CandidateGenerator, user_ids: np.ndarray, sources: list[str], depth: int, out: _Outputs, n: int, start: float):
        self.generator, self.user_ids, self.sources, self.depth, self.out = generator, user_ids, sources, depth, out
        self.n, self.start = n, start
        self.done: Any = None  # a shared counter of finished customers, set when workers are forked
        self.finished = 0  # customers finished in this process before any fork (a resumed build's done batches included)
        self.resumed_with = 0  # customers a resumed build found done (the rate counts only the rest)

    def run(self, batches: list[tuple[int, int, int]], worker: int) -> None:
        """Fill the rows of ``batches`` (index, first customer, end) and record each batch's seconds per part."""
        generator = self.generator
        item_rows = generator.history.item_index
        for batch, lo, hi in batches:
            users = self.user_ids[lo:hi].tolist()
            lists = generator.source_rows(users)
            seconds = dict(generator.timings)
            fusion_start = time.perf_counter()
            merged = merge_rows(lists, len(users), self.depth, generator.weights, generator.config.rrf_k, item_rows)
            seconds["fusion"] = time.perf_counter() - fusion_start
            if merged.sources != self.sources:
                raise ValueError(f"precomputed candidates: the generator's sources {merged.sources} are not {self.sources}")
            self.out.finish_batch(batch, lo, hi, merged.rows, merged.scores, merged.ranks, seconds)
            done = self._count(hi - lo)
            elapsed = time.perf_counter() - self.start
            computed = done - self.resumed_with
            who = f" (worker {worker})" if self.done is not None else ""
            log.info("precomputed candidates: %d/%d customers, %.0f/s, %.0fs left%s", done, self.n, computed / elapsed, (self.n - done) * elapsed / max(computed, 1), who)

    def _count(self, finished: int) -> int:
        if self.done is None:
            self.finished += finished
            return self.finished
        with self.done.get_lock():
            self.done.value += finished
            return int(self.done.value)


def _fork_workers(job: _Job, batches: list[tuple[int, int, int]], workers: int) -> list[dict[str, Any]]:
    """Run ``batches`` in ``workers`` forked processes (batch i goes to worker i mod workers).

    Returns:
        Each worker's report: ``peak_rss_mb``.

    Raises:
        RuntimeError: a worker failed (its traceback is in the message) or died.
    """
    ctx = mp.get_context("fork")
    job.done = ctx.Value("q", int(job._count(0)))
    results = ctx.SimpleQueue()
    procs = [ctx.Process(target=_worker, args=(job, batches[w::workers], w + 1, results), daemon=True) for w in range(workers)]
    for p in procs:
        p.start()
    reports = [results.get() for _ in procs]  # before join: a child blocks until its report is read
    for p in procs:
        p.join()
    failed = [r for r in reports if "error" in r]
    if failed or any(p.exitcode != 0 for p in procs):
        raise RuntimeError("precomputed candidates: a worker failed: " + (failed[0]["error"] if failed else f"exit codes {[p.exitcode for p in procs]}"))
    for r in reports:
        log.info("precomputed candidates: worker %d peak RSS %.0f MB (pages shared with the parent counted)", r["worker"], r["peak_rss_mb"])
    return reports


def _worker(job: _Job, batches: list[tuple[int, int, int]], worker: int, results: Any) -> None:
    """One forked worker: one thread each for BLAS and OpenMP (the workers are the parallelism)."""
    try:
        one_thread_per_library()
        job.run(batches, worker)
        results.put({"worker": worker, "peak_rss_mb": _peak_rss_mb()})
    except BaseException:
        results.put({"worker": worker, "error": traceback.format_exc()})
        raise


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
