"""Shared fixtures for the SDK compatibility tests.

A session fixture launches the already-built azure-sim binary (it builds nothing) on port 0,
over http and (``--tls-listen``) https, with the configuration below, waits for its ready
files, and stops it at the end. The CA certificate of the TLS listener is written to a
temporary file (``sim.ca_file``) that clients pass as ``connection_verify`` / ``verify``.

Binary: $AZURE_SIM_BIN, else $CARGO_TARGET_DIR/debug/azure-sim, else
<repo>/target/debug/azure-sim. Build it first with `cargo build -p azure-sim`.

Fixtures:
- ``sim``: the running emulator (``SimProcess``): ``base_url``, ``url(name)``,
  ``tls_base_url``, ``tls_url(name)``, ``ca_file``, keys, and control helpers (``reset``,
  ``inject_fault``, ``requests``, ``advance_clock``).
- ``sim_reset``: resets faults, request log, rate limits and stored responses before a test.
- ``aoai_endpoint`` / ``aoai_key``: the eastus Azure OpenAI resource.
- ``search_endpoint`` / ``search_admin_key`` / ``search_query_key``: ``search-shared-1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

OPENAI_API_VERSION = "2024-10-21"
SEARCH_API_VERSION = "2024-07-01"

# Entra ID: one tenant, a principal with a client secret, a workload identity (federated
# credential from the emulated AKS OIDC issuer), a principal without any role assignment,
# and the managed identities of the emulated host (one system-assigned, one user-assigned).
ENTRA_TENANT_ID = "8f3a1e2c-5b6d-4c7e-9f80-1a2b3c4d5e6f"
SECRET_APP = {"client_id": "11111111-aaaa-4bbb-8ccc-000000000001",
              "object_id": "11111111-aaaa-4bbb-8ccc-0000000000a1",
              "client_secret": "sdk-tests-client-secret"}
WORKLOAD_APP = {"client_id": "22222222-aaaa-4bbb-8ccc-000000000002",
                "object_id": "22222222-aaaa-4bbb-8ccc-0000000000a2"}
WORKLOAD_ISSUER = "https://oidc.sim.local/cluster"
WORKLOAD_SUBJECT = "system:serviceaccount:bulkhead:gateway"
NO_ROLE_APP = {"client_id": "33333333-aaaa-4bbb-8ccc-000000000003",
               "object_id": "33333333-aaaa-4bbb-8ccc-0000000000a3",
               "client_secret": "sdk-tests-no-role-secret"}
SYSTEM_IDENTITY = {"client_id": "44444444-aaaa-4bbb-8ccc-000000000004",
                   "object_id": "44444444-aaaa-4bbb-8ccc-0000000000a4"}
USER_IDENTITY = {"client_id": "55555555-aaaa-4bbb-8ccc-000000000005",
                 "object_id": "55555555-aaaa-4bbb-8ccc-0000000000a5"}
IDENTITY_HEADER = "sdk-tests-identity-header"
# Principals holding data-plane roles on the resources and services that grant any.
ROLE_HOLDERS = [SECRET_APP["object_id"], WORKLOAD_APP["object_id"],
                SYSTEM_IDENTITY["object_id"], USER_IDENTITY["object_id"]]

# Three regions, two data zones. Names are unique across resources and search services.
SIM_CONFIG: dict[str, Any] = {
    "entra": {
        "token_lifetime_seconds": 3600,
        "principals": [
            {"tenant_id": ENTRA_TENANT_ID, **SECRET_APP},
            {"tenant_id": ENTRA_TENANT_ID, **WORKLOAD_APP,
             "federated": [{"issuer": WORKLOAD_ISSUER, "subject": WORKLOAD_SUBJECT}]},
            {"tenant_id": ENTRA_TENANT_ID, **NO_ROLE_APP},
        ],
        "managed_identity": {
            "tenant_id": ENTRA_TENANT_ID,
            "identity_header": IDENTITY_HEADER,
            "system_assigned": SYSTEM_IDENTITY,
            "user_assigned": [USER_IDENTITY],
        },
    },
    "resources": [
        {
            "name": "aoai-eastus",
            "region": "eastus",
            "data_zone": "us",
            "keys": ["aoai-eastus-key-1", "aoai-eastus-key-2"],
            "role_assignments": ROLE_HOLDERS,
            "deployments": [
                {"name": "gpt-4o", "model": "gpt-4o", "version": "2024-11-20"},
                {"name": "gpt-4o-mini", "model": "gpt-4o-mini", "version": "2024-07-18"},
                # A small quota: 1000 TPM, hence 6 RPM (one request per 10 s window).
                {"name": "gpt-4o-tiny", "model": "gpt-4o", "tpm": 1000},
                {"name": "gpt-35-turbo-instruct", "model": "gpt-35-turbo-instruct"},
                {"name": "text-embedding-3-small", "model": "text-embedding-3-small"},
            ],
        },
        {
            "name": "aoai-westeurope",
            "region": "westeurope",
            "data_zone": "eu",
            "keys": ["aoai-westeurope-key-1"],
            "deployments": [
                {"name": "gpt-4o", "model": "gpt-4o", "version": "2024-11-20"},
                {"name": "text-embedding-3-large", "model": "text-embedding-3-large"},
            ],
        },
        {
            "name": "aoai-swedencentral",
            "region": "swedencentral",
            "data_zone": "eu",
            "keys": ["aoai-swedencentral-key-1"],
            "deployments": [{"name": "gpt-4o", "model": "gpt-4o", "tpm": 30000}],
        },
        {
            # Keyless: Entra tokens only (disableLocalAuth), as a hardened deployment has it.
            "name": "aoai-keyless",
            "region": "eastus",
            "data_zone": "us",
            "keys": ["aoai-keyless-key-1"],
            "disable_local_auth": True,
            "role_assignments": ROLE_HOLDERS,
            "deployments": [{"name": "gpt-4o", "model": "gpt-4o", "version": "2024-11-20"}],
        },
    ],
    "search_services": [
        {
            "name": "search-shared-1",
            "region": "eastus",
            "data_zone": "us",
            "admin_keys": ["search-shared-1-admin-key"],
            "query_keys": ["search-shared-1-query-key"],
            "role_assignments": ROLE_HOLDERS,
        },
        {
            "name": "search-eu-1",
            "region": "westeurope",
            "data_zone": "eu",
            "admin_keys": ["search-eu-1-admin-key"],
            "query_keys": ["search-eu-1-query-key"],
        },
        {
            "name": "search-keyless",
            "region": "eastus",
            "data_zone": "us",
            "admin_keys": ["search-keyless-admin-key"],
            "query_keys": ["search-keyless-query-key"],
            "disable_local_auth": True,
            "role_assignments": ROLE_HOLDERS,
        },
    ],
}


def sim_binary() -> Path:
    if os.environ.get("AZURE_SIM_BIN"):
        return Path(os.environ["AZURE_SIM_BIN"])
    if os.environ.get("CARGO_TARGET_DIR"):
        candidate = Path(os.environ["CARGO_TARGET_DIR"]) / "debug" / "azure-sim"
        if candidate.exists():
            return candidate
    return REPO_ROOT / "target" / "debug" / "azure-sim"


class SimProcess:
    """A running azure-sim and helpers for its control API (``/_sim/``)."""

    def __init__(self, base_url: str, config: dict[str, Any], tls_base_url: str = "",
                 ca_file: str = ""):
        self.base_url = base_url
        self.config = config
        self.tls_base_url = tls_base_url
        self.ca_file = ca_file

    def url(self, name: str) -> str:
        """Base URL of a resource or search service: ``http://127.0.0.1:PORT/r/{name}``."""
        return f"{self.base_url}/r/{name}"

    def tls_url(self, name: str) -> str:
        """The same over https: ``https://127.0.0.1:TLS_PORT/r/{name}``."""
        return f"{self.tls_base_url}/r/{name}"

    def openai_key(self, resource: str) -> str:
        return next(r for r in self.config["resources"] if r["name"] == resource)["keys"][0]

    def search_admin_key(self, service: str) -> str:
        return next(s for s in self.config["search_services"] if s["name"] == service)[
            "admin_keys"
        ][0]

    def search_query_key(self, service: str) -> str:
        return next(s for s in self.config["search_services"] if s["name"] == service)[
            "query_keys"
        ][0]

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """Calls ``/_sim{path}``; returns the decoded JSON answer (None when empty)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base_url}/_sim{path}",
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            location = response.headers.get("operation-location")
            status = response.status
        if status == 202 and location:
            # An operation (provisioning, a move, offboarding): wait for it to end.
            deadline = time.monotonic() + 60
            while True:
                operation = self.admin("GET", location)
                if operation["status"] in ("succeeded", "failed", "canceled"):
                    assert operation["status"] == "succeeded", operation
                    break
                assert time.monotonic() < deadline, operation
                time.sleep(0.05)
            if method == "POST" and path == "/admin/v1/tenants":
                slug = json.loads(data)["slug"] if data else None
                return self.admin("GET", f"/admin/v1/tenants/{slug}")
        return json.loads(raw) if raw else None

    def reset(self) -> None:
        self.control("POST", "/reset")

    def inject_fault(self, resource: str, kind: str = "status", **fields: Any) -> int:
        """E.g. ``inject_fault("aoai-eastus", status=429, count=3, retry_after=0)``."""
        return self.control("POST", "/faults", {"resource": resource, "kind": kind, **fields})["id"]

    def requests(self, resource: str | None = None) -> list[dict[str, Any]]:
        query = f"?resource={resource}" if resource else ""
        return self.control("GET", f"/requests{query}")["requests"]

    def advance_clock(self, ms: int) -> None:
        self.control("POST", "/clock/advance", {"ms": ms})


@pytest.fixture(scope="session")
def sim() -> SimProcess:
    binary = sim_binary()
    if not binary.exists():
        pytest.exit(f"azure-sim binary not found at {binary}; run `cargo build -p azure-sim`", 2)
    with tempfile.TemporaryDirectory(prefix="azure-sim-sdk-") as tmp:
        config_path = Path(tmp) / "sim.json"
        config_path.write_text(json.dumps(SIM_CONFIG))
        ready = Path(tmp) / "ready"
        tls_ready = Path(tmp) / "tls-ready"
        ca_file = Path(tmp) / "ca.pem"
        log = open(Path(tmp) / "sim.log", "wb")
        process = subprocess.Popen(
            [
                str(binary),
                "--listen",
                "127.0.0.1:0",
                "--config",
                str(config_path),
                "--ready-file",
                str(ready),
                "--tls-listen",
                "127.0.0.1:0",
                "--tls-cert-file",
                str(ca_file),
                "--tls-ready-file",
                str(tls_ready),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                if process.poll() is not None:
                    log.flush()
                    output = (Path(tmp) / "sim.log").read_text(errors="replace")
                    pytest.exit(f"azure-sim exited with {process.returncode}:\n{output}", 2)
                if time.monotonic() > deadline:
                    pytest.exit("azure-sim did not write its ready file within 30 s", 2)
                time.sleep(0.02)
            yield SimProcess(f"http://{ready.read_text().strip()}", SIM_CONFIG,
                             f"https://{tls_ready.read_text().strip()}", str(ca_file))
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()


@pytest.fixture
def sim_reset(sim: SimProcess) -> SimProcess:
    sim.reset()
    return sim


@pytest.fixture(scope="session")
def sim_base_url(sim: SimProcess) -> str:
    return sim.base_url


@pytest.fixture(scope="session")
def aoai_endpoint(sim: SimProcess) -> str:
    return sim.url("aoai-eastus")


@pytest.fixture(scope="session")
def aoai_key(sim: SimProcess) -> str:
    return sim.openai_key("aoai-eastus")


@pytest.fixture(scope="session")
def search_endpoint(sim: SimProcess) -> str:
    return sim.url("search-shared-1")


@pytest.fixture(scope="session")
def search_admin_key(sim: SimProcess) -> str:
    return sim.search_admin_key("search-shared-1")


@pytest.fixture(scope="session")
def search_query_key(sim: SimProcess) -> str:
    return sim.search_query_key("search-shared-1")


# ---- the gateway ------------------------------------------------------------------------

GATEWAY_ADMIN_TOKEN = "sdk-tests-admin-token"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayProcess:
    """A running bulkhead (embedded store) and a small admin client."""

    def __init__(self, base_url: str):
        self.base_url = base_url

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            data=data,
            method=method,
            headers={
                "content-type": "application/json",
                "authorization": f"Bearer {GATEWAY_ADMIN_TOKEN}",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            location = response.headers.get("operation-location")
            status = response.status
        if status == 202 and location:
            # An operation (provisioning, a move, offboarding): wait for it to end.
            deadline = time.monotonic() + 60
            while True:
                operation = self.admin("GET", location)
                if operation["status"] in ("succeeded", "failed", "canceled"):
                    assert operation["status"] == "succeeded", operation
                    break
                assert time.monotonic() < deadline, operation
                time.sleep(0.05)
            if method == "POST" and path == "/admin/v1/tenants":
                slug = json.loads(data)["slug"] if data else None
                return self.admin("GET", f"/admin/v1/tenants/{slug}")
        return json.loads(raw) if raw else None


@pytest.fixture(scope="session")
def gateway(sim: SimProcess) -> GatewayProcess:
    binary = sim_binary().parent / "bulkhead"
    if not binary.exists():
        pytest.exit(f"bulkhead binary not found at {binary}; run `cargo build --workspace --bins`", 2)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bulkhead-sdk-") as tmp:
        log = open(Path(tmp) / "gateway.log", "wb")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "BULKHEAD_LISTEN": f"127.0.0.1:{port}",
            "BULKHEAD_DATA_DIR": tmp,
            "BULKHEAD_ADMIN_TOKEN": GATEWAY_ADMIN_TOKEN,
            "BULKHEAD_LOG_FORMAT": "text",
            # The SDK suite runs the single-threaded scheduler (what a one-CPU replica runs);
            # the Rust process tests run the default work-stealing pool.
            "BULKHEAD_WORKER_THREADS": "1",
        }
        process = subprocess.Popen([str(binary)], env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/readyz", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    output = (Path(tmp) / "gateway.log").read_text(errors="replace")
                    pytest.exit(f"the gateway did not become ready:\n{output}", 2)
                time.sleep(0.05)
            yield GatewayProcess(base)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()


@pytest.fixture(scope="session")
def shared_pools(gateway: GatewayProcess, sim: SimProcess) -> None:
    """The shared pools `gpt-4o` (two regions) and `text-embedding-3-small`."""
    for name in ["aoai-eastus", "aoai-westeurope"]:
        resource = next(r for r in SIM_CONFIG["resources"] if r["name"] == name)
        gateway.admin("POST", "/admin/v1/openai/resources", {
            "name": name, "endpoint": sim.url(name), "region": resource["region"],
            "data_zone": resource["data_zone"], "api_key": resource["keys"][0]})
    for resource, deployment in [("aoai-eastus", "gpt-4o"), ("aoai-westeurope", "gpt-4o"),
                                 ("aoai-eastus", "text-embedding-3-small")]:
        gateway.admin("POST", "/admin/v1/openai/deployments", {
            "resource": resource, "name": deployment, "model": deployment, "capacity_tpm": 100000})
    gateway.admin("POST", "/admin/v1/openai/pools", {"alias": "gpt-4o", "members": [
        {"deployment": "aoai-eastus/gpt-4o"}, {"deployment": "aoai-westeurope/gpt-4o"}]})
    gateway.admin("POST", "/admin/v1/openai/pools", {"alias": "text-embedding-3-small", "members": [
        {"deployment": "aoai-eastus/text-embedding-3-small"}]})


@pytest.fixture(scope="session")
def tenant_key(gateway: GatewayProcess, shared_pools: None) -> str:
    """A tenant on the shared pools."""
    gateway.admin("POST", "/admin/v1/tenants", {
        "slug": "sdk-tenant", "display_name": "SDK", "openai": {"isolation": "shared"}})
    return gateway.admin("POST", "/admin/v1/tenants/sdk-tenant/keys", {"name": "sdk"})["key"]


# ---- search through the gateway ----------------------------------------------------------

SDK_SEARCH_TEMPLATE: dict[str, Any] = {
    "name": "sdk-hotels",
    "fields": [
        {"name": "id", "type": "Edm.String", "key": True, "filterable": True, "sortable": True},
        {"name": "name", "type": "Edm.String", "searchable": True, "sortable": True},
        {"name": "description", "type": "Edm.String", "searchable": True},
        {"name": "category", "type": "Edm.String", "filterable": True, "facetable": True},
        {"name": "tags", "type": "Collection(Edm.String)", "filterable": True, "facetable": True},
        {"name": "rating", "type": "Edm.Int32", "filterable": True, "sortable": True,
         "facetable": True},
    ],
    "suggesters": [{"name": "sg", "searchMode": "analyzingInfixMatching",
                    "sourceFields": ["name"]}],
}


@pytest.fixture(scope="session")
def search_tenants(gateway: GatewayProcess, sim: SimProcess) -> dict[str, str]:
    """Tenants on each search placement over the `sdk-hotels` template, by placement:
    ``shared_index`` and ``shared_index_neighbour`` (both in the shared index of
    search-shared-1), ``dedicated_index`` (its own index on search-shared-1) and
    ``dedicated_service`` (search-eu-1, reserved for it). Values are read-write API keys."""
    for name in ["search-shared-1", "search-eu-1"]:
        service = next(s for s in SIM_CONFIG["search_services"] if s["name"] == name)
        body = {"name": name, "endpoint": sim.url(name), "region": service["region"],
                "data_zone": service["data_zone"], "api_key": service["admin_keys"][0]}
        if name == "search-eu-1":
            body["owner_tenant"] = "sdk-own-service"
        gateway.admin("POST", "/admin/v1/search/services", body)
    gateway.admin("POST", "/admin/v1/search/index-templates", SDK_SEARCH_TEMPLATE)
    tenants = {
        "shared_index": ("sdk-shared", "shared_index", "search-shared-1"),
        "shared_index_neighbour": ("sdk-neighbour", "shared_index", "search-shared-1"),
        "dedicated_index": ("sdk-dedicated", "dedicated_index", "search-shared-1"),
        "dedicated_service": ("sdk-own-service", "dedicated_service", "search-eu-1"),
    }
    keys = {}
    for placement, (slug, isolation, service) in tenants.items():
        tenant = gateway.admin("POST", "/admin/v1/tenants", {
            "slug": slug, "display_name": slug,
            "search": {"isolation": isolation, "service": service}})
        assert tenant["search_provisioning"]["state"] == "ready", tenant
        keys[placement] = gateway.admin(
            "POST", f"/admin/v1/tenants/{slug}/keys", {"name": "sdk", "scope": "read-write"})["key"]
    return keys
