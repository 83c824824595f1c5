"""Run and track training jobs.

Usage:
  python -m jobs train PRESET MODEL [--input FILE | --data DIR] [--hardware H] [--allow-drop] [key=value ...]
  python -m jobs run-config CONFIG [--run-id RUN] [--hardware H]  (a config rendered by `launch`, as it is)
  python -m jobs resume RUN
  python -m jobs cancel RUN           (a pod run: its pod is terminated)
  python -m jobs launch PRESET MODEL [--input FILE | --data DIR] [--gpu ID] [--gpus N] [--spot [--bid X]]
                        [--max-cost USD] [--max-retries 3] [--network-volume ID] [--volume-path DIR]
                        [--image REF [--registry-auth ID]] [--start-timeout S] [--detach] [key=value ...]
  python -m jobs preflight PRESET MODEL [--hardware H] [--launch [launch's flags]] [key=value ...]
  python -m jobs status RUN
  python -m jobs logs RUN
  python -m jobs follow RUN            (a pod run: follow it again after Ctrl-C or --detach)
  python -m jobs fetch RUN [--checkpoints]  (a pod run: its adapter, logs, metrics from the volume)
  python -m jobs execute RUN           (a prepared run; what the service starts)
  python -m jobs runs
  python -m jobs show RUN
  python -m jobs eval RUN
  python -m jobs compare RUN_A RUN_B
  python -m jobs merge RUN
  python -m jobs serve-adapter REF [REF ...] [--run | --hardware PROFILE [--precision P]]
                                                       (REF: a run id or NAME@vN; one base, every adapter)
  python -m jobs service [--host 127.0.0.1] [--port 8000] [--model 70b-qlora] [--preset balanced]
  python -m jobs template [--create] [--gpu | --cpu] [--name NAME] [--image IMAGE]  (RunPod: the service)
  python -m jobs webhooks-replay RUN

Settings from the environment only: DATABASE_URL (registry), WEBHOOK_URL + TRAINING_WEBHOOK_SECRET
(signed status events), JOBS_API_TOKEN (the service's API).

Exit codes: 0 done; 1 the run failed (its row says why); 2 bad input (unknown preset, model or key,
missing data): nothing is created; 130 interrupted (resume it) or cancelled.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from jobs.cli_args import job_args, launch_args, poll_arg


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs", description=__doc__.split("\n")[0])
    p.add_argument("--runs-dir", default="runs", help="where run folders live (default runs/)")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="convert if needed, render, preprocess and train one run")
    job_args(t)
    t.add_argument("--hardware", default=None)
    t.add_argument(
        "--no-eval", action="store_true", help="skip the held-out comparison (`just eval RUN` later)"
    )
    rc = sub.add_parser(
        "run-config", help="train a config `jobs launch` rendered, byte for byte as it is (what a pod runs)"
    )
    rc.add_argument(
        "config", help="the rendered config.yaml, with the job.json `jobs launch` wrote beside it"
    )
    rc.add_argument("--run-id", default=None, help="the run it was rendered for (default: its own)")
    rc.add_argument(
        "--hardware", default=None, help="this machine's profile, when not the one it was rendered for"
    )
    r = sub.add_parser("resume", help="continue an interrupted run from its last checkpoint")
    r.add_argument("run")
    x = sub.add_parser("cancel", help="stop a run for good (status cancelled)")
    x.add_argument("run")
    la = sub.add_parser("launch", help="train on a RunPod pod: live price, cost cap, relaunch on preemption")
    launch_args(la)
    pf = sub.add_parser("preflight", help="the checks a run must pass before anything starts, as a table")
    launch_args(pf)
    pf.add_argument("--launch", action="store_true", help="a pod run's checks (RunPod, the volume, the cost)")
    st = sub.add_parser("status", help="a run's status, pod, step and cost so far")
    st.add_argument("run")
    lg = sub.add_parser("logs", help="a run's logs (a pod run: from its volume)")
    lg.add_argument("run")
    fo = sub.add_parser("follow", help="follow a pod run again (after Ctrl-C or --detach)")
    fo.add_argument("run")
    poll_arg(fo)
    fe = sub.add_parser("fetch", help="a pod run's adapter, logs and metrics from its volume into runs/RUN/")
    fe.add_argument("run")
    fe.add_argument("--checkpoints", action="store_true", help="the checkpoint-N/ folders too")
    bi = sub.add_parser("billing", help="a pod run's cost, ours beside RunPod's own bill, pod by pod")
    bi.add_argument("run")
    x = sub.add_parser("execute", help="preprocess and train a prepared run (the service uses it)")
    x.add_argument("run")
    x.add_argument("--no-eval", action="store_true")
    x = sub.add_parser("webhooks-replay", help="deliver a run's spooled, undelivered status events")
    x.add_argument("run")
    sub.add_parser("runs", help="list runs")
    s = sub.add_parser("show", help="one run in full")
    s.add_argument("run")
    e = sub.add_parser("eval", help="held-out loss of base and adapter, samples, report.html")
    e.add_argument("run")
    c = sub.add_parser("compare", help="two runs side by side")
    c.add_argument("run_a")
    c.add_argument("run_b")
    m = sub.add_parser("merge", help="merge the adapter into the base model (Axolotl's merge-lora)")
    m.add_argument("run")
    v = sub.add_parser("serve-adapter", help="print (or --run) the vLLM command serving base + adapters")
    v.add_argument("refs", nargs="+", metavar="REF", help="a run id or NAME@vN (downloaded from the store)")
    v.add_argument(
        "--run", "--exec", dest="execute", action="store_true", help="run it instead of printing it"
    )
    v.add_argument(
        "--hardware",
        default=None,
        help="plan for that hardware profile's GPUs (e.g. h100-pcie): the precision and tensor parallelism "
        "that fit, the memory arithmetic, the commands for that machine (versions only)",
    )
    v.add_argument(
        "--precision", choices=("bf16", "fp8", "4bit"), default=None, help="with --hardware: only this"
    )
    v.add_argument("--target-dir", default=None, help="with --hardware: where the adapters go there")
    v = sub.add_parser("service", help="the jobs service: webhook receiver, REST API, dashboard")
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument(
        "--data-dir",
        default="data",
        help="the folder API requests' input/data paths resolve in (default: data)",
    )
    v.add_argument(
        "--model",
        default="70b-qlora",
        help="the model profile a /training/start without base_model trains (default 70b-qlora; smoke: a "
        "CPU service for checks)",
    )
    v.add_argument(
        "--preset", default="balanced", help="the preset /training/start jobs get (default balanced)"
    )
    v.add_argument(
        "--no-eval", action="store_true", help="no held-out evaluation after a job's training (faster)"
    )
    v.add_argument(
        "--runs",
        choices=["local", "pods"],
        default=None,
        help="where /training/start jobs train: pods (one RunPod pod each; the default with RUNPOD_API_KEY "
        "set; the volume: $BRIGHTRUN_NETWORK_VOLUME) or local (this machine, one per GPU)",
    )
    v.add_argument("--poll", type=float, default=30.0, help="seconds between a pod job's polls (default 30)")
    tp = sub.add_parser("template", help="print (or --create) a RunPod pod template running the service")
    tp.add_argument("--create", action="store_true", help="create it through RunPod's API (RUNPOD_API_KEY)")
    kind = tp.add_mutually_exclusive_group()
    kind.add_argument("--gpu", dest="cpu", action="store_false", help="trains on its own GPU (default)")
    kind.add_argument("--cpu", dest="cpu", action="store_true", help="starts one GPU pod per job")
    tp.set_defaults(cpu=False)
    tp.add_argument("--name", default=None, help="the template's name (unique in the account)")
    tp.add_argument("--image", default=None, help="this repo's pushed image (default $BRIGHTRUN_IMAGE)")
    return p


def main(argv: list[str] | None = None) -> int:
    from axolotl_configs.cli import parse_with_overrides

    args = parse_with_overrides(parser(), argv)
    from brightrun.errors import ConfigError

    try:
        return run(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


# One function per verb, looked up in VERBS. Imports stay inside them: `--help` and the quick verbs do
# not pay for Axolotl, torch or the service.


def _train(args) -> int:
    from jobs import run as run_mod

    run_id = run_mod.prepare(
        args.preset,
        args.model,
        args.input or run_mod.DEFAULT_INPUT,
        args.data,
        args.hardware,
        args.overrides,
        args.allow_drop,
        args.runs_dir,
        heldout_eval=not args.no_eval,
        run_id=args.run_id,
    )
    return run_mod.execute(run_id, args.runs_dir, evaluate=not args.no_eval)


def _run_config(args) -> int:
    from jobs import run as run_mod
    from jobs import runfolder
    from jobs.pod import config as pod_config

    run_id = pod_config.prepare(args.config, args.runs_dir, args.run_id, args.hardware)
    config = runfolder.yaml_load(Path(args.runs_dir) / run_id / pod_config.CONFIG)
    return run_mod.execute(run_id, args.runs_dir, evaluate=config.get("brightrun_heldout_eval") is not False)


def _resume(args) -> int:
    from jobs import run as run_mod

    return run_mod.resume(args.run, args.runs_dir)


def _execute(args) -> int:
    from brightrun.errors import ConfigError
    from jobs import registry
    from jobs import run as run_mod

    if registry.get_job(args.run) is None:
        raise ConfigError(f"no run {args.run!r} (see `just runs`)")
    return run_mod.execute(args.run, args.runs_dir, evaluate=not args.no_eval)


def _preflight(args) -> int:
    if args.launch:
        return _launch(args, check_only=True)
    from jobs import preflight

    return preflight.show(args.preset, args.model, args.hardware, args.overrides, args.runs_dir)


def _launch(args, check_only: bool = False) -> int:
    from jobs.pod import launch
    from jobs.pod.runpod import CreateUnsure, RunPodError

    try:
        return launch.launch(
            args.preset,
            args.model,
            args.input,
            args.data,
            gpu=args.gpu,
            gpus=args.gpus,
            hardware=args.hardware,
            spot=args.spot,
            bid=args.bid,
            max_cost=args.max_cost,
            max_retries=args.max_retries,
            overrides=args.overrides,
            runs_dir=args.runs_dir,
            poll=args.poll,
            cloud=args.cloud,
            network_volume=args.network_volume,
            datacenter=args.datacenter,
            volume_path=args.volume_path,
            allow_drop=args.allow_drop,
            run_id=args.run_id,
            follow_run=not args.detach,
            image=args.image,
            start_timeout=args.start_timeout,
            max_hours=args.max_hours,
            hang_timeout=args.hang_timeout,
            registry_auth=args.registry_auth,
            targets_per_step=args.targets_per_step,
            check_only=check_only,
        )
    except CreateUnsure as exc:  # no run registered yet: the message says where the pod may be
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except RunPodError as exc:  # RunPod still failing after its retries: the pod may still run
        print(f"error: {exc}\n(`jobs status RUN`, `jobs cancel RUN` once RunPod answers)", file=sys.stderr)
        return 1


def _pod_verb(args) -> int:
    """status, logs, follow, fetch: jobs/pod/verbs.py's."""
    from jobs.pod import verbs

    if args.command == "follow":
        return verbs.reattach(args.run, args.runs_dir, args.poll)
    if args.command == "fetch":
        return verbs.fetch(args.run, args.runs_dir, args.checkpoints)
    return getattr(verbs, args.command)(args.run, args.runs_dir)


