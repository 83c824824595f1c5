#!/usr/bin/env bash
# One BrightRun training job on a GPU pod: the Axolotl config `jobs launch` rendered for it, run exactly as
# it is. Our image's CMD; on Axolotl's own image (the default), what the pod's start command runs once it
# has installed our wheels from the volume (jobs/pod/bundle.py, BRIGHTRUN_BUNDLE).
#
# The image keeps Axolotl's ENTRYPOINT, /root/cloud-entrypoint.sh: it starts sshd (PUBLIC_KEY or SSH_KEY),
# Jupyter Lab on 8888 (unless JUPYTER_DISABLE=1, password JUPYTER_PASSWORD), puts CUDA 13's libraries on
# LD_LIBRARY_PATH, then `exec "$@"`: this script. So SSH and Jupyter work while the job runs.
#
# The config is rendered once, on the launcher's side, with this pod's paths (the data on the volume, the
# run folder $BRIGHTRUN_VOLUME/runs/ID), and put on the volume with a job.json beside it that says what it
# was rendered from (jobs/pod/config.py). `python -m jobs run-config` copies it byte for byte into the run
# folder and trains it as a local run is trained: the sha256 in the launcher's run.json names the file
# Axolotl is given. Preset, model, data and overrides are all in it: none of them is an env variable.
#
# Environment (a `docker run -e` / RunPod pod env):
#   BRIGHTRUN_CONFIG      required  the rendered config on the volume, /workspace/data/configs/ID/config.yaml
#   BRIGHTRUN_RUN_ID      required  the run it was rendered for: resumed when $RUNS/ID has run.json and a
#                                   checkpoint (a restarted or re-created pod goes on), else trained from
#                                   BRIGHTRUN_CONFIG under that id
#   BRIGHTRUN_HARDWARE    optional  this machine's hardware profile when it is not the one the config was
#                                   rendered for (the run's lineage, how Axolotl is launched; the config
#                                   itself is unchanged): `run-config --hardware`
#   BRIGHTRUN_VOLUME      optional  the persistent volume, default /workspace/data: Axolotl's cloud image
#                                   lives in /workspace (its venv /workspace/axolotl-venv, its source
#                                   /workspace/axolotl) and its docs say to mount volumes at /workspace/data,
#                                   where it already keeps HF_HOME. Runs go to $BRIGHTRUN_VOLUME/runs.
#   DATABASE_URL          optional  default sqlite:///$BRIGHTRUN_VOLUME/runs/registry.db (beside the runs)
#   WEBHOOK_URL, TRAINING_WEBHOOK_SECRET, HF_TOKEN, WANDB_API_KEY: read by the job itself from the
#                         environment; this script never prints them (and never runs with `set -x`).
#   BRIGHTRUN_DRY_RUN=1   print the command it would run (one line, on stdout) and exit 0
#   BRIGHTRUN_STOP_GRACE_S  optional  seconds the trainer may spend saving after SIGTERM (jobs/stopgrace.py);
#                         default 3 on a RunPod pod (SIGKILL follows in ~5 s), no bound elsewhere
#   ARTIFACT_STORE, AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION  optional:
#                         an S3 artifact store (versions/store.py); once the run completed, its adapter, config,
#                         data manifest, eval/ and report go there under runs/ID/ from this pod (jobs/pod/
#                         stored.py), before the exit mark, so the adapter exists off the pod before the launcher
#                         terminates it. A failed upload leaves the run completed (said, and in runs/ID/stored.json).
#   BRIGHTRUN_SELF_END=1  the launcher's word that the volume outlives the pod: once the run is final on
#                         the volume the pod terminates itself with RunPod's pod-scoped RUNPOD_API_KEY
#                         (jobs/pod/selfend.py), so a gone owner cannot leave it billing
#   BRIGHTRUN_DEADLINE_TS  optional  seconds since the epoch: the job's deadline (`jobs launch --max-hours`);
#                         then the pod leaves pods/ID.deadline and terminates itself, whatever the run does
#   BRIGHTRUN_KEEP_ALIVE=1  after the job, stay up (the image's own CMD, `sleep infinity`) for SSH/Jupyter;
#                         otherwise exit with the job's code. A pod whose container exits may be restarted
#                         by the cloud: a restart resumes from the run's checkpoint instead of starting over.
#   RUNPOD_POD_ID         set by RunPod in every pod (docs.runpod.io pods/manage-pods: `runpodctl pod stop
#                         $RUNPOD_POD_ID`). When set, the container leaves two marks for the launcher on the
#                         volume: pods/ID.started once it can run the job (the launcher's start deadline:
#                         a host that never starts the image leaves none), pods/ID.exited with the job's
#                         exit code once the job is over (uploads and webhooks done: the launcher then
#                         fetches and terminates the pod instead of waiting for RunPod to say EXITED).
#
# A restarted container on a finished run (completed, failed or cancelled in the volume's registry) exits
# 0 at once: RunPod restarts a container whose process exits (dstack issue 1142), and `resume` refuses a
# completed run, so without this the pod would restart, and bill, until someone terminates it. (It first
# finishes an artifact-store upload that a killed container left half done, and writes the exit mark.)
#
# Exit code: the job's (jobs/__main__.py: 0 done, 1 failed, 2 bad input, 130 interrupted or cancelled:
# a config that is not the one job.json names is bad input); 2 when a required variable is missing.
set -euo pipefail

