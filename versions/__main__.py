"""Named models, their versions and the artifact store.

Usage:
  python -m versions promote RUN --model NAME [--stage stored|testing|production] [--note TEXT]
                             [--force] [--by WHO]
  python -m versions models
  python -m versions model NAME [--check]      (--check: are its files still in the store, as promoted?)
  python -m versions rollback NAME [--by WHO]
  python -m versions retire NAME@vN [--by WHO]
  python -m versions delete NAME@vN [--by WHO]  (its files out of the store for good; the row stays)
  python -m versions check                      (files without rows, rows without files)
  python -m versions push NAME@vN --hub ORG/REPO [--public]   (HF_TOKEN; adapter + model card, never eval/)
  python -m versions sync NAME                 (the model server's NAME-production / NAME-testing as staged)
  python -m versions download NAME@vN [--to DIR]
  python -m versions url NAME@vN [--file NAME] [--expires SECONDS]
  python -m versions ab A B [--limit N] [--backend transformers|vllm] [--device cpu] [--max-new-tokens N]
                        [--no-general] [--tasks T1,T2] [--general-limit N] [--general-max-tokens N]
                        [--data DIR] [--local-judge MODEL_DIR] [--by WHO]
                        (A, B: NAME@vN or run ids; the judge from JUDGE_BASE_URL, JUDGE_MODEL, JUDGE_API_KEY)

Settings from the environment only: DATABASE_URL (registry; default runs/registry.db), ARTIFACT_STORE (a
folder, default artifacts/, or s3://bucket/prefix with AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY), USER (who promotes, unless --by); MODELS_SERVER_URL (a vLLM started with
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True: promote, rollback and retire swap its adapters, versions/hotswap.py)
and MODELS_SERVER_ADAPTERS (where versions are on that machine, default /workspace/adapters).

Exit codes: 0 done; 1 the store failed or refused (a sha256 mismatch, deleted files); 2 refused input
(unknown run or version, a failed verdict without --force, a bad name; an A/B of the same run twice or
of runs trained on other data): nothing is changed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from brightrun.errors import ConfigError
from jobs import registry as jobs_registry
from versions import abtests, hotswap, housekeeping, hub, ratings, registry, store
from versions.promote import promote, who


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m versions", description=__doc__.split("\n")[0])
    p.add_argument("--runs-dir", default="runs", help="where run folders live (default runs/)")
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("promote", help="make a run version N of a named model, its files in the store")
    pr.add_argument("run")
    pr.add_argument("--model", required=True, help="the model's name, e.g. elena-morales")
    pr.add_argument("--stage", choices=registry.PROMOTE_STAGES, default=None, help="default: stored")
    pr.add_argument("--note", default=None)
    pr.add_argument("--force", action="store_true", help="promote a run whose verdict failed or is missing")
    pr.add_argument("--by", default=None, help="who promotes (default: $USER)")
    sub.add_parser("models", help="every model: versions, latest, production")
    m = sub.add_parser("model", help="a model's versions with their stages and scores")
    m.add_argument("name")
    m.add_argument(
        "--check",
        action="store_true",
        help="each version's files in the store, by the sha256s it holds for them (download reads the bytes)",
    )
    rb = sub.add_parser("rollback", help="the previous production version back; the current one archived")
    rb.add_argument("name")
    rb.add_argument("--by", default=None)
    rt = sub.add_parser("retire", help="take a version out of use (archived, never a rollback's target)")
    rt.add_argument("ref", metavar="NAME@vN")
    rt.add_argument("--by", default=None)
    de = sub.add_parser("delete", help="remove a version's files from the store for good (not production)")
    de.add_argument("ref", metavar="NAME@vN")
    de.add_argument("--by", default=None)
    de.add_argument(
        "--evals-only",
        action="store_true",
        help="only eval/ (the customer's held-out conversations); it stays usable",
    )
    pe = sub.add_parser("prune-evals", help="--evals-only for every version older than the retention age")
    pe.add_argument("--days", type=float, default=None, help="default: EVAL_RETENTION_DAYS")
    pe.add_argument("--by", default=None)
    ck = sub.add_parser("check", help="store and registry agree? files without rows, rows without files")
    ck.add_argument("--remove", metavar="models/NAME/vN", help="remove that folder of files without a row")
    pu = sub.add_parser("push", help="a version to a Hugging Face Hub repo (private unless --public)")
    pu.add_argument("ref", metavar="NAME@vN")
    pu.add_argument("--hub", required=True, metavar="ORG/REPO")
    pu.add_argument("--public", action="store_true")
    sy = sub.add_parser("sync", help="make the model server (MODELS_SERVER_URL) serve each stage as staged")
    sy.add_argument("name")
    ra = sub.add_parser("ratings", help="people's blind ratings of a version's answers (the service's /rate)")
    ra.add_argument("ref", metavar="NAME@vN")
    d = sub.add_parser("download", help="a version's files, every sha256 checked")
    d.add_argument("ref", metavar="NAME@vN")
    d.add_argument("--to", default=None, help="a new folder (default ./NAME-vN)")
    u = sub.add_parser("url", help="time-limited download URLs of a version's files (S3 stores)")
    u.add_argument("ref", metavar="NAME@vN")
    u.add_argument("--file", default=None, help="only this file, e.g. adapter/adapter_model.safetensors")
    u.add_argument("--expires", type=int, default=3600, help="seconds (default 3600, at most 7 days)")
    ab = sub.add_parser(
        "ab", help="two versions (or runs) on the same held-out prompts: judge, loss, general"
    )
    ab.add_argument("a", metavar="A", help="NAME@vN or a run id")
    ab.add_argument("b", metavar="B", help="NAME@vN or a run id; the win rate is B's over A")
    ab.add_argument("--limit", type=int, default=40, help="held-out prompts, stratified by arc (default 40)")
    ab.add_argument("--backend", choices=("transformers", "vllm"), default="transformers")
    ab.add_argument("--device", default="cpu", help="transformers back-end device (cpu, cuda)")
    ab.add_argument("--max-new-tokens", type=int, default=None, help="default: from the reference lengths")
    ab.add_argument("--no-general", action="store_true", help="skip lm-eval")
    ab.add_argument(
        "--tasks", default=None, help="lm-eval tasks, comma-separated (default: the offline task)"
    )
    ab.add_argument("--general-limit", type=int, default=None, help="lm-eval items per task")
    ab.add_argument("--general-max-tokens", type=int, default=None, help="lm-eval max_gen_toks")
    ab.add_argument(
        "--data", default=None, help="the converted data both trained on (default: from run.json)"
    )
    ab.add_argument(
        "--local-judge", default=None, metavar="MODEL_DIR", help="`transformers serve` as the judge"
    )
    ab.add_argument("--by", default=None, help="who runs it (default: $USER)")
    ab.add_argument(
        "--quantize",
        choices=("none", "4bit"),
        default=None,
        help="the base's precision (default: as B's run trained: 4bit for a QLoRA run), as `evals run`",
    )
    return p


def headline(scores: dict | None) -> str:
    """The figures a person compares versions by, from the evaluation copied at promotion."""
    if not scores:
        return ""
    parts = []
    if scores.get("win_rate") is not None:
        parts.append(f"win {scores['win_rate']:.2f}")
    for gate in scores.get("gates") or []:
        if gate.get("gate") == "heldout_loss" and gate.get("adapter") is not None:
            parts.append(f"heldout {gate['adapter']:.3f}")
    return " ".join(parts)


def show_model(engine, name: str, check: bool) -> int:
    rows = registry.versions_of(engine, registry.check_name(name))
    if not rows:
        raise registry.NotFound(f"no model named {name!r}")
    print(f"{name}: {len(rows)} version(s)")
    tests = abtests.for_versions(engine, rows)
    for v in rows:
        state = v.stage if v.complete else "UNFINISHED upload (promote the same run again to finish it)"
        forced = " FORCED" if v.forced else ""
        print(
            f"  v{v.version:<3} {state:<10} verdict {v.verdict or 'none'}{forced:<7} {headline(v.scores):<24}"
            f" run {v.run_id}  by {v.created_by} {v.created_at:%Y-%m-%d %H:%M}Z"
            f"{'  rolled back' if v.rolled_back_at else ''}"
            f"{f'  RETIRED by {v.retired_by} {v.retired_at:%Y-%m-%d %H:%M}Z' if v.retired_at else ''}"
        )
        print(f"       adapter {v.adapter_sha256[:16]}  base {v.base_model}  {v.store_url}")
        if v.note:
            print(f"       note: {v.note}")
        for t in tests.get(v.id, []):
            print(f"       {ab_line(t)}")
        if check and v.complete:
            folder = registry.folder(v.model_name, v.version)
            print(
                f"       store: {store.check(store.store_of(v.store_url, folder), folder, v.manifest_sha256)}"
            )
    return 0


def ab_line(t: dict) -> str:
    """One A/B under a version: the other side, and B's win rate over A with its interval."""
    rate = "no win rate"
    if t["win_rate_b_over_a"] is not None:
        lo, hi = t["ci95"]
        rate = f"B won {t['win_rate_b_over_a']:.2f} [{lo:.2f}, {hi:.2f}]"
    loss = t["heldout_loss"]
    losses = f"; held-out A {loss['A']:.3f} B {loss['B']:.3f}" if None not in loss.values() else ""
    sides = f"{t['a']} (A) vs {t['b']} (B), this is {t['side']}"
    return f"A/B {t['id']}: {sides}: {rate} on {t['n_prompts']} prompts{losses}"


