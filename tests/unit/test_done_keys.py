"""Resume state read back from real result files: each key's latest row, its media version and config
fingerprint hashed exactly (64-bit values survive the trip), judged per `DoneRule`."""

import numpy as np
import pyarrow as pa

from internvl_batch.config import StorageConfig
from internvl_batch.done_keys import DoneRule, build_result_keys, text_hashes
from internvl_batch.keys import key_hashes
from internvl_batch.output_dir import new_run_id
from internvl_batch.results import result_files, result_key_rows, write_result_file

STORAGE = StorageConfig()


def write(out, run_id, rows):
    names = ("id", "task", "status", "source_version", "config_fingerprint")
    table = pa.table({name: [row[k] for row in rows] for k, name in enumerate(names)})
    write_result_file(table.append_column("run_id", pa.array([run_id] * len(rows))), out, STORAGE, run_id)


def test_each_keys_latest_row_decides(tmp_path):
    out = str(tmp_path)
    first, second = sorted([new_run_id(), new_run_id()])
    write(out, first, [("a", "caption", "ok", "etag=1", "f1"), ("b", "caption", "error", "etag=1", "f1")])
    write(out, second, [("a", "caption", "ok", "etag=2", "f1")])
    plain, pages = result_key_rows(out, result_files(out, STORAGE), STORAGE)
    assert plain.dtype == np.uint64 and plain.shape == (3, 6)

    def judge(ids, versions, **rule):
        results = build_result_keys([plain], [pages], DoneRule(current={"caption": "f1"}, **rule))
        return results.judge(key_hashes(ids, ["caption"] * len(ids)), text_hashes(versions), ["caption"] * len(ids))

    verdict = judge(["a", "a", "b", "c"], ["etag=2", "etag=1", "etag=1", None])
    assert verdict.done.tolist() == [True, False, True, False]  # a's latest row is etag=2
    assert verdict.changed.tolist() == [False, True, False, False] and verdict.found.tolist() == [True] * 3 + [False]
    assert judge(["b"], ["etag=1"], retry_errors=True).done.tolist() == [False]
    other = build_result_keys([plain], [pages], DoneRule(current={"caption": "f2"}))
    stale = other.judge(key_hashes(["a"], ["caption"]), text_hashes(["etag=2"]), ["caption"])
    assert stale.stale.tolist() == [True] and stale.stale_configs == {int(text_hashes(["f1"])[0])}
    assert other.missing(np.array([0, 1])).shape == (0, 2) and len(other.missing()) == 2  # orphans


def test_a_document_read_again_with_fewer_pages_is_complete_with_its_new_pages(tmp_path):
    """Run 1 read a 3-page PDF; the PDF was replaced by a 2-page one, which run 2 read: the document is done
    (run 2's version), not missing a third page for ever."""
    from internvl_batch.keys import key_hashes

    out = str(tmp_path)
    first, second = sorted([new_run_id(), new_run_id()])
    for run, pages, version in ((first, 3, "v1"), (second, 2, "v2")):
        ids = [f"doc#p{p}" for p in range(1, pages + 1)]
        table = pa.table(
            {
                "id": ids,
                "task": ["ocr"] * pages,
                "status": ["ok"] * pages,
                "page": pa.array(range(1, pages + 1), pa.int32()),
                "num_pages": pa.array([pages] * pages, pa.int32()),
                "source_version": [version] * pages,
                "run_id": [run] * pages,
            }
        )
        write_result_file(table, out, STORAGE, run)
    plain, pages = result_key_rows(out, result_files(out, STORAGE), STORAGE)
    results = build_result_keys([plain], [pages], DoneRule(keep=True))
    verdict = results.judge(key_hashes(["doc"], ["ocr"]), text_hashes(["v2"]), ["ocr"])
    assert verdict.done.tolist() == [True] and len(results) == 1
