"""Credentials in URIs are written and logged REDACTED (issue 26): presigned query strings and userinfo, in the
output's media and error columns, the run's summary files, log records and the command's error line."""

import json
import logging

import pyarrow as pa
import pytest

from internvl_batch.config import StorageConfig
from internvl_batch.config_loader import load_config
from internvl_batch.output_dir import run_record_path, summary_path, write_summary
from internvl_batch.redact import RedactingFilter, redact_column, redact_text
from internvl_batch.stages.output import to_output_table

S3_PRESIGNED = (
    "https://b.s3.amazonaws.com/k/a.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20261203"
    "&X-Amz-Date=20261203T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Security-Token=FQoGZXIv"
    "&X-Amz-Signature=deadbeef"
)
SECRETS = ("AKIAEXAMPLE", "FQoGZXIv", "deadbeef", "gcssig", "azsig", "hunter2", "cfsig", "tok123")

CASES = [
    (
        S3_PRESIGNED,
        "https://b.s3.amazonaws.com/k/a.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=REDACTED"
        "&X-Amz-Date=20261203T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=REDACTED&X-Amz-Security-Token=REDACTED"
        "&X-Amz-Signature=REDACTED",
    ),
    (
        "https://storage.googleapis.com/b/o.png?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature=gcssig",
        "https://storage.googleapis.com/b/o.png?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature=REDACTED",
    ),
    (
        "https://acct.blob.core.windows.net/c/p.jpg?sv=2022-11-02&se=2026-12-04&sp=r&sig=azsig",
        "https://acct.blob.core.windows.net/c/p.jpg?sv=2022-11-02&se=2026-12-04&sp=r&sig=REDACTED",
    ),
    (
        "https://d.cloudfront.net/x.jpg?Expires=1&Signature=cfsig#top",
        "https://d.cloudfront.net/x.jpg?Expires=1&Signature=REDACTED#top",
    ),
    ("http://alice:hunter2@media.example/p.jpg?token=tok123", "http://REDACTED@media.example/p.jpg?token=REDACTED"),
    ("http://alice@media.example/p.jpg", "http://REDACTED@media.example/p.jpg"),
    ("s3://bucket/photos/me@2x.png", "s3://bucket/photos/me@2x.png"),  # an @ in a key is not userinfo
    ("/data/a=b/c.jpg?x=1", "/data/a=b/c.jpg?x=1"),  # nothing secret
    # urllib3-style message quoting a path and query without the scheme
    (
        "HTTPConnectionPool(host='h', port=80): Max retries exceeded with url: /a.jpg?sig=azsig (Caused by ...)",
        "HTTPConnectionPool(host='h', port=80): Max retries exceeded with url: /a.jpg?sig=REDACTED (Caused by ...)",
    ),
]


@pytest.mark.parametrize("text, expected", CASES)
def test_redact_text(text, expected):
    assert redact_text(text) == expected


def test_arrow_and_python_redact_alike():
    texts = [text for text, _ in CASES] + [None, "", "plain"]
    assert redact_column(pa.array(texts)).to_pylist() == [redact_text(t) for t in texts]
    lists = pa.array([[CASES[0][0], CASES[4][0]], None, [], ["x"]]).slice(0, 4)
    assert redact_column(lists).to_pylist() == [[CASES[0][1], CASES[4][1]], None, [], ["x"]]
    assert redact_column(pa.chunked_array([lists.slice(1), lists.slice(0, 1)])).to_pylist() == [
        None,
        [],
        ["x"],
        [CASES[0][1], CASES[4][1]],
    ]


def test_output_media_and_error_columns_are_written_redacted():
    rows = pa.table(
        {
            "id": ["a", "b"],
            "media": [[S3_PRESIGNED], ["http://alice:hunter2@media.example/p.jpg"]],
            "error": [None, "fetch: FetchError: http://alice:hunter2@media.example/p.jpg: HTTP 404 not found"],
        }
    )
    out = to_output_table(rows, "tiny", [])
    assert out.column("media").to_pylist() == [[CASES[0][1]], ["http://REDACTED@media.example/p.jpg"]]
    assert (
        out.column("error").to_pylist()[1]
        == "fetch: FetchError: http://REDACTED@media.example/p.jpg: HTTP 404 not found"
    )
    assert out.column("error_type").to_pylist() == [None, "FetchError"]  # read before redaction, unchanged


def test_summary_files_hold_no_credentials(tmp_path):
    config = load_config(
        None,
        base={
            "input": {"manifests": [S3_PRESIGNED]},
            "output": {"path": str(tmp_path / "out")},
            "model": {"path": "tiny"},
            "storage": {"endpoint_url": "https://minio:hunter2@minio.internal:9000"},
        },
    )
    (tmp_path / "out").mkdir()
    summary = {"run_id": "20261203T000000000000Z-abcdef", "config": config.model_dump(mode="json"), "n": 1}
    write_summary(str(tmp_path / "out"), StorageConfig(), summary)
    for path in (summary_path(tmp_path / "out"), run_record_path(tmp_path / "out", summary["run_id"])):
        text = open(path, encoding="utf-8").read()
        assert not any(secret in text for secret in SECRETS), text
        written = json.loads(text)
        assert written["config"]["storage"]["endpoint_url"] == "https://REDACTED@minio.internal:9000"
        assert written["n"] == 1


def test_log_records_and_tracebacks_are_redacted(caplog):
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("internvl_batch.test_redact")
    records = []
    handler.emit = lambda record: records.append(handler.format(record))
    logger.addHandler(handler)
    try:
        logger.warning("fetching %s", S3_PRESIGNED)
        try:
            raise OSError(f"cannot read {CASES[4][0]}")
        except OSError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert records[0] == f"fetching {CASES[0][1]}"
    assert "http://REDACTED@media.example/p.jpg?token=REDACTED" in records[1]
    assert not any(secret in line for line in records for secret in SECRETS)


def test_the_commands_error_line_is_redacted(tmp_path, capsys):
    from internvl_batch.cli import caption_main
    from internvl_batch.job import main

    code = caption_main(
        [
            "--config",
            str(tmp_path / "absent.yaml"),
            "--set",
            "storage.endpoint_url=https://minio:hunter2@minio.internal",
        ]
    )
    assert code == 2 and "hunter2" not in capsys.readouterr().err
    config = load_config(
        None,
        base={
            "input": {"manifests": f"{tmp_path}/m.jsonl?sig=azsig"},
            "output": {"path": str(tmp_path / "out")},
            "model": {"path": "tiny"},
        },
    )
    assert main(config=config) == 2
    err = capsys.readouterr().err
    assert "sig=REDACTED" in err and "azsig" not in err, err


def test_a_value_ends_where_a_message_goes_on():
    # The fetcher writes `<uri>: <reason>`: the colon after a secret value is the message's, not the value's.
    text = "fetch: FetchError: http://h/a.jpg?X-Amz-Signature=f00d: HTTP 404 not found"
    assert redact_text(text) == "fetch: FetchError: http://h/a.jpg?X-Amz-Signature=REDACTED: HTTP 404 not found"
    assert redact_column(pa.array([text])).to_pylist() == [redact_text(text)]
    assert redact_text("http://h/a?token=ab:cd&x=1") == "http://h/a?token=REDACTED&x=1"  # a colon inside a value
