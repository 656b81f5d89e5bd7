"""Entra ID (keyless) authentication against azure-sim, proven with the official SDKs:
`azure-identity` gets tokens from the emulated identity platform (client secret, workload
identity, managed identity over IMDS and App Service), the `openai` and
`azure-search-documents` clients use them, and every refusal reaches the SDK in Azure's words.

MSAL and azure-identity refuse a non-https authority and azure-core refuses bearer tokens over
http, so credentials and clients talk to the emulator's TLS listener and trust its CA
(``sim.ca_file``)."""

from __future__ import annotations

import base64
import json
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import (
    ClientSecretCredential,
    CredentialUnavailableError,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
    get_bearer_token_provider,
)
from azure.search.documents import SearchClient
from azure.search.documents.indexes import SearchIndexClient
from azure.search.documents.indexes.models import SearchableField, SearchIndex, SimpleField
from openai import AzureOpenAI

from conftest import (
    ENTRA_TENANT_ID,
    IDENTITY_HEADER,
    NO_ROLE_APP,
    OPENAI_API_VERSION,
    SECRET_APP,
    SYSTEM_IDENTITY,
    USER_IDENTITY,
    WORKLOAD_APP,
    WORKLOAD_ISSUER,
    WORKLOAD_SUBJECT,
    SimProcess,
)

COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"
SEARCH_SCOPE = "https://search.azure.com/.default"

BAD_TOKEN_MESSAGE = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired."
)


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def secret_credential(sim: SimProcess, app: dict[str, str] = SECRET_APP,
                      secret: str | None = None, **kwargs: Any) -> ClientSecretCredential:
    return ClientSecretCredential(
        ENTRA_TENANT_ID,
        app["client_id"],
        secret if secret is not None else app["client_secret"],
        authority=sim.tls_base_url,
        disable_instance_discovery=True,
        connection_verify=sim.ca_file,
        **kwargs,
    )


def openai_client(sim: SimProcess, resource: str, **auth: Any) -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=sim.tls_url(resource),
        api_version=OPENAI_API_VERSION,
        http_client=httpx2.Client(verify=ssl.create_default_context(cafile=sim.ca_file)),
        max_retries=0,
        **auth,
    )


def chat(client: AzureOpenAI) -> str:
    completion = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Say hello"}], max_tokens=5)
    return completion.choices[0].message.content or ""


def issued(sim: SimProcess, client_id: str, resource: str) -> int:
    return sum(row["count"] for row in sim.control("GET", "/entra/issued")
               if row["client_id"] == client_id and row["resource"] == resource)


# ---- getting tokens -----------------------------------------------------------------------


def test_client_secret_credential_gets_a_token_for_the_resource_from_the_emulator(
        sim_reset: SimProcess) -> None:
    token = secret_credential(sim_reset).get_token(COGNITIVE_SCOPE)
    got = claims(token.token)
    assert got["aud"] == "https://cognitiveservices.azure.com"
    assert got["iss"] == f"https://sts.windows.net/{ENTRA_TENANT_ID}/"
    assert (got["tid"], got["appid"], got["oid"]) == (
        ENTRA_TENANT_ID, SECRET_APP["client_id"], SECRET_APP["object_id"])
    assert got["ver"] == "1.0"
    assert 3500 < token.expires_on - time.time() <= 3600
    assert issued(sim_reset, SECRET_APP["client_id"], "https://cognitiveservices.azure.com") == 1


def test_a_wrong_client_secret_is_refused_with_aadsts7000215_and_never_echoed(
        sim_reset: SimProcess) -> None:
    with pytest.raises(ClientAuthenticationError) as refused:
        secret_credential(sim_reset, secret="not-the-secret").get_token(COGNITIVE_SCOPE)
    assert "AADSTS7000215: Invalid client secret provided." in str(refused.value)
    assert "not-the-secret" not in str(refused.value)


def test_an_unknown_client_id_is_refused_with_aadsts700016(sim_reset: SimProcess) -> None:
    stranger = {"client_id": str(uuid.uuid4()), "client_secret": "x"}
    with pytest.raises(ClientAuthenticationError) as refused:
        secret_credential(sim_reset, stranger).get_token(COGNITIVE_SCOPE)
    assert f"AADSTS700016: Application with identifier '{stranger['client_id']}'" in str(
        refused.value)


