"""Status URLs joined without httpx's per-character parse are the URLs httpx would build."""

from __future__ import annotations

import httpx
import pytest

from gateway.upstream.urls import join


@pytest.mark.parametrize(
    "base", ["https://upstream.test/v2", "https://upstream.test/v2/", "http://127.0.0.1:8080"]
)
def test_plain_ids_are_joined_directly_to_the_same_url(base: str) -> None:
    ids = ",".join(f"{i:032x}" for i in range(240)) + ",a-b_c.d~e"
    joined = join(httpx.URL(base), "/jobs/" + ids)
    assert isinstance(joined, httpx.URL)
    assert joined == httpx.URL(base.rstrip("/") + "/jobs/" + ids)
    assert httpx.AsyncClient(base_url=base).build_request("GET", joined).url == joined


@pytest.mark.parametrize(
    "base", ["https://upstream.test/v2", "https://upstream.test/v2/", "http://127.0.0.1:8080"]
)
@pytest.mark.parametrize("path", ["/jobs/a b,c%2F", "/jobs/a:b", "/jobs", "/jobs/ü"])
def test_paths_that_need_escaping_are_joined_as_httpx_merges_them(base: str, path: str) -> None:
    joined = join(httpx.URL(base), path)
    assert joined == httpx.AsyncClient(base_url=base).build_request("GET", path).url
