"""Resume decisions: which (id, task) keys already have a current result that this run may keep.

An output's result rows become `ResultKeys`: per key (its 128-bit hash, `keys.key_hashes`), the state of its
current row (the latest run's, as `read_results` picks it): the hash of the media version it was made from
(`source_version`), the hash of its `config_fingerprint`, and whether it is `ok`. Hashes are 64-bit BLAKE2b
(0 for none), so the object is numbers only: about 33 bytes per key, built once per run on a worker and mapped
by every scan and read task from Ray's object store.

A `DoneRule` (the run's settings) judges a request's keys (`ResultKeys.judge`):

- **found**: the key has a result (for the orphan count: results whose input is gone);
- **changed**: found, but made from another version of the media: to do again;
- **stale**: found, same version, but made with a config fingerprint the rule does not accept;
- **done**: found, same version, accepted fingerprint, and `ok` unless errors are retried.

What happens to stale keys is `output.on_config_change`'s choice (`fingerprint.done_rule`): `error` (the job
stops when any key is stale), `reprocess` (stale keys are done again) or `keep` (their results are kept). A
run's own fingerprints are accepted, and so are those an earlier `keep` run kept (its run record), except under
`reprocess`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from internvl_batch.keys import KeySet, complete_documents


def text_hashes(texts) -> np.ndarray:
    """uint64 per text: 64-bit BLAKE2b; 0 for None or "" (no version, no fingerprint)."""
    out = np.zeros(len(texts), np.uint64)
    for k, text in enumerate(texts):
        if text:
            digest = hashlib.blake2b(str(text).encode("utf-8", "surrogatepass"), digest_size=8).digest()
            out[k] = int.from_bytes(digest, "little") or 1
    return out


@dataclass(frozen=True)
class DoneRule:
    """How a run judges earlier results. `current`: task -> this run's fingerprint; `accepted`: hashes
    (`text_hashes`) of other fingerprints whose results are kept (0: results without one); `keep`: results of
    any fingerprint are kept (still reported as stale); `retry_errors`: an error row is not done."""

    current: dict[str, str] = field(default_factory=dict)
    accepted: frozenset[int] = frozenset()
    retry_errors: bool = False
    keep: bool = False

    @cached_property
    def _hashes(self) -> tuple[dict[str, int], np.ndarray]:
        """(task -> this run's fingerprint hash, the accepted hashes): once per worker, not per chunk."""
        current = dict(zip(self.current, text_hashes(list(self.current.values())).tolist()))
        return current, np.fromiter(sorted(self.accepted), np.uint64, len(self.accepted))

    def fingerprint_ok(self, tasks: list[str], configs: np.ndarray) -> np.ndarray:
        """Per key: whether its result's fingerprint hash is this run's for its task, or an accepted one."""
        current, accepted = self._hashes
        mine = np.fromiter((current.get(t, 0) for t in tasks), np.uint64, len(tasks))
        return ((configs == mine) & (mine != 0)) | np.isin(configs, accepted)


ANY_RESULT = DoneRule(keep=True)  # every result of the same media version counts (tests, tools)


@dataclass(frozen=True)
class Verdict:
    """Per key of a request: bool arrays (see the module docstring)."""

    done: np.ndarray
    found: np.ndarray
    changed: np.ndarray
    stale: np.ndarray
    stale_configs: frozenset[int]  # hashes of the fingerprints of the stale keys' results
    index: np.ndarray  # int64 per key: its result's index in the `ResultKeys` (-1: none)


@dataclass(frozen=True)
class ResultKeys:
    """The current result of each key: `keys` sorted (KeySet), and per key its version hash, fingerprint hash
    and ok flag, in the KeySet's order; `rule` is the run's."""

    keys: KeySet
    versions: np.ndarray  # uint64
    configs: np.ndarray  # uint64
    ok: np.ndarray  # bool
    rule: DoneRule

    def __len__(self) -> int:
        return len(self.keys)

    def judge(self, hashes: np.ndarray, versions: np.ndarray, tasks: list[str]) -> Verdict:
        """Verdicts of keys (uint64 [n, 2]) whose media has version hashes `versions` (uint64 [n])."""
        index = self.keys.find(hashes)
        found = index >= 0
        at = np.where(found, index, 0)
        if not len(self.keys):
            at = np.zeros(len(hashes), np.int64)
            versions_there = configs = np.zeros(len(hashes), np.uint64)
            ok = np.zeros(len(hashes), bool)
        else:
            versions_there, configs, ok = self.versions[at], self.configs[at], self.ok[at]
        same = found & (versions_there == versions)
        accepted = self.rule.fingerprint_ok(tasks, configs)
        stale = same & ~accepted
        done = same & (accepted | self.rule.keep) & (ok | (not self.rule.retry_errors))
        stale_configs = frozenset(int(c) for c in np.unique(configs[stale]))
        return Verdict(done, found, found & ~same, stale, stale_configs, index)

    def missing(self, *found: np.ndarray) -> np.ndarray:
        """Key hashes (uint64 [k, 2]) of the results whose index is in none of the `found` arrays: the orphans,
        given the indices the scan's units found (`Verdict.index`)."""
        seen = np.zeros(len(self.keys), bool)
        for indices in found:
            seen[indices] = True
        return np.stack([self.keys.high[~seen], self.keys.low[~seen]], axis=1)


def build_result_keys(plain: list[np.ndarray], pages: list[np.ndarray], rule: DoneRule) -> ResultKeys:
    """`ResultKeys` from rows of result files (`results.result_key_rows`): `plain` [n, 6] uint64 per row (key
    high, key low, version, fingerprint, ok, order) and `pages` [m, 10] for PDF page rows (the row's key,
    its document's key, its share, version, fingerprint, ok, order). `order` ranks rows by run: a key's
    current row is its highest; a document counts once all its pages are there (`keys.complete_documents`),
    with the state of its latest page and `ok` only if every page is."""
    rows = latest_rows(np.concatenate(plain) if plain else np.zeros((0, 6), np.uint64), key_columns=2)
    paged = latest_rows(np.concatenate(pages) if pages else np.zeros((0, 10), np.uint64), key_columns=2)
    if len(paged):  # a document's pages of its latest run only: one read again with fewer pages is complete
        newest = latest_rows(paged[:, 2:])  # per document, the row of its latest run
        at = KeySet.build([newest[:, 0:2]]).find(paged[:, 2:4])
        paged = paged[paged[:, 9] == newest[at, 7]]
    documents = complete_documents(paged[:, 0:2], paged[:, 2:4], paged[:, 4:6])
    if len(documents):
        # Per document (sorted by its key, as KeySet sorts): its latest page row's state, and ok only if every
        # page is. Columns of `doc_rows`: document key (2), share (2), version, fingerprint, ok, order.
        doc_rows = latest_rows(paged[:, 2:], key_columns=2)
        doc_keys = KeySet.build([doc_rows[:, 0:2]])
        all_ok = np.ones(len(doc_keys), bool)
        np.logical_and.at(all_ok, doc_keys.find(paged[:, 2:4]), paged[:, 8] == 1)
        index = doc_keys.find(documents)
        state = doc_rows[index]
        docs = np.concatenate([documents, state[:, 4:6], all_ok[index, None].astype(np.uint64), state[:, 7:8]], axis=1)
        rows = latest_rows(np.concatenate([rows, docs]), key_columns=2)
    keys = KeySet.build([rows[:, 0:2]])  # sorted as `rows` already is (by key), one entry per key
    return ResultKeys(keys, rows[:, 2].copy(), rows[:, 3].copy(), rows[:, 4] == 1, rule)


def latest_rows(rows: np.ndarray, key_columns: int = 2) -> np.ndarray:
    """One row per key (the first `key_columns` columns), the one of highest order (the last column), sorted
    by key."""
    if not len(rows):
        return rows
    order = np.lexsort((rows[:, -1], rows[:, 1], rows[:, 0]))
    rows = rows[order]
    last = np.ones(len(rows), bool)
    last[:-1] = (rows[1:, :key_columns] != rows[:-1, :key_columns]).any(axis=1)
    return rows[last]
