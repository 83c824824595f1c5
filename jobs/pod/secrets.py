"""What a pod must know but RunPod's API must never show (HF_TOKEN, the artifact store's keys, the webhook
secret): RunPod secrets, referenced from the pod's env by name, never put there as values (issue 25).

A pod's env comes back in full from RunPod's API (GraphQL `env`, REST v2 Pod.env) to anyone holding the
account's key, and to the pod's own pod-scoped key. A secret's value is write-only: RunPod substitutes it
when the pod boots, and no API answers it again. So each secret a launch names becomes, in the pod's env,

    HF_TOKEN={{ RUNPOD_SECRET_brightrun_hf_token }}

and the account's secret `brightrun_hf_token` holds the value: created from this process's environment
when the account lacks it, its value rotated to this process's when it has it (the value we run with is
the one the pod gets, as when values went in plain); a name with no value here must already be on the
account (made in the console, Credentials → Secrets), or the launch stops before any pod, saying which.

Sources (docs.runpod.io, read 2026-12-07):
  SECRETS = pods/templates/secrets: "{{ RUNPOD_SECRET_secret_name }}" in a pod's or template's env,
            "substitute[d] ... when the Pod starts"; values "never displayed in plain text once created"
  ACCOUNT = api-reference-v2/account/{list-secrets, create-a-secret, get-a-secret, update-a-secret}:
            GET /v2/account/secrets lists them ("Values are never returned"); POST creates {name, value,
            description?}, name `^[a-zA-Z_][a-zA-Z0-9_.\\-/]*$`, at most 191 characters, "immutable after
            creation", names beginning with RUNPOD rejected; a secret is {id, name, createdAt, description,
            valueLastUpdatedAt}; update "rotate[s] its value", taking effect "the next time a referencing Pod
            ... boots"; api-reference-v2/account/delete-a-secret: DELETE /v2/account/secrets/{id}.
A run's webhook signing key (the service's per-job key, or the launcher's run key) goes the same way, as
the secret brightrun_webhook_RUNID, deleted when the run is over (jobs/pod/follow.py; the service's orphan
sweep for a pod whose launcher died).
Not read there (the stored pages end before them), so assumed and tolerated both ways: the list's
envelope (a bare array or {"secrets": [...]}) and the update's method (PATCH /v2/account/secrets/{id}, as
v2's other updates, e.g. PATCH /v2/templates/{id}). Not run against a real account.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING
from urllib.parse import quote

from jobs.pod.runpod import RunPodError

if TYPE_CHECKING:
    from jobs.pod.rest import RestClient

PREFIX = "brightrun_"  # ours among the account's secrets; RUNPOD... is reserved (ACCOUNT)
NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.\-/]*$")  # ACCOUNT's pattern


class SecretsMissing(RunPodError):
    """A secret the pod needs is neither in this environment nor on the account: nothing was created."""


def secret_name(env_name: str) -> str:
    """The account secret that holds env var `env_name` for our pods: brightrun_hf_token for HF_TOKEN."""
    name = PREFIX + env_name.lower()
    if not NAME.match(name) or len(name) > 191:
        raise ValueError(f"{env_name!r} cannot name a RunPod secret ({NAME.pattern}, at most 191 characters)")
    return name


def placeholder(secret: str) -> str:
    """What RunPod replaces with the account secret `secret` at boot (SECRETS, written as the docs write
    it); the service's pod template references its secrets so too (jobs/pod/template.py)."""
    return "{{ RUNPOD_SECRET_" + secret + " }}"


def reference(env_name: str) -> str:
    return placeholder(secret_name(env_name))


def account_secrets(api: RestClient) -> dict[str, dict]:
    """The account's secrets by name (GET /v2/account/secrets): metadata only, never a value."""
    response = api._checked("listSecrets", api._send("listSecrets", "GET", "/v2/account/secrets"))
    try:
        payload = response.json()
    except ValueError:
        payload = None
    items = payload.get("secrets") if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        raise api._error(RunPodError, "listSecrets", f"HTTP 200 without a list: {response.text[:200]}")
    return {s["name"]: s for s in items if isinstance(s, dict) and isinstance(s.get("name"), str)}


def provide(api: RestClient, names: list[str], description: str = "brightrun-lora pods") -> dict[str, str]:
    """The pod's env entries for `names`: each a reference to its account secret, made current first.
    Raises SecretsMissing (naming each, and where to make it) before anything is created on the account
    when one is neither here nor there."""
    if not names:
        return {}
    have = account_secrets(api)
    missing = [n for n in names if not os.environ.get(n) and secret_name(n) not in have]
    if missing:
        raise SecretsMissing(
            "the pod needs "
            + ", ".join(f"{n} (RunPod secret {secret_name(n)!r})" for n in missing)
            + ": set it in this environment (it is then stored as that RunPod secret, never put in the pod's "
            "env), or create the secret in the RunPod console (Credentials, Secrets) under that name"
        )
    for env_name in names:
        if value := os.environ.get(env_name):  # else on the account already (checked above): used as it is
            put(api, secret_name(env_name), value, f"{env_name} for {description}", have)
    return {n: reference(n) for n in names}


def job_secret(run_id: str) -> str:
    """The account secret holding one run's webhook signing key (jobs/webhooks.py run_key): its pods sign
    their events with it; deleted when the run is over (forget)."""
    name = f"{PREFIX}webhook_{run_id}"
    if not NAME.match(name) or len(name) > 191:
        raise ValueError(f"run id {run_id!r} cannot name a RunPod secret")
    return name


def put(api: RestClient, name: str, value: str, description: str, have: dict | None = None) -> str:
    """The account secret `name` holding `value` (created, or its value rotated: ACCOUNT), and its
    reference for a pod's env. `have`: the account's secrets, when the caller listed them already."""
    have = account_secrets(api) if have is None else have
    if name in have:
        path = secret_path(have[name])
        api._checked(f"updateSecret {name}", api._send("updateSecret", "PATCH", path, {"value": value}))
    else:
        body = {"name": name, "value": value, "description": description}
        api._checked(f"createSecret {name}", api._send("createSecret", "POST", "/v2/account/secrets", body))
    return placeholder(name)


def forget(api: RestClient, name: str) -> bool:
    """Delete the account secret `name` (DELETE /v2/account/secrets/{id}, docs.runpod.io
    api-reference-v2/account/delete-a-secret: pods "can no longer resolve it"); False when there was none."""
    found = account_secrets(api).get(name)
    if found is None:
        return False
    api._checked(f"deleteSecret {name}", api._send("deleteSecret", "DELETE", secret_path(found)))
    return True


def secret_path(secret: dict) -> str:
    """One account secret's path (ACCOUNT: /v2/account/secrets/{id}), its id as the list answered it."""
    return f"/v2/account/secrets/{quote(str(secret.get('id', '')), safe='')}"
