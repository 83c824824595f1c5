"""`python -m jobs` end to end on CPU: a tracked smoke run, its registry rows, its adapter, and bad input."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import (
    CUSTOMER_SECRET,
    SAMPLE,
    TINY_MODEL_DIR,
    jobs_cli,
    module_cli,
    no_loss,
    smoke_job_args,
)

from jobs import registry, webhooks
from jobs.runfolder import sha256_file
from tests import status_log
from tests.customer_app import CustomerApp
from tests.judge_standin import StandIn


@pytest.fixture(scope="module")
def customer_run(tmp_path_factory, sample_out):
    """One smoke run, started as the customer's app starts one (their job id, their receiver): the run
    folder, the registry URL, the finished process and what their receiver made of its events."""
    runs = tmp_path_factory.mktemp("runs")
    url = f"sqlite:///{runs / 'registry.db'}"
    status_log.watch(url)
    with CustomerApp(runs, CUSTOMER_SECRET) as app:
        job_id = app.new_job()
        args = smoke_job_args(runs, sample_out, "max_steps=2", "--run-id", job_id)
        proc = jobs_cli(*args, env={"DATABASE_URL": url, **app.env()})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        print(app.summary("completed", job_id))
        tally = app.tally(job_id)
    return runs / job_id, url, proc, tally


@pytest.fixture(scope="module")
def smoke_run(customer_run):
    return customer_run[:3]


def test_the_customers_receiver_applies_every_event_of_a_completed_run(customer_run):
    run_dir, url, _, tally = customer_run
    no_loss(tally)
    assert webhooks.pending(run_dir) == []  # every event delivered
    job = registry.get_job(run_dir.name, url)
    row = tally["row"]
    assert (row["status"], row["current_step"], row["total_steps"]) == ("completed", 2, 2)
    assert row["lora_artifact_path"] == job.artifact_path and row["error_message"] is None
    assert row["completed_at"] is not None
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in tally["history"]] == [m["step"] for m in logged if "loss" in m] == [1, 2]
    assert tally["statuses"][:3] == ["queued", "preprocessing", "model_loaded"]
    assert tally["statuses"][-1] == "completed" and set(tally["statuses"][3:-1]) == {"training"}
    status_log.ended_once(url, run_dir.name, "completed", tally["ours"])
    sent = [json.loads(line) for line in (run_dir / webhooks.SPOOL).read_text().splitlines()]
    assert any("eval_loss" in e.get("eval", {}) for e in sent)  # the eval numbers went, under `eval`


def test_run_folder_holds_everything(smoke_run, sample_out):
    run_dir, _, proc = smoke_run
    for name in (
        "config.yaml",
        "data-manifest.json",
        "env.json",
        "run.json",
        "metrics.jsonl",
        "logs/preprocess.log",
        "logs/train.log",
        "output/adapter_model.safetensors",
        "output/adapter_config.json",
    ):
        assert (run_dir / name).is_file(), name
    assert "Estimate: balanced-smoke" in proc.stdout  # printed before training
    lineage = json.loads((run_dir / "run.json").read_text())
    assert lineage["input"]["sha256"] == sha256_file(SAMPLE)
    assert lineage["data"]["manifest_sha256"] == sha256_file(sample_out / "manifest.json")
    assert lineage["config"]["sha256"] == sha256_file(run_dir / "config.yaml")
    assert lineage["adapter"]["sha256"] == sha256_file(run_dir / "output" / "adapter_model.safetensors")
    env = json.loads((run_dir / "env.json").read_text())
    assert env["packages"]["axolotl"] == "0.19.0" and env["git_sha"]


def test_axolotl_trained_the_rendered_config_as_written(smoke_run):
    """The real `axolotl train` on the run's config.yaml (what tests/axolotl_configs renders): the adapter
    it wrote has the config's rank and modules, and Trainer took the two steps with a loss each."""
    import yaml

    run_dir, _, _ = smoke_run
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    out = run_dir / "output"
    assert (out / "adapter_model.safetensors").stat().st_size > 0
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == cfg["lora_r"] == 16
    assert set(adapter["target_modules"]) == set(cfg["lora_target_modules"])
    state = json.loads(max(out.glob("checkpoint-*/trainer_state.json")).read_text())
    assert state["global_step"] == 2
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)


