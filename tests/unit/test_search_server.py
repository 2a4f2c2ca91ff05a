"""The sandbox's stand-in search service (spothub/sandbox/search_server.py): a real BM25 ranking over the volume's
documents, the search service's contract (lambdas/spothub_core/models/search_api.py), the health control; and the
mount helper the agent runs on a simulated instance (spothub/sandbox/search_volume.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from spothub.sandbox import search_server, search_volume
from spothub.sandbox.ports import free_port
from spothub.sandbox.search_server import SearchIndex, SearchService, load_documents, make_server, tokens
from spothub_core.models.search_api import ServiceAnswer

CORPUS = search_volume.CORPUS


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("volume")
    search_volume.fill(directory)
    return directory


@pytest.fixture(scope="module")
def index(corpus_dir: Path) -> SearchIndex:
    return SearchIndex(load_documents(corpus_dir))


@pytest.fixture
def served(index: SearchIndex) -> Iterator[tuple[str, SearchService]]:
    service = SearchService(index)
    server = make_server(service, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", service
    server.shutdown()
    server.server_close()


# --- the corpus ---------------------------------------------------------------------------------------


def test_the_corpus_is_40_to_100_short_documents_with_unique_ids() -> None:
    records = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert 40 <= len(records) <= 100
    assert len({r["id"] for r in records}) == len(records)
    for record in records:
        assert set(record) == {"id", "title", "text"}
        assert record["title"] and 50 <= len(record["text"]) <= 800


# --- ranking ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("attach a volume that is already attached to another instance", "ebs-volume-in-use"),
        ("two minute spot interruption notice in instance metadata", "spot-interruption-notice"),
        ("BM25 term frequency saturation and length normalisation", "bm25-ranking"),
        ("volume in another availability zone ZoneMismatch", "ebs-zone-mismatch"),
        ("g5.xlarge A10G", "gpu-g5-family"),
        ("what does an idle search service cost", "cost-search-idle"),
    ],
)
def test_a_query_about_a_known_document_ranks_it_first(index: SearchIndex, query: str, expected: str) -> None:
    results = index.search(query, 5)
    assert results[0]["id"] == expected, [r["id"] for r in results]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]


def test_top_k_bounds_the_results_and_unrelated_words_find_nothing(index: SearchIndex) -> None:
    assert len(index.search("spot capacity instance", 3)) == 3
    assert index.search("zebra xylophone", 10) == []
    assert index.search("the of and", 10) == []  # stopwords only: no term to rank by


def test_the_snippet_is_the_sentence_that_matches_the_query(index: SearchIndex) -> None:
    hit = index.search("snapshot restore another zone", 1)[0]
    assert hit["id"] == "ebs-zone-mismatch"
    assert "snapshot" in hit["snippet"] and len(hit["snippet"]) <= search_server.SNIPPET_CHARS


def test_tokens_keep_instance_types_and_volume_ids_whole() -> None:
    assert tokens("Launch a g5.xlarge with vol-0dec0de5eadc0ffee, then the P4d.") == [
        "launch",
        "g5.xlarge",
        "vol-0dec0de5eadc0ffee",
        "then",
        "p4d",
    ]


def test_markdown_and_text_files_are_documents_too(tmp_path: Path) -> None:
    (tmp_path / "guides").mkdir()
    (tmp_path / "guides" / "mounting.md").write_text("# Mounting the index\nMount the volume by its by-id link.\n")
    (tmp_path / "notes.txt").write_text("Idle shutdown\nTerminate after the idle timeout.\n")
    documents = {d.id: d for d in load_documents(tmp_path)}
    assert documents["guides/mounting"].title == "Mounting the index"
    assert documents["notes"].text == "Terminate after the idle timeout."
    assert SearchIndex(list(documents.values())).search("mount by-id link", 1)[0]["id"] == "guides/mounting"


# --- the service's contract, over HTTP ----------------------------------------------------------------------


def test_search_answers_the_service_contract(served: tuple[str, SearchService]) -> None:
    url, _ = served
    answer = requests.post(f"{url}/search", json={"query": "spot placement score", "top_k": 2}, timeout=5)
    assert answer.status_code == 200
    parsed = ServiceAnswer.model_validate(answer.json())
    assert parsed.results[0].id == "spot-placement-score"
    assert len(parsed.results) == 2
    assert parsed.total_documents == len(CORPUS.read_text().splitlines())
    assert parsed.timings["search_ms"] >= 0


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1]",
        b'{"top_k": 3}',
        b'{"query": ""}',
        b'{"query": "x", "top_k": 0}',
        b'{"query": "x", "top_k": true}',
    ],
)
def test_a_bad_body_is_a_400(served: tuple[str, SearchService], body: bytes) -> None:
    url, _ = served
    answer = requests.post(f"{url}/search", data=body, headers={"Content-Type": "application/json"}, timeout=5)
    assert answer.status_code == 400 and answer.json()["error"]


def test_health_answers_until_told_to_fail_then_503_until_told_to_pass(served: tuple[str, SearchService]) -> None:
    url, _ = served
    assert requests.get(f"{url}/health", timeout=5).json() == {"status": "ok", "documents": 61}
    assert requests.post(f"{url}/_control/health", json={"healthy": False}, timeout=5).json() == {"healthy": False}
    assert requests.get(f"{url}/health", timeout=5).status_code == 503
    # Queries are still answered: only the health check fails, as a service whose dependency is down.
    assert requests.post(f"{url}/search", json={"query": "gp3"}, timeout=5).status_code == 200
    assert requests.post(f"{url}/_control/health", json={"healthy": "no"}, timeout=5).status_code == 400
    requests.post(f"{url}/_control/health", json={"healthy": True}, timeout=5)
    assert requests.get(f"{url}/health", timeout=5).status_code == 200
    assert requests.get(f"{url}/nothing", timeout=5).status_code == 404


# --- the process, as the agent runs it ---------------------------------------------------------------


def test_the_service_reads_its_port_and_data_from_the_environment(corpus_dir: Path) -> None:
    port = free_port()
    environment = {**os.environ, "SEARCH_PORT": str(port), "SEARCH_DATA_DIR": str(corpus_dir)}
    process = subprocess.Popen([sys.executable, search_server.__file__], env=environment, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert answer.json()["documents"] == 61
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_missing_data_directory_is_an_unmounted_volume_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, search_server.__file__, "--port", "1", "--data", str(tmp_path / "absent")],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 2 and "is the volume mounted?" in done.stderr


# --- the mount helper ---------------------------------------------------------------------------------


def test_mount_links_the_device_target_and_unmount_removes_it(tmp_path: Path, corpus_dir: Path) -> None:
    device = tmp_path / "dev" / search_volume.device_name("vol-0dec0de5eadc0ffee")
    device.parent.mkdir()
    device.symlink_to(corpus_dir)
    mount_point = tmp_path / "root" / "mnt" / "search-index"
    assert device.name == "nvme-Amazon_Elastic_Block_Store_vol0dec0de5eadc0ffee"
    assert search_volume.main(["mount", str(device), str(mount_point)]) == 0
    assert (mount_point / "documents.jsonl").is_file()
    assert search_volume.main(["mount", str(device), str(mount_point)]) == search_volume.MOUNT_FAILURE  # busy
    # Bound at mount time: the device entry going (a detach) leaves the mount's view as it was.
    device.unlink()
    assert (mount_point / "documents.jsonl").is_file()
    assert search_volume.main(["unmount", str(mount_point)]) == 0
    assert not mount_point.exists()
    assert search_volume.main(["unmount", str(mount_point)]) == search_volume.MOUNT_FAILURE  # not mounted


def test_mounting_a_device_that_is_not_there_fails_as_mount_does(tmp_path: Path) -> None:
    assert search_volume.mount(str(tmp_path / "nvme-missing"), str(tmp_path / "mnt")) == search_volume.MOUNT_FAILURE
    assert not (tmp_path / "mnt").exists()


def test_fill_replaces_what_was_written_on_the_volume(tmp_path: Path) -> None:
    (tmp_path / "vol").mkdir()
    (tmp_path / "vol" / "scratch.txt").write_text("left by a test")
    assert search_volume.fill(tmp_path / "vol") == 61
    assert sorted(p.name for p in (tmp_path / "vol").iterdir()) == ["documents.jsonl"]
    shutil.rmtree(tmp_path / "vol")
