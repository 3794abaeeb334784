"""Two registrations at once (components/registry.py): two processes each register a version
of the same model in one real MLflow sqlite store and promote it at the same moment. Both get
versions of their own, and the champion is consistent: the promotions were decided one after
the other (`promotion_lock`), so exactly one version was compared with no champion and the
other with it, and the champion is the version the later decision left."""

from __future__ import annotations

import multiprocessing as mp
import os

import mlflow
import pytest

from components.registry import CHAMPION, LOCK_SUFFIX, VALID_DATA_TAG

DATA = {"data.dataset": "rafdb", VALID_DATA_TAG: "a1" * 32}


def register_and_promote(uri: str, name: str, accuracy: float, barrier, results) -> None:
    os.environ["MLFLOW_TRACKING_URI"] = uri
    from components.config import PromoteConfig
    from components.registry import promote

    client = mlflow.MlflowClient(uri)
    run = client.create_run("0", run_name=f"register-{name}")  # its registration run: the numbers the gate reads
    for s in (2, 4, 8):
        client.log_metric(run.info.run_id, f"valid_acc_x{s}", accuracy)
    client.log_param(run.info.run_id, "scales", "x2,x4,x8")
    barrier.wait()  # both register at once
    version = client.create_model_version(name, source=f"file:///models/{accuracy}", run_id=run.info.run_id,
                                          tags=DATA).version
    barrier.wait()  # and promote at once
    results.put((accuracy, promote(PromoteConfig(model_name=name, version=str(version)))))


@pytest.mark.parametrize("round_", range(2))
def test_two_registrations_at_once_give_two_versions_and_one_consistent_champion(tmp_path, round_):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    name = "fsrfer"
    mlflow.MlflowClient(uri).create_registered_model(name)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=register_and_promote, args=(uri, name, acc, barrier, results)) for acc in (0.5, 0.6)]
    for p in procs:
        p.start()
    decisions = dict(results.get(timeout=180) for _ in procs)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0

    client = mlflow.MlflowClient(uri)
    versions = {int(v.version): client.get_model_version(name, v.version).tags
                for v in client.search_model_versions(f"name='{name}'")}
    assert sorted(versions) == [1, 2]
    assert sorted(d["version"] for d in decisions.values()) == [1, 2]
    # decided one after the other: one against no champion, the other against that one
    compared = sorted(t["promotion_compared_to"] for t in versions.values())
    first = next(v for v, t in versions.items() if t["promotion_compared_to"] == "none")
    second = 3 - first
    assert compared == sorted(["none", str(first)]), versions
    assert versions[first]["promotion_decision"] == "promoted"
    champion = int(client.get_model_version_by_alias(name, CHAMPION).version)
    expected = second if versions[second]["promotion_decision"] == "promoted" else first
    assert champion == expected
    # the better version is champion whichever order the two were decided in (0.6 beats 0.5, not the reverse)
    assert champion == decisions[0.6]["version"]
    # the lock is gone
    assert not client.search_registered_models(f"name='{name}{LOCK_SUFFIX}'")
