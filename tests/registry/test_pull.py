"""``pull`` (registry/pull.py + registry/download.py) against a real local HTTP server.

Resume, verification, errors, catalog choice; never the internet.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from llamahomed.core.errors import (AlreadyExists, DigestMismatch, DownloadInterrupted,
                               DownloadNotFound, InsufficientStorage, InvalidRequest,
                               ModelNotFound, NotGGUF)
from llamahomed.registry.catalog import Catalog
from llamahomed.registry.gguf_meta import read_gguf_info
from llamahomed.registry.pull import (PullProgress, PullSource, choose_by_ram, download,
                                      resolve_source, variant_size)
from llamahomed.registry.store import ModelRegistry
from tests.fixtures.file_server import LOCAL, Served

FILE = "tiny-llama-dl.gguf"


async def fetch(src: PullSource, store: Path, **kw: Any) -> Any:
    """``download`` under a policy that allows the loopback test server."""
    return await download(src, store, **{"policy": LOCAL, **kw})


def leftovers(store: Path) -> list[str]:
    return sorted(p.name for p in store.iterdir()) if store.exists() else []


def source(server: Any, served: Served, **kw: Any) -> PullSource:
    return PullSource(url=str(server.make_url(f"/{FILE}")), file=FILE,
                      **{"sha256": served.sha256, **kw})


async def test_full_download_is_verified_and_lands_in_the_store(file_server: Any,
                                                               tmp_path: Path) -> None:
    served, server = file_server
    store = tmp_path / "store"
    events: list[PullProgress] = []
    result = await fetch(source(server, served), store, progress=events.append)
    assert result.path == store / FILE and result.verified and result.resumed_from == 0
    assert result.sha256 == served.sha256
    assert hashlib.sha256(result.path.read_bytes()).hexdigest() == served.sha256
    assert leftovers(store) == [FILE]  # no .part, no .part.json
    done = [e.completed for e in events if e.status == "downloading"]
    assert done == sorted(done) and done[-1] == len(served.body)
    assert [e.status for e in events][-2:] == ["verifying", "success"]
    assert all(e.total == len(served.body) for e in events)
    entry = ModelRegistry(store, Catalog.load()).resolve("tiny-llama-dl")
    assert entry.info.block_count == 2
    assert "Range" not in served.requests[0]


async def test_interrupted_transfer_resumes_with_a_range_request(file_server: Any,
                                                                 tmp_path: Path) -> None:
    served, server = file_server
    served.drop_after = 300_000
    store = tmp_path / "store"
    with pytest.raises(DownloadInterrupted) as caught:
        await fetch(source(server, served), store, retries=0)
    assert caught.value.details["received"] == 300_000
    assert caught.value.code == "download_interrupted" and "run the same pull again" in str(caught.value)
    assert not (store / FILE).exists()
    assert (store / f"{FILE}.part").stat().st_size == 300_000
    assert served.body.startswith((store / f"{FILE}.part").read_bytes())

    result = await fetch(source(server, served), store, retries=0)
    assert result.resumed_from == 300_000 and result.verified
    assert served.requests[1]["Range"] == "bytes=300000-"
    assert served.requests[1]["If-Range"] == served.etag
    assert hashlib.sha256((store / FILE).read_bytes()).hexdigest() == served.sha256
    assert leftovers(store) == [FILE]


async def test_one_pull_retries_and_resumes_by_itself(file_server: Any, tmp_path: Path) -> None:
    served, server = file_server
    served.drop_after, served.drops = 100_000, 2
    result = await fetch(source(server, served), tmp_path, retries=2, backoff=0)
    assert result.verified
    assert [r.get("Range") for r in served.requests] == [None, "bytes=100000-", "bytes=200000-"]


async def test_server_that_ignores_range_restarts_from_zero(file_server: Any,
                                                            tmp_path: Path) -> None:
    served, server = file_server
    served.drop_after = 250_000
    with pytest.raises(DownloadInterrupted):
        await fetch(source(server, served), tmp_path, retries=0)
    served.ignore_range = True
    result = await fetch(source(server, served), tmp_path, retries=0)
    assert served.requests[1]["Range"] == "bytes=250000-"  # asked, got 200 with everything
    assert result.resumed_from == 0 and result.verified
    assert (tmp_path / FILE).read_bytes() == served.body


async def test_changed_file_on_the_server_is_not_spliced_onto_the_partial(
        file_server: Any, tmp_path: Path, tiny_model_file: Path) -> None:
    served, server = file_server
    served.drop_after = 200_000
    with pytest.raises(DownloadInterrupted):
        await fetch(source(server, served), tmp_path, retries=0)
    other = bytearray(served.body)
    other[-1000:] = bytes(1000)  # same header, different tail: a new upload
    served.body, served.etag = bytes(other), '"v2"'
    result = await fetch(source(server, served), tmp_path, retries=0)
    assert served.requests[1]["If-Range"] == '"v1"'
    assert result.resumed_from == 0 and result.sha256 == served.sha256


async def test_wrong_digest_installs_nothing_and_removes_the_partial(file_server: Any,
                                                                     tmp_path: Path) -> None:
    served, server = file_server
    with pytest.raises(DigestMismatch) as caught:
        await fetch(source(server, served, sha256="0" * 64), tmp_path)
    assert caught.value.details == {"file": FILE, "sha256": served.sha256, "expected": "0" * 64}
    assert "deleted" in caught.value.message
    assert leftovers(tmp_path) == []


async def test_404_is_a_clear_error(file_server: Any, tmp_path: Path) -> None:
    served, server = file_server
    served.status = 404
    with pytest.raises(DownloadNotFound) as caught:
        await fetch(source(server, served), tmp_path)
    assert caught.value.status == 404 and "HTTP 404" in caught.value.message
    assert leftovers(tmp_path) == []


async def test_other_http_errors_are_download_failures(file_server: Any, tmp_path: Path) -> None:
    served, server = file_server
    served.status = 503
    with pytest.raises(Exception) as caught:
        await fetch(source(server, served), tmp_path, retries=0)
    assert getattr(caught.value, "code", None) == "download_failed"
    assert "HTTP 503" in str(caught.value)


async def test_unreachable_host_is_a_download_failure(tmp_path: Path) -> None:
    from tests.fixtures.daemon import free_port

    port = free_port()  # a port nobody listens on
    with pytest.raises(Exception) as caught:
        await fetch(PullSource(f"http://127.0.0.1:{port}/m.gguf", "m.gguf"), tmp_path,
                       retries=0)
    assert getattr(caught.value, "code", None) == "download_failed"
    assert "no usable HTTP answer" in str(caught.value)
    assert leftovers(tmp_path) == []


async def test_not_enough_space_is_refused_before_writing(file_server: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    served, server = file_server
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: real(path)._replace(free=len(served.body) - 1))
    with pytest.raises(InsufficientStorage) as caught:
        await fetch(source(server, served), tmp_path)
    assert caught.value.details["needed"] == len(served.body)
    assert caught.value.status == 507
    assert leftovers(tmp_path) == []
    # with the size known up front (catalog), not even a request is made
    served.requests.clear()
    with pytest.raises(InsufficientStorage):
        await fetch(source(server, served, size=len(served.body)), tmp_path)
    assert served.requests == []


async def test_non_gguf_content_is_refused_at_the_first_bytes(file_server: Any,
                                                              tmp_path: Path) -> None:
    served, server = file_server
    served.body = b"<!doctype html><html>login required</html>" * 100
    with pytest.raises(NotGGUF) as caught:
        await fetch(source(server, served, sha256=""), tmp_path)
    assert "<!do" not in caught.value.message and "GGUF magic" in caught.value.message
    assert leftovers(tmp_path) == []


async def test_catalog_size_mismatch_is_caught_before_downloading(file_server: Any,
                                                                  tmp_path: Path) -> None:
    served, server = file_server
    with pytest.raises(Exception) as caught:
        await fetch(source(server, served, size=len(served.body) + 1), tmp_path)
    assert getattr(caught.value, "code", None) == "download_failed"
    assert "the catalog says" in str(caught.value)
    assert leftovers(tmp_path) == []


async def test_existing_file_is_not_downloaded_again(file_server: Any, tmp_path: Path) -> None:
    served, server = file_server
    (tmp_path / FILE).write_bytes(b"mine")
    result = await fetch(source(server, served), tmp_path)
    assert result.already_present and served.requests == []
    assert (tmp_path / FILE).read_bytes() == b"mine"


async def test_a_second_pull_of_the_same_file_at_once_is_refused(file_server: Any,
                                                                 tmp_path: Path) -> None:
    served, server = file_server
    with open(tmp_path / f"{FILE}.part", "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(AlreadyExists, match="another pull"):
            await fetch(source(server, served), tmp_path)
        assert (tmp_path / f"{FILE}.part").exists()  # the other pull's file is left alone
    assert served.requests == []


# --- catalog ---------------------------------------------------------------------------------


def write_catalog(path: Path, url: str, sha256: str, size: int) -> Path:
    path.write_text(f'''
schema = 1
[[models]]
id = "tiny-test"
name = "Tiny Test"
parameters = "1M"
aliases = ["tiny:test"]
[[models.variants]]
quantization = "F32"
file = "tiny-test-f32.gguf"
size = {size}
sha256 = "{sha256}"
url = "{url}"
[[models.variants]]
quantization = "Q8_0"
file = "tiny-test-q8_0.gguf"
size = 600000
sha256 = "{"1" * 64}"
url = "{url}"
[[models.variants]]
quantization = "Q2_K"
file = "tiny-test-q2_k.gguf"
sha256 = ""
url = "{url}"
''')
    return path


async def test_catalog_id_pull_downloads_the_chosen_variant(file_server: Any,
                                                            tmp_path: Path) -> None:
    served, server = file_server
    catalog = Catalog.load(write_catalog(tmp_path / "catalog.toml", str(server.make_url("/f")),
                                         served.sha256, len(served.body)))
    seen: list[list[str]] = []

    def chooser(model: Any, variants: Any) -> Any:
        seen.append([v.quantization for v in variants])
        return variants[0]

    src = resolve_source("tiny:test", catalog, chooser=chooser)
    assert seen == [["F32", "Q8_0", "Q2_K"]] and src.file == "tiny-test-f32.gguf"
    result = await fetch(src, tmp_path / "store")
    assert result.verified
    entry = ModelRegistry(tmp_path / "store", catalog).resolve("tiny-test")
    assert entry.catalog is not None and entry.catalog.name == "Tiny Test"
    assert entry.quantization == "F32"


def test_catalog_variant_override_and_suffix(tmp_path: Path) -> None:
    catalog = Catalog.load(write_catalog(tmp_path / "c.toml", "http://127.0.0.1:9/x", "a" * 64, 10))
    assert resolve_source("tiny-test", catalog, variant="q8_0").file == "tiny-test-q8_0.gguf"
    assert resolve_source("tiny-test:Q2_K", catalog).file == "tiny-test-q2_k.gguf"
    with pytest.raises(InvalidRequest, match="no variant 'Q5_K_M'"):
        resolve_source("tiny-test", catalog, variant="Q5_K_M")
    with pytest.raises(ModelNotFound, match="neither a URL nor a model"):
        resolve_source("no-such-model", catalog)
    with pytest.raises(InvalidRequest, match="64 hex"):
        resolve_source("tiny-test", catalog, sha256="abc")
    with pytest.raises(InvalidRequest, match="only http"):
        resolve_source("ftp://example.invalid/x.gguf", catalog)


def test_url_file_names() -> None:
    catalog = Catalog([])
    assert resolve_source("http://h/a/b/model-Q4_0.gguf?x=1", catalog).file == "model-Q4_0.gguf"
    assert resolve_source("http://h/get/model", catalog).file == "model.gguf"
    assert resolve_source("http://h/x", catalog, file_name="mine.gguf").file == "mine.gguf"
    with pytest.raises(InvalidRequest, match="--name"):
        resolve_source("http://h/", catalog)
    with pytest.raises(InvalidRequest, match="--name"):
        resolve_source("http://h/..%2F..%2Fetc%2Fpasswd", catalog)
    with pytest.raises(InvalidRequest, match="--name"):
        resolve_source("http://h/My%20Model.gguf", catalog)


def test_size_estimate_without_siblings_uses_the_parameter_label() -> None:
    from llamahomed.registry.catalog import CatalogModel, CatalogVariant

    variant = CatalogVariant("Q8_0", "x-q8_0.gguf", "http://h/x")
    model = CatalogModel("x", "X", "x", None, "7B", None, None, (), None, (variant,))
    assert variant_size(model, variant) == int(7e9 * 8.5 / 8)
    odd = CatalogVariant("WEIRD", "x-w.gguf", "http://h/x")
    assert variant_size(model, odd) is None


def test_default_chooser_takes_the_best_quality_that_fits_in_ram(tmp_path: Path) -> None:
    catalog = Catalog.load(write_catalog(tmp_path / "c.toml", "http://h/x", "a" * 64, 4_000_000))
    model = catalog.lookup("tiny-test")
    assert model is not None
    variants = list(model.variants)
    assert choose_by_ram(model, variants, available=10**9).quantization == "F32"
    assert choose_by_ram(model, variants, available=1_000_000).quantization == "Q8_0"
    # Q2_K has no size: scaled from F32's, 4 MB x 3.2 / 32 bits = 400 kB
    assert choose_by_ram(model, variants, available=450_000).quantization == "Q2_K"
    with pytest.raises(InvalidRequest, match="--variant") as caught:
        choose_by_ram(model, variants, available=1000)
    assert caught.value.details["available_bytes"] == 1000


def test_default_chooser_on_the_real_catalog() -> None:
    """llama3.2-1b: Q8_0 and Q4_K_M have catalog sizes; F16 and Q5_K_M are scaled from Q4_K_M."""
    model = Catalog.load().lookup("llama3.2-1b")
    assert model is not None
    f16 = next(v for v in model.variants if v.quantization == "F16")
    assert variant_size(model, f16) == int(807694464 * 16 / 4.83)  # ~2.68 GB; the real file: 2.48
    assert choose_by_ram(model, model.variants, available=32 * 10**8).quantization == "F16"
    assert choose_by_ram(model, model.variants, available=15 * 10**8).quantization == "Q8_0"
    assert choose_by_ram(model, model.variants, available=9 * 10**8).quantization == "Q4_K_M"
    with pytest.raises(InvalidRequest):
        choose_by_ram(model, model.variants, available=5 * 10**8)


@pytest.mark.gemma
async def test_embedded_model_is_pulled_from_its_package_without_network(tmp_path: Path) -> None:
    from llamahomed.registry.pull import pull

    src = resolve_source("gemma3-270m", Catalog.load())
    assert src.variant is not None and src.variant.embedded
    result = await pull(src, tmp_path, retries=0)  # the URL is on the internet: not used
    assert result.path == tmp_path / "gemma-3-270m-q4_k_m.gguf" and result.verified
    assert result.path.stat().st_size == src.size


async def test_pulled_model_serves_a_generation(file_server: Any, tmp_path: Path,
                                                aiohttp_client: Any, make_settings: Any,
                                                models_dir: Path) -> None:
    """A pulled Q8_0 variant loads through the registry and the real engine."""
    from tests.fixtures.tiny_gguf import write_tiny_llama

    served, server = file_server
    q8 = write_tiny_llama(tmp_path / "q8.gguf", ftype="q8_0")
    served.body = q8.read_bytes()
    result = await fetch(PullSource(str(server.make_url("/q8")), "tiny-llama-Q8_0.gguf",
                                       served.sha256), models_dir)
    assert read_gguf_info(result.path).quantization == "Q8_0"
    from llamahomed.http.app import create_app

    settings = make_settings()
    client = await aiohttp_client(create_app(settings))
    token = settings.admin_token_file.read_text().strip()
    listing = await (await client.get("/api/v1/models/tiny-llama",
                                      headers={"Authorization": f"Bearer {token}"})).json()
    assert {v["quantization"] for v in listing["variants"]} == {"F32", "Q8_0"}
    response = await client.post("/api/v1/process", headers={"Authorization": f"Bearer {token}"},
                                 json={"prompt": "hello", "model": "tiny-llama:q8_0",
                                       "max_tokens": 6, "temperature": 0})
    body = await response.json()
    assert response.status == 200, body
    assert body["usage"]["completion_tokens"] == 6


@pytest.mark.parametrize(("ram_gib", "expected"), [(2, "Q4_K_M"), (4, "F16"), (64, "F16")])
def test_the_load_planner_picks_the_catalog_variant_to_pull(ram_gib: int, expected: str) -> None:
    """``choose_by_plan``: the best quality whose weights, KV cache and buffers fit the machine."""
    from llamahomed.registry.catalog import Catalog
    from llamahomed.registry.pull import choose_by_plan
    from llamahomed.core.resources import simulated_machine
    from llamahomed.core.settings import Settings

    model = Catalog.load().models["llama3.2-1b"]
    chooser = choose_by_plan(Settings(install_default_model=False),
                             simulated_machine(ram=ram_gib << 30))
    assert chooser(model, model.variants).quantization == expected


def test_the_load_planner_refuses_a_pull_that_fits_nowhere() -> None:
    from llamahomed.core.errors import InvalidRequest
    from llamahomed.registry.catalog import Catalog
    from llamahomed.registry.pull import choose_by_plan
    from llamahomed.core.resources import simulated_machine
    from llamahomed.core.settings import Settings

    model = Catalog.load().models["llama3.2-1b"]
    with pytest.raises(InvalidRequest, match="no variant fits this machine"):
        choose_by_plan(Settings(install_default_model=False), simulated_machine(ram=1 << 30))(
            model, model.variants)