def test_workload_identity_credential_exchanges_the_federated_token_file(
        sim_reset: SimProcess, tmp_path: Path) -> None:
    federated = sim_reset.control("POST", "/entra/federated-token",
                                  {"issuer": WORKLOAD_ISSUER, "subject": WORKLOAD_SUBJECT})
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(federated["token"])
    credential = WorkloadIdentityCredential(
        tenant_id=ENTRA_TENANT_ID,
        client_id=WORKLOAD_APP["client_id"],
        token_file_path=str(token_file),
        authority=sim_reset.tls_base_url,
        disable_instance_discovery=True,
        connection_verify=sim_reset.ca_file,
    )
    got = claims(credential.get_token(COGNITIVE_SCOPE).token)
    assert (got["oid"], got["appidacr"]) == (WORKLOAD_APP["object_id"], "2")
    # The token works on the keyless resource.
    client = openai_client(sim_reset, "aoai-keyless", azure_ad_token_provider=get_bearer_token_provider(
        credential, COGNITIVE_SCOPE))
    assert chat(client)


def test_a_federated_token_for_another_subject_is_refused_with_aadsts700213(
        sim_reset: SimProcess, tmp_path: Path) -> None:
    federated = sim_reset.control("POST", "/entra/federated-token", {
        "issuer": WORKLOAD_ISSUER, "subject": "system:serviceaccount:other:sa"})
    token_file = tmp_path / "token"
    token_file.write_text(federated["token"])
    credential = WorkloadIdentityCredential(
        tenant_id=ENTRA_TENANT_ID, client_id=WORKLOAD_APP["client_id"],
        token_file_path=str(token_file), authority=sim_reset.tls_base_url,
        disable_instance_discovery=True, connection_verify=sim_reset.ca_file)
    with pytest.raises(ClientAuthenticationError) as refused:
        credential.get_token(COGNITIVE_SCOPE)
    assert ("AADSTS700213: No matching federated identity record found for presented "
            "assertion subject 'system:serviceaccount:other:sa'") in str(refused.value)


def test_managed_identity_credential_gets_tokens_from_imds(
        sim_reset: SimProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET",
                 "AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", sim_reset.base_url)
    system = ManagedIdentityCredential().get_token(COGNITIVE_SCOPE)
    assert claims(system.token)["oid"] == SYSTEM_IDENTITY["object_id"]
    user = ManagedIdentityCredential(client_id=USER_IDENTITY["client_id"]).get_token(SEARCH_SCOPE)
    assert claims(user.token)["oid"] == USER_IDENTITY["object_id"]
    assert claims(user.token)["aud"] == "https://search.azure.com"
    with pytest.raises(CredentialUnavailableError) as unavailable:
        ManagedIdentityCredential(client_id=str(uuid.uuid4())).get_token(COGNITIVE_SCOPE)
    assert "Identity not found" in str(unavailable.value)
    # The managed identity's token opens the keyless resource.
    client = openai_client(sim_reset, "aoai-keyless", azure_ad_token_provider=get_bearer_token_provider(
        ManagedIdentityCredential(), COGNITIVE_SCOPE))
    assert chat(client)


