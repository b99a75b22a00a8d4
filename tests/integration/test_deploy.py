"""deploy/ linted here: systemd units by systemd-analyze, the Kubernetes manifests built by kustomize and
checked for what a cluster would refuse or silently get wrong (selectors, ports, volumes, secrets), the
compose file and Dockerfile for the ports, images and checks the node's configuration implies, and the
configurations themselves validated as the node loads them."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from dicomnode.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
README = DEPLOY.parent / "README.md"


def _config(path: Path) -> dict[str, Any]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    if "http" not in Settings.model_fields:  # the HTTP API lands from another branch; validate the rest
        data.pop("http", None)
    Settings.model_validate(data)
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _ports(path: Path) -> tuple[int, int]:
    data = _config(path)
    return int(data["node"]["port"]), int(data.get("http", {}).get("port", 8080))


@pytest.mark.parametrize("name", ["dicomnode.toml", "k8s/dicomnode.toml"])
def test_configurations_are_valid(name: str) -> None:
    data = _config(DEPLOY / name)
    assert data["node"]["data_dir"] == "/var/lib/dicomnode"
    assert data["http"]["enabled"] is True and data["http"]["host"] == "0.0.0.0"


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    dicomnode = shutil.which("dicomnode")
    if dicomnode is None:
        pytest.skip("the dicomnode command is not installed (pip install -e .)")
    units = []
    for unit in sorted((DEPLOY / "systemd").iterdir()):
        # verified as installed: the ExecStart binary must exist, so point it at this host's dicomnode
        text = unit.read_text().replace("/opt/dicomnode/venv/bin/dicomnode", dicomnode)
        target = tmp_path / (unit.name.replace("@.service", "@1.service"))
        target.write_text(text)
        units.append(str(target))
    result = subprocess.run([analyze, "verify", "--man=no", *units], capture_output=True, text=True, timeout=60)
    ours = [
        line for line in (result.stdout + result.stderr).splitlines() if str(tmp_path) in line or "dicomnode" in line
    ]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr
    names = {Path(u).name for u in units}
    assert {"dicomnode.service", "dicomnode-scp.service", "dicomnode-worker@1.service"} <= names
    assert "dicomnode-dispatch.service" in names


def _kustomize(folder: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (kustomize builds the manifests)")
    out = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}


def test_kubernetes_manifests_hold_together() -> None:
    docs = _kustomize(DEPLOY / "k8s")
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), doc
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "dicomnode", doc["metadata"]
    by_kind: dict[str, set[str]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], set()).add(doc["metadata"]["name"])
    workloads = _workloads(docs)
    assert {"dicomnode-receiver", "dicomnode-worker", "dicomnode-dispatcher", "postgres"} <= set(workloads)
    assert by_kind["StatefulSet"] == {"postgres"}
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    for name, work in workloads.items():
        spec = work["spec"]
        template_labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= template_labels.items(), name
        pod = spec["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            assert container.get("image"), name
            for mount in container.get("volumeMounts", []):
                claim_templates = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
                assert mount["name"] in volumes or mount["name"] in claim_templates, (name, mount)
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]]["stringData"], (name, ref)
            for source in container.get("envFrom", []):
                assert source["secretRef"]["name"] in secrets
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in by_kind["PersistentVolumeClaim"]
            if "configMap" in volume:
                assert volume["configMap"]["name"] in by_kind["ConfigMap"]
        if name.startswith("dicomnode-"):
            container = pod["containers"][0]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert (
                container["args"][0]
                == {"receiver": "scp", "worker": "worker", "dispatcher": "dispatch"}[name.removeprefix("dicomnode-")]
            )
            assert "$(DATABASE_URL)" in container["args"]
    # the PVC every dicomnode pod shares can be mounted by several nodes at once
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    # Services reach containers on ports that exist, and the receiver's match the configuration
    for service in (d for d in docs if d["kind"] == "Service"):
        selected = [
            w
            for w in workloads.values()
            if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected, service["metadata"]["name"]
        named = {
            p["name"]: p["containerPort"]
            for c in selected[0]["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in named, (service["metadata"]["name"], port)
    dicom, http = _ports(DEPLOY / "k8s" / "dicomnode.toml")
    receiver = workloads["dicomnode-receiver"]["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in receiver["ports"]} == {"dicom": dicom, "http": http}
    assert receiver["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    assert config_map["data"]["dicomnode.toml"] == (DEPLOY / "k8s" / "dicomnode.toml").read_text()


def test_kubernetes_gpu_worker_patch(tmp_path: Path) -> None:
    overlay = tmp_path / "gpu"
    overlay.mkdir()
    shutil.copy(DEPLOY / "k8s" / "worker-gpu.yaml", overlay / "worker-gpu.yaml")
    base = Path("..") / Path(*[".."] * (len(overlay.parts) - 1)) / DEPLOY.relative_to("/") / "k8s"
    (overlay / "kustomization.yaml").write_text(
        f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {base}\n"
        "patches:\n  - path: worker-gpu.yaml\n"
    )
    worker = _workloads(_kustomize(overlay))["dicomnode-worker"]
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert container["image"] and container["args"][0] == "worker"  # the patch merged, did not replace


def test_compose_file_is_consistent() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"node", "postgres", "orthanc", "ohif"} <= set(services)
    orthanc = services["orthanc"]["environment"]
    assert orthanc["TCP_NODELAY"] == "1" and orthanc["DICOM_WEB_PLUGIN_ENABLED"] == "true"
    dicom, http = _ports(DEPLOY / "dicomnode.toml")
    node = services["node"]
    assert f"{dicom}:{dicom}" in node["ports"] and f"{http}:{http}" in node["ports"]
    assert f"127.0.0.1:{http}/health" in " ".join(node["healthcheck"]["test"])
    assert (DEPLOY / node["build"]["context"] / node["build"]["dockerfile"]).is_file()
    # the node's destination is the Orthanc service, at the DICOM port Orthanc listens on
    destination = tomllib.loads((DEPLOY / "dicomnode.toml").read_text())["destinations"][0]
    assert destination["host"] == "orthanc" and str(destination["port"]) == orthanc["ORTHANC__DICOM_PORT"]
    assert destination["ae_title"] == orthanc["ORTHANC__DICOM_AET"]
    # Orthanc knows the node under the AE title and port it listens on
    assert '["DICOMNODE", "node", 11112]' in orthanc["ORTHANC__DICOM_MODALITIES"]
    for name, service in services.items():
        assert service.get("image") or service.get("build"), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), (name, source)
            else:
                assert source in compose["volumes"], (name, source)
    db_url = " ".join(node["command"])
    env = services["postgres"]["environment"]
    assert f"{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@postgres:5432/{env['POSTGRES_DB']}" in db_url


def test_docker_compose_config() -> None:
    docker = shutil.which("docker")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30) if docker else None
    if probe is None or probe.returncode != 0:
        pytest.skip(
            "docker compose is not available here (the structure is checked by test_compose_file_is_consistent)"
        )
    result = subprocess.run(
        [docker, "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"], capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    pin = re.search(r"torch==([0-9.]+)", README.read_text())
    assert pin and f"torch=={pin.group(1)}" in text and "download.pytorch.org/whl/cpu" in text
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1] not in ("root", "0")
    dicom, http = _ports(DEPLOY / "dicomnode.toml")
    assert re.search(rf"^EXPOSE {dicom} {http}$", text, re.M)
    assert f"http://127.0.0.1:{http}/health" in text.split("HEALTHCHECK", 1)[1]
    for copied in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (DEPLOY.parent / copied).exists(), copied
