"""Prefect tasks shared by the flows: params.yaml updates, one task per DVC stage, promotion.

The flows hold no pipeline logic of their own: dvc.yaml is the one DAG. A flow asks DVC
for the stages its target depends on, in dependency order, and runs each with
`dvc repro --single-item <stage>` as its own Prefect task, so the Prefect UI shows the
chain while DVC alone decides what is stale (an up-to-date stage is skipped, its
outputs reused). Parameters of a flow become params.yaml values first (round-trip
YAML: comments and key order kept), exactly as a user editing params.yaml would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from components.config import load_yaml
from components.io import atomic_file
from components.metrics import format_table
from components.tracking import PIPELINE_RUN_ENV

ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # e.g. Ray's "\x1b[36m(RayTrainWorker pid=1)\x1b[0m"
TQDM_BAR = re.compile(r"^[^|]*\d+%\|[^|]*\| \d+/\d+ \[[^\]]*\]")  # "teacher:  53%|█████▎    | 8/15 [05:57<04:04, 34.93s/epoch]"
DVC_HINTS = ("To track the changes with git", "git add ", "To enable auto staging", "dvc config core.autostage",
             "Use `dvc push` to send your updates")  # DVC's per-stage advice: noise in a flow's log
BAD_INPUT_EXIT = 2  # `fsrfer` exits 2 on bad input (components/cli.py): retrying cannot help


class StageFailed(RuntimeError):
    def __init__(self, stage: str, returncode: int, output: str):
        super().__init__(f"dvc stage {stage!r} failed with exit code {returncode}:\n{output[-4000:]}")
        self.stage, self.returncode = stage, returncode
        self.command_failed = "failed to run:" in output  # DVC's words when the stage's cmd exited non-zero


def _transient(task_, task_run, state) -> bool:
    """Retry a stage whose command failed (a crashed worker, a lost connection), not one that
    failed on bad input (exit 2) or in DVC itself (a retry would only repeat those)."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, StageFailed) and error.command_failed and error.returncode != BAD_INPUT_EXIT


def run_name() -> str:
    """A flow run's name: flow, deployment (or `local`), profile and start time, e.g.
    `train-fsrfer-ferplus-ferplus-20261205-142501` (Prefect's default is two random words)."""
    from datetime import UTC, datetime

    from prefect.runtime import deployment, flow_run

    profile = (flow_run.parameters or {}).get("profile") or "params"
    return f"{flow_run.flow_name}-{deployment.name or 'local'}-{profile}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


def project_root(project_dir: str | None) -> Path:
    """The project checkout a flow runs in: `project_dir`, else the working directory (a
    deployment's is the directory `prefect deploy` ran in); it must hold dvc.yaml."""
    root = Path(project_dir or os.getcwd()).resolve()
    if not (root / "dvc.yaml").is_file():
        raise ValueError(f"{root} is not the project root (no dvc.yaml); pass project_dir")
    return root


def project_env() -> dict[str, str]:
    """This interpreter's bin dir first on PATH (so DVC's `fsrfer <stage>` commands resolve), quiet tools,
    and the flow run's name for the stages' MLflow runs (their `pipeline_run` tag)."""
    from prefect.runtime import flow_run

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if flow_run.name:
        env[PIPELINE_RUN_ENV] = flow_run.name
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    return env


def stages_for(project: Path, target: str) -> list[str]:
    """`target` and every pipeline stage it depends on, in dependency order (from dvc.yaml)."""
    import networkx as nx
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with Repo(str(project)) as repo:
        graph = repo.index.graph  # edges: stage -> the stages it depends on
        by_name = {s.name: s for s in graph.nodes if isinstance(s, PipelineStage)}
        if target not in by_name:
            raise ValueError(f"dvc.yaml has no stage {target!r} (stages: {sorted(by_name)})")
        needed = nx.descendants(graph, by_name[target]) | {by_name[target]}
        order = [s for s in reversed(list(nx.topological_sort(graph))) if s in needed]
        return [s.name for s in order if isinstance(s, PipelineStage)]


def flatten_updates(nested: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """{'prepare': {'hr_size': 48}} -> {'prepare.hr_size': 48}."""
    return {f"{section}.{key}": value for section, values in (nested or {}).items() for key, value in values.items()}


def load_profile(project: Path, profile: str | None) -> dict[str, Any]:
    """profiles/<profile>.yaml as flat 'section.key' updates ({} for None)."""
    if not profile:
        return {}
    path = project / "profiles" / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (project / "profiles").glob("*.yaml"))
        raise ValueError(f"unknown profile {profile!r}: no {path} (profiles: {known})")
    return flatten_updates(load_yaml(path.read_text(), str(path)))


