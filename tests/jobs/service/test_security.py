"""A holder of the API token, and hostile files, against the start route and the CLIs (issue 13).

Each numbered repro of the issue is a test here (the numbers are the issue's); the webhook receiver's and
the service's own limits (slow bodies, headers, metrics caps, per-run keys) are in test_service.py. The
start route runs in-process (FastAPI's TestClient over the real app): names, paths, overrides,
conversion, render and Axolotl's own check are all real; only the final `python -m jobs execute` spawn
is recorded instead of started where a test says so, since a training run is not what is under test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLE, jobs_cli, run_cli

from jobs import registry, webhooks
from jobs.service import start as start_mod

TOKEN, SECRET = "tok-security-1", "whsec-security-1"


@pytest.fixture
def api(tmp_path, monkeypatch, sample_out):
    """The real app in-process over a data folder holding one converted set and one brightrun file."""
    from fastapi.testclient import TestClient

    from jobs.service.app import create_app

    monkeypatch.setenv("JOBS_API_TOKEN", TOKEN)
    monkeypatch.setenv("TRAINING_WEBHOOK_SECRET", SECRET)
    monkeypatch.delenv("WEBHOOK_URL", raising=False)
    data = tmp_path / "data"
    shutil.copytree(sample_out, data / "sample")
    (data / "files").mkdir()
    shutil.copyfile(SAMPLE, data / "files" / "sample.json")
    runs = tmp_path / "runs"
    app = create_app(runs, f"sqlite:///{tmp_path / 'registry.db'}", data)
    client = TestClient(app, raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    client.tmp, client.data, client.runs = tmp_path, data, runs
    return client


@pytest.fixture
def spawned(monkeypatch):
    """Record the run's launch instead of starting training (see the module's docstring)."""
    calls = []
    monkeypatch.setattr(start_mod, "spawn", lambda argv, run_dir, env: calls.append((argv, {"env": env})))
    return calls


def everything(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def start(api, **body):
    return api.post("/api/training/jobs", json={"preset": "balanced", "model": "smoke", **body})


# 1. Names are names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value",
    [
        ("preset", "../../../x/P/evil"),
        ("preset", "/etc/passwd"),
        ("preset", "../models/smoke"),  # a model file read as a preset was a KeyError (500)
        ("model", "../presets/balanced"),
        ("hardware", "/tmp/evil"),
    ],
)
def test_1_a_path_as_a_profile_name_is_refused_without_a_trace(api, field, value):
    before = everything(api.tmp)
    r = start(api, data="sample", **{field: value})
    assert (
        r.status_code == 400
        and r.json()["error"].startswith(f"{field} ")
        and "not a path" in r.json()["error"]
    )
    assert everything(api.tmp) == before  # no run folder, here or anywhere above


def test_1_existing_and_missing_files_elsewhere_get_the_same_answer(api, tmp_path):
    (tmp_path / "real.yaml").write_text("lora_r: 8\n")
    exists = start(api, data="sample", preset=str(tmp_path / "real")).json()["error"]
    missing = start(api, data="sample", preset=str(tmp_path / "nothing")).json()["error"]
    assert exists.replace("real", "X") == missing.replace("nothing", "X")


def test_1_the_cli_refuses_a_path_as_a_name_too(tmp_path):
    (tmp_path / "evil.yaml").write_text("lora_r: 8\n")
    proc = subprocess.run(
        [sys.executable, "-m", "axolotl_configs", "render", str(tmp_path / "evil"), "smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "not a path" in proc.stderr and "Traceback" not in proc.stderr
    # Sweeps: by name from axolotl_configs/sweeps/, or the user's own regular file on the command line.
    from axolotl_configs import sweep
    from brightrun.errors import ConfigError

    assert len(sweep.trials("lr-x-rank")) > 0
    with pytest.raises(ConfigError, match="not a path"):
        sweep.trials("..")
    fifo = tmp_path / "sweep.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        sweep.trials(fifo)


@pytest.mark.parametrize("field,value", [("data", "/etc"), ("data", "../.."), ("input", "/etc/hostname")])
def test_1_api_paths_stay_in_the_data_folder(api, field, value):
    r = start(api, **{field: value})
    assert r.status_code == 400 and r.json()["error"].startswith(field), r.text
    assert "/etc" not in r.json()["error"].replace(value, "")


# 2. Overrides through the API are an allow-list ---------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        "dataset_prepared_path=/elsewhere",
        "datasets.0.path=/etc/hostname",
        "hub_model_id=someone/else",
        "trust_remote_code=true",
        "base_model=/tmp/model",
        "plugins=[evil.Plugin]",
        "output_dir=/tmp/out",
        "deepspeed=/nowhere.json",  # a missing file left a run folder with no row (item 7)
        "learning_rate=&a [1]",
        "micro_batch_size=1e308",  # an OverflowError (500) before (item 7)
        "max_steps=2\nbase_model: /x",  # a newline broke the config's header (item 7)
        "lora_r=1.5",
        "lora_dropout=nan",
    ],
)
def test_2_an_override_off_the_list_or_out_of_bounds_is_refused_and_writes_nothing(api, spawned, override):
    before = everything(api.tmp)
    r = start(api, data="sample", overrides=[override])
    assert r.status_code == 400 and r.json()["error"].startswith("override "), r.text
    assert len(r.text) < 1000 and everything(api.tmp) == before and not spawned


def test_2_allowed_overrides_start_a_run_with_a_minimal_environment(api, spawned, monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", "rp-secret")
    monkeypatch.setenv("JOBS_API_TOKENS", "maria:maria-token-0123456789")
    monkeypatch.setenv("MODELS_SERVER_API_KEY", "vllm-key")
    r = start(api, data="sample", overrides=["learning_rate=1e-4", "max_steps=2", "lr_scheduler=linear"])
    assert r.status_code == 202, r.text
    [(argv, kw)] = spawned
    env = kw["env"]
    assert argv[-1] == r.json()["id"] and "JOBS_API_TOKEN" not in env and "RUNPOD_API_KEY" not in env
    assert "JOBS_API_TOKENS" not in env and "MODELS_SERVER_API_KEY" not in env
    assert "TRAINING_WEBHOOK_SECRET" not in env  # it sends no webhooks: it needs no key
    config = (api.runs / r.json()["id"] / "config.yaml").read_text()
    assert "learning_rate: 0.0001" in config and "lr_scheduler: linear" in config
    # With WEBHOOK_URL: the customer's receiver checks one shared secret, so by default the run holds it;
    # per-run keys, opted in, give the run its own key and never the master.
    monkeypatch.setenv("WEBHOOK_URL", "http://127.0.0.1:9/hook")
    assert start_mod.run_env("job-1", "sqlite://")["TRAINING_WEBHOOK_SECRET"] == SECRET
    monkeypatch.setenv("WEBHOOK_RUN_KEYS", "required")
    env = start_mod.run_env("job-1", "sqlite://")
    assert env["TRAINING_WEBHOOK_SECRET"] == webhooks.run_key(SECRET, "job-1") != SECRET


def test_2_4_the_cli_keeps_every_key_but_refuses_aliases_tags_and_newlines(tmp_path, sample_out):
    # The bomb: aliases nested 7 deep (309 characters); its error was 116 MB.
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 8)]
    bomb = "{" + ", ".join(levels) + "}"
    for value in (bomb, "!!python/object:os.system ls", "a\nb"):
        started = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "axolotl_configs",
                "render",
                "balanced",
                "smoke",
                "--data",
                str(sample_out),
            ]
            + [f"special_tokens={value}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert len(proc.stderr) < 2000 and time.monotonic() - started < 60
    ok = subprocess.run(
        [sys.executable, "-m", "axolotl_configs", "render", "balanced", "smoke", "--data", str(sample_out)]
        + ["dataset_prepared_path=/tmp/elsewhere"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "dataset_prepared_path: /tmp/elsewhere" in ok.stdout  # a local user may


# 3. Cancel wins -----------------------------------------------------------------------------------------


def test_3_cancel_right_after_start_stays_cancelled(api):
    """The real launch: `python -m jobs execute` starts, finds its run cancelled and never trains."""
    r = start(api, data="sample", overrides=["max_steps=2"])
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    assert api.delete(f"/api/training/jobs/{run_id}").json()["status"] == "cancelled"
    url = f"sqlite:///{api.tmp / 'registry.db'}"
    run_dir = api.runs / run_id
    deadline = time.monotonic() + 120
    seen = set()
    while time.monotonic() < deadline:
        seen.add(registry.get_job(run_id, url).status)
        if "cancelled before it started" in (run_dir / "logs" / "launcher.log").read_text():
            break
        time.sleep(0.2)
    time.sleep(1)  # anything it did after saying so would show now
    seen.add(registry.get_job(run_id, url).status)
    assert seen == {"cancelled"}, (run_dir / "logs" / "launcher.log").read_text()[-2000:]
    assert (
        not (run_dir / "logs" / "preprocess.log").exists() and not (run_dir / "logs" / "train.log").exists()
    )


# 5, 6. The converter's input and folders; the API's conversions --------------------------------------


def test_5_the_converter_never_replaces_the_folder_its_input_is_in(tmp_path, sample_out):
    folder = tmp_path / "dir"
    shutil.copytree(sample_out, folder)
    shutil.copyfile(SAMPLE, folder / "input.json")
    proc = run_cli("convert", str(folder / "input.json"), "--out", str(folder))
    assert proc.returncode == 2 and "holds the input file" in proc.stderr
    assert (folder / "input.json").read_bytes() == SAMPLE.read_bytes()
    # A folder with a manifest but other files too is not a converter output either.
    other = tmp_path / "other"
    shutil.copytree(sample_out, other)
    (other / "notes.txt").write_text("mine")
    proc = run_cli("convert", str(SAMPLE), "--out", str(other))
    assert proc.returncode == 2 and "did not write" in proc.stderr and (other / "notes.txt").exists()


def test_6_conversions_are_named_by_content_and_a_refused_request_leaves_nothing(api, spawned):
    second = json.loads(SAMPLE.read_text())
    second["conversations"] = second["conversations"][:6]
    second["training_file_metadata"]["total_conversations"] = 6
    (api.data / "a").mkdir()
    (api.data / "b").mkdir()
    shutil.copyfile(SAMPLE, api.data / "a" / "collide.json")
    (api.data / "b" / "collide.json").write_text(json.dumps(second))
    before = everything(api.tmp)
    refused = start(api, input="a/collide.json", overrides=["learning_rate=2"])  # out of bounds
    assert refused.status_code == 400 and everything(api.tmp) == before
    refused = start(api, input="a/collide.json", overrides=["sequence_len=131072"])
    assert refused.status_code == 400, refused.text  # past what the data was measured for: known only
    assert "measured for" in refused.text  # after the conversion, which then goes again
    assert everything(api.tmp) == before
    one = start(api, input="a/collide.json", overrides=["max_steps=1"])
    two = start(api, input="b/collide.json", overrides=["max_steps=1"])
    assert one.status_code == two.status_code == 202, (one.text, two.text)
    manifests = sorted((api.data / "converted").glob("sha256-*/manifest.json"))
    counts = sorted(json.loads(m.read_text())["counts"]["conversations"] for m in manifests)
    assert len(manifests) == 2 and counts[0] < counts[1]  # two folders, neither replaced


# 7, 8. No 500s ---------------------------------------------------------------------------------------


def test_8_cancel_of_a_job_known_only_from_webhooks_says_so(api, monkeypatch, tmp_path):
    monkeypatch.setenv("WEBHOOK_URL", "http://127.0.0.1:9/hook")
    registry.use_runs_dir(api.runs)
    url = f"sqlite:///{api.tmp / 'registry.db'}"
    with registry.session(url) as s:
        s.add(registry.TrainingJob(id="remote-1", preset="balanced", model="smoke", hardware="cpu"))
        s.commit()
    r = api.delete("/api/training/jobs/remote-1")
    assert r.status_code == 409 and "known here only from its webhook events" in r.json()["error"]
    assert registry.get_job("remote-1", url).status == "queued"


# 9. CLI: no traceback, no hang -------------------------------------------------------------------------


def test_9_hostile_files_exit_2_without_a_traceback_or_a_hang(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    empty = json.loads(SAMPLE.read_text())
    for conv in empty["conversations"]:
        for pair in conv["training_pairs"]:
            pair["target_response"] = None
    targetless = tmp_path / "no-targets.json"
    targetless.write_text(json.dumps(empty))
    for path, says in [
        (deep, "nested too deep"),
        (zero, "not a regular file"),
        (fifo, "not a regular file"),
        (targetless, "no training pair has a target response"),
    ]:
        proc = run_cli("convert", str(path), "--out", str(tmp_path / "out"))
        assert proc.returncode == 2 and says in proc.stderr and path.name in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
    proc = jobs_cli("train", "../models/smoke", "smoke", "--data", str(tmp_path))
    assert proc.returncode == 2 and "not a path" in proc.stderr and "Traceback" not in proc.stderr


# 11. Smaller: paths in answers, the state machine -------------------------------------------------------


def test_11_answers_name_no_absolute_server_path(api):
    for body in ({"data": "missing"}, {"input": "files/none.json"}, {"data": "sample", "overrides": ["x=1"]}):
        r = start(api, **body)
        assert r.status_code == 400 and str(api.tmp) not in r.text and str(ROOT) not in r.text, r.text


def test_11_per_run_webhook_keys_when_required(api, monkeypatch):
    """WEBHOOK_RUN_KEYS=required: an event is accepted only under its own job's key, so one pod's key
    cannot sign another job's events, and the master secret itself signs nothing."""
    from jobs import payload

    monkeypatch.setenv("WEBHOOK_RUN_KEYS", "required")

    def post(job_id: str, key: str):
        spooled = {"event_id": os.urandom(8).hex(), "sequence": 1, "job_id": job_id, "status": "queued"}
        spooled |= {
            "timestamp": payload.iso(),
            "job": {"preset": "balanced", "model": "smoke", "hardware": "cpu"},
        }
        body = webhooks.encode(spooled)
        headers = {"Content-Type": "application/json", webhooks.SIGNATURE_HEADER: webhooks.sign(key, body)}
        return api.post("/api/training/webhook", content=body, headers=headers)

    assert post("job-a", SECRET).status_code == 401
    assert post("job-a", webhooks.run_key(SECRET, "job-b")).status_code == 401
    assert post("job-a", webhooks.run_key(SECRET, "job-a")).status_code == 200