def run_ab(engine, args) -> int:
    from evals.judge import JudgeSettings
    from versions import ab

    for name in ("limit", "general_limit", "max_new_tokens", "general_max_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise registry.VersionError(
                f"--{name.replace('_', '-')} {value}: expected a whole number of at least 1"
            )
    opts = ab.Options(
        limit=args.limit,
        backend=args.backend,
        device=args.device,
        max_new_tokens=args.max_new_tokens,
        general=not args.no_general,
        tasks=[t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None,
        general_limit=args.general_limit,
        general_max_tokens=args.general_max_tokens,
        data=Path(args.data) if args.data else None,
        by=who(args.by),
        quantize=args.quantize,
    )
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731  (stdout: the result only)
    if args.local_judge:
        import tempfile

        from evals.local_judge import local_judge

        ab.check(engine, Path(args.runs_dir), args.a, args.b, opts)  # bad input fails before a server starts
        log = Path(tempfile.gettempdir()) / f"brightrun-ab-judge-{os.getpid()}.log"
        with local_judge(args.local_judge, log) as (env, ready):
            ready()
            result = ab.run_ab(engine, args.runs_dir, args.a, args.b, opts, JudgeSettings.from_env(env), say)
    else:
        result = ab.run_ab(engine, args.runs_dir, args.a, args.b, opts, JudgeSettings.from_env(), say)
    print("\n".join(ab.report(result)))
    print(f"  files: {Path(args.runs_dir) / ab.AB_DIR / result['id']}/")
    return 0


def show_ratings(found: dict) -> None:
    """`versions ratings NAME@vN`: what people said, each figure with its interval by conversation."""

    def figure(f: dict, digits: int = 2) -> str:
        if f["mean"] is None:
            return "-"
        low, high = f["ci95"]
        return f"{f['mean']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"

    if not found["n"]:
        print(f"{found['ref']}: no ratings yet; people rate at the service's /rate#version={found['ref']}")
        return
    agreement = found["judge_agreement"]
    tau = agreement["grades"]
    ranked = "-" if tau["tau"] is None else f"{tau['tau']:.2f} [{tau['ci95'][0]:.2f}, {tau['ci95'][1]:.2f}]"
    lines = [
        f"{found['ref']}: {found['n']} rating(s) by {', '.join(found['raters'])} over "
        f"{found['n_conversations']} held-out conversation(s)",
        f"  human_eval_score (the adapter's mean grade, 1-5): {figure(found['human_eval_score'])}",
        f"  the base's mean grade:                         {figure(found['base_score'])}",
        *(f"  {c} (adapter - base):  {figure(d)}" for c, d in found["criteria"].items()),
        f"  adapter preferred (tie = half):  {figure(found['win_rate'])}",
        f"  the judge picked what people picked: {figure(agreement['preference'])}"
        f" on {agreement['preference']['n']} rated prompt(s) it judged",
        f"  the judge's grades ranked like people's (Kendall tau-b): {ranked}",
    ]
    if not found["sufficient"]:  # the verdict's own floor (evals/gates.yaml judge.min_conversations)
        lines.append(f"  under {found['min_conversations']} conversations: too few to judge the version by")
    print("\n".join(lines))


def complete_version(engine, ref: str) -> tuple[registry.ModelVersion, store.Store, str]:
    v = registry.finished(registry.get_ref(engine, ref))  # NAME@vN, NAME@production, NAME@testing
    if v.ref != ref:
        print(f"{ref} is {v.ref}", file=sys.stderr)
    folder = registry.folder(v.model_name, v.version)
    return v, store.store_of(v.store_url, folder), folder


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    jobs_registry.use_runs_dir(args.runs_dir)
    try:
        engine = jobs_registry.engine()
        if args.command == "promote":
            promote(engine, args.runs_dir, args.run, args.model, args.stage, args.note, args.force, args.by)
            hotswap.after_move(engine, args.model)
        elif args.command == "models":
            found = registry.models(engine)
            for m in found:
                prod = (
                    f"v{m['production']} ({m['production_verdict'] or 'no verdict'})"
                    if m["production"]
                    else "-"
                )
                print(
                    f"{m['name']:<32} {m['versions']:>3} version(s)  latest v{m['latest']}  production {prod}"
                )
            if not found:
                print("no models yet: `just promote RUN --model NAME`")
        elif args.command == "ab":
            return run_ab(engine, args)
        elif args.command == "model":
            return show_model(engine, args.name, args.check)
        elif args.command == "retire":
            row = registry.retire(engine, args.ref, who(args.by))
            stages = {v.stage for v in registry.versions_of(engine, row.model_name)}
            none = "" if "production" in stages else f"; {row.model_name} has no production version now"
            print(f"{row.ref}: retired (archived){none}")
            hotswap.after_move(engine, row.model_name)
        elif args.command == "rollback":
            old, new = registry.rollback(engine, registry.check_name(args.name), who(args.by))
            print(f"{args.name}: production is {new.ref} again (run {new.run_id}); {old.ref} archived")
            hotswap.after_move(engine, args.name)
        elif args.command == "delete":
            if args.evals_only:
                housekeeping.drop_evals(engine, args.ref, who(args.by))
            else:
                row = housekeeping.delete(engine, args.ref, who(args.by))
                hotswap.after_move(engine, row.model_name)  # a deleted testing version stops being served
        elif args.command == "prune-evals":
            days = args.days if args.days is not None else os.environ.get("EVAL_RETENTION_DAYS")
            try:
                days = float(days)
            except (TypeError, ValueError):
                raise registry.VersionError(
                    "--days N or EVAL_RETENTION_DAYS: how many days eval files are kept"
                ) from None
            pruned = housekeeping.prune_evals(engine, days, who(args.by))
            print(f"prune-evals: {len(pruned)} version(s) older than {days:g} day(s) had their eval/ dropped")
        elif args.command == "check":
            st = store.open_store()
            if args.remove:
                housekeeping.remove_orphan(engine, st, args.remove)
            problems, notes = housekeeping.check(engine, st)
            for line in notes + problems:
                print(line)
            said = f"{len(problems)} problem(s)" if problems else "clean"
            print(f"check: {st.url()}: {said}")
            return 1 if problems else 0
        elif args.command == "push":
            try:
                hub.push(registry.get_ref(engine, args.ref), args.hub, args.public)
            except hub.HubError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        elif args.command == "sync":
            if hotswap.Server.from_env() is None:
                raise registry.VersionError("MODELS_SERVER_URL is not set: no model server to sync")
            try:
                hotswap.sync(engine, registry.check_name(args.name))
            except hotswap.SwapError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        elif args.command == "ratings":
            show_ratings(ratings.summary_of(engine, registry.get_ref(engine, args.ref)))  # deleted ones too
        elif args.command == "download":
            v, st, folder = complete_version(engine, args.ref)
            dest = Path(args.to or f"{v.model_name}-v{v.version}")
            store.download(st, folder, v.manifest_sha256, dest)
            print(f"{v.ref}: every sha256 checked, in {dest}/ (the adapter in {dest / 'adapter'}/)")
        elif args.command == "url":
            v, st, folder = complete_version(engine, args.ref)
            urls = store.presign_all(st, folder, v.manifest_sha256, args.expires)
            if args.file is not None:
                if args.file not in urls:
                    raise registry.NotFound(f"{v.ref} has no file {args.file!r}; it has {', '.join(urls)}")
                print(urls[args.file]["url"])
            else:
                for name, item in urls.items():
                    print(f"{name}\t{item['sha256']}\t{item['url']}")
    except registry.VersionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:  # evals' refusals in an A/B: a bad task, a data folder without its sidecar
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except store.StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
