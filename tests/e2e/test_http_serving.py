"""The champion over HTTP: a real `mlflow models serve -m models:/fsrfer@champion` on a loopback
port answers faces and scenes as the in-process pyfunc does, refuses bad payloads with a clear
message, and keeps serving."""

from __future__ import annotations

import base64
import os
import random
import socket
import subprocess
import time

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
import requests

from tests.model.test_scenes import compose_scene, png


def start_server(uri: str, log_path) -> tuple[subprocess.Popen, str]:
    """`mlflow models serve` on a random loopback port; retried on another port if that one is taken."""
    for _ in range(5):
        port = random.Random(os.getpid() + time.time_ns()).randint(20000, 60000)
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                continue  # someone listens there already
        log = open(log_path, "w")
        server = subprocess.Popen(["mlflow", "models", "serve", "-m", "models:/fsrfer@champion", "--env-manager", "local",
                                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                  stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"MLFLOW_TRACKING_URI": uri},
                                  start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            if server.poll() is not None:
                break  # exited: the port was taken between the probe and the bind, or a real failure
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    return server, url
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        server.kill()
        if "address already in use" not in log_path.read_text().lower():
            raise AssertionError(f"mlflow models serve did not come up:\n{log_path.read_text()[-3000:]}")
    raise AssertionError("no free port after 5 tries")


@pytest.fixture(scope="module")
def served(registered_fsrfer, tmp_path_factory):
    server, url = start_server(registered_fsrfer.uri, tmp_path_factory.mktemp("serve") / "serve.log")
    yield url
    os.killpg(server.pid, 15)
    server.wait(timeout=30)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def invoke(url: str, payload: dict) -> requests.Response:
    return requests.post(f"{url}/invocations", json=payload, timeout=120)


def test_faces_and_scenes_over_http_match_the_in_process_model(served, registered_fsrfer, tiny_run):
    model = mlflow.pyfunc.load_model(mlflow.MlflowClient(registered_fsrfer.uri).get_model_version_download_uri("fsrfer", "1"))
    classes = list(model.unwrap_python_model().cfg.classes)
    rng = np.random.default_rng(0)
    faces = [png(rng.integers(0, 256, shape, dtype=np.uint8)) for shape in [(16, 16, 3), (64, 64, 3), (20, 31, 3)]]
    reply = invoke(served, {"dataframe_split": {"columns": ["image"], "data": [[b64(f)] for f in faces]}})
    assert reply.status_code == 200, reply.text
    over_http = pd.DataFrame(reply.json()["predictions"])
    local = model.predict(pd.DataFrame({"image": faces}))
    np.testing.assert_allclose(over_http[classes].to_numpy(), local[classes].to_numpy(), atol=1e-6)
    assert list(over_http["label"]) == list(local["label"])

    scene, _ = compose_scene(tiny_run.root / "raw")
    payload = {"dataframe_split": {"columns": ["image"], "data": [[b64(png(scene))]]},
               "params": {"detect": True, "upsample": 2.0}}
    reply = invoke(served, payload)
    assert reply.status_code == 200, reply.text
    over_http = pd.DataFrame(reply.json()["predictions"])
    local = model.predict(pd.DataFrame({"image": [png(scene)]}), params={"detect": True, "upsample": 2.0})
    assert len(over_http) == len(local) >= 2
    assert list(over_http["box_x"]) == list(local["box_x"]) and list(over_http["native_size"]) == list(local["native_size"])
    np.testing.assert_allclose(over_http[classes].to_numpy(), local[classes].to_numpy(), atol=1e-6)


def test_bad_payloads_get_clear_errors_and_the_server_keeps_serving(served):
    good = {"dataframe_split": {"columns": ["image"], "data": [[b64(png(np.full((20, 20, 3), 120, np.uint8)))]]}}

    not_base64 = invoke(served, {"dataframe_split": {"columns": ["image"], "data": [["%%% not base64 %%%"]]}})
    assert not_base64.status_code == 400 and "base64" in not_base64.text.lower(), not_base64.text
    face = good["dataframe_split"]["data"][0][0]
    wrong_column = invoke(served, {"dataframe_split": {"columns": ["picture"], "data": [[face]]}})
    assert wrong_column.status_code == 400 and "image" in wrong_column.text, wrong_column.text
    not_json = requests.post(f"{served}/invocations", data=b"\x00\x01", headers={"Content-Type": "application/json"}, timeout=60)
    assert not_json.status_code == 400

    huge = cv2.imencode(".png", np.zeros((7200, 7200), np.uint8))[1].tobytes()  # 52 MP of black: a small file
    mixed = invoke(served, {"dataframe_split": {"columns": ["image"], "data": [[b64(b"GIF89a junk")], [b64(huge)],
                                                                             good["dataframe_split"]["data"][0]]}})
    assert mixed.status_code == 200, mixed.text
    rows = mixed.json()["predictions"]
    assert "row 0: not a decodable image" in rows[0]["error"]
    assert "row 1: image is 7200x7200, over the 50,000,000-pixel limit" in rows[1]["error"]
    assert rows[2]["error"] == "" and rows[2]["label"]

    bad_param = invoke(served, good | {"params": {"detect": "sometimes"}})  # MLflow's schema check
    assert bad_param.status_code == 400 and "detect" in bad_param.text, bad_param.text
    out_of_range = invoke(served, good | {"params": {"detect": True, "upsample": 20.0}})  # the model's own check
    assert out_of_range.status_code == 400, out_of_range.text
    assert "params.upsample: 20.0 must lie in [1, 8]" in out_of_range.json()["message"], out_of_range.text
    unknown = invoke(served, good | {"params": {"detekt": True}})  # MLflow drops names its schema lacks
    assert unknown.status_code == 200 and "box_x" not in unknown.json()["predictions"][0]
    assert invoke(served, good).status_code == 200  # still serving