# Property: whatever JSON a token holder sends to the start route, never a 5xx, nothing written for a
# 4xx, and nothing written outside runs/ and the data folder.

NAMES = [
    "balanced",
    "smoke",
    "cpu",
    "../models/smoke",
    "/etc/passwd",
    "..",
    "",
    "a" * 70,
    "smoke\n",
    "ba lanced",
]
KEYS = [*start_mod.ALLOWED, "base_model", "datasets.0.path", "hub_model_id", "trust_remote_code", "x", ""]


def body_strategy():
    from hypothesis import strategies as st

    text = st.text(max_size=40)
    name = st.one_of(st.sampled_from(NAMES), text)
    value = st.one_of(
        st.sampled_from(
            ["1", "2", "1e-4", "0.05", "1e308", "nan", "-1", "cosine", "&a [1]", "*a", "!!str x"]
        ),
        text,
    )
    override = st.one_of(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), value), text)
    fields = st.fixed_dictionaries(
        {"preset": name, "model": name},
        optional={
            "hardware": name,
            "data": st.one_of(st.sampled_from(["sample", "../sample", "/tmp", "sample/../../x"]), text),
            "input": st.one_of(st.sampled_from(["files/sample.json", "/etc/hostname", "files"]), text),
            "overrides": st.lists(override, max_size=4),
            "heldout_eval": st.one_of(st.booleans(), st.integers(), text),
            "extra": text,
        },
    )

    def nest(children):
        return st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)

    junk = st.recursive(st.none() | st.booleans() | st.floats() | text, nest, max_leaves=10)
    return st.one_of(fields, junk)


