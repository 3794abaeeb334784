"""Model tier, a real sqlite registry: a registered version records what it was trained and validated
on, and the gate never compares versions validated on different faces (components/registry.py)."""

from __future__ import annotations

import shutil

import mlflow
import pytest

from components.config import PromoteConfig
from components.data.store import PreparedStore
from components.registry import VALID_DATA_TAG, promote
from tests.conftest import LINEAGE_TAGS


@pytest.fixture
def registry_copy(registered_fsrfer, tmp_path):
    """A copy of the registered tiny run's registry (fsrfer v1 @champion), to change freely."""
    db = tmp_path / "mlflow.db"
    shutil.copy(registered_fsrfer.root / "mlflow.db", db)
    uri = f"sqlite:///{db}"
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)  # a version's source (models:/m-<id>) resolves in the global store: this one
    try:
        yield mlflow.MlflowClient(uri)
    finally:
        mlflow.set_tracking_uri(previous)
        mp.undo()


def challenger_like(client, champion, metrics: dict[str, float] | None = None, **changes: str) -> str:
    """A new version of fsrfer with the champion's model and tags (some changed), registered from a new run
    with the champion's run's metrics and params (`metrics` changed), as alias challenger."""
    source = client.get_run(champion.run_id)
    run = client.create_run(source.info.experiment_id, run_name="register-fsrfer")
    for key, value in (source.data.metrics | (metrics or {})).items():
        client.log_metric(run.info.run_id, key, value)
    for key, value in source.data.params.items():
        client.log_param(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    version = client.create_model_version("fsrfer", champion.source, run_id=run.info.run_id,
                                          tags=dict(champion.tags) | changes)
    client.set_registered_model_alias("fsrfer", "challenger", version.version)
    return version.version


def test_a_version_records_the_data_it_was_trained_and_validated_on(registry_copy, tiny_run):
    version = registry_copy.get_model_version_by_alias("fsrfer", "champion")
    tags, params = version.tags, registry_copy.get_run(version.run_id).data.params
    store = PreparedStore(tiny_run.prepared)
    assert tags[VALID_DATA_TAG] == store.split_sha256("valid")
    assert tags["data.train_sha256"] == store.split_sha256("train") != tags[VALID_DATA_TAG]
    assert tags["data.dataset"] == "rafdb" and (params["data.hr_size"], params["data.channels"]) == ("64", "3")
    assert params["data.classes"].split(",") == store.classes


def test_a_versions_tags_are_its_identity_and_lineage_and_its_numbers_are_on_its_run(registry_copy):
    """The version page lists a handful of tags (data, model and code hashes, the promotion decision), not
    its metrics and params: those are on the registration run it links to, where the gate reads them."""
    version = registry_copy.get_model_version_by_alias("fsrfer", "champion")
    assert {"data.dataset", VALID_DATA_TAG, "data_sha256", "teacher_sha256", "generator_sha256", "git_commit",
            "promotion_decision"} <= set(version.tags) <= LINEAGE_TAGS, sorted(version.tags)
    run = registry_copy.get_run(version.run_id)
    assert {"valid_acc_x2", "valid_acc_x4", "valid_acc_x8", "valid_acc_mean", "test_acc_x8", "bicubic_valid_acc_x8",
            "bicubic_test_acc_x1"} <= set(run.data.metrics)
    assert run.data.params["scales"] == "x2,x4,x8" and "train.sigma" in run.data.params
    assert run.data.params["g_scales"] in version.description  # the card says where G applies


def test_a_version_has_a_model_card_and_a_logged_model_with_its_data_and_metrics(registry_copy, tiny_run):
    """What a reviewer sees on the version page: a description (what it is, data, accuracy per scale on valid
    beside bicubic, lineage, how to call it); the LoggedModel is named after the model, with the train and
    valid splits as MLflow datasets (name, digest, source) and its valid metrics attached with that dataset."""
    version = registry_copy.get_model_version_by_alias("fsrfer", "champion")
    card, tags, metrics = version.description, version.tags, registry_copy.get_run(version.run_id).data.metrics
    assert card.startswith(f"# fsrfer v{version.version}\n") and "FSR-FER" in card
    assert "| accuracy (%) | x2 | x4 | x8 |" in card and "downscales at x2, x4, x8." in card
    for label, prefix in (("fsrfer valid", "valid_acc_"), ("bicubic valid", "bicubic_valid_acc_")):
        row = " | ".join(f"{100 * metrics[f'{prefix}{k}']:.1f}" for k in ("x2", "x4", "x8"))
        assert f"| {label} | {row} |" in card, (label, row)
    assert tags["data.train_sha256"] in card and 'load_model("models:/fsrfer@champion")' in card
    assert version.source.startswith("models:/m-")  # the sqlite registry links a version to its LoggedModel by source
    model = mlflow.get_logged_model(version.source.removeprefix("models:/"))
    assert model.name == "fsrfer"
    store = PreparedStore(tiny_run.prepared)
    run = registry_copy.get_run(version.run_id)
    datasets = {(d.dataset.name, d.dataset.digest, d.dataset.source) for d in run.inputs.dataset_inputs}
    for split in ("train", "valid"):
        assert any(name == f"rafdb-{split}" and digest == store.split_sha256(split)[:16] and
                   str(store.root.resolve()) in source for name, digest, source in datasets), (split, datasets)
    on_model = {m.key: m for m in model.metrics}
    assert on_model["valid_acc_mean"].value == pytest.approx(metrics["valid_acc_mean"])
    assert on_model["valid_acc_x8"].dataset_name == "rafdb-valid"
    assert on_model["valid_acc_x8"].dataset_digest == store.split_sha256("valid")[:16]


def test_better_numbers_on_other_faces_do_not_take_the_champion(registry_copy):
    champion = registry_copy.get_model_version_by_alias("fsrfer", "champion")
    run = registry_copy.get_run(champion.run_id)
    better = {k: 0.999 for k in run.data.metrics if k.startswith("valid_acc_")}
    other = challenger_like(registry_copy, champion, better, **{"data.dataset": "ferplus", VALID_DATA_TAG: "0" * 64})
    decision = promote(PromoteConfig(model_name="fsrfer"))
    assert not decision["promoted"] and "other data" in decision["reason"], decision
    assert registry_copy.get_model_version_by_alias("fsrfer", "champion").version == champion.version
    assert registry_copy.get_model_version("fsrfer", other).tags["promotion_decision"] == "rejected"
    # the same numbers on the champion's own validation faces do take it
    same = challenger_like(registry_copy, champion, better)
    assert promote(PromoteConfig(model_name="fsrfer"))["promoted"]
    assert registry_copy.get_model_version_by_alias("fsrfer", "champion").version == same