def test_registry_matches_metrics_jsonl(smoke_run):
    run_dir, url, _ = smoke_run
    job = registry.get_job(run_dir.name, url)
    assert job.status == "completed" and job.step == job.total_steps == 2
    assert job.hyperparameters["lora_r"] == 16 and job.artifact_path.endswith("output")
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    history = registry.metrics(run_dir.name, url)
    assert [(p.step, p.loss, p.eval_loss) for p in history] == [
        (m["step"], m.get("loss"), m.get("eval_loss")) for m in logged
    ]
    assert [m["step"] for m in logged if "loss" in m] == [1, 2]
    with registry.session(url) as s:
        [artifact] = s.query(registry.ModelArtifact).filter_by(job_id=run_dir.name).all()
    assert artifact.sha256 == sha256_file(run_dir / "output" / "adapter_model.safetensors")
    assert artifact.lora_config["r"] == 16


def test_adapter_loads_with_peft_and_generates(smoke_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, _, _ = smoke_run
    tok = AutoTokenizer.from_pretrained(TINY_MODEL_DIR)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(TINY_MODEL_DIR), run_dir / "output"
    )
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "Hello"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("train", "balnced", "smoke"), "unknown preset 'balnced'"),
        (("train", "balanced", "smoke", "--data", "/nonexistent/data"), "no converter manifest here"),
        (("train", "balanced", "smoke", "lora_rr=8"), "lora_rr: unknown key (did you mean lora_r?)"),
        (("train", "balanced", "smoke", "learning_rate=fast"), "Axolotl rejects the config"),
        (("train", "balanced", "smoke", "micro_batch_size=two"), "expected a whole number >= 1"),
        # What the estimate and preflight compute with: refused by key, never a traceback.
        (("train", "balanced", "smoke", "lora_r=abc"), "override lora_r='abc': expected a whole number"),
        (("train", "balanced", "smoke", "lora_target_modules=5"), "expected a list of module names"),
        (("train", "balanced", "smoke", "--run-id", "../escape"), "--run-id '../escape': 1-64 characters"),
        (
            ("train", "balanced", "smoke", "--input", "/nonexistent.json"),
            "/nonexistent.json: input file not found",
        ),
    ],
)
def test_bad_invocations_exit_2_without_a_run(tmp_path, sample_out, args, message):
    args = tuple(str(sample_out) if a == "SAMPLE_OUT" else a for a in args)
    if any("=" in a for a in args):
        args = (*args, "--data", str(sample_out))
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    proc = jobs_cli("--runs-dir", str(tmp_path / "runs"), *args, env={"DATABASE_URL": url})
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert registry.list_jobs(url) == []
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_results_report_and_eval(smoke_run):
    run_dir, url, proc = smoke_run
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["val_lines"] >= 1 and result["scored_tokens"] > 0
    assert result["base"]["loss"] > 0 and result["adapter"]["loss"] > 0
    assert result["adapter"]["loss"] != result["base"]["loss"]  # the adapter is applied
    assert len(result["samples"]) >= 1 and all(s["base"] is not None for s in result["samples"])
    page = (run_dir / "report.html").read_text()
    assert "Held-out evaluation" in page and 'src="data:image/png;base64,' in page
    assert f"{result['base']['loss']:.4f}" in page and f"{result['adapter']['loss']:.4f}" in page
    assert json.loads((run_dir / "run.json").read_text())["adapter"]["sha256"] in page
    assert "held-out loss: base" in proc.stderr
    with registry.session(url) as s:
        [artifact] = (
            s.query(registry.ModelArtifact).filter_by(job_id=run_dir.name, artifact_type="adapter").all()
        )
    assert artifact.validation_loss == pytest.approx(result["adapter"]["loss"])


