"""Finished runs to promote, without training: a real PEFT adapter on assets/tiny-llama (peft's LoraConfig and
save_pretrained, built once per test run in a subprocess: torch stays out of the test process; merged/ beside
it holds the same adapter merged into the base by PEFT), copied into
run folders shaped as jobs/run.py leaves them, each with its registry row, adapter record and verdict.

Also the environment for an S3 artifact store on loopback (tests/s3_server.py's moto server).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import ROOT, TINY_MODEL_DIR, module_cli, once

from jobs import registry
from jobs.runfolder import sha256_file, write_json
from tests.s3_server import ACCESS_KEY, DATACENTER, SECRET_KEY

BUILD_ADAPTER = """
import sys, torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(sys.argv[1]))
torch.manual_seed(int(sys.argv[3]))  # the adapter's own seed: another seed, another adapter on the same base
# init_lora_weights=False: random A and B, so the adapter changes the model (PEFT's default B is zero).
lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
get_peft_model(model, lora).save_pretrained(sys.argv[2])
# And the same adapter merged into the real base (merged/): what a server that cannot load adapters serves.
from peft import PeftModel
base = AutoModelForCausalLM.from_pretrained(sys.argv[1])
PeftModel.from_pretrained(base, sys.argv[2]).merge_and_unload().save_pretrained(sys.argv[2] + "/merged")
"""


BUILT: dict[int, Path] = {}  # each test file that imports a fixture registers its own copy: build once


def build_adapter(tmp_path_factory, seed: int) -> Path:
    if seed in BUILT:
        return BUILT[seed]

    def build(folder: Path) -> None:
        proc = subprocess.run(
            [sys.executable, "-c", BUILD_ADAPTER, str(TINY_MODEL_DIR), str(folder), str(seed)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]

    BUILT[seed] = once(tmp_path_factory, f"peft-adapter-{seed}", build)
    return BUILT[seed]


@pytest.fixture(scope="session")
def adapter(tmp_path_factory, assets) -> Path:
    return build_adapter(tmp_path_factory, 0)


@pytest.fixture(scope="session")
def adapter_b(tmp_path_factory, assets) -> Path:
    """Another real adapter on the same base (another seed): the other side of an A/B."""
    return build_adapter(tmp_path_factory, 1)


def evaluation(verdict: str, adapter_loss: float = 2.49) -> dict:
    gates = [
        {
            "gate": "heldout_loss",
            "status": "pass" if verdict == "pass" else "fail",
            "required": True,
            "detail": "",
            "base": 2.77,
            "adapter": adapter_loss,
        },
    ]
    return {"verdict": verdict, "gates": gates, "win_rate": 0.62, "win_rate_ci95": [0.55, 0.69]}


SYSTEM = {"role": "system", "content": "You are Elena Morales, CFP."}
# Evaluation answers to rate (versions/ratings.py): three held-out prompts from two conversations; each
# answer says whose it is, so a test can find the adapter's on a page that does not.
PROMPTS = [
    ("c1", "c1-t1", "pragmatic_optimist", "shame", "I have been avoiding my 401k for months."),
    ("c1", "c1-t2", "pragmatic_optimist", "hope", "Okay, where do I even start?"),
    ("c2", "c2-t1", "anxious_planner", "fear", "The market dropped and I cannot sleep."),
]


def write_eval(run_dir: Path) -> None:
    """What `evals run` leaves in eval/ for these prompts: prompts, both answers, the judge's rows (it picks
    the adapter on c1-t1 and c2-t1, the base on c1-t2, both orders alike)."""
    prompts, answers, judged = [], [], []
    for conv, pid, persona, emotion, text in PROMPTS:
        prompts.append(
            {"id": pid, "conversation_id": conv, "persona_key": persona, "primary_emotion": emotion,
             "intensity": 0.6, "training_topic_key": "retirement", "reference": "ref",
             "messages": [SYSTEM, {"role": "user", "content": text}]}
        )  # fmt: skip
        for side in ("base", "adapter"):
            answers.append(
                {"id": pid, "model": side, "text": f"[{side} answer to {pid}] Let's take one step."}
            )
        winner = "base" if pid == "c1-t2" else "adapter"
        for order in (["base", "adapter"], ["adapter", "base"]):
            judged.append({"kind": "pairwise", "id": pid, "conversation": conv, "order": order, "status": "ok",
                           "winner_model": winner, "winner": "AB"[order.index(winner)]})  # fmt: skip
    lines = lambda rows: "".join(json.dumps(r) + "\n" for r in rows)  # noqa: E731
    (run_dir / "eval" / "prompts.jsonl").write_text(lines(prompts))
    (run_dir / "eval" / "answers.jsonl").write_text(lines(answers))
    (run_dir / "eval" / "judgements.jsonl").write_text(lines(judged))


def make_run(
    runs: Path, url: str, run_id: str, adapter: Path, verdict: str | None = "pass", data: Path | None = None
) -> Path:
    """runs/RUN/ as a completed, evaluated run leaves it, and its registry row (verdict None: not evaluated).
    data: a converted folder the run trained on (its manifest, recorded in run.json as jobs/run.py does);
    default a stand-in manifest with no held-out prompts."""
    run_dir = runs / run_id
    out = run_dir / "output"
    out.mkdir(parents=True)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copyfile(adapter / name, out / name)
    shutil.copyfile(TINY_MODEL_DIR / "tokenizer_config.json", out / "tokenizer_config.json")
    (run_dir / "config.yaml").write_text(f"base_model: {TINY_MODEL_DIR}\nadapter: lora\nlora_r: 8\n")
    if data is not None:
        shutil.copyfile(data / "manifest.json", run_dir / "data-manifest.json")
    else:
        write_json(
            run_dir / "data-manifest.json",
            {"input": {"path": "demo.json", "sha256": "0" * 64}, "outputs": {}},
        )
    lineage = {
        "run_id": run_id,
        "data": {"manifest_sha256": sha256_file(run_dir / "data-manifest.json")}
        | ({"dir": str(data)} if data is not None else {}),
        "config": {"sha256": sha256_file(run_dir / "config.yaml")},
        "adapter": {"sha256": sha256_file(out / "adapter_model.safetensors")},
    }
    write_json(run_dir / "run.json", lineage)
    (run_dir / "report.html").write_text(f"<html><body>report of {run_id}</body></html>\n")
    if verdict is not None:
        (run_dir / "eval").mkdir()
        write_json(run_dir / "eval" / "verdict.json", {"run_id": run_id, **evaluation(verdict)})
    with registry.session(url) as s:
        s.add(
            registry.TrainingJob(
                id=run_id,
                status="completed",
                preset="balanced",
                model="smoke",
                hardware="cpu",
                hyperparameters={"lora_r": 8},
                metrics={},
                artifact_path=str(out),
                verdict=verdict,
                evaluation=evaluation(verdict) if verdict else None,
            )
        )
        s.commit()
    registry.add_artifact(
        run_id, url, artifact_type="adapter", storage_path=str(out),
        size_bytes=(out / "adapter_model.safetensors").stat().st_size,
        sha256=lineage["adapter"]["sha256"], base_model=str(TINY_MODEL_DIR), lora_config={"r": 8},
    )  # fmt: skip
    return run_dir


def s3_env(s3, bucket: str, prefix: str = "brightrun") -> dict[str, str]:
    """ARTIFACT_STORE on the loopback S3 server, a bucket created for it."""
    s3.bucket(bucket)
    return {
        "ARTIFACT_STORE": f"s3://{bucket}/{prefix}",
        "AWS_ENDPOINT_URL": s3.url,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": DATACENTER.lower(),
    }


def stored_keys(s3, bucket: str) -> list[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A registry of the test's own: a new SQLite file, or a new schema in the test PostgreSQL (dropped
    after), so the shared database is never migrated past what other branches know."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    from conftest import postgres_url
    from sqlalchemy import create_engine, text

    url = registry.database_url(postgres_url())
    schema = f"versions_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    own = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    yield own
    if (engine := registry._engines.pop(own, None)) is not None:
        engine.dispose()  # its pooled connections would outlive the schema
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def cli(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """`python -m versions ...` as a user runs it."""
    return module_cli("versions", *args, env=env, timeout=timeout)


@pytest.fixture
def versions_main(monkeypatch, capsys):
    """`python -m versions ARGS` in this process (the same main(), without a second of start-up per call):
    returns (exit code, stdout, stderr); env: variables set for the call."""
    from versions.__main__ import main

    def call(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        rc = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, rc, out, err)

    return call


def dies_at(module: str) -> str:
    """`python -c` source: MODULE's main(argv[2:]) in a process that dies (os._exit: no cleanup, no except)
    just before storing its Nth object (argv[1]): an upload interrupted as a killed machine leaves it."""
    return f"""
import os, sys
from versions import store
from {module} import main
real, sent = store.S3Store.put, []
def put(self, src, key, sha256):
    if len(sent) == int(sys.argv[1]):
        os._exit(9)
    real(self, src, key, sha256)
    sent.append(key)
store.S3Store.put = put
sys.exit(main(sys.argv[2:]))
"""
