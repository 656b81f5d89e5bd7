"""The official `azure-search-documents` SDK against azure-sim directly: index management,
documents, search with filter/facets/select/top/count, paging past 50, suggest and
autocomplete, exactly as an application (or the gateway's upstream client) would call them."""

from __future__ import annotations

import uuid

import pytest
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.search.documents import SearchClient
from azure.search.documents.indexes import SearchIndexClient
from azure.search.documents.indexes.models import (
    HnswAlgorithmConfiguration,
    SearchableField,
    SearchField,
    SearchFieldDataType,
    SearchIndex,
    SearchSuggester,
    SimpleField,
    VectorSearch,
    VectorSearchProfile,
)
from azure.search.documents.models import VectorizedQuery

HOTELS = [
    {
        "id": "1",
        "name": "Blue Harbour Hotel",
        "description": "Luxury hotel by the sea with a pool and free wifi",
        "category": "Luxury",
        "tags": ["pool", "wifi", "sea view"],
        "rating": 5,
        "price": 250.0,
        "embedding": [1.0, 0.0, 0.0],
    },
    {
        "id": "2",
        "name": "Budget Inn",
        "description": "Cheap rooms near the station, wifi in the lobby",
        "category": "Budget",
        "tags": ["wifi"],
        "rating": 2,
        "price": 60.5,
        "embedding": [0.0, 1.0, 0.0],
    },
    {
        "id": "3",
        "name": "Harbour Lights Lodge",
        "description": "Quiet lodge with harbour views and a spa",
        "category": "Boutique",
        "tags": ["spa", "sea view"],
        "rating": 4,
        "price": 180.0,
        "embedding": [0.9, 0.1, 0.0],
    },
]


def hotel_index(name: str) -> SearchIndex:
    return SearchIndex(
        name=name,
        fields=[
            SimpleField(name="id", type=SearchFieldDataType.String, key=True, filterable=True),
            SearchableField(name="name", sortable=True, filterable=True),
            SearchableField(name="description"),
            SimpleField(
                name="category", type=SearchFieldDataType.String, filterable=True, facetable=True
            ),
            SearchableField(
                name="tags",
                collection=True,
                filterable=True,
                facetable=True,
            ),
            SimpleField(
                name="rating",
                type=SearchFieldDataType.Int32,
                filterable=True,
                sortable=True,
                facetable=True,
            ),
            SimpleField(name="price", type=SearchFieldDataType.Double, filterable=True, sortable=True),
            SearchField(
                name="embedding",
                type=SearchFieldDataType.Collection(SearchFieldDataType.Single),
                searchable=True,
                vector_search_dimensions=3,
                vector_search_profile_name="vp",
            ),
        ],
        suggesters=[SearchSuggester(name="sg", source_fields=["name", "tags"])],
        vector_search=VectorSearch(
            algorithms=[HnswAlgorithmConfiguration(name="hnsw-1")],
            profiles=[VectorSearchProfile(name="vp", algorithm_configuration_name="hnsw-1")],
        ),
    )


@pytest.fixture
def index_client(search_endpoint: str, search_admin_key: str) -> SearchIndexClient:
    return SearchIndexClient(search_endpoint, AzureKeyCredential(search_admin_key))


@pytest.fixture
def index_name(index_client: SearchIndexClient):
    name = f"hotels-{uuid.uuid4().hex[:8]}"
    index_client.create_index(hotel_index(name))
    yield name
    try:
        index_client.delete_index(name)
    except ResourceNotFoundError:
        pass


@pytest.fixture
def admin(search_endpoint: str, search_admin_key: str, index_name: str) -> SearchClient:
    return SearchClient(search_endpoint, index_name, AzureKeyCredential(search_admin_key))


@pytest.fixture
def reader(search_endpoint: str, search_query_key: str, index_name: str) -> SearchClient:
    return SearchClient(search_endpoint, index_name, AzureKeyCredential(search_query_key))


@pytest.fixture
def seeded(admin: SearchClient) -> SearchClient:
    results = admin.upload_documents(documents=HOTELS)
    assert all(r.succeeded for r in results)
    return admin


def test_index_is_created_read_listed_and_deleted(index_client: SearchIndexClient, index_name: str):
    index = index_client.get_index(index_name)
    assert index.name == index_name
    assert [f.name for f in index.fields][:3] == ["id", "name", "description"]
    key = next(f for f in index.fields if f.name == "id")
    assert key.key
    assert index.suggesters[0].name == "sg"
    assert index_name in list(index_client.list_index_names())
    assert index_name in [i.name for i in index_client.list_indexes()]
    stats = index_client.get_index_statistics(index_name)
    assert stats.document_count == 0
    index_client.delete_index(index_name)
    with pytest.raises(ResourceNotFoundError):
        index_client.get_index(index_name)