def test_runs_show_compare_serve(smoke_run):
    run_dir, url, _ = smoke_run
    runs = str(run_dir.parent)
    env = {"DATABASE_URL": url, "COLUMNS": "200"}
    listing = jobs_cli("--runs-dir", runs, "runs", env=env)
    assert listing.returncode == 0 and run_dir.name in listing.stdout and "completed" in listing.stdout
    shown = jobs_cli("--runs-dir", runs, "show", run_dir.name, env=env)
    assert shown.returncode == 0 and "Metrics history" in shown.stdout
    compared = jobs_cli("--runs-dir", runs, "compare", run_dir.name, run_dir.name, env=env)
    assert compared.returncode == 0 and "held-out loss, adapter" in compared.stdout
    served = jobs_cli("--runs-dir", runs, "serve-adapter", run_dir.name, env=env)
    assert served.returncode == 0
    assert f"--lora-modules brightrun-{run_dir.name}={run_dir}/output --max-lora-rank 16" in served.stdout
    assert jobs_cli("--runs-dir", runs, "show", "no-such-run", env=env).returncode == 2


def test_vllm_refuses_adapters_it_cannot_load():
    from jobs.serve import adapter_problems

    assert adapter_problems({"r": 16, "target_modules": ["q_proj", "v_proj"]}) == []
    problems = adapter_problems(
        {"r": 16, "target_modules": ["q_proj", "embed_tokens"], "modules_to_save": ["lm_head"]}
    )
    assert any("modules_to_save" in p for p in problems) and any("embed_tokens" in p for p in problems)
    # What vLLM's peft_helper refuses at load (DoRA, bias), said first; fused names it serves, accepted.
    assert (
        adapter_problems({"r": 8, "target_modules": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]})
        == []
    )
    dora, bias = adapter_problems(
        {"r": 8, "use_dora": True, "bias": "lora_only", "target_modules": ["q_proj"]}
    )
    assert "vLLM does not serve DoRA" in dora and "bias 'lora_only'" in bias


def test_merge_writes_a_full_model(smoke_run):
    run_dir, url, _ = smoke_run
    proc = jobs_cli("--runs-dir", str(run_dir.parent), "merge", run_dir.name, env={"DATABASE_URL": url})
    assert proc.returncode == 0, proc.stderr[-2000:]
    merged = run_dir / "output" / "merged"
    assert (merged / "config.json").is_file() and list(merged.glob("*.safetensors"))
    with registry.session(url) as s:
        [artifact] = (
            s.query(registry.ModelArtifact).filter_by(job_id=run_dir.name, artifact_type="merged").all()
        )
    assert artifact.size_bytes > 0 and len(artifact.sha256) == 64


def test_eval_in_training_matches_a_fresh_load(smoke_run):
    """The scores written inside training (base = adapter switched off) equal `jobs eval`'s reload."""
    run_dir, url, _ = smoke_run
    in_training = json.loads((run_dir / "eval.json").read_text())
    proc = jobs_cli("--runs-dir", str(run_dir.parent), "eval", run_dir.name, env={"DATABASE_URL": url})
    assert proc.returncode == 0, proc.stderr[-2000:]
    reloaded = json.loads((run_dir / "eval.json").read_text())
    for side in ("base", "adapter"):
        assert reloaded[side]["loss"] == pytest.approx(in_training[side]["loss"], rel=1e-5)
    assert reloaded["samples"] == in_training["samples"]


def evals_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return module_cli("evals", *args, env=env)


