"""The dashboard's models view in a real browser: the real service (`python -m jobs service`, SQLite registry,
a folder artifact store) with versions made through its own API (promote, a forced promotion, rollback),
then Debian's headless Chromium loads `/#token=...` and the test reads the DOM it rendered: the models, the
first model's versions with their stage (one production, marked), verdict, scores, run, author, the forced
flag, and the A/B column (the API's `ab` list per version when it has one; a dash when it has none).
MODELS_SCREENSHOT=path keeps a screenshot of the page.
"""

from __future__ import annotations

import os

import httpx
import pytest
from browser import Elements, headless
from conftest import free_port, start_service, stop_process

from tests.versions.runs import adapter, make_run  # noqa: F401 (fixtures)

TOKEN = "dash-models-token-5e2a"
SECRET = "whsec-dash-models-8c1f"


@pytest.fixture
def service(tmp_path, browser, adapter):  # noqa: F811
    """The service over runs run-1 and run-2 (passed) and run-bad (failed its evaluation); yields its URL
    and its registry's URL."""
    runs = tmp_path / "runs"
    url = f"sqlite:///{runs / 'registry.db'}"
    for run, verdict in [("run-1", "pass"), ("run-2", "pass"), ("run-bad", "fail")]:
        make_run(runs, url, run, adapter, verdict)
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "WEBHOOK_URL", "MODELS_SERVER_URL")
    }
    env |= {
        "JOBS_API_TOKEN": TOKEN,
        "TRAINING_WEBHOOK_SECRET": SECRET,
        "ARTIFACT_STORE": str(tmp_path / "store"),
    }
    args = ["-m", "jobs", "--runs-dir", str(runs), "service", "--port", str(port)]
    proc = start_service(args, env, tmp_path / "service.log", port)
    try:
        yield f"http://127.0.0.1:{port}", url
    finally:
        stop_process(proc)


def record_ab(db_url: str, runs) -> None:
    """An A/B of em@v1 (A) against em@v3 (B) as `python -m versions ab` records it, B winning 0.70."""
    from jobs import registry as jobs_registry
    from versions import abtests, registry

    engine = jobs_registry.engine(db_url)
    v1, v3 = (registry.get_version(engine, "em", n) for n in (1, 3))
    side = lambda v, loss: {"ref": v.ref, "run_id": v.run_id, "version_id": v.id, "heldout_loss": loss}  # noqa: E731
    result = {
        "id": "20261201-120000-ab0001",
        "a": side(v1, 2.49),
        "b": side(v3, 2.41),
        "data_sha256": "0" * 64,
        "n_prompts": 10,
        "win_rate": 0.7,
        "ci95": [0.55, 0.85],
        "judge": {"model": "judge-model"},
        "created_by": "test",
    }
    abtests.record(engine, result, str(runs / "ab" / result["id"]))


def test_models_view_shows_versions_with_production_marked_in_headless_chromium(service, browser, tmp_path):
    service, db_url = service
    with httpx.Client(base_url=service, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as api:
        for name, body in [
            ("em", {"run_id": "run-1", "stage": "production"}),  # v1
            ("em", {"run_id": "run-bad", "force": True, "note": "<b>forced</b> for the demo"}),  # v2
            ("em", {"run_id": "run-2", "stage": "production"}),  # v3: v1 archived
            ("other", {"run_id": "run-2"}),
        ]:
            r = api.post(f"/api/models/{name}/promote", json=body)
            assert r.status_code == 201, r.text
        assert api.post("/api/models/em/rollback").status_code == 200  # v1 production again, v3 rolled back
        record_ab(db_url, tmp_path / "runs")
        shown = api.get("/api/models/em").json()

    dumped = headless(browser, tmp_path / "profile", "--dump-dom", f"{service}/#token={TOKEN}")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = Elements()
    dom.feed(dumped.stdout)
    assert dom.find("body", **{"data-state": "ready"}), dumped.stdout[:3000]

    models = {a["data-model"]: a for a in dom.find("tr") if "data-model" in a}
    assert list(models) == ["em", "other"]
    assert (models["em"]["data-production"], models["other"]["data-production"]) == ("1", "")
    assert "selected" in models["em"]["class"]  # the first model's versions are shown

    versions = {a["data-version"]: a for a in dom.find("tr") if "data-version" in a}
    assert list(versions) == ["3", "2", "1"]  # newest first
    assert {v: a["data-stage"] for v, a in versions.items()} == {
        "3": "archived",
        "2": "stored",
        "1": "production",
    }
    assert [v for v, a in versions.items() if "production" in a.get("class", "").split()] == ["1"]
    assert {v: a["data-forced"] for v, a in versions.items()} == {"3": "false", "2": "true", "1": "false"}
    assert {v: a["data-run-id"] for v, a in versions.items()} == {"3": "run-2", "2": "run-bad", "1": "run-1"}
    verdicts = [a["data-verdict"] for a in dom.find("td") if "data-verdict" in a]
    # After the jobs table's three: em's production verdict, none for other; then v3, v2, v1.
    assert verdicts[-5:] == ["pass", "", "pass", "fail", "pass"]
    page = dumped.stdout
    assert "★ production" in page and "rolled back" in page and "production: v1" in page
    assert "win rate 0.62 [0.55, 0.69]" in page and "heldout_loss: pass 2.770 → 2.490" in page
    assert "heldout_loss: fail 2.770 → 2.490" in page  # run-bad's gate

    # A/B: the API's list per version when it has one (versions/abtests), a dash when it has none.
    expected = {str(v["version"]): str(len(v["ab"])) if "ab" in v else "absent" for v in shown["versions"]}
    cells = [a["data-ab"] for a in dom.find("td") if "data-ab" in a]
    assert cells == [expected[v] for v in ("3", "2", "1")] == ["1", "0", "1"]
    # Each side shows its own win rate over the other: v3 (B) won 0.70, so v1 (A) shows 0.30.
    wins = {a["data-ab-other"]: a["data-ab-win"] for a in dom.find("li") if "data-ab-other" in a}
    assert wins == {"em@v1": "0.70", "em@v3": "0.30"}
    assert "vs em@v1: wins 0.70 [0.55, 0.85] · 10 prompts" in page
    assert not dom.find("b")  # nothing from the API became markup

    if keep := os.environ.get("MODELS_SCREENSHOT"):  # a picture for the README or a review, on request
        shot = headless(browser, tmp_path / "profile-shot", "--window-size=1280,1400", f"--screenshot={keep}",
                        f"{service}/#token={TOKEN}")  # fmt: skip
        assert shot.returncode == 0, shot.stderr[-2000:]
