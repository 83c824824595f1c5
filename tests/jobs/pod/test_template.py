"""`python -m jobs template`: the RunPod pod template of the jobs service, printed, and created against the
fake RunPod (tests/fake_runpod.py's POST /v2/templates); nothing here reaches RunPod."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from brightrun.errors import ConfigError
from jobs.pod import template
from tests.fake_runpod import TEMPLATE_TYPES, FakeRunPod

ROOT = Path(__file__).resolve().parents[3]
IMAGE = "ghcr.io/acme/brightrun-lora:0.1.0"
# Recognisable values for every secret the service could read: none may be printed or sent.
SECRET_VALUES = {
    name: f"value-of-{name.lower()}-7f3a9c"
    for name in (*template.SECRETS, *template.POD_SECRETS, "WANDB_API_KEY", "WEBHOOK_URL")
}
REFERENCE = re.compile(r"\{\{ RUNPOD_SECRET_([A-Z0-9_]+) \}\}")
SERVICE = (
    "python -m jobs --runs-dir /workspace/data/runs service --host 0.0.0.0 --port 8000 --model 70b-qlora"
)


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in SECRET_VALUES and k != "BRIGHTRUN_IMAGE"}
    return subprocess.run(
        [sys.executable, "-m", "jobs", "template", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_no_secret(*texts: str) -> None:
    for name, value in SECRET_VALUES.items():
        assert all(value not in text for text in texts), f"{name}'s value was printed"


@pytest.fixture
def fake(tmp_path):
    with FakeRunPod(workspace=tmp_path / "workspace") as server:
        yield server


def test_gpu_template_runs_the_service_on_8000_with_secrets_by_reference():
    out = cli(**SECRET_VALUES, BRIGHTRUN_IMAGE=IMAGE)
    assert out.returncode == 0, out.stderr
    assert_no_secret(out.stdout, out.stderr)
    body = json.loads(out.stdout)
    assert body["ports"] == ["8000/http"]
    assert body["args"].startswith(SERVICE)
    assert body["image"] == IMAGE and body["category"] == "NVIDIA"
    assert body["public"] is False and body["serverless"] is False
    assert body["mounts"] == {"persistent": {"size": 200, "path": "/workspace/data"}}
    assert "13.0" in body["allowedCudaVersions"]
    secret_env = {k: v for k, v in body["env"].items() if k != "JUPYTER_DISABLE"}
    assert set(secret_env) == set(template.SECRETS)
    for name, value in secret_env.items():
        assert REFERENCE.fullmatch(value).group(1) == name
    assert "https://<pod id>-8000.proxy.runpod.net" in out.stderr
    assert "$1.99/h on demand" in out.stderr  # axolotl_configs/hardware/h100-pcie.yaml
    # Every field is one RunPod's v2 API takes (the fake checks them as CreateTemplateRequest does).
    assert not body.keys() - set(TEMPLATE_TYPES)


def test_cpu_template_starts_pods_with_an_account_key_by_reference(capsys, monkeypatch):
    for name, value in SECRET_VALUES.items():
        monkeypatch.setenv(name, value)
    assert template.main(cpu=True, image=IMAGE) == 0
    out, err = capsys.readouterr()
    assert_no_secret(out, err)
    body = json.loads(out)
    assert body["category"] == "CPU" and "mounts" not in body and "allowedCudaVersions" not in body
    assert body["args"].startswith(SERVICE) and body["ports"] == ["8000/http"]
    assert body["env"]["RUNPOD_API_KEY"] == "{{ RUNPOD_SECRET_RUNPOD_API_KEY }}"
    assert "see RunPod's CPU pricing" in err


def test_no_image_prints_a_placeholder_and_axolotls_own_image_is_refused(capsys, monkeypatch):
    monkeypatch.delenv("BRIGHTRUN_IMAGE", raising=False)
    assert template.main() == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["image"] == template.PLACEHOLDER and "--image or BRIGHTRUN_IMAGE" in err
    with pytest.raises(ConfigError, match="no code of ours"):
        template.main(image="axolotlai/axolotl-cloud:0.19.0-py3.12-cu130-2.12.0")
    monkeypatch.setenv("RUNPOD_API_KEY", "rp_some_key")
    with pytest.raises(ConfigError, match="--create: no image"):
        template.main(create_it=True)


def test_create_makes_the_template_and_prints_its_id(fake):
    env = {**SECRET_VALUES, "RUNPOD_API_URL": fake.url, "RUNPOD_API_KEY": fake.api_key}
    out = cli("--create", "--image", IMAGE, "--name", "svc-test", **env)
    assert out.returncode == 0, out.stderr
    [made] = fake.templates.values()
    assert out.stdout.strip() == made["id"]
    assert made["name"] == "svc-test" and made["ports"] == ["8000/http"] and made["args"].startswith(SERVICE)
    assert fake.requests[-1]["key_in"] == "header" and fake.requests[-1]["path"] == "/v2/templates"
    assert all(REFERENCE.fullmatch(v) for k, v in made["env"].items() if k != "JUPYTER_DISABLE")
    sent = json.dumps(fake.calls[-1][1])
    assert_no_secret(out.stdout, out.stderr, sent.replace(fake.api_key, ""))
    assert fake.api_key not in sent + out.stdout + out.stderr


def test_create_errors_exit_1_with_runpods_message(fake, monkeypatch, capsys):
    monkeypatch.setenv("RUNPOD_API_URL", fake.url)
    monkeypatch.setenv("RUNPOD_API_KEY", "rp_wrong_key_123456")
    assert template.main(create_it=True, image=IMAGE) == 1
    out, err = capsys.readouterr()
    assert out == "" and "refused the API key (HTTP 401: Unauthorized invalid api key)" in err
    assert "rp_wrong_key_123456" not in err and not fake.templates

    monkeypatch.setenv("RUNPOD_API_KEY", fake.api_key)
    assert template.main(create_it=True, image=IMAGE, name="taken") == 0
    assert template.main(create_it=True, image=IMAGE, name="taken") == 1  # names are unique per account
    err = capsys.readouterr().err
    assert "createTemplate: HTTP 400: Bad Request template name 'taken' is already taken" in err
    assert len(fake.templates) == 1

    body = {**template.build(image=IMAGE), "bogus": 1}  # a field RunPod does not take: 422, its words
    with pytest.raises(template.runpod.RunPodError, match=r"HTTP 422: .*additional properties 'bogus'"):
        template.create(body)


def test_create_without_key_exits_2_in_one_line(fake):
    out = cli("--create", "--image", IMAGE, RUNPOD_API_URL=fake.url)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "RUNPOD_API_KEY" in out.stderr
    assert out.stdout == "" and not fake.requests
