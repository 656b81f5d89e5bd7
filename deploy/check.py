"""Checks deploy/kubernetes without a cluster (`make test-deploy`).

1. Every manifest validates against the Kubernetes schemas, strictly (kubernetes-validate,
   offline): an unknown or misspelt field fails.
2. Each kustomization lists every manifest beside it, and lists nothing that is missing.
3. The Grafana dashboard (deploy/grafana/bulkhead.json) is JSON and every metric it queries
   is one the gateway exports (named in the source).
4. The Deployment agrees with the gateway: its termination grace covers the drain (shutdown
   delay + grace from the ConfigMap), probes use /healthz and /readyz, the pod runs as the
   image's numeric user with a read-only root filesystem, and the data directory is a volume.
Exits non-zero, naming what is wrong, on the first class of failure found.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent / "kubernetes"


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def main() -> int:
    manifests = sorted(p for p in ROOT.rglob("*.yaml") if p.name != "kustomization.yaml")
    validate = Path(sys.executable).with_name("kubernetes-validate")
    run = subprocess.run(
        [str(validate), "--strict", "--quiet", *map(str, manifests)],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0 or "ERROR" in run.stdout + run.stderr:
        print(run.stdout + run.stderr, file=sys.stderr)
        print("manifests: schema validation failed", file=sys.stderr)
        return 1

    problems: list[str] = []
    for kustomization in ROOT.rglob("kustomization.yaml"):
        listed = {
            (kustomization.parent / r).resolve()
            for r in docs(kustomization)[0].get("resources", [])
        }
        patches = {
            (kustomization.parent / p["path"]).resolve()
            for p in docs(kustomization)[0].get("patches", [])
        }
        beside = {p.resolve() for p in kustomization.parent.glob("*.yaml")} - {kustomization.resolve()}
        for missing in sorted(beside - listed - patches):
            problems.append(f"{kustomization}: does not list {missing.name}")
        for absent in sorted(p for p in listed | patches if not p.exists()):
            problems.append(f"{kustomization}: lists {absent}, which does not exist")

    config = docs(ROOT / "base" / "configmap.yaml")[0]["data"]
    deployment = docs(ROOT / "base" / "deployment.yaml")[0]
    pod = deployment["spec"]["template"]["spec"]
    drain = int(config["BULKHEAD_SHUTDOWN_DELAY_SECONDS"]) + int(config["BULKHEAD_SHUTDOWN_GRACE_SECONDS"])
    if pod.get("terminationGracePeriodSeconds", 30) <= drain:
        problems.append(f"terminationGracePeriodSeconds must exceed the drain ({drain} s)")
    gateway = next(c for c in pod["containers"] if c["name"] == "gateway")
    if gateway["readinessProbe"]["httpGet"]["path"] != "/readyz":
        problems.append("the readiness probe must be /readyz (it turns 503 at SIGTERM)")
    if gateway["livenessProbe"]["httpGet"]["path"] != "/healthz":
        problems.append("the liveness probe must be /healthz")
    security = pod["securityContext"]
    if not (security.get("runAsNonRoot") and isinstance(security.get("runAsUser"), int)):
        problems.append("the pod must run as a numeric non-root user")
    if not gateway["securityContext"].get("readOnlyRootFilesystem"):
        problems.append("the gateway's root filesystem must be read-only")
    mounts = {m["mountPath"] for m in gateway["volumeMounts"]}
    if config["BULKHEAD_DATA_DIR"] not in mounts:
        problems.append("the data directory (ledger spill) must be a volume")
    dockerfile = (ROOT.parent.parent / "Dockerfile").read_text()
    if f"USER {security.get('runAsUser')}" not in dockerfile:
        problems.append("the pod's runAsUser must be the Dockerfile's numeric USER")

    dashboard = json.loads((ROOT.parent / "grafana" / "bulkhead.json").read_text())
    source = "".join(p.read_text() for p in (ROOT.parent.parent / "crates").rglob("*.rs"))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for metric in re.findall(r"bulkhead_[a-z_]+", target["expr"]):
                exported = re.sub(r"_(bucket|sum|count)$", "", metric)
                if f'"{exported}"' not in source:
                    problems.append(f"dashboard panel {panel['title']!r} queries {metric}, which the gateway does not export")

    for problem in problems:
        print(f"manifests: {problem}", file=sys.stderr)
    if not problems:
        print(f"manifests: {len(manifests)} files valid; kustomizations, drain and dashboard consistent")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