def update_params_file(path: Path, updates: dict[str, Any]) -> dict[str, Any]:
    """Set 'section.key' values in params.yaml (comments kept; atomic); returns the ones that changed."""
    from ruamel.yaml import YAML


    yaml = YAML()
    yaml.preserve_quotes = True
    params = yaml.load(path.read_text())
    changed = {}
    for dotted, value in updates.items():
        section, _, key = dotted.partition(".")
        if section not in params or not key:
            raise ValueError(f"{path}: no section {section!r} for parameter {dotted!r}")
        if key not in params[section]:
            raise ValueError(f"{path}: section {section!r} has no key {key!r} (keys: {list(params[section])})")
        if params[section][key] != value:
            params[section][key] = value
            changed[dotted] = value
    if changed:
        with atomic_file(path) as tmp, open(tmp, "w") as fh:
            yaml.dump(params, fh)
    return changed


@task(name="params")
def apply_params(project: Path, updates: dict[str, Any]) -> dict[str, Any]:
    """Write the flow's parameters into params.yaml; DVC then sees which stages they touch."""
    changed = update_params_file(project / "params.yaml", updates)
    get_run_logger().info("params.yaml: %s", json.dumps(changed) if changed else "unchanged")
    return changed


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=_transient, task_run_name="dvc-{stage}")
def dvc_stage(project: Path, stage: str) -> str:
    """`dvc repro --single-item <stage>`: 'ran', 'skipped' (DVC found it up to date) or 'resumed from
    iteration N' (a Ray training stage that went on from the checkpoint of an interrupted run)."""
    logger = get_run_logger()
    lines = []
    # Stream the stage's output into the Prefect log as it comes (progress, Ray, MLflow).
    with subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--single-item", stage], cwd=project,
                          env=project_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        for raw in proc.stdout:  # bytes, split on \n only: a progress bar's \r updates stay on one line
            line = raw.decode(errors="replace").rstrip().rsplit("\r", 1)[-1]  # its last state
            line = TQDM_BAR.sub("", ANSI_COLOUR.sub("", line))  # no colour codes (Ray's prefixes), no tqdm bar
            if line and not line.lstrip().startswith(DVC_HINTS):
                lines.append(line)
                logger.info("%s | %s", stage, line[:1000])
    output = "\n".join(lines)
    if proc.returncode != 0:
        bad_input = f"fsrfer {stage}: error:" in output
        raise StageFailed(stage, BAD_INPUT_EXIT if bad_input else proc.returncode, output)
    if f"Running stage '{stage}'" not in output:
        result = "skipped"
    else:  # a training stage's summary says whether it went on from a checkpoint of an interrupted run
        resumed = re.findall(r'"resumed_from": (\d+)', output)
        result = f"resumed from iteration {resumed[-1]}" if resumed and int(resumed[-1]) > 0 else "ran"
    logger.info("stage %s: %s", stage, "up to date, skipped" if result == "skipped" else result)
    return result


RUN_REFS = "refs/fsrfer-runs"  # one git ref per flow run: its whole checkout as it ran


def snapshot_checkout(project: Path, ref: str, message: str) -> str:
    """Commit the checkout's working tree as it is (code, params.yaml, dvc.lock; every file git
    does not ignore) under `ref`, beside the branch: the branch, the index and the files are
    untouched. Returns the commit's sha. Restoring it: `git worktree add <dir> <sha>`."""
    env = project_env()
    for key, value in (("GIT_AUTHOR_NAME", "fsrfer"), ("GIT_AUTHOR_EMAIL", "fsrfer@localhost")):
        env.setdefault(key, value)
        env.setdefault(key.replace("AUTHOR", "COMMITTER"), value)

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=project, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed in {project}: {out.stderr.strip()}")
        return out.stdout.strip()

    with tempfile.TemporaryDirectory() as tmp:
        env["GIT_INDEX_FILE"] = str(Path(tmp) / "index")  # a private index: the user's stays as it is
        head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=project, env=env,
                              capture_output=True, text=True).stdout.strip()
        if head:
            git("read-tree", head)
        git("add", "-A")
        tree = git("write-tree")
        commit = git("commit-tree", tree, *(("-p", head) if head else ()), "-m", message)
    git("update-ref", ref, commit)
    return commit


