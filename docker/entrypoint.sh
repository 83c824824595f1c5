#!/usr/bin/env bash
# One BrightRun training job on a GPU pod, configured by the environment. The image's CMD.
#
# The image keeps Axolotl's ENTRYPOINT, /root/cloud-entrypoint.sh: it starts sshd (PUBLIC_KEY or SSH_KEY),
# Jupyter Lab on 8888 (unless JUPYTER_DISABLE=1, password JUPYTER_PASSWORD), puts CUDA 13's libraries on
# LD_LIBRARY_PATH, then `exec "$@"`: this script. So SSH and Jupyter work while the job runs.
#
# Environment (a `docker run -e` / RunPod pod env):
#   BRIGHTRUN_PRESET      required  preset name (axolotl_configs/presets/)
#   BRIGHTRUN_MODEL       required  model profile name (axolotl_configs/models/)
#   BRIGHTRUN_DATA        required  a converted data folder on the volume, e.g. /workspace/data/datasets/NAME
#   BRIGHTRUN_HARDWARE    optional  hardware profile (axolotl_configs/hardware/): `--hardware`
#   BRIGHTRUN_OVERRIDES   optional  space-separated key=value Axolotl overrides (no spaces inside a value)
#   BRIGHTRUN_RUN_ID      optional  the run's id: resumed when $RUNS/ID has run.json and a checkpoint
#                                   (a restarted or re-created pod goes on), else trained under that id
#   BRIGHTRUN_VOLUME      optional  the persistent volume, default /workspace/data: Axolotl's cloud image
#                                   lives in /workspace (its venv /workspace/axolotl-venv, its source
#                                   /workspace/axolotl) and its docs say to mount volumes at /workspace/data,
#                                   where it already keeps HF_HOME. Runs go to $BRIGHTRUN_VOLUME/runs.
#   DATABASE_URL          optional  default sqlite:///$BRIGHTRUN_VOLUME/runs/registry.db (beside the runs)
#   WEBHOOK_URL, TRAINING_WEBHOOK_SECRET, HF_TOKEN, WANDB_API_KEY: read by the job itself from the
#                         environment; this script never prints them (and never runs with `set -x`).
#   BRIGHTRUN_DRY_RUN=1   print the command it would run (one line, on stdout) and exit 0
#   BRIGHTRUN_KEEP_ALIVE=1  after the job, stay up (the image's own CMD, `sleep infinity`) for SSH/Jupyter;
#                         otherwise exit with the job's code. A pod whose container exits may be restarted
#                         by the cloud: with BRIGHTRUN_RUN_ID set, a restart resumes instead of starting over.
#
# Exit code: the job's (jobs/__main__.py: 0 done, 1 failed, 2 bad input, 130 interrupted or cancelled);
# 2 when a required variable is missing or an override is not key=value.
set -euo pipefail

fail() {
  echo "entrypoint: $*" >&2
  exit 2
}

# The repo root (jobs/ runs its subprocesses there, and model profiles name assets/ relative to it).
cd "$(dirname "${BASH_SOURCE[0]}")/.."

volume="${BRIGHTRUN_VOLUME:-/workspace/data}"
runs_dir="${volume}/runs"
export DATABASE_URL="${DATABASE_URL:-sqlite:///${runs_dir}/registry.db}"

[[ -n "${BRIGHTRUN_PRESET:-}" ]] || fail "BRIGHTRUN_PRESET is not set (a preset name, e.g. balanced)"
[[ -n "${BRIGHTRUN_MODEL:-}" ]] || fail "BRIGHTRUN_MODEL is not set (a model profile name, e.g. 8b)"
[[ -n "${BRIGHTRUN_DATA:-}" ]] || fail "BRIGHTRUN_DATA is not set (a converted data folder on the volume)"

# Overrides: split on whitespace only (read -a does no globbing), each must be key=value.
read -r -a overrides <<<"${BRIGHTRUN_OVERRIDES:-}"
for kv in "${overrides[@]}"; do
  [[ "$kv" == ?*=* ]] || fail "BRIGHTRUN_OVERRIDES: '${kv}' is not key=value"
done

# A checkpoint as jobs/run.py's last_checkpoint counts one: output/checkpoint-N/trainer_state.json.
has_checkpoint() {
  local state
  for state in "$1"/output/checkpoint-*/trainer_state.json; do
    [[ -f "$state" && "$(basename "$(dirname "$state")")" =~ ^checkpoint-[0-9]+$ ]] && return 0
  done
  return 1
}

run_id="${BRIGHTRUN_RUN_ID:-}"
cmd=(python -m jobs --runs-dir "$runs_dir")
if [[ -n "$run_id" && -f "${runs_dir}/${run_id}/run.json" ]] && has_checkpoint "${runs_dir}/${run_id}"; then
  cmd+=(resume "$run_id")
else
  cmd+=(train "$BRIGHTRUN_PRESET" "$BRIGHTRUN_MODEL" --data "$BRIGHTRUN_DATA")
  [[ -n "${BRIGHTRUN_HARDWARE:-}" ]] && cmd+=(--hardware "$BRIGHTRUN_HARDWARE")
  [[ -n "$run_id" ]] && cmd+=(--run-id "$run_id")
  cmd+=("${overrides[@]}")
fi

# The command holds names, paths and overrides only: secrets stay in the environment.
printf -v line '%q ' "${cmd[@]}"
if [[ "${BRIGHTRUN_DRY_RUN:-}" == "1" ]]; then
  echo "${line% }"
  exit 0
fi

# A volume mounted at /workspace hides the image's Python: say so instead of "command not found".
python -c "import axolotl, jobs" 2>/dev/null ||
  fail "the image's Python cannot import axolotl and jobs: mount the volume at /workspace/data, not /workspace"

mkdir -p "$runs_dir"
echo "entrypoint: ${line% }" >&2

# The job runs as a child so that this script (PID 1 in the container) can pass on the SIGTERM of a pod
# stop: the trainer then saves a checkpoint and stops (status interrupted, resumable).
"${cmd[@]}" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' TERM INT
status=0
wait "$child" || status=$?
while kill -0 "$child" 2>/dev/null; do # a trapped signal ends `wait` early: wait for the job itself
  status=0
  wait "$child" || status=$?
done
trap - TERM INT
echo "entrypoint: the job exited with ${status}" >&2

if [[ "${BRIGHTRUN_KEEP_ALIVE:-}" == "1" ]]; then
  echo "entrypoint: BRIGHTRUN_KEEP_ALIVE=1: staying up for SSH/Jupyter until the pod is stopped" >&2
  exec sleep infinity
fi
exit "$status"
