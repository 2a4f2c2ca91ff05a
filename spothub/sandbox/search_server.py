"""The sandbox's stand-in for the search container on the search instance: a real BM25 search (rank-bm25) over the
documents on the attached volume, serving the search service's contract (lambdas/spothub_core/models/search_api.py):

    GET  {health_path}  -> 200 {"status": "ok", "documents": N}      (503 {"status": "unhealthy"} when told to fail)
    POST /search {"query", "top_k"} -> 200 {"results": [{"id", "score", "title", "snippet"}], "total_documents",
                                            "timings": {"search_ms"}};  400 on a bad body
    POST /_control/health {"healthy": false}  (the sandbox only: the health path answers 503 until told true again)

Documents: `documents.jsonl` (one {"id", "title", "text"} per line) in the data directory, and every `*.md` / `*.txt`
file under it (id: the path without its suffix, title: the first line). The data directory is SEARCH_DATA_DIR (or
--data); the port SEARCH_PORT (or --port). A missing data directory is a volume that is not mounted: the service
exits 2, as a container whose mount is missing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rank_bm25 import BM25Okapi

MAX_TOP_K = 100
MAX_QUERY_CHARS = 4000
SNIPPET_CHARS = 200
DEFAULT_PORT = 8000
_TOKEN = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
# Words too common to rank by: BM25's IDF makes them nearly weightless in a large collection, not in 60 documents.
STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        "a an and are as at be by can for from has have how i in is it its of on or that the their them there these "
        "this to was what when which who why will with you your does do",
    )
)


def tokens(text: str) -> list[str]:
    """Lower-cased words and identifiers (g5.xlarge, vol-0abc, p4d), stopwords dropped."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in STOPWORDS]


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str


def load_documents(data_dir: Path) -> list[Document]:
    documents: list[Document] = []
    jsonl = data_dir / "documents.jsonl"
    if jsonl.is_file():
        for number, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            documents.append(
                Document(str(record.get("id") or number), str(record.get("title", "")), str(record.get("text", "")))
            )
    for path in sorted(p for p in data_dir.rglob("*") if p.suffix in (".md", ".txt") and p.is_file()):
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        title = lines[0].lstrip("# ").strip() if lines else path.stem
        documents.append(Document(str(path.relative_to(data_dir).with_suffix("")), title, "\n".join(lines[1:]).strip()))
    return documents


class LuceneBM25(BM25Okapi):
    """BM25Okapi with Lucene's IDF, log(1 + (N - n + 0.5) / (n + 0.5)): never negative, so a term in most
    documents of a small collection (or in one of two) still ranks, where Okapi's IDF is floored to nothing."""

    def _calc_idf(self, nd: dict[str, int]) -> None:
        for word, freq in nd.items():
            self.idf[word] = math.log(1 + (self.corpus_size - freq + 0.5) / (freq + 0.5))
        self.average_idf = sum(self.idf.values()) / len(self.idf) if self.idf else 0.0


class SearchIndex:
    def __init__(self, documents: list[Document]) -> None:
        self.documents = documents
        # The title counts twice: a document titled with the query's words is about them.
        corpus = [tokens(f"{d.title} {d.title} {d.text}") for d in documents]
        self._bm25 = LuceneBM25(corpus) if any(corpus) else None

    def search(self, query: str, top_k: int) -> list[dict[str, Any]]:
        terms = tokens(query)
        if self._bm25 is None or not terms:
            return []
        scores = self._bm25.get_scores(terms)
        ranked = sorted(
            (i for i, score in enumerate(scores) if score > 0 and math.isfinite(score)), key=lambda i: -scores[i]
        )
        return [
            {
                "id": self.documents[i].id,
                "score": round(float(scores[i]), 4),
                "title": self.documents[i].title,
                "snippet": snippet(self.documents[i].text, terms),
            }
            for i in ranked[:top_k]
        ]


def snippet(text: str, terms: list[str]) -> str:
    """The sentence with the most query terms (the first on a tie), cut to SNIPPET_CHARS."""
    sentences = [s for s in _SENTENCE.split(text.strip()) if s] or [""]
    wanted = set(terms)
    best = max(sentences, key=lambda s: (len(wanted & set(tokens(s))), -sentences.index(s)))
    return best if len(best) <= SNIPPET_CHARS else best[: SNIPPET_CHARS - 1].rstrip() + "…"


class BadRequest(ValueError):
    pass


def parse_search(body: bytes) -> tuple[str, int]:
    try:
        request = json.loads(body or b"null")
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BadRequest('the body must be a JSON object {"query", "top_k"}')
    query, top_k = request.get("query"), request.get("top_k", 10)
    if not isinstance(query, str) or not query.strip():
        raise BadRequest("query must be a non-empty string")
    if len(query) > MAX_QUERY_CHARS:
        raise BadRequest(f"query is longer than {MAX_QUERY_CHARS} characters")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise BadRequest(f"top_k must be an integer from 1 to {MAX_TOP_K}")
    return query, top_k


class SearchService:
    def __init__(self, index: SearchIndex, health_path: str = "/health") -> None:
        self.index = index
        self.health_path = health_path
        self.healthy = True
        self._lock = threading.Lock()

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        path = path.split("?", 1)[0]
        if method == "GET" and path == self.health_path:
            if not self.healthy:
                return 503, {"status": "unhealthy"}
            return 200, {"status": "ok", "documents": len(self.index.documents)}
        if method == "POST" and path == "/search":
            return self._search(body)
        if method == "POST" and path == "/_control/health":
            return self._set_health(body)
        return 404, {"error": f"no route {method} {path}"}

    def _search(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            query, top_k = parse_search(body)
        except BadRequest as exc:
            return 400, {"error": str(exc)}
        started = time.perf_counter()
        results = self.index.search(query, top_k)
        search_ms = round((time.perf_counter() - started) * 1000, 3)
        return 200, {
            "results": results,
            "total_documents": len(self.index.documents),
            "timings": {"search_ms": search_ms},
        }

    def _set_health(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            wanted = json.loads(body or b"{}").get("healthy")
        except (ValueError, AttributeError):
            wanted = None
        if not isinstance(wanted, bool):
            return 400, {"error": 'the body must be {"healthy": true|false}'}
        with self._lock:
            self.healthy = wanted
        return 200, {"healthy": wanted}


def make_server(service: SearchService, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: object) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, answer = service.handle(self.command, self.path, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("SEARCH_PORT") or DEFAULT_PORT))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--data", default=os.environ.get("SEARCH_DATA_DIR", ""))
    parser.add_argument("--health-path", default="/health")
    options = parser.parse_args(argv)
    if not options.data:
        print("search: no data directory (SEARCH_DATA_DIR or --data)", file=sys.stderr)
        return 2
    directory = Path(options.data)
    if not directory.is_dir():
        print(f"search: data directory {options.data} does not exist: is the volume mounted?", file=sys.stderr)
        return 2
    index = SearchIndex(load_documents(directory))
    server = make_server(SearchService(index, options.health_path), options.host, options.port)
    print(
        json.dumps({"event": "serving", "port": options.port, "documents": len(index.documents), "data": options.data}),
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
