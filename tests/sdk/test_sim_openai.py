"""The official `openai` package against azure-sim directly: what the gateway will face."""

from __future__ import annotations

import hashlib
import math

import openai
import pytest
from openai import AzureOpenAI, OpenAI

from conftest import OPENAI_API_VERSION, SimProcess

pytestmark = pytest.mark.usefixtures("sim_reset")

HELLO = [{"role": "user", "content": "Hello!"}]


def fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


@pytest.fixture
def azure(aoai_endpoint: str, aoai_key: str) -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=aoai_endpoint, api_key=aoai_key, api_version=OPENAI_API_VERSION
    )


def test_azure_client_chat_completion(azure: AzureOpenAI, sim: SimProcess) -> None:
    completion = azure.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=50)
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-2024-11-20"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "stop"
    assert completion.usage.prompt_tokens == 9
    assert completion.usage.total_tokens == 9 + completion.usage.completion_tokens
    # The request arrived on the deployment path with the api-version and the key masked.
    [logged] = sim.requests("aoai-eastus")
    assert logged["path"] == (
        f"/openai/deployments/gpt-4o/chat/completions?api-version={OPENAI_API_VERSION}"
    )
    assert logged["headers"]["api-key"] == f"<masked:{fingerprint(sim.openai_key('aoai-eastus'))}>"


def test_azure_client_max_tokens_and_n(azure: AzureOpenAI) -> None:
    completion = azure.chat.completions.create(
        model="gpt-4o", messages=HELLO, max_tokens=4, n=2
    )
    assert len(completion.choices) == 2
    assert all(c.finish_reason == "length" for c in completion.choices)
    assert completion.usage.completion_tokens == 8