def test_upload_merge_delete_and_get_document(admin: SearchClient, reader: SearchClient):
    results = admin.upload_documents(documents=HOTELS)
    assert [r.status_code for r in results] == [201, 201, 201]
    assert admin.get_document_count() == 3

    merged = admin.merge_documents(documents=[{"id": "2", "rating": 3}])
    assert merged[0].succeeded and merged[0].status_code == 200
    doc = reader.get_document(key="2")
    assert doc["rating"] == 3 and doc["name"] == "Budget Inn"
    selected = reader.get_document(key="2", selected_fields=["id", "price"])
    assert selected == {"id": "2", "price": 60.5}

    upserted = admin.merge_or_upload_documents(documents=[{"id": "9", "name": "New Place"}])
    assert upserted[0].status_code == 201

    deleted = admin.delete_documents(documents=[{"id": "1"}, {"id": "9"}])
    assert all(r.succeeded for r in deleted)
    assert reader.get_document_count() == 2
    with pytest.raises(ResourceNotFoundError):
        reader.get_document(key="1")

    # A merge of a missing document fails per item (207), which the SDK surfaces per result.
    batch = admin.merge_documents(documents=[{"id": "404", "rating": 1}])
    assert not batch[0].succeeded and batch[0].status_code == 404


def test_search_with_filter_select_top_and_count(seeded: SearchClient, reader: SearchClient):
    results = reader.search(
        search_text="harbour",
        filter="rating ge 4",
        select=["id", "name"],
        include_total_count=True,
    )
    assert results.get_count() == 2
    docs = list(results)
    assert [d["id"] for d in docs] == ["3", "1"]
    assert set(docs[0]) >= {"id", "name", "@search.score"}
    assert "description" not in docs[0]
    assert docs[0]["@search.score"] > 0

    ordered = list(reader.search(search_text="*", order_by=["price desc"], top=2, select=["id"]))
    assert [d["id"] for d in ordered] == ["1", "3"]
    in_tags = list(reader.search(filter="tags/any(t: search.in(t, 'spa,pool'))", select=["id"]))
    assert sorted(d["id"] for d in in_tags) == ["1", "3"]


def test_search_facets(seeded: SearchClient, reader: SearchClient):
    results = reader.search(search_text="*", facets=["category", "tags,count:2"])
    facets = results.get_facets()
    assert {f["value"]: f["count"] for f in facets["category"]} == {
        "Luxury": 1,
        "Budget": 1,
        "Boutique": 1,
    }
    assert facets["tags"] == [{"value": "sea view", "count": 2}, {"value": "wifi", "count": 2}]


def test_paging_past_fifty_results(admin: SearchClient, reader: SearchClient):
    docs = [{"id": f"room-{i:03}", "name": f"Room {i}", "rating": i % 5} for i in range(130)]
    admin.upload_documents(documents=docs)
    results = reader.search(search_text="room", select=["id"], include_total_count=True)
    ids = [d["id"] for d in results]
    assert results.get_count() == 130
    assert len(ids) == 130
    assert len(set(ids)) == 130
    pages = list(reader.search(search_text="*", filter="rating ne 0", select=["id"]).by_page())
    assert [len(list(p)) for p in pages] == [50, 50, 4]


def test_suggest_and_autocomplete(seeded: SearchClient, reader: SearchClient):
    suggestions = reader.suggest(search_text="harb", suggester_name="sg")
    assert [s.text for s in suggestions] == ["Blue Harbour Hotel", "Harbour Lights Lodge"]
    assert suggestions[0]["id"] == "1"
    filtered = reader.suggest(search_text="harb", suggester_name="sg", filter="rating lt 5")
    assert [s["id"] for s in filtered] == ["3"]

    completions = reader.autocomplete(search_text="h", suggester_name="sg")
    assert [c.text for c in completions] == ["harbour", "hotel"]
    assert completions[0].query_plus_text == "harbour"
    two = reader.autocomplete(search_text="blue h", suggester_name="sg", mode="twoTerms")
    assert [c.query_plus_text for c in two] == ["blue harbour hotel", "blue hotel"]


def test_vector_query(seeded: SearchClient, reader: SearchClient):
    query = VectorizedQuery(vector=[1.0, 0.05, 0.0], k_nearest_neighbors=2, fields="embedding")
    results = list(reader.search(vector_queries=[query], select=["id"]))
    assert [r["id"] for r in results] == ["1", "3"]
    filtered = list(reader.search(vector_queries=[query], filter="id ne '1'", select=["id"]))
    assert [r["id"] for r in filtered] == ["3", "2"]


def test_errors_surface_as_sdk_exceptions(seeded: SearchClient, reader: SearchClient, search_endpoint: str, index_name: str):
    with pytest.raises(HttpResponseError) as bad_filter:
        list(reader.search(search_text="*", filter="rating eq 1) or (true"))
    assert bad_filter.value.status_code == 400
    assert "position 11" in str(bad_filter.value)

    with pytest.raises(HttpResponseError) as forbidden:
        reader.upload_documents(documents=[{"id": "x"}])
    assert forbidden.value.status_code == 403

    stranger = SearchClient(search_endpoint, index_name, AzureKeyCredential("not-a-key"))
    with pytest.raises((ClientAuthenticationError, HttpResponseError)):
        stranger.get_document_count()
