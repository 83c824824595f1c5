"""The arguments several verbs of `python -m jobs` share (jobs/__main__.py): what a job is (`train`,
`launch`), how a pod run is launched (`launch`, `preflight --launch`), how often to poll."""

from __future__ import annotations

import argparse


def job_args(p: argparse.ArgumentParser) -> None:
    """What a training job is, the same for `train` (here) and `launch` (on a pod)."""
    p.add_argument("preset")
    p.add_argument("model")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--input", default=None, help="brightrun-v4 file (default: the repo's demo data)")
    p.add_argument("--data", default=None, help="an already converted folder instead of --input")
    p.add_argument(
        "--allow-drop", action="store_true", help="train even if lines exceed sequence_len (counted)"
    )
    p.add_argument("--run-id", default=None, help="name the run (default: time-preset-model-random)")


def poll_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--poll", type=float, default=30.0, help="seconds between polls (default 30)")


def launch_args(p: argparse.ArgumentParser) -> None:
    """How a pod run is launched: `launch`, and `preflight --launch` (the same checks)."""
    job_args(p)
    p.add_argument("--gpu", default=None, help='RunPod gpuTypeId, e.g. "NVIDIA H100 PCIe"')
    p.add_argument("--gpus", type=int, default=None, help="GPUs in the pod (a hardware profile must match)")
    p.add_argument("--hardware", default=None, help="hardware profile name instead of --gpu/--gpus")
    p.add_argument("--spot", action="store_true", help="an interruptible pod (relaunched when taken back)")
    p.add_argument("--bid", type=float, default=None, help="spot bid per GPU-hour (default: the minimum)")
    p.add_argument("--max-cost", type=float, default=None, help="refuse above, stop the pod at (USD)")
    p.add_argument("--max-retries", type=int, default=3, help="relaunches after preemption (default 3)")
    p.add_argument("--cloud", default="SECURE", choices=["SECURE", "COMMUNITY", "ALL"])
    p.add_argument("--network-volume", default=None, help="RunPod network volume id (data goes up by S3)")
    p.add_argument("--datacenter", default=None, help="checked against the network volume's datacenter")
    p.add_argument(
        "--volume-path",
        default=None,
        help="where the pod mounts the volume (default: the hardware profile's)",
    )
    p.add_argument("--detach", action="store_true", help="create the pod and return (`jobs follow RUN`)")
    p.add_argument(
        "--targets-per-step",
        type=int,
        default=None,
        help="trained pairs per optimizer step (the customer's batch_size) instead of the preset's",
    )
    p.add_argument(
        "--image",
        default=None,
        help="the pushed image of this repo (default $BRIGHTRUN_IMAGE, else Axolotl's own image, our code "
        "installed from the volume at start)",
    )
    p.add_argument(
        "--registry-auth",
        default=None,
        help="RunPod registry credential id for a private --image (default $RUNPOD_REGISTRY_AUTH_ID)",
    )
    p.add_argument(
        "--hang-timeout",
        type=float,
        default=None,
        help="seconds with no new step before a pod counts as hung and is ended (default: 1 h or 10 "
        "estimated steps, the longer)",
    )
    p.add_argument(
        "--max-hours",
        type=float,
        default=24.0,
        help="the job's deadline from its first pod's create: each pod ends itself then, owner or not "
        "(default 24)",
    )
    p.add_argument(
        "--start-timeout",
        type=float,
        default=None,
        help="seconds a pod may take to start the job (image pull included) before it is replaced "
        "(default 900)",
    )
    poll_arg(p)
