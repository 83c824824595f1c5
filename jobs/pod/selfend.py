"""A pod ending itself (issue 25), so that an owner that is gone (a closed laptop, a launcher killed, a
service down) cannot leave it billing. docker/entrypoint.sh runs it once the run has ended (its adapter on
a volume that outlives the pod, and in the artifact store when there is one), and at the job's deadline.

    python -m jobs.pod.selfend ended|deadline

RunPod gives every pod RUNPOD_POD_ID and RUNPOD_API_KEY, a "Pod-scoped API key" (github.com/runpod/docs
pods/templates/environment-variables.mdx, "Runpod-provided variables"): the pod terminates itself with it
through the same client as the launcher (REST v2 deletePod, or GraphQL podTerminate with
RUNPOD_API=graphql; jobs/pod/rest.py). At the deadline it first leaves pods/POD.deadline on the volume,
so its owner, if any, records why (jobs/pod/follow.py).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REASONS = ("ended", "deadline")


def deadline_mark(pod_id: str) -> str:
    return f"pods/{pod_id}.deadline"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in REASONS:
        print(f"usage: python -m jobs.pod.selfend {'|'.join(REASONS)}", file=sys.stderr)
        return 2
    why = args[0]
    pod_id, key = os.environ.get("RUNPOD_POD_ID"), os.environ.get("RUNPOD_API_KEY")
    if not pod_id or not key:
        print(
            "selfend: not on a RunPod pod (no RUNPOD_POD_ID and RUNPOD_API_KEY): nothing to end",
            file=sys.stderr,
        )
        return 0
    volume = os.environ.get("BRIGHTRUN_VOLUME")
    if why == "deadline" and volume:
        mark = Path(volume) / deadline_mark(pod_id)
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
    from jobs.pod import rest, runpod

    try:  # REST v2 unless RUNPOD_API=graphql, as the launcher's client (jobs/pod/rest.py)
        with rest.client(api_key=key) as client:
            client.terminate(pod_id)
    except runpod.AuthError as exc:
        # Whether RunPod takes a pod-scoped key on REST v2 is not documented: refused there, the pod asks
        # GraphQL (the API of `runpodctl stop pod $RUNPOD_POD_ID` in a pod, docs pods/manage-pods) rather
        # than bill on.
        print(f"selfend: REST v2 refused the pod's key ({exc}); trying GraphQL", file=sys.stderr)
        try:
            with runpod.Client(api_key=key) as client:
                client.terminate(pod_id)
        except runpod.RunPodError as again:
            print(f"selfend: pod {pod_id} could not terminate itself ({why}): {again}", file=sys.stderr)
            return 1
    except runpod.RunPodError as exc:
        print(f"selfend: pod {pod_id} could not terminate itself ({why}): {exc}", file=sys.stderr)
        return 1
    print(f"selfend: pod {pod_id} terminated itself ({why})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