@task(name="keep-run")
def keep_run_state(project: Path, record: dict) -> dict[str, str]:
    """Keep this flow run's checkout (params.yaml + dvc.lock + code) under a git ref named after
    the flow run, and tag the registered version with it (`run_ref`, `run_commit`)."""
    from prefect.runtime import flow_run

    from components.registry import tag_version

    ref = f"{RUN_REFS}/{flow_run.get_name() or 'run'}-{str(flow_run.get_id() or '')[:8]}".rstrip("-")
    commit = snapshot_checkout(project, ref, f"{record['model_name']} v{record['version']}: flow run "
                                              f"{flow_run.get_name()} ({flow_run.get_id()})")
    tags = {"run_ref": ref, "run_commit": commit}
    tag_version(record["model_name"], record["version"], tags)
    get_run_logger().info("run state kept as %s (%s); restore: git worktree add <dir> %s", ref, commit[:12], commit)
    return tags


@task(name="promote")
def promote_task(project: Path, model_name: str, version: int | None = None) -> dict:
    """`fsrfer promote --model <name> [--version <v>]`: the gated promotion (components/registry.py,
    params.yaml: promote) of `version` (a training flow's: the one its run registered, not whichever
    is `challenger` by then), else of the challenger."""
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "decision.json"
        out = subprocess.run([sys.executable, "-m", "components.cli", "promote", "--model", model_name,
                              *(("--version", str(version)) if version else ()), "--summary", str(summary)],
                             cwd=project, env=project_env(), capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"fsrfer promote failed ({out.returncode}):\n{out.stderr[-3000:]}")
        decision = json.loads(summary.read_text())
    get_run_logger().info("promotion of %s v%s: %s (%s)", model_name, decision["version"],
                          "promoted" if decision["promoted"] else "not promoted", decision["reason"])
    return decision


def mlflow_ui_url(tracking_uri: str) -> str:
    """Where a person opens the MLflow UI: the tracking server itself, or a local `mlflow ui`."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return os.environ.get("FSRFER_MLFLOW_UI", "http://127.0.0.1:5000")


@task(name="report")
def publish_report(project: Path, record_path: str, metrics_path: str, stage_results: dict[str, str],
                   decision: dict | None, artifact_key: str) -> str:
    """Prefect artifacts: the per-scale accuracy table (markdown) and links to the MLflow run and version."""

    table = json.loads((project / metrics_path).read_text())
    cost = table.get("cost", {}) if "table" in table else {}  # the compare stage's {"table", "cost"}
    table = table.get("table", table)
    record = json.loads((project / record_path).read_text())
    ui = mlflow_ui_url(record["tracking_uri"])
    version_url = f"{ui}/#/models/{record['model_name']}/versions/{record['version']}"
    stages = ", ".join(f"{s}: {r}" for s, r in stage_results.items())
    lines = [f"# {record['model_name']} v{record['version']}", "",
             f"Validation mean accuracy over the LR scales: **{100 * record['valid_acc_mean']:.1f}%**", "",
             "Accuracy (%) per scale (x1 = HR):", "", format_table(table), f"Stages: {stages}", ""]
    if cost:
        lines += ["Cost per face: " + "; ".join(f"{m} {c['params'] / 1e6:.2f} M params, {c['flops'] / 1e6:.0f} MFLOPs"
                                                for m, c in cost.items()), ""]
    if decision is not None:
        lines.append(f"Promotion: **{'promoted to champion' if decision['promoted'] else 'not promoted'}** "
                     f"({decision['reason']})")
    lines.append(f"\nMLflow registry: [{record['model_name']} v{record['version']}]({version_url}) "
                 f"(tracking URI `{record['tracking_uri']}`)")
    markdown = "\n".join(lines)
    create_markdown_artifact(key=artifact_key, markdown=markdown, description="per-scale accuracy")
    create_link_artifact(key=f"{artifact_key}-mlflow-version", link=version_url,
                         link_text=f"{record['model_name']} v{record['version']}")
    run_url = f"{ui}/#/experiments/{record['experiment_id']}/runs/{record['run_id']}"
    create_link_artifact(key=f"{artifact_key}-mlflow-run", link=run_url,
                         link_text=f"register run {record['run_id']}")
    return markdown


def run_pipeline(project: Path, updates: dict[str, Any], target: str, register_section: str, metrics_section: str,
                 promote: bool, artifact_key: str) -> dict:
    """What every training flow does: params.yaml updates, each DVC stage up to `target` as a task,
    the gated promotion of the version the register stage wrote, the report artifacts."""
    changed = apply_params(project, updates)
    results = {stage: dvc_stage(project, stage) for stage in stages_for(project, target)}
    params = load_yaml((project / "params.yaml").read_text(), "params.yaml")
    record_path = params[register_section]["out"]
    record = json.loads((project / record_path).read_text())
    kept = keep_run_state(project, record)
    decision = promote_task(project, record["model_name"], record["version"]) if promote else None
    publish_report(project, record_path, params[metrics_section]["metrics"], results, decision, artifact_key)
    return {"params_changed": changed, "stages": results, "registered": record, "run_state": kept,
            "promotion": decision}
