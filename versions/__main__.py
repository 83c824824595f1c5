"""Named models, their versions and the artifact store.

Usage:
  python -m versions promote RUN --model NAME [--stage stored|testing|production] [--note TEXT]
                             [--force] [--by WHO]
  python -m versions models
  python -m versions model NAME [--check]      (--check: are its files still in the store, as promoted?)
  python -m versions rollback NAME [--by WHO]
  python -m versions download NAME@vN [--to DIR]
  python -m versions url NAME@vN [--file NAME] [--expires SECONDS]

Settings from the environment only: DATABASE_URL (registry; default runs/registry.db), ARTIFACT_STORE (a
folder, default artifacts/, or s3://bucket/prefix with AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY), USER (who promotes, unless --by).

Exit codes: 0 done; 1 the store failed or refused (a sha256 mismatch, deleted files); 2 refused input
(unknown run or version, a failed verdict without --force, a bad name): nothing is changed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs import registry as jobs_registry
from versions import registry, store
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
    d = sub.add_parser("download", help="a version's files, every sha256 checked")
    d.add_argument("ref", metavar="NAME@vN")
    d.add_argument("--to", default=None, help="a new folder (default ./NAME-vN)")
    u = sub.add_parser("url", help="time-limited download URLs of a version's files (S3 stores)")
    u.add_argument("ref", metavar="NAME@vN")
    u.add_argument("--file", default=None, help="only this file, e.g. adapter/adapter_model.safetensors")
    u.add_argument("--expires", type=int, default=3600, help="seconds (default 3600, at most 7 days)")
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
    for v in rows:
        state = v.stage if v.complete else "UNFINISHED upload (promote the same run again to finish it)"
        forced = " FORCED" if v.forced else ""
        print(
            f"  v{v.version:<3} {state:<10} verdict {v.verdict or 'none'}{forced:<7} {headline(v.scores):<24}"
            f" run {v.run_id}  by {v.created_by} {v.created_at:%Y-%m-%d %H:%M}Z"
            f"{'  rolled back' if v.rolled_back_at else ''}"
        )
        print(f"       adapter {v.adapter_sha256[:16]}  base {v.base_model}  {v.store_url}")
        if v.note:
            print(f"       note: {v.note}")
        if check and v.complete:
            folder = registry.folder(v.model_name, v.version)
            print(
                f"       store: {store.check(store.store_of(v.store_url, folder), folder, v.manifest_sha256)}"
            )
    return 0


def complete_version(engine, ref: str) -> tuple[registry.ModelVersion, store.Store, str]:
    name, number = registry.parse_ref(ref)
    v = registry.get_version(engine, name, number)
    if not v.complete:
        raise registry.Conflict(
            f"{v.ref}: its upload is unfinished; promote run {v.run_id} again to finish it"
        )
    folder = registry.folder(name, number)
    return v, store.store_of(v.store_url, folder), folder


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    jobs_registry.use_runs_dir(args.runs_dir)
    try:
        engine = jobs_registry.engine()
        if args.command == "promote":
            promote(engine, args.runs_dir, args.run, args.model, args.stage, args.note, args.force, args.by)
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
        elif args.command == "model":
            return show_model(engine, args.name, args.check)
        elif args.command == "rollback":
            old, new = registry.rollback(engine, registry.check_name(args.name), who(args.by))
            print(f"{args.name}: production is {new.ref} again (run {new.run_id}); {old.ref} archived")
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
    except store.StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
