"""The official `azure-search-documents` SDK through the gateway, for each search placement:
documents (upload, merge, delete, get), search with filter, facets, select, top and count,
paging past 50 results, suggest, autocomplete and the document count. In the shared index a
neighbour tenant holds documents with the same keys and words, and is never seen."""

from __future__ import annotations

import pytest
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.search.documents import SearchClient

from conftest import GatewayProcess, SimProcess

INDEX = "sdk-hotels"
PLACEMENTS = ["shared_index", "dedicated_index", "dedicated_service"]


def hotels(owner: str) -> list[dict]:
    base = [
        {"id": "1", "name": "Blue Harbour Hotel", "description": "pool and wifi",
         "category": "Luxury", "tags": ["pool", "wifi"], "rating": 5},
        {"id": "2", "name": "Budget Inn", "description": "cheap rooms",
         "category": "Budget", "tags": ["wifi"], "rating": 2},
        {"id": "3", "name": "Harbour Lights Lodge", "description": "quiet lodge",
         "category": "Boutique", "tags": ["spa"], "rating": 4},
    ]
    for hotel in base:
        hotel["description"] += f" ({owner})"
    return base


def client(gateway: GatewayProcess, key: str) -> SearchClient:
    return SearchClient(gateway.base_url, INDEX, AzureKeyCredential(key))


@pytest.fixture(scope="module")
def loaded(gateway: GatewayProcess, search_tenants: dict[str, str]) -> dict[str, SearchClient]:
    clients = {p: client(gateway, k) for p, k in search_tenants.items()}
    for placement, c in clients.items():
        results = c.upload_documents(hotels(placement))
        assert all(r.succeeded for r in results)
        assert [r.key for r in results] == ["1", "2", "3"]
    # The neighbour has extra documents in the shared index that nobody else may see.
    clients["shared_index_neighbour"].upload_documents([
        {"id": f"n{i:03}", "name": "Harbour Neighbour", "description": "neighbour secret",
         "category": "Secret", "tags": ["secret"], "rating": 3} for i in range(20)])
    return clients


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_documents_round_trip(loaded: dict[str, SearchClient], placement: str) -> None:
    c = loaded[placement]
    doc = c.get_document("1")
    assert doc["name"] == "Blue Harbour Hotel"
    assert placement in doc["description"]
    assert set(doc) >= {"id", "name", "rating"} and not any(k.lower().startswith("bulkhead") for k in doc)
    assert c.get_document("1", selected_fields=["id", "rating"]) == {"id": "1", "rating": 5}
    merged = c.merge_documents([{"id": "2", "rating": 3}])
    assert merged[0].succeeded
    assert c.get_document("2")["rating"] == 3
    c.upload_documents([{"id": "tmp", "name": "Temporary", "rating": 1}])
    assert c.get_document_count() == 4
    c.delete_documents([{"id": "tmp"}])
    with pytest.raises(ResourceNotFoundError):
        c.get_document("tmp")
    assert c.get_document_count() == 3
    with pytest.raises(ResourceNotFoundError):
        c.get_document("n001")


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_search_with_filter_facets_select_top_and_count(loaded: dict[str, SearchClient], placement: str) -> None:
    c = loaded[placement]
    results = c.search("harbour", filter="rating ge 4", select=["id", "name"],
                       facets=["category", "tags"], include_total_count=True, top=10)
    docs = list(results)
    assert sorted(d["id"] for d in docs) == ["1", "3"]
    assert all(set(d) - {"@search.score", "@search.highlights", "@search.reranker_score",
                         "@search.captions", "@search.reranker_boosted_score",
                         "@search.document_debug_info"} <= {"id", "name"} for d in docs)
    assert results.get_count() == 2
    categories = {f["value"] for f in results.get_facets()["category"]}
    assert categories == {"Luxury", "Boutique"}
    top = list(c.search("*", top=1, order_by=["rating desc"]))
    assert [d["id"] for d in top] == ["1"]
    everything = c.search("*", include_total_count=True, facets=["category"])
    assert everything.get_count() == 3
    assert "Secret" not in {f["value"] for f in everything.get_facets()["category"]}


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_suggest_and_autocomplete(loaded: dict[str, SearchClient], placement: str) -> None:
    c = loaded[placement]
    suggestions = c.suggest("harb", "sg")
    assert sorted(s["id"] for s in suggestions) == ["1", "3"]
    assert all("Neighbour" not in s.text for s in suggestions)
    terms = [t.text for t in c.autocomplete("harb", "sg")]
    assert "harbour" in terms
    assert c.autocomplete("neighb", "sg") == []


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_paging_past_fifty_results(loaded: dict[str, SearchClient], placement: str) -> None:
    c = loaded[placement]
    many = [{"id": f"p{i:03}", "name": "Paged Hotel", "rating": 1} for i in range(120)]
    assert all(r.succeeded for r in c.upload_documents(many))
    try:
        ids = [d["id"] for d in c.search("*", filter="rating eq 1", order_by=["id"])]
        assert ids == [f"p{i:03}" for i in range(120)]
        assert c.get_document_count() == 123
    finally:
        c.delete_documents([{"id": d["id"]} for d in many])
    assert c.get_document_count() == 3


def test_the_tenant_field_cannot_be_named(loaded: dict[str, SearchClient]) -> None:
    c = loaded["shared_index"]
    for attempt in [
        lambda: list(c.search("*", filter="bulkheadTenant ne 'x'")),
        lambda: list(c.search("*", select=["bulkheadTenant"])),
        lambda: list(c.search("*", order_by=["bulkheadTenant"])),
        lambda: list(c.search("*", facets=["bulkheadTenant"])),
        lambda: c.upload_documents([{"id": "x", "bulkheadTenant": "other"}]),
    ]:
        with pytest.raises(HttpResponseError) as error:
            attempt()
        assert error.value.status_code == 400


def test_the_neighbour_keeps_its_own_documents(loaded: dict[str, SearchClient]) -> None:
    n = loaded["shared_index_neighbour"]
    assert n.get_document_count() == 23
    assert "shared_index_neighbour" in n.get_document("1")["description"]
    assert loaded["shared_index"].get_document_count() == 3
