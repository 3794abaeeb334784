"""What can be checked of infra/ without Docker or Kubernetes: every YAML parses, the fields
the tools require are there, image tags and rayVersion match pyproject's ray pin, images are
pinned, credentials are not in the files, and every entrypoint names a real command of the
project's CLI (its --help runs, its arguments parse and its --set overrides build the stage's
config from params.yaml). Also the tests' own infrastructure: the Ray temp folder helper."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from components.cli import STAGES, build_parser
from components.config import load_stage_config, parse_overrides, shared_sections
from components.io import BadInput

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
KUBERAY = INFRA / "kuberay"


def ray_pin() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if d.startswith("ray[")]
    match = re.fullmatch(r"ray\[[a-z,]+\]==([0-9.]+)", spec)
    assert match, f"ray must be pinned exactly (a cluster and its drivers run one Ray version): {spec}"
    return match.group(1)


def manifests() -> dict[str, list[dict]]:
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in sorted(KUBERAY.glob("*.yaml"))}


def by_kind(kind: str) -> list[dict]:
    return [d for docs in manifests().values() for d in docs if d.get("kind") == kind]


def containers(doc: dict) -> list[dict]:
    """Every container spec of a manifest (pod templates nested anywhere)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    found.extend(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    return found


def entrypoint_commands(text: str) -> list[list[str]]:
    """The `fsrfer ...` commands of a shell entrypoint ('cd x && fsrfer stage --a b')."""
    return [shlex.split(part)[1:] for part in re.split(r"&&|;|\|\|", text) if shlex.split(part)[:1] == ["fsrfer"]]


@pytest.mark.parametrize("path", sorted([*INFRA.rglob("*.yaml"), *REPO.glob("*.yaml"), *(REPO / "profiles").glob(
    "*.yaml")]), ids=lambda p: str(p.relative_to(REPO)))
def test_every_yaml_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs), path


def test_kubernetes_objects_have_the_required_fields():
    for name, docs in manifests().items():
        for doc in docs:
            if doc.get("kind") == "Kustomization":
                continue
            assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), name
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") == "fsrfer", name
            for c in containers(doc):
                assert c.get("name") and c.get("image"), (name, c)


def test_kustomization_lists_existing_files_and_the_image_tag():
    kust = yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())
    for resource in kust["resources"]:
        assert (KUBERAY / resource).is_file(), resource
    listed = set(kust["resources"]) | {"kustomization.yaml"}
    jobs = {p.name for p in KUBERAY.glob("rayjob-*.yaml")}
    assert set(manifests()) == listed | jobs  # nothing forgotten: only the RayJobs are applied on demand
    (image,) = kust["images"]
    assert image["name"] == "fsrfer" and f"ray{ray_pin()}" in image["newTag"]


def test_raycluster_matches_pyproject_and_has_a_gpu_group():
    (cluster,) = by_kind("RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    assert cluster["spec"]["rayVersion"] == ray_pin()
    spec = cluster["spec"]
    groups = spec["workerGroupSpecs"]
    gpu = [g for g in groups if any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
                                    for c in containers(g))]
    assert gpu, "no worker group requests GPUs"
    for g in groups:
        assert g["groupName"] and g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    assert containers(spec["headGroupSpec"]), "head has no container"


def test_every_image_is_pinned_and_pipeline_images_match_the_ray_pin():
    pin = ray_pin()
    images = [c["image"] for docs in manifests().values() for d in docs for c in containers(d)]
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    images += [s["image"] for s in compose["services"].values()]
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"unpinned image {image}"
        if name.endswith("fsrfer"):
            assert f"-ray{pin}-" in tag, f"{image}: tag does not carry ray {pin}"
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert f"ARG RAY_VERSION={pin}" in dockerfile
    assert "FROM rayproject/ray:${RAY_VERSION}-py311-cpu" in dockerfile
    assert "FROM rayproject/ray:${RAY_VERSION}-py311-gpu" in dockerfile
    assert 'pip install --no-cache-dir ".[infra]"' in dockerfile  # deps from pyproject.toml
    for service in ("mlflow", "prefect-worker"):
        assert compose["services"][service]["build"]["args"]["RAY_VERSION"] == pin