def test_azure_client_streaming_with_usage(azure: AzureOpenAI) -> None:
    stream = azure.chat.completions.create(
        model="gpt-4o",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    # Azure's first chunk: no choices, the prompt filter results.
    assert chunks[0].choices == []
    assert chunks[0].model_extra["prompt_filter_results"][0]["prompt_index"] == 0
    assert chunks[1].choices[0].delta.role == "assistant"
    *body, last = chunks
    assert all(c.usage is None for c in body)
    assert last.choices == []
    content = "".join(
        c.choices[0].delta.content or "" for c in body if c.choices
    )
    finish = [c.choices[0].finish_reason for c in body if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    deltas = [c for c in body[2:] if c.choices and c.choices[0].delta.content]
    assert last.usage.completion_tokens == len(deltas)
    assert last.usage.prompt_tokens == 9
    plain = azure.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert content == plain.choices[0].message.content


def test_azure_client_legacy_completions(azure: AzureOpenAI) -> None:
    completion = azure.completions.create(
        model="gpt-35-turbo-instruct", prompt="Once upon a time", max_tokens=5
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5
    assert completion.usage.prompt_tokens == 4


def test_azure_client_embeddings(azure: AzureOpenAI) -> None:
    result = azure.embeddings.create(
        model="text-embedding-3-small", input=["hello world", "hi"]
    )
    assert [d.index for d in result.data] == [0, 1]
    vector = result.data[0].embedding
    assert len(vector) == 1536
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-3)
    assert result.usage.prompt_tokens == result.usage.total_tokens == 3
    again = azure.embeddings.create(model="text-embedding-3-small", input="hello world")
    assert again.data[0].embedding == vector
    small = azure.embeddings.create(model="text-embedding-3-small", input="x", dimensions=256)
    assert len(small.data[0].embedding) == 256


def test_azure_client_errors_map_to_sdk_exceptions(azure: AzureOpenAI, sim: SimProcess) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        azure.chat.completions.create(model="no-such-deployment", messages=HELLO)
    assert not_found.value.code == "DeploymentNotFound"
    bad_key = AzureOpenAI(
        azure_endpoint=sim.url("aoai-eastus"), api_key="wrong", api_version=OPENAI_API_VERSION
    )
    with pytest.raises(openai.AuthenticationError):
        bad_key.chat.completions.create(model="gpt-4o", messages=HELLO)
    with pytest.raises(openai.BadRequestError):
        azure.chat.completions.create(model="gpt-4o", messages=[])


@pytest.mark.parametrize("params, param, says", [
    ({"temperature": 7}, "temperature", "7 is greater than the maximum of 2"),
    ({"top_p": 3}, "top_p", "3 is greater than the maximum of 1"),
    ({"response_format": {"type": "nope"}}, "response_format.type", "'nope' is not one of"),
    ({"presence_penalty": -3}, "presence_penalty", "-3 is less than the minimum of -2"),
])
def test_out_of_range_parameters_are_bad_requests_naming_the_param(
        azure: AzureOpenAI, params: dict, param: str, says: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        azure.chat.completions.create(model="gpt-4o", messages=HELLO, **params)
    assert refused.value.param == param
    assert says in refused.value.message


def test_a_429_surfaces_as_rate_limit_error_after_the_clients_retries(
    azure: AzureOpenAI, sim: SimProcess
) -> None:
    # More 429s than the client has attempts (1 + 2 retries); retry-after 0 and a 10 ms
    # retry-after-ms keep the test fast.
    sim.inject_fault(
        "aoai-eastus", deployment="gpt-4o", status=429, count=5, retry_after=0, retry_after_ms=10
    )
    with pytest.raises(openai.RateLimitError) as error:
        azure.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert error.value.status_code == 429
    assert error.value.code == "429"
    assert len(sim.requests("aoai-eastus")) == 3


def test_the_client_retries_through_transient_faults(azure: AzureOpenAI, sim: SimProcess) -> None:
    sim.inject_fault("aoai-eastus", status=503, count=2, retry_after_ms=10)
    completion = azure.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert completion.choices[0].message.content
    assert len(sim.requests("aoai-eastus")) == 3


def test_a_real_quota_429_carries_azures_body(sim: SimProcess) -> None:
    client = AzureOpenAI(
        azure_endpoint=sim.url("aoai-eastus"),
        api_key=sim.openai_key("aoai-eastus"),
        api_version=OPENAI_API_VERSION,
        max_retries=0,
    )
    # Start at the beginning of a token window so the 10 s advance below stays inside it.
    now = sim.control("GET", "/clock")["now_ms"]
    sim.advance_clock(60_000 - now % 60_000)
    client.chat.completions.create(model="gpt-4o-tiny", messages=HELLO, max_tokens=10)
    with pytest.raises(openai.RateLimitError) as error:
        client.chat.completions.create(model="gpt-4o-tiny", messages=HELLO, max_tokens=10)
    assert error.value.code == "429"
    assert "Please retry after" in error.value.message
    headers = error.value.response.headers
    assert int(headers["retry-after-ms"]) <= 10_000
    assert headers["x-ms-region"] == "eastus"
    # Past the 10-second request window the quota is back.
    sim.advance_clock(10_000)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-tiny", messages=HELLO, max_tokens=10
    )
    assert raw.headers["x-ratelimit-remaining-requests"] == "0"
    assert raw.headers["x-ratelimit-remaining-tokens"] == str(1000 - 2 * 19)


def test_plain_openai_client_on_the_v1_path(sim: SimProcess) -> None:
    key = sim.openai_key("aoai-westeurope")
    client = OpenAI(base_url=f"{sim.url('aoai-westeurope')}/openai/v1", api_key=key)
    completion = client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert completion.choices[0].message.content
    assert completion.usage.prompt_tokens == 9
    embedding = client.embeddings.create(model="text-embedding-3-large", input="hi")
    assert len(embedding.data[0].embedding) == 3072
    logged = sim.requests("aoai-westeurope")
    assert [r["path"] for r in logged] == ["/openai/v1/chat/completions", "/openai/v1/embeddings"]
    assert logged[0]["headers"]["authorization"] == f"Bearer <masked:{fingerprint(key)}>"
    assert logged[0]["body"]["model"] == "gpt-4o"


def test_plain_openai_client_streams_on_the_v1_path(sim: SimProcess) -> None:
    client = OpenAI(
        base_url=f"{sim.url('aoai-eastus')}/openai/v1", api_key=sim.openai_key("aoai-eastus")
    )
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage.prompt_tokens == 9


def test_responses_are_bound_to_the_resource_that_created_them(sim: SimProcess) -> None:
    east = OpenAI(
        base_url=f"{sim.url('aoai-eastus')}/openai/v1", api_key=sim.openai_key("aoai-eastus")
    )
    west = OpenAI(
        base_url=f"{sim.url('aoai-westeurope')}/openai/v1",
        api_key=sim.openai_key("aoai-westeurope"),
    )
    first = east.responses.create(model="gpt-4o", input="Tell me a story")
    assert first.output_text
    assert east.responses.retrieve(first.id).id == first.id
    follow_up = east.responses.create(
        model="gpt-4o", input="And then?", previous_response_id=first.id
    )
    assert follow_up.usage.input_tokens > first.usage.input_tokens
    with pytest.raises(openai.NotFoundError):
        west.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError):
        west.responses.create(model="gpt-4o", input="x", previous_response_id=first.id)