def test_eval_judges_the_finished_run_and_records_its_verdict(smoke_run, tmp_path):
    """`just eval RUN` on a real finished run: real answers from the tiny model and its adapter, real lm-eval,
    the judge over real HTTP (the stand-in: it scores every answer 3 and calls every comparison a tie, so the
    adapter's win rate is exactly 50%), the verdict in eval/, the registry and the report: on 2 prompts of
    one held-out conversation, insufficient, saying what is missing."""
    run_dir, url, _ = smoke_run
    key = "judge-key-3f9c1b"
    bad_gates = tmp_path / "gates.yaml"
    bad_gates.write_text("judge:\n  min_win_rate: 0.6\n")
    with StandIn() as judge:
        env = {
            "DATABASE_URL": url,
            "JUDGE_BASE_URL": judge.url,
            "JUDGE_MODEL": "stand-in",
            "JUDGE_API_KEY": key,
        }
        runs = str(run_dir.parent)
        refused = evals_cli("--runs-dir", runs, "run", run_dir.name, "--gates", str(bad_gates), env=env)
        assert (
            refused.returncode == 2 and "judge.min_win_rate: Extra inputs are not permitted" in refused.stderr
        )
        assert not (run_dir / "eval").exists() and not judge.requests  # nothing judged, nothing written
        args = ("--limit", "2", "--max-new-tokens", "8", "--general-limit", "2", "--general-max-tokens", "16")
        proc = evals_cli("--runs-dir", runs, "run", run_dir.name, *args, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run_dir / "eval"
    assert {p.name for p in out.iterdir()} >= {
        "prompts.jsonl",
        "answers.jsonl",
        "generation.json",
        "judgements.jsonl",
        "judge.json",
        "general.json",
        "verdict.json",
    }
    prompts = [json.loads(x) for x in (out / "prompts.jsonl").read_text().splitlines()]
    answers = [json.loads(x) for x in (out / "answers.jsonl").read_text().splitlines()]
    assert len(prompts) == 2 and {(a["id"], a["model"]) for a in answers} == {
        (p["id"], m) for p in prompts for m in ("base", "adapter")
    }
    rows = [json.loads(x) for x in (out / "judgements.jsonl").read_text().splitlines()]
    # per prompt: 2 answers graded, 2 orders, and the reference graded (the judge's agreement check)
    assert len(rows) == 10 and {r["status"] for r in rows} == {"ok"}
    assert sorted(r["quality_score"] for r in rows if r.get("model") == "reference") == sorted(
        p["quality_score"] for p in prompts
    )
    assert {r["headers"].get("authorization") for r in judge.requests} == {f"Bearer {key}"}
    verdict = json.loads((out / "verdict.json").read_text())
    gates = {g["gate"]: g for g in verdict["gates"]}
    # 2 prompts of the sample's one held-out conversation, 2 lm-eval items: judged and scored, and too
    # little to pass or fail anything on (issue 27): each gate says what is missing.
    win = gates["judge_win_rate"]
    assert win["status"] == "insufficient" and "win rate 0.50" in win["detail"]
    assert "held-out conversation(s) scored; at least 10 needed" in win["detail"]
    assert gates["judge_on_brand"]["status"] == "insufficient" and gates["judge_on_brand"]["difference"] == 0
    ifeval = gates["general_brightrun_ifeval"]
    assert ifeval["status"] == "insufficient" and "2 item(s) scored; at least 20 needed" in ifeval["detail"]
    expected = "fail" if gates["heldout_loss"]["status"] == "fail" else "insufficient"
    assert verdict["verdict"] == expected
    job = registry.get_job(run_dir.name, url)
    assert job.verdict == expected and job.evaluation["gates"] == verdict["gates"]
    shown = f"Evaluation verdict: <span class='verdict-{expected}'>{expected.upper()}"
    assert shown in (run_dir / "report.html").read_text()
    for path in run_dir.rglob("*"):  # the judge's key is in no file the run keeps
        assert not path.is_file() or key.encode() not in path.read_bytes(), path