def test_compose_services_have_health_checks_and_no_literal_credentials():
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "minio", "minio-init", "mlflow", "prefect-server", "prefect-worker"} <= set(services)
    for name, svc in services.items():
        if name != "minio-init":  # a one-shot job
            assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|ACCESS_KEY", key):
                assert "${" in str(value), f"{name}.{key}: credentials must come from the env file"
    assert "postgresql" in str(services["mlflow"]["command"]) or "postgresql" in str(services["mlflow"]["environment"])
    assert "s3://" in str(services["mlflow"]["command"])
    assert "postgresql+asyncpg" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    # ${VAR} is compose's interpolation from the env file; $${VAR} is the container's own
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", (INFRA / "compose.yaml").read_text()))
    example = {line.split("=")[0] for line in (INFRA / ".env.example").read_text().splitlines()
               if "=" in line and not line.startswith("#")}
    assert referenced <= example, f"variables missing from infra/.env.example: {referenced - example}"
    assert "/infra/.env" in (REPO / ".gitignore").read_text().splitlines()


def test_rayjobs_target_the_cluster_and_run_real_cli_commands():
    (cluster,) = by_kind("RayCluster")
    jobs = by_kind("RayJob")
    assert {j["metadata"]["name"] for j in jobs} == {"fsrfer-train-fsr", "fsrfer-tune"}
    parser = build_parser()
    for job in jobs:
        assert job["spec"]["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
        yaml.safe_load(job["spec"]["runtimeEnvYAML"])
        commands = entrypoint_commands(job["spec"]["entrypoint"])
        assert len(commands) == 1, job["spec"]["entrypoint"]
        args = parser.parse_args(commands[0])  # every option and --set key=value form is accepted
        assert args.command in ("train_fsr", "tune")
        out = subprocess.run(["fsrfer", commands[0][0], "--help"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "--set" in out.stdout, out.stderr



def test_rayjob_set_overrides_are_keys_and_values_of_the_stages_config():
    """Each `--set section.key=value` of a RayJob goes through the CLI's own path (parse_overrides,
    then load_stage_config on the repo's params.yaml for every config the stage builds): the
    section is one the stage reads, the key a field of its config, the value of the field's type
    and accepted by the config's checks, and the built config holds that value."""
    for job in by_kind("RayJob"):
        name = job["metadata"]["name"]
        (command,) = entrypoint_commands(job["spec"]["entrypoint"])
        args = build_parser().parse_args(command)
        assert args.set, f"{name}: no --set overrides to check"
        stage = STAGES[args.command]
        params = REPO / args.params  # the entrypoint runs in the checkout's root (`cd /workspace/fsrfer`)
        overrides = parse_overrides(args.set)
        try:
            built = {section: load_stage_config(cls, section, params, overrides)
                     for cls, section in [(stage.config, stage.section), *stage.extra.values()]}
        except BadInput as err:
            pytest.fail(f"{name}: {' '.join(command)}: {err}")
        for section, values in overrides.items():
            readers = [cfg for sec, cfg in built.items() if section == sec or section in shared_sections(type(cfg))]
            assert readers, f"{name}: `fsrfer {args.command}` reads {sorted(built)} (+ shared), not [{section}]"
            for key, value in values.items():
                for cfg in readers:
                    expected = tuple(value) if isinstance(value, list) else value
                    assert getattr(cfg, key) == expected, (name, f"{section}.{key}", getattr(cfg, key), expected)


def test_ray_tmpdir_restores_ray_tmpdir_and_removes_its_folder(monkeypatch):
    """tests/conftest.py's ray_tmpdir (the ray_session fixture's RAY_TMPDIR): set inside, restored
    (or unset again) on leaving, even on an error, and its folder gone; every short_tmpdir() folder
    is listed for the session-end removal."""
    from tests.conftest import SHORT_TMPDIRS, ray_tmpdir

    for before in ("/elsewhere/ray", None):
        if before is None:
            monkeypatch.delenv("RAY_TMPDIR", raising=False)
        else:
            monkeypatch.setenv("RAY_TMPDIR", before)
        with pytest.raises(RuntimeError, match="inside"):
            with ray_tmpdir() as path:
                assert os.environ["RAY_TMPDIR"] == path and Path(path).is_dir() and path in SHORT_TMPDIRS
                assert len(path) < 40  # room for Ray's socket paths (107 bytes)
                (Path(path) / "session_1" / "sockets").mkdir(parents=True)
                (Path(path) / "session_1" / "sockets" / "raylet").write_text("x")
                raise RuntimeError("inside")
        assert os.environ.get("RAY_TMPDIR") == before
        assert not Path(path).exists()

def test_worker_entrypoint_runs_real_commands():
    script = (INFRA / "worker-entrypoint.sh").read_text()
    assert subprocess.run(["bash", "-n", str(INFRA / "worker-entrypoint.sh")]).returncode == 0
    for needed in ("dvc pull", "prefect --no-prompt deploy --all", "prefect worker start", "ray start --address"):
        assert needed in script
    pools = {d["work_pool"]["name"] for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    assert pools == {"local-pool"}  # the pool the worker serves by default
    assert 'POOL="${PREFECT_WORK_POOL:-local-pool}"' in script
