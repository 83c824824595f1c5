"""Human ratings (issue 27, item 6) through the real service (`python -m jobs service`, SQLite registry, a
folder artifact store): a version promoted through the API from a run whose evaluation left three held-out
prompts (two conversations) with base and adapter answers and the judge's rows. Headless Chromium, driven
through the DevTools protocol (tests/browser.Page), opens the rating page as a rater would: a name, a
prompt with the client's persona and feeling, two unnamed replies, grades and a preference, a missed
grade refused by the page, the next prompt. The API's summary, the models API and the customer's
model_artifacts row must then say what the rater meant: which reply was the adapter's is known only to
the server, so a mix-up between slot and side would show in every figure below.
"""

from __future__ import annotations

import json
import os

import httpx
import pytest
from browser import Page
from conftest import free_port, start_service, stop_process

from jobs import registry as jobs_registry
from tests.versions.runs import PROMPTS, adapter, make_run, write_eval  # noqa: F401 (fixtures)

TOKEN = "ratings-token-4b1e"


@pytest.fixture(scope="module")
def service(tmp_path_factory, adapter):  # noqa: F811
    """The service with em@v1 (rated here) and em@v2 (a run evaluated before answers were kept: nothing to
    rate); yields (URL, registry URL)."""
    tmp = tmp_path_factory.mktemp("ratings")
    runs = tmp / "runs"
    url = f"sqlite:///{runs / 'registry.db'}"
    write_eval(make_run(runs, url, "run-1", adapter, "pass"))
    make_run(runs, url, "run-2", adapter, "pass")
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "WEBHOOK_URL", "MODELS_SERVER_URL")
    }
    env |= {
        "JOBS_API_TOKEN": TOKEN,
        "TRAINING_WEBHOOK_SECRET": "whsec-ratings",
        "ARTIFACT_STORE": str(tmp / "store"),
    }
    env["VERSIONS_CACHE"] = str(tmp / "cache")  # not the repo's cache/: a test of its own
    proc = start_service(["-m", "jobs", "--runs-dir", str(runs), "service", "--port", str(port)], env,
                         tmp / "service.log", port)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as api:
            for run in ("run-1", "run-2"):
                assert api.post("/api/models/em/promote", json={"run_id": run}).status_code == 201
        yield base, url
    finally:
        stop_process(proc)


