"""Result keys as 128-bit hashes: what resume and the one-row-per-input check use instead of ids.

A result key is the pair (id, task). `key_hashes` turns keys into two uint64 columns of a BLAKE2b digest
(stable across processes and machines, unlike Python's `hash`). With 128 bits, two different keys share a
hash with probability about n^2 / 2^129: under 1e-22 for 10^8 keys, so a done key never hides a new one in
practice; with 64 bits it would be about 1e-3 per 10^8 x 10^8 lookups.

`KeySet` holds the keys of earlier results as two sorted arrays (16 bytes per key; 1.6 GB for 100 million),
built once on a worker and placed once in Ray's object store; every worker maps it without copying and tests
a batch of keys with a binary search. `key_checksum` sums hashes modulo 2^64 per half: equal counts and sums
of the keys expected and the keys written show that every expected key was written, without any list of
keys on the driver.

A PDF document is one key (id, task) in the manifest but one output row per page (`<id>#p<n>`). Each page row
carries a share of its document's key hash (`page_shares`), chosen so that the shares of pages 1..n add up to
the document's hash exactly when each page is there once: the write stage adds shares instead of row hashes, and
resume counts a document done only when its distinct page rows' shares add up (`complete_documents`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

_SEPARATOR = b"\x00"


def key_hashes(ids: list[str], tasks: list[str]) -> np.ndarray:
    """uint64 array [n, 2] of the keys' hashes."""
    return _digests([f"{i}\x00{t}" for i, t in zip(ids, tasks)])


def _digests(texts: list[str]) -> np.ndarray:
    if not texts:
        return np.zeros((0, 2), np.uint64)
    blake = hashlib.blake2b
    # surrogatepass: text that is not Unicode is refused as a row error when read (manifest/row_errors.py); here it
    # must still hash rather than stop a whole scan.
    digests = b"".join(blake(text.encode("utf-8", "surrogatepass"), digest_size=16).digest() for text in texts)
    return np.frombuffer(digests, dtype="<u8").reshape(-1, 2).astype(np.uint64, copy=False)


def page_shares(
    doc_ids: list[str], tasks: list[str], pages: list[int], num_pages: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(each page row's document key hash, its share of it), uint64 [n, 2] each.

    With g(p) a hash of (document, task, p) for 1 <= p < n and g(0) = 0, page p < n's share is g(p) - g(p-1) and
    the last page's is hash(document, task) - g(n-1), modulo 2^64 per half: the sum over pages 1..n telescopes to
    the document's hash. A missing or repeated page leaves a random-looking sum (a miss has odds of 2^-128).
    """
    documents = key_hashes(doc_ids, tasks)
    if not len(documents):
        return documents, documents
    page = np.asarray(pages, np.int64)
    last = page >= np.asarray(num_pages, np.int64)

    def g(numbers) -> np.ndarray:
        out = _digests([f"{d}\x00{t}\x00page {p}" for d, t, p in zip(doc_ids, tasks, numbers.tolist())]).copy()
        out[numbers <= 0] = 0
        return out

    this = np.where(last[:, None], documents, g(page))
    with np.errstate(over="ignore"):
        return documents, this - g(page - 1)  # uint64 arithmetic wraps modulo 2^64


def document_ids(row_ids: list[str | None], pages: list[int]) -> list[str | None]:
    """The documents' ids of page rows: `<id>#p<n>` without its suffix (None stays None: API rows without ids)."""
    return [None if i is None else i[: len(i) - len(f"#p{p}")] for i, p in zip(row_ids, pages)]


def complete_documents(row_hashes: np.ndarray, documents: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Key hashes of the documents whose pages are all present, from page rows that may repeat (a page written
    by two runs): rows are made distinct by their own key hash, then shares are added per document."""
    if not len(row_hashes):
        return np.zeros((0, 2), np.uint64)
    _, first = np.unique(row_hashes, axis=0, return_index=True)
    documents, shares = documents[first], shares[first]
    order = np.lexsort((documents[:, 1], documents[:, 0]))
    documents, shares = documents[order], shares[order]
    starts = np.flatnonzero(np.concatenate([[True], (documents[1:] != documents[:-1]).any(axis=1)]))
    sums = np.add.reduceat(shares, starts, axis=0)  # unsigned sums wrap modulo 2^64
    done = (sums == documents[starts]).all(axis=1)
    return documents[starts][done]


def key_checksum(hashes: np.ndarray) -> tuple[int, int]:
    """Per-half sums of key hashes, modulo 2^64 (order-independent; add two with `add_checksums`)."""
    if not len(hashes):
        return 0, 0
    total = hashes.sum(axis=0, dtype=np.uint64)  # unsigned sums wrap modulo 2^64
    return int(total[0]), int(total[1])


def add_checksums(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return (a[0] + b[0]) % 2**64, (a[1] + b[1]) % 2**64


@dataclass(frozen=True)
class KeySet:
    """Sorted, distinct key hashes; `contains` answers for a batch of keys at once."""

    high: np.ndarray  # uint64, sorted
    low: np.ndarray  # uint64, sorted within runs of equal `high`

    @classmethod
    def build(cls, parts: list[np.ndarray]) -> KeySet:
        hashes = np.concatenate(parts) if parts else np.zeros((0, 2), np.uint64)
        if len(hashes):
            order = np.lexsort((hashes[:, 1], hashes[:, 0]))
            hashes = hashes[order]
            keep = np.ones(len(hashes), bool)
            keep[1:] = (hashes[1:] != hashes[:-1]).any(axis=1)
            hashes = hashes[keep]
        return cls(np.ascontiguousarray(hashes[:, 0]), np.ascontiguousarray(hashes[:, 1]))

    def __len__(self) -> int:
        return len(self.high)

    def find(self, hashes: np.ndarray) -> np.ndarray:
        """int64 per key (uint64 [n, 2]): its index in the set, or -1."""
        index = np.full(len(hashes), -1, np.int64)
        if not len(self.high) or not len(hashes):
            return index
        left = np.searchsorted(self.high, hashes[:, 0], "left")
        right = np.searchsorted(self.high, hashes[:, 0], "right")
        single = np.flatnonzero((right - left == 1) & (self.low[np.minimum(left, len(self.low) - 1)] == hashes[:, 1]))
        index[single] = left[single]
        for i in np.flatnonzero(right - left > 1):  # equal high halves: rare, look within the run
            match = np.flatnonzero(self.low[left[i] : right[i]] == hashes[i, 1])
            if len(match):
                index[i] = left[i] + match[0]
        return index

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """Boolean mask: which of the keys (uint64 [n, 2]) are in the set."""
        found = np.zeros(len(hashes), bool)
        if not len(self.high) or not len(hashes):
            return found
        left = np.searchsorted(self.high, hashes[:, 0], "left")
        right = np.searchsorted(self.high, hashes[:, 0], "right")
        single = right - left == 1  # the usual case: the high half matches one entry, compare the low half
        found[single] = self.low[left[single]] == hashes[single, 1]
        for i in np.flatnonzero(right - left > 1):  # equal high halves: rare, check each
            found[i] = bool((self.low[left[i] : right[i]] == hashes[i, 1]).any())
        return found
