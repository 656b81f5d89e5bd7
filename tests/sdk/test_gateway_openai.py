"""The official openai SDK through the gateway (which routes to azure-sim): the AzureOpenAI
client on deployment paths, and the plain OpenAI client on /openai/v1 and /v1."""

from __future__ import annotations

import openai
import pytest

from conftest import OPENAI_API_VERSION, GatewayProcess, SimProcess


@pytest.fixture
def azure(gateway: GatewayProcess, tenant_key: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=gateway.base_url, api_key=tenant_key, api_version=OPENAI_API_VERSION,
        max_retries=0)


def test_azure_client_chat_through_the_gateway(azure: openai.AzureOpenAI, sim_reset: SimProcess) -> None:
    completion = azure.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Say hello"}], max_tokens=7)
    assert completion.choices[0].message.content
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens <= 7
    sent = [r for name in ("aoai-eastus", "aoai-westeurope") for r in sim_reset.requests(name)]
    assert len(sent) == 1
    assert "/openai/deployments/gpt-4o/chat/completions" in sent[0]["path"]


def test_azure_client_streams_with_usage(azure: openai.AzureOpenAI) -> None:
    stream = azure.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Count"}], max_tokens=12,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_azure_client_streams_without_usage_see_none(azure: openai.AzureOpenAI) -> None:
    stream = azure.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Count"}], max_tokens=5, stream=True)
    chunks = list(stream)
    assert chunks and all(c.usage is None for c in chunks)


def test_azure_client_embeddings(azure: openai.AzureOpenAI) -> None:
    result = azure.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
    assert len(result.data) == 2
    assert len(result.data[0].embedding) > 0


def test_unknown_model_is_a_not_found_error(azure: openai.AzureOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        azure.chat.completions.create(model="not-mine", messages=[{"role": "user", "content": "x"}])


def test_a_wrong_key_is_an_authentication_error(gateway: GatewayProcess) -> None:
    client = openai.AzureOpenAI(azure_endpoint=gateway.base_url, api_key="bk_wrong",
                                api_version=OPENAI_API_VERSION, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize("path", ["/openai/v1", "/v1"])
def test_plain_openai_client_on_v1_paths(gateway: GatewayProcess, tenant_key: str, path: str) -> None:
    client = openai.OpenAI(base_url=f"{gateway.base_url}{path}", api_key=tenant_key, max_retries=0)
    completion = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert completion.choices[0].message.content
    embedding = client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert embedding.data[0].embedding


def _responses_round_trip(client: openai.OpenAI | openai.AzureOpenAI) -> None:
    first = client.responses.create(model="gpt-4o", input="Remember the number 7")
    assert first.id.startswith("resp_bk")
    assert first.output_text
    assert client.responses.retrieve(first.id).id == first.id
    follow_up = client.responses.create(
        model="gpt-4o", input="Which number?", previous_response_id=first.id)
    assert follow_up.previous_response_id == first.id
    client.responses.delete(follow_up.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(follow_up.id)


def test_azure_client_responses_create_retrieve_continue_delete(
        gateway: GatewayProcess, tenant_key: str) -> None:
    # The Azure client calls /openai/responses?api-version=... (not the v1 path).
    client = openai.AzureOpenAI(azure_endpoint=gateway.base_url, api_key=tenant_key,
                                api_version="2025-03-01-preview", max_retries=0)
    _responses_round_trip(client)


@pytest.mark.parametrize("path", ["/openai/v1", "/v1"])
def test_plain_openai_client_responses_on_v1_paths(
        gateway: GatewayProcess, tenant_key: str, path: str) -> None:
    client = openai.OpenAI(base_url=f"{gateway.base_url}{path}", api_key=tenant_key, max_retries=0)
    _responses_round_trip(client)


@pytest.mark.parametrize("path", ["/openai/v1", "/v1"])
def test_plain_openai_client_lists_the_tenants_models(
        gateway: GatewayProcess, tenant_key: str, path: str) -> None:
    client = openai.OpenAI(base_url=f"{gateway.base_url}{path}", api_key=tenant_key, max_retries=0)
    models = list(client.models.list())
    assert sorted(m.id for m in models) == ["gpt-4o", "text-embedding-3-small"]
    assert all(m.object == "model" and m.created > 0 for m in models)


def test_azure_client_lists_the_tenants_models(azure: openai.AzureOpenAI) -> None:
    assert sorted(m.id for m in azure.models.list()) == ["gpt-4o", "text-embedding-3-small"]


def test_a_cached_stream_is_replayed_as_a_stream_the_sdk_reads(
        gateway: GatewayProcess, shared_pools: None, sim_reset: SimProcess) -> None:
    """A tenant with the response cache on: the second identical streamed request never
    reaches Azure, and the SDK reads the replay exactly like the first stream."""
    gateway.admin("POST", "/admin/v1/tenants", {
        "slug": "sdk-cached", "display_name": "SDK cached", "openai": {"isolation": "shared"},
        "response_cache": {"ttl_seconds": 300, "max_bytes": 1048576}})
    key = gateway.admin("POST", "/admin/v1/tenants/sdk-cached/keys", {"name": "sdk"})["key"]
    client = openai.AzureOpenAI(azure_endpoint=gateway.base_url, api_key=key,
                                api_version=OPENAI_API_VERSION, max_retries=0)

    def streamed() -> tuple[str | None, str, object]:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Cache this count"}],
            max_tokens=9, stream=True, stream_options={"include_usage": True})
        chunks = list(raw.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return raw.headers.get("x-bulkhead-cache"), text, chunks[-1].usage

    first_state, first_text, first_usage = streamed()
    second_state, second_text, second_usage = streamed()
    assert (first_state, second_state) == ("miss", "hit")
    assert first_text and second_text == first_text
    assert second_usage is not None and second_usage == first_usage
    sent = [r for name in ("aoai-eastus", "aoai-westeurope") for r in sim_reset.requests(name)]
    assert len(sent) == 1, "the replay never reached Azure"