def _cancel(args) -> int:
    from jobs.cancel import cancel

    # One cancel for the CLI and the API: it knows a pod run from a local one.
    print(f"run {args.run}: {cancel(args.run, args.runs_dir)}", file=sys.stderr)
    return 0


def _webhooks_replay(args) -> int:
    from brightrun.errors import ConfigError
    from jobs import webhooks

    if not (Path(args.runs_dir) / args.run).is_dir():
        raise ConfigError(f"no run folder {args.runs_dir}/{args.run}")
    try:
        sent, left = webhooks.replay(Path(args.runs_dir) / args.run, to=service_destination(args.run))
    except webhooks.ConfigMissing as exc:
        raise ConfigError(str(exc)) from None
    print(f"run {args.run}: {sent} event(s) delivered, {left} still pending", file=sys.stderr)
    return 0 if left == 0 else 1


def service_destination(run_id: str) -> tuple[str, str] | None:
    """A job the jobs service started for the customer: its own webhook URL and secret (sealed in the
    registry, opened with the service's TRAINING_WEBHOOK_SECRET); None for any other run."""
    from brightrun.errors import ConfigError
    from jobs import registry
    from jobs.service import queue, secrets

    secret = os.environ.get("TRAINING_WEBHOOK_SECRET")
    if not secret:
        return None
    try:
        return queue.destination(registry.engine(), run_id, secret)
    except secrets.SealError as exc:
        raise ConfigError(str(exc)) from None


