"""Media fetch throughput: HTTP(S) URLs against S3, the same files through the same `MediaFetcher`.

    .venv/bin/python bench/fetch.py --files 400 --kib 200

Both servers run on 127.0.0.1 in this process's machine: moto's S3 server and the test media server
(`tests/media_server.py`, Python's ThreadingHTTPServer). The fetcher reads every file with its thread pool
(`fetch.threads`, 16), as a preprocessing actor does; each backend is read three times in turn and the best
time counts. What is compared is the client side (signing, pooling, checks); both servers are Python, so the
absolute figures are far below real object stores and CDNs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--kib", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import logging
    import socket

    import s3fs
    from moto.server import ThreadedMotoServer

    from internvl_batch.config import FetchConfig, StorageConfig
    from internvl_batch.storage import MediaFetcher
    from tests.media_server import MediaServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    body = os.urandom(args.kib * 1024)
    names = [f"img-{i:05d}.jpg" for i in range(args.files)]
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
    fs.mkdir("bench")
    for name in names:
        fs.pipe(f"bench/{name}", body)
    web = MediaServer({f"/{name}": body for name in names})
    try:
        with web:
            fetcher = MediaFetcher(StorageConfig(endpoint_url=endpoint), FetchConfig(allow_private_networks=True))
            uris = {"s3": [f"s3://bench/{n}" for n in names], "http": [f"{web.url}/{n}" for n in names]}
            best = {name: float("inf") for name in uris}
            for name in uris:  # warm-up: pools, clients
                fetcher.fetch_many([(u, "image") for u in uris[name][:20]])
            for _ in range(args.rounds):
                for name, items in uris.items():
                    t0 = time.perf_counter()
                    results = fetcher.fetch_many([(u, "image") for u in items])
                    best[name] = min(best[name], time.perf_counter() - t0)
                    assert all(r == body for r in results), name
    finally:
        moto.stop()
    megabytes = args.files * args.kib / 1024
    result = {"files": args.files, "kib_each": args.kib, "threads": fetcher.fetch_config.threads}
    for name, seconds in best.items():
        result[name] = {
            "files_per_s": round(args.files / seconds, 1),
            "mib_per_s": round(megabytes / seconds, 1),
            "s": round(seconds, 2),
        }
    result["http_over_s3"] = round(best["s3"] / best["http"], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