fail() {
  echo "entrypoint: $*" >&2
  exit 2
}

# The repo root in our image (jobs/ runs its subprocesses there, and model profiles name assets/ relative
# to it). On Axolotl's own image this script runs from the volume's bundle (jobs/pod/bundle.py: the start
# command installed our wheel first), where there is no source tree to go to.
root="$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -d "${root}/jobs" ]]; then cd "$root"; fi

volume="${BRIGHTRUN_VOLUME:-/workspace/data}"
runs_dir="${volume}/runs"
export DATABASE_URL="${DATABASE_URL:-sqlite:///${runs_dir}/registry.db}"

[[ -n "${BRIGHTRUN_CONFIG:-}" ]] ||
  fail "BRIGHTRUN_CONFIG is not set (the config.yaml that jobs launch rendered, on the volume: configs/ID/config.yaml)"
[[ -n "${BRIGHTRUN_RUN_ID:-}" ]] || fail "BRIGHTRUN_RUN_ID is not set (the run the config was rendered for)"

# Which checkpoint counts (a complete one) is jobs/runfolder.py's rule: asked, not re-implemented here.
has_checkpoint() {
  python -m jobs.runfolder checkpoint "$1" >/dev/null
}

# The completed run's files to the artifact store (a no-op without ARTIFACT_STORE, or when the run did not
# complete, or when they are there already). Its failure is said and recorded, never the job's exit code.
store_upload() {
  [[ -n "${ARTIFACT_STORE:-}" ]] || return 0
  python -m jobs.pod.stored "$runs_dir" "$run_id" ||
    echo "entrypoint: warning: the run's files are not in the artifact store (its adapter stays on the volume)" >&2
}

# The pod ends itself (jobs/pod/selfend.py, with the pod-scoped RUNPOD_API_KEY RunPod gives it), so an owner
# that is gone cannot leave it billing (issue 25): once its run has ended, when the launcher said the volume
# outlives the pod (BRIGHTRUN_SELF_END=1), and at the job's deadline (BRIGHTRUN_DEADLINE_TS, seconds since
# the epoch, the same across restarts and relaunches) whatever the run is doing.
self_end() {
  [[ -n "${RUNPOD_POD_ID:-}" && "${BRIGHTRUN_SELF_END:-}" == "1" && "${BRIGHTRUN_KEEP_ALIVE:-}" != "1" ]] || return 0
  python -m jobs.pod.selfend ended || echo "entrypoint: warning: the pod could not end itself" >&2
}

