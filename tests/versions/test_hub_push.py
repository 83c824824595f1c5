"""`python -m versions push NAME@vN --hub ORG/REPO` (issue 28, item 7) against a loopback stand-in for the
Hub's upload calls (tests/fake_hub.HubUploads; HF_ENDPOINT points there): the repo created private, one
commit with the adapter's files at its root and the model card, byte for byte as promoted, never eval/
(the customer's conversations); HF_TOKEN only from the environment, sent as the bearer token."""

from __future__ import annotations

import os

from jobs import registry as jobs_registry
from tests.fake_hub import HubUploads
from tests.versions.runs import adapter, cli, make_run, write_eval  # noqa: F401 (fixtures)
from versions.promote import promote


def test_a_version_goes_to_the_hub_private_with_its_card_and_never_its_evaluation(tmp_path, adapter):  # noqa: F811
    runs, url = tmp_path / "runs", f"sqlite:///{tmp_path / 'registry.db'}"
    write_eval(make_run(runs, url, "run-1", adapter))
    promote(jobs_registry.engine(url), runs, "run-1", "em", "production", store_url=str(tmp_path / "store"),
            say=lambda _: None)  # fmt: skip
    base = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env = base | {"DATABASE_URL": url, "ARTIFACT_STORE": str(tmp_path / "store"),
                  "VERSIONS_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "0"}  # fmt: skip
    with HubUploads() as hub:
        env["HF_ENDPOINT"] = hub.url
        no_token = cli("--runs-dir", str(runs), "push", "em@production", "--hub", "acme/elena", env=env)
        assert no_token.returncode == 2 and "HF_TOKEN is not set" in no_token.stderr and not hub.repos
        bad = cli("--runs-dir", str(runs), "push", "em@v1", "--hub", "../x", env=env | {"HF_TOKEN": "hf_x"})
        assert bad.returncode == 2 and "expected ORG/REPO" in bad.stderr
        done = cli("--runs-dir", str(runs), "push", "em@production", "--hub", "acme/elena",
                   env=env | {"HF_TOKEN": "hf_write_token"})  # fmt: skip
    assert done.returncode == 0, (done.stderr, hub.unmodelled)
    assert hub.repos["acme/elena"]["visibility"] == "private"
    [commit] = hub.commits
    assert commit["repo"] == "acme/elena" and commit["summary"].startswith("em@v1: adapter sha256 ")
    files = commit["files"]
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= set(files)
    assert files["adapter_model.safetensors"] == (adapter / "adapter_model.safetensors").read_bytes()
    assert not any(
        name.startswith("eval") or "prompts" in name for name in files
    )  # never their conversations
    assert "library_name: peft" in files["README.md"].decode()
    assert hub.auth == {"Bearer hf_write_token"}
