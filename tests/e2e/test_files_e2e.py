"""End to end: the OpenAI Files API (``/v1/files``) through the official SDK.

Uploads stream into the gateway's database in chunks; the caps are checked as the upload
arrives; files belong to the key that uploaded them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.servers import ALICE_KEY, BOB_KEY, Server, gateway_config, running, start_gateway
from tests.openai_spec import check


def _jsonl(n: int) -> bytes:
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gemma-2b", "messages": [{"role": "user", "content": f"hi {i} ü"}]},
        }
        for i in range(n)
    ]
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()


@pytest.fixture(scope="module")
def small(emulator: Server, tmp_path_factory: pytest.TempPathFactory) -> Server:
    """A gateway with small caps and tiny chunks (so a file spans many chunks)."""
    tmp = tmp_path_factory.mktemp("files")
    config = gateway_config(
        emulator.url,
        ledger={"url": f"sqlite:///{tmp / 'ledger.db'}"},
        files={"max_bytes": 200_000, "max_lines": 500, "chunk_bytes": 1024},
    )
    with running(start_gateway(tmp, config)) as server:
        yield server  # type: ignore[misc]


def test_upload_list_retrieve_download_and_delete(small: Server) -> None:
    api = openai.OpenAI(base_url=small.url + "/v1", api_key=ALICE_KEY, max_retries=0)
    content = _jsonl(300)
    made = api.files.create(file=("requests.jsonl", content), purpose="batch")
    check("OpenAIFile", made.model_dump(exclude_unset=True))
    assert (made.filename, made.purpose, made.bytes) == ("requests.jsonl", "batch", len(content))
    assert api.files.content(made.id).content == content  # every chunk, in order
    assert api.files.retrieve(made.id).id == made.id
    listed = api.files.list(purpose="batch")
    check("ListFilesResponse", listed.model_dump(exclude_unset=True))
    assert made.id in [f.id for f in listed.data]
    deleted = api.files.delete(made.id)
    check("DeleteFileResponse", deleted.model_dump(exclude_unset=True))
    with pytest.raises(openai.NotFoundError):
        api.files.retrieve(made.id)


def test_a_file_is_its_keys_only(small: Server) -> None:
    alice = openai.OpenAI(base_url=small.url + "/v1", api_key=ALICE_KEY, max_retries=0)
    bob = openai.OpenAI(base_url=small.url + "/v1", api_key=BOB_KEY, max_retries=0)
    made = alice.files.create(file=("a.jsonl", _jsonl(2)), purpose="batch")
    for attempt in (
        lambda: bob.files.retrieve(made.id),
        lambda: bob.files.content(made.id),
        lambda: bob.files.delete(made.id),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert made.id not in [f.id for f in bob.files.list().data]
    assert alice.files.retrieve(made.id).id == made.id


def test_list_pages_with_after_and_limit(small: Server) -> None:
    api = openai.OpenAI(base_url=small.url + "/v1", api_key=BOB_KEY, max_retries=0)
    ids = [api.files.create(file=(f"{i}.jsonl", _jsonl(1)), purpose="batch").id for i in range(3)]
    first = api.files.list(limit=2, order="asc")
    assert [f.id for f in first.data] == ids[:2] and first.has_more
    rest = api.files.list(limit=2, order="asc", after=ids[1])
    assert [f.id for f in rest.data] == ids[2:] and not rest.has_more
    assert [f.id for f in api.files.list()] == ids[::-1]  # the SDK follows the pages


@pytest.mark.parametrize(
    ("content", "status", "needle"),
    [
        (_jsonl(501), 413, "max_lines"),
        (b"x" * 250_000, 413, "max_bytes"),
        (b"", 400, "empty"),
        (b'{"a": "\xff"}\n', 400, "UTF-8"),
    ],
    ids=["too-many-lines", "too-large", "empty", "not-utf8"],
)
def test_caps_and_bad_uploads_are_refused(
    small: Server, content: bytes, status: int, needle: str
) -> None:
    response = httpx.post(
        small.url + "/v1/files",
        headers={"authorization": f"Bearer {ALICE_KEY}"},
        data={"purpose": "batch"},
        files={"file": ("x.jsonl", content)},
    )
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]["message"]
    listed = openai.OpenAI(base_url=small.url + "/v1", api_key=ALICE_KEY).files.list()
    assert all(f.filename != "x.jsonl" for f in listed.data)  # nothing half-stored is visible


def test_purpose_and_form_are_checked(small: Server) -> None:
    headers = {"authorization": f"Bearer {ALICE_KEY}"}
    wrong = httpx.post(
        small.url + "/v1/files", headers=headers, data={"purpose": "fine-tune"},
        files={"file": ("x.jsonl", b"{}\n")},
    )  # fmt: skip
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "purpose"
    not_form = httpx.post(small.url + "/v1/files", headers=headers, json={"purpose": "batch"})
    assert not_form.status_code == 415
    anonymous = httpx.post(small.url + "/v1/files", data={"purpose": "batch"})
    assert anonymous.status_code == 401


def test_files_in_a_directory(emulator: Server, tmp_path: Path) -> None:
    config = gateway_config(emulator.url, files={"directory": str(tmp_path / "files")})
    with running(start_gateway(tmp_path, config)) as server:
        api = openai.OpenAI(base_url=server.url + "/v1", api_key=ALICE_KEY, max_retries=0)
        content = _jsonl(20)
        made = api.files.create(file=("d.jsonl", content), purpose="batch")
        assert (tmp_path / "files" / f"{made.id}.jsonl").read_bytes() == content
        assert api.files.content(made.id).content == content
        api.files.delete(made.id)
        assert not (tmp_path / "files" / f"{made.id}.jsonl").exists()


def test_a_file_past_its_retention_is_gone(emulator: Server, tmp_path: Path) -> None:
    config = gateway_config(emulator.url, files={"retention_hours": 0.0005})  # 1.8 s
    with running(start_gateway(tmp_path, config)) as server:
        api = openai.OpenAI(base_url=server.url + "/v1", api_key=ALICE_KEY, max_retries=0)
        made = api.files.create(file=("r.jsonl", _jsonl(1)), purpose="batch")
        assert made.expires_at is not None and made.expires_at - made.created_at <= 2
        assert api.files.retrieve(made.id).id == made.id
        time.sleep(2.5)
        with pytest.raises(openai.NotFoundError):
            api.files.retrieve(made.id)
        assert made.id not in [f.id for f in api.files.list()]