run_id="$BRIGHTRUN_RUN_ID"
if [[ -f "${runs_dir}/${run_id}/run.json" ]] && python -m jobs.runfolder finished "${runs_dir}/${run_id}"; then
  echo "entrypoint: run ${run_id} is already over on the volume (a restarted container): nothing to train" >&2
  # A container killed during the upload (a restart before its exit mark): the upload is finished now,
  # then the mark the launcher waits for is written.
  store_upload
  if [[ -n "${RUNPOD_POD_ID:-}" && ! -f "${volume}/pods/${RUNPOD_POD_ID}.exited" ]]; then
    mkdir -p "${volume}/pods"
    echo 0 >"${volume}/pods/${RUNPOD_POD_ID}.exited"
  fi
  self_end
  exit 0
fi
cmd=(python -m jobs --runs-dir "$runs_dir")
if [[ -f "${runs_dir}/${run_id}/run.json" ]] && has_checkpoint "${runs_dir}/${run_id}"; then
  cmd+=(resume "$run_id") # its run folder holds its copy of the config
else
  cmd+=(run-config "$BRIGHTRUN_CONFIG" --run-id "$run_id")
  [[ -n "${BRIGHTRUN_HARDWARE:-}" ]] && cmd+=(--hardware "$BRIGHTRUN_HARDWARE")
fi

# The command holds names and paths only: secrets stay in the environment.
printf -v line '%q ' "${cmd[@]}"
if [[ "${BRIGHTRUN_DRY_RUN:-}" == "1" ]]; then
  echo "${line% }"
  exit 0
fi

# A volume mounted at /workspace hides the image's Python: say so instead of "command not found".
python -c "import axolotl, jobs" 2>/dev/null ||
  fail "the image's Python cannot import axolotl and jobs: mount the volume at /workspace/data, not /workspace"

mkdir -p "$runs_dir"
marks=""
if [[ -n "${RUNPOD_POD_ID:-}" ]]; then
  marks="${volume}/pods/${RUNPOD_POD_ID}"
  mkdir -p "${volume}/pods"
  date -u +%Y-%m-%dT%H:%M:%SZ >"${marks}.started"
  if [[ -n "${BRIGHTRUN_DEADLINE_TS:-}" ]]; then # the job's deadline, whatever the run is doing then
    (
      left=$((${BRIGHTRUN_DEADLINE_TS%.*} - $(date +%s)))
      if ((left > 0)); then sleep "$left"; fi
      python -m jobs.pod.selfend deadline
    ) &
  fi
  # RunPod sends SIGKILL about 5 s after SIGTERM: the trainer tries its checkpoint save for 3 s at most,
  # the job is killed 1 s later, and the run is recorded interrupted in what is left (jobs/stopgrace.py).
  export BRIGHTRUN_STOP_GRACE_S="${BRIGHTRUN_STOP_GRACE_S:-3}"
fi
echo "entrypoint: ${line% }" >&2
echo "entrypoint: code from $(python -c 'import jobs; print(jobs.__file__)')" >&2

# The job runs as a child so that this script (PID 1 in the container) can pass on the SIGTERM of a pod
# stop: the trainer then tries a checkpoint save within BRIGHTRUN_STOP_GRACE_S and stops (status
# interrupted, resumable from its last complete checkpoint).
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
[[ "$status" == 0 ]] && store_upload
[[ -n "$marks" ]] && echo "$status" >"${marks}.exited"
# The run final on the volume (completed, failed, cancelled; a refusal is recorded failed): nothing left
# for this pod to do. Not final (a crash, an interruption): RunPod's restart of the container is the retry,
# and the owner decides the rest.
if [[ -f "${runs_dir}/${run_id}/run.json" ]] && python -m jobs.runfolder finished "${runs_dir}/${run_id}"; then
  self_end
fi

if [[ "${BRIGHTRUN_KEEP_ALIVE:-}" == "1" ]]; then
  echo "entrypoint: BRIGHTRUN_KEEP_ALIVE=1: staying up for SSH/Jupyter until the pod is stopped" >&2
  exec sleep infinity
fi
exit "$status"