def test_property_the_start_route_never_fails_with_5xx_or_writes_outside(api, spawned):
    from hypothesis import HealthCheck, given, settings

    repo_runs = everything(ROOT / "runs")

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body_strategy())
    def check(body):
        before = everything(api.tmp)
        # Python's encoder writes NaN/Infinity as bare tokens, which a hostile client may send too.
        raw = json.dumps(body).encode()
        r = api.post("/api/training/jobs", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code < 500, (body, r.text)
        after = everything(api.tmp)
        if r.status_code >= 400:
            assert after == before, (body, r.text)
        assert all(
            p.split("/")[0] in ("runs", "data", "registry.db", "registry.db.migrate.lock") for p in after
        )

    check()

    # The override strings alone, on an otherwise valid request: these reach render and Axolotl's check.
    from hypothesis import strategies as st

    value = st.one_of(
        st.sampled_from(["1", "3", "1e-4", "0.1", "4096", "1e308", "nan", "cosine"]), st.text(max_size=20)
    )
    override = st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), value)

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(override, min_size=1, max_size=3))
    def check_overrides(overrides):
        before = everything(api.tmp)
        r = start(api, data="sample", overrides=overrides)
        assert r.status_code in (202, 400), (overrides, r.text)
        if r.status_code == 400:
            assert everything(api.tmp) == before and r.json()["error"], (overrides, r.text)

    check_overrides()
    assert everything(ROOT / "runs") == repo_runs  # nothing in the repo's own runs folder either


@pytest.mark.parametrize(
    "override,says",
    [
        ("datasets.5.path=x", "cannot be rendered"),  # an IndexError (500) before
        ("datasets.0=5", "cannot be rendered"),  # an AttributeError (500) before
        ("micro_batch_size=1e308", "whole number >= 1"),  # an OverflowError (500) before
        ("num_epochs=.inf", "expected a number > 0"),
        ("max_steps=2\nbase_model: /x", "control characters"),
        ("a.b/c=1", "a key is letters"),
    ],
)
def test_7_the_cli_render_answers_bad_overrides_with_their_name(sample_out, override, says):
    from axolotl_configs import render
    from brightrun.errors import ConfigError

    with pytest.raises(ConfigError, match=says) as caught:
        render.render("balanced", "smoke", str(sample_out), overrides=[override], check=False)
    assert len(str(caught.value)) < 600