def test_managed_identity_credential_gets_tokens_from_the_app_service_endpoint(
        sim_reset: SimProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", raising=False)
    monkeypatch.delenv("IDENTITY_SERVER_THUMBPRINT", raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{sim_reset.base_url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    token = ManagedIdentityCredential(client_id=USER_IDENTITY["client_id"]).get_token(
        COGNITIVE_SCOPE)
    assert claims(token.token)["oid"] == USER_IDENTITY["object_id"]
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")
    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential().get_token(COGNITIVE_SCOPE)


# ---- using them -----------------------------------------------------------------------------


def test_azure_openai_with_a_token_provider_calls_the_token_endpoint_once_per_lifetime(
        sim_reset: SimProcess) -> None:
    provider = get_bearer_token_provider(secret_credential(sim_reset), COGNITIVE_SCOPE)
    client = openai_client(sim_reset, "aoai-keyless", azure_ad_token_provider=provider)
    for _ in range(3):
        assert chat(client)
    assert issued(sim_reset, SECRET_APP["client_id"], "https://cognitiveservices.azure.com") == 1
    logged = sim_reset.requests("aoai-keyless")
    assert logged and all(r["headers"]["authorization"].startswith("Bearer <masked:")
                          for r in logged)


def test_search_client_with_a_credential_manages_indexes_and_searches_over_tls(
        sim_reset: SimProcess) -> None:
    credential = secret_credential(sim_reset)
    endpoint = sim_reset.tls_url("search-keyless")
    name = f"entra-{uuid.uuid4().hex[:8]}"
    indexes = SearchIndexClient(endpoint, credential, connection_verify=sim_reset.ca_file)
    indexes.create_index(SearchIndex(name=name, fields=[
        SimpleField(name="id", type="Edm.String", key=True),
        SearchableField(name="text", type="Edm.String"),
    ]))
    try:
        client = SearchClient(endpoint, name, credential, connection_verify=sim_reset.ca_file)
        client.upload_documents([{"id": "1", "text": "keyless search works"},
                                 {"id": "2", "text": "something else"}])
        hits = [d["id"] for d in client.search("keyless")]
        assert hits == ["1"]
    finally:
        indexes.delete_index(name)
    assert issued(sim_reset, SECRET_APP["client_id"], "https://search.azure.com") == 1


# ---- refusals, in Azure's words --------------------------------------------------------------


def test_a_token_for_another_audience_is_refused_as_azure_openai_does(
        sim_reset: SimProcess) -> None:
    search_token = secret_credential(sim_reset).get_token(SEARCH_SCOPE).token
    client = openai_client(sim_reset, "aoai-keyless", azure_ad_token_provider=lambda: search_token)
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(client)
    assert refused.value.status_code == 401
    assert refused.value.body == {"code": "401", "message": BAD_TOKEN_MESSAGE}


def test_an_expired_token_is_refused_as_azure_openai_does(sim_reset: SimProcess) -> None:
    provider = get_bearer_token_provider(secret_credential(sim_reset), COGNITIVE_SCOPE)
    client = openai_client(sim_reset, "aoai-keyless", azure_ad_token_provider=provider)
    assert chat(client)
    # An hour passes on the emulator's clock; the SDK, on real time, still holds the token.
    sim_reset.advance_clock(3601 * 1000)
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(client)
    assert refused.value.body == {"code": "401", "message": BAD_TOKEN_MESSAGE}


def test_a_principal_without_a_role_gets_permission_denied_naming_the_data_action(
        sim_reset: SimProcess) -> None:
    provider = get_bearer_token_provider(secret_credential(sim_reset, NO_ROLE_APP),
                                         COGNITIVE_SCOPE)
    client = openai_client(sim_reset, "aoai-keyless", azure_ad_token_provider=provider)
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(client)
    assert refused.value.status_code == 401
    assert refused.value.body == {
        "code": "PermissionDenied",
        "message": f"The principal `{NO_ROLE_APP['object_id']}` lacks the required data action "
                   "`Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action` "
                   "to perform `POST /openai/deployments/{deployment-id}/chat/completions` operation.",
    }


def test_a_principal_without_a_role_is_forbidden_on_a_search_service(
        sim_reset: SimProcess) -> None:
    client = SearchClient(sim_reset.tls_url("search-keyless"), "any-index",
                          secret_credential(sim_reset, NO_ROLE_APP),
                          connection_verify=sim_reset.ca_file)
    with pytest.raises(HttpResponseError) as refused:
        client.get_document_count()
    assert refused.value.status_code == 403


def test_a_key_on_a_resource_with_local_auth_disabled_is_refused(sim_reset: SimProcess) -> None:
    client = openai_client(sim_reset, "aoai-keyless", api_key="aoai-keyless-key-1")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        chat(client)
    assert refused.value.status_code == 403
    assert refused.value.body == {
        "code": "AuthenticationTypeDisabled",
        "message": "Key based authentication is disabled for this resource.",
    }
    from azure.core.credentials import AzureKeyCredential

    search = SearchClient(sim_reset.url("search-keyless"), "any-index",
                          AzureKeyCredential("search-keyless-admin-key"))
    with pytest.raises(HttpResponseError) as forbidden:
        search.get_document_count()
    assert forbidden.value.status_code == 403


def test_keys_still_work_where_local_auth_is_enabled_and_tokens_work_beside_them(
        sim_reset: SimProcess) -> None:
    with_key = openai_client(sim_reset, "aoai-eastus", api_key="aoai-eastus-key-1")
    assert chat(with_key)
    with_token = openai_client(sim_reset, "aoai-eastus", azure_ad_token_provider=(
        get_bearer_token_provider(secret_credential(sim_reset), COGNITIVE_SCOPE)))
    assert chat(with_token)


def test_an_identity_outage_fails_token_requests_until_it_ends(sim_reset: SimProcess) -> None:
    sim_reset.control("PUT", "/entra/outage", {"down": True})
    try:
        with pytest.raises(ClientAuthenticationError):
            secret_credential(sim_reset, retry_total=0).get_token(COGNITIVE_SCOPE)
    finally:
        sim_reset.control("PUT", "/entra/outage", {"down": False})
    assert secret_credential(sim_reset).get_token(COGNITIVE_SCOPE).token


def test_the_token_lifetime_can_be_changed_at_runtime(sim_reset: SimProcess) -> None:
    sim_reset.control("PUT", "/entra/lifetime", {"seconds": 600})
    token = secret_credential(sim_reset).get_token(COGNITIVE_SCOPE)
    assert 500 < token.expires_on - time.time() <= 600
    got = claims(token.token)
    assert got["exp"] - got["iat"] == 600