def test_a_rater_grades_blind_replies_in_headless_chromium_and_the_scores_are_the_adapters(
    service, browser, tmp_path
):
    base, db_url = service
    with Page(browser, tmp_path / "profile") as page:
        page.goto(f"{base}/rate#token={TOKEN}&version=em@v1")
        assert page.wait_for("document.body.dataset.state === 'who' && 'who'")
        assert "token" not in page.evaluate("location.href")  # out of the address bar
        page.evaluate("document.getElementById('who-input').value = 'Dana'")
        page.evaluate("document.getElementById('who-form').requestSubmit()")

        def shown() -> dict:
            page.wait_for("document.body.dataset.state === 'rating'")
            return page.evaluate(
                """({item: document.getElementById('prompt').dataset.item,
                     client: document.getElementById('client').textContent,
                     turns: [...document.querySelectorAll('.turn')].map((t) => t.textContent),
                     progress: document.getElementById('progress').textContent,
                     replies: [...document.querySelectorAll('.answer')].map((a) =>
                       ({slot: a.dataset.slot, text: a.querySelector('.text').textContent}))})"""
            )

        def grade(slot: str, value: int, skip: str | None = None) -> None:
            page.evaluate(
                f"""document.querySelectorAll('.answer[data-slot="{slot}"] .criterion').forEach((f) => {{
                      if (f.dataset.criterion !== {json.dumps(skip)})
                        f.querySelector('input[value="{value}"]').click(); }})"""
            )

        def prefer(value: str) -> None:
            page.evaluate(f"document.querySelector('input[name=preference][value={value}]').click()")

        def submit() -> None:
            page.evaluate("document.getElementById('submit').click()")

        rated, sides = [], []
        for n in range(2):
            now = shown()
            pid = now["item"]
            conv, _, persona, emotion, text = next(p for p in PROMPTS if p[1] == pid)
            assert persona in now["client"] and emotion in now["client"] and "0.6" in now["client"]
            assert now["turns"] == [f"Client{text}"]  # the client's message; the system prompt is not shown
            assert now["progress"] == f"rated {n} of 3 · as Dana"
            assert [r["slot"] for r in now["replies"]] == ["first", "second"]
            adapter_slot = next(r["slot"] for r in now["replies"] if r["text"].startswith("[adapter"))
            base_slot = "second" if adapter_slot == "first" else "first"
            sides.append(adapter_slot)
            page_text = page.evaluate("document.getElementById('rating').innerText")
            assert "adapter" not in page_text.replace(
                f"[adapter answer to {pid}]", ""
            )  # blind: no side named
            if n == 0:  # the adapter's reply 5 everywhere, the base's 2, the adapter preferred
                grade(adapter_slot, 5)
                grade(base_slot, 2, skip="helpful")
                prefer(adapter_slot)
                submit()  # one grade missing: the page says so and sends nothing
                missing = page.wait_for("!document.getElementById('missing').hidden && "
                                        "document.getElementById('missing').textContent")  # fmt: skip
                assert "helpful" in missing and shown()["item"] == pid
                grade(base_slot, 2)
            else:  # the adapter 3, the base 4, the base preferred
                grade(adapter_slot, 3)
                grade(base_slot, 4)
                prefer(base_slot)
            submit()
            page.wait_for(f"document.getElementById('prompt').dataset.item !== {json.dumps(pid)}")
            rated.append((pid, conv))
        assert shown()["progress"] == "rated 2 of 3 · as Dana"

    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as api:
        summary = api.get("/api/models/em/versions/1/ratings").json()
        shown_in_list = api.get("/api/models/em").json()["versions"]
    assert summary["n"] == 2 and summary["raters"] == ["Dana"]
    assert summary["human_eval_score"]["mean"] == 4.0  # (5 + 3) / 2: the adapter's grades, not the base's
    assert summary["base_score"]["mean"] == 3.0  # (2 + 4) / 2
    assert summary["win_rate"]["mean"] == 0.5  # preferred once, lost once
    judge_pick = {"c1-t1": "adapter", "c1-t2": "base", "c2-t1": "adapter"}
    human_pick = ["adapter", "base"]
    agreed = sum(judge_pick[pid] == pick for (pid, _), pick in zip(rated, human_pick, strict=True))
    assert summary["judge_agreement"]["preference"]["mean"] == agreed / 2
    assert summary["judge_agreement"]["preference"]["n"] == 2
    assert summary["n_conversations"] == len({conv for _, conv in rated})
    v1 = next(v for v in shown_in_list if v["version"] == 1)
    assert v1["human"]["n"] == 2 and v1["human"]["human_eval_score"] == 4.0
    # The customer's column: model_artifacts.human_eval_score (ours human_score) of run-1's adapter.
    with jobs_registry.session(db_url) as s:
        row = s.query(jobs_registry.ModelArtifact).filter_by(job_id="run-1", artifact_type="adapter").one()
        assert row.human_score == 4.0


def test_ratings_refuse_what_is_not_a_rating(service):
    base, _ = service
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as api:
        first = api.get("/api/models/em/versions/1/ratings/next", params={"rater": "Lee"}).json()
        item = first["item"]["id"]
        assert {a["slot"] for a in first["answers"]} == {"first", "second"} and "model" not in first[
            "answers"
        ][0]
        good = {s: {"on_brand": 4, "emotional_intelligence": 4, "helpful": 4} for s in ("first", "second")}
        body = {"rater": "Lee", "item": item, "scores": good, "preference": "tie"}
        bad_grade = {**good, "first": {**good["first"], "helpful": 6}}
        for change, status, words in [
            ({"scores": bad_grade}, 400, "helpful"),
            ({"scores": {"first": good["first"]}}, 400, "second"),
            ({"preference": "adapter"}, 400, "preference"),
            ({"rater": ""}, 400, "rater"),
            ({"item": "no-such-turn"}, 404, "no-such-turn"),
        ]:
            r = api.post("/api/models/em/versions/1/ratings", json=body | change)
            assert r.status_code == status and words in r.text, (change, r.status_code, r.text)
        r = api.post("/api/models/em/versions/1/ratings", json=body)
        assert r.status_code == 201 and r.json()["saved"] == item  # and names no side: only the next prompt
        assert set(r.json()) == {"saved", "next"} and {k for a in r.json()["next"]["answers"] for k in a} == {
            "slot",
            "text",
        }
        again = api.post("/api/models/em/versions/1/ratings", json=body)
        assert again.status_code == 409 and "already rated" in again.json()["error"]
        nothing = api.get("/api/models/em/versions/2/ratings/next", params={"rater": "Lee"})
        assert nothing.status_code == 409 and "no evaluation answers" in nothing.json()["error"]
        assert api.get("/api/models/em/versions/9/ratings/next", params={"rater": "Lee"}).status_code == 404
        assert api.get("/api/models/em/versions/1/ratings/next").status_code == 400  # who is rating?
        assert httpx.get(f"{base}/api/models/em/versions/1/ratings").status_code == 401