def _service(args) -> int:
    from jobs import service

    return service.main(
        host=args.host,
        port=args.port,
        runs_dir=args.runs_dir,
        data_dir=args.data_dir,
        model=args.model,
        preset=args.preset,
        evaluate=not args.no_eval,
        runs_mode=args.runs,
        poll=args.poll,
    )


def _template(args) -> int:
    from jobs.pod import template

    return template.main(args.create, args.cpu, args.name, args.image)


def _eval(args) -> int:
    from jobs.results import results

    return results(args.run, args.runs_dir, recompute=True)


def _merge(args) -> int:
    from jobs import serve

    return serve.merge(args.run, args.runs_dir)


def _serve_adapter(args) -> int:
    from jobs import serve

    return serve.serve(args.refs, args.runs_dir, args.execute, args.hardware, args.precision, args.target_dir)


def _compare(args) -> int:
    from jobs import show

    return show.compare(args.run_a, args.run_b, args.runs_dir)


def _runs(args) -> int:
    from jobs import show

    show.runs_table()
    return 0


def _show(args) -> int:
    from jobs import show

    return show.show_run(args.run, args.runs_dir)


VERBS = {
    "train": _train,
    "run-config": _run_config,
    "resume": _resume,
    "execute": _execute,
    "launch": _launch,
    "preflight": _preflight,
    "status": _pod_verb,
    "logs": _pod_verb,
    "follow": _pod_verb,
    "fetch": _pod_verb,
    "billing": _pod_verb,
    "cancel": _cancel,
    "webhooks-replay": _webhooks_replay,
    "service": _service,
    "template": _template,
    "eval": _eval,
    "merge": _merge,
    "serve-adapter": _serve_adapter,
    "compare": _compare,
    "runs": _runs,
    "show": _show,
}
STARTS_A_RUN = ("train", "run-config", "resume", "execute", "launch")


def run(args) -> int:
    from brightrun.errors import ConfigError
    from jobs import registry, webhooks

    registry.use_runs_dir(args.runs_dir)
    if getattr(args, "input", None) and getattr(args, "data", None):  # train, launch (job_args)
        raise ConfigError("give --input FILE or --data DIR, not both")
    if args.command in STARTS_A_RUN:
        try:
            webhooks.settings()  # WEBHOOK_URL without its secret is bad input, before anything starts
        except webhooks.ConfigMissing as exc:
            raise ConfigError(str(exc)) from None
    return VERBS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
