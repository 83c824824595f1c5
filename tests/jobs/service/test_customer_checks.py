"""The start request's checks and the sealed webhook secret, on their own (no service): what the flow tests
reach only through HTTP."""

from __future__ import annotations

import pytest

from jobs.service import customer, secrets


@pytest.mark.parametrize(
    "url, allow, why",
    [
        ("https://[::1", None, "is not a URL"),
        ("https://app.example:99999999/hook", None, "is not a URL"),
        ("http://app.example/api/training/webhook", None, "https only"),
        ("https://user:pw@app.example/hook", None, "no user:password@"),
        (
            "https://evil.example/api/training/webhook",
            r"https://app\.example/api/training/webhook",
            "WEBHOOK_URL_ALLOW",
        ),
    ],
)
def test_a_webhook_url_we_will_not_send_to_is_refused_by_name(url, allow, why, monkeypatch):
    if allow:
        monkeypatch.setenv("WEBHOOK_URL_ALLOW", allow)
    with pytest.raises(customer.Refused) as refused:
        customer.check_webhook_url(url)
    assert refused.value.status == 422 and refused.value.message.startswith("webhook_url:")
    assert why in refused.value.message


def test_an_allowed_webhook_url_and_loopback_http_pass(monkeypatch):
    monkeypatch.setenv(
        "WEBHOOK_URL_ALLOW", r"https://app\.example/api/training/webhook|http://127\.0\.0\.1:\d+/.*"
    )
    assert customer.check_webhook_url("https://app.example/api/training/webhook")
    assert customer.check_webhook_url("http://127.0.0.1:8123/api/training/webhook")


def test_a_dataset_url_outside_dataset_url_allow_is_refused_before_any_fetch(monkeypatch):
    monkeypatch.setenv("DATASET_URL_ALLOW", r"https://ref\.supabase\.co/storage/v1/object/sign/.*")
    body = {
        "job_id": "3f0c5d8e-1b2a-4c3d-9e8f-0a1b2c3d4e5f",
        "dataset_url": "https://internal.example/secret.json",
        "webhook_url": "https://app.example/api/training/webhook",
        "webhook_secret": "whsec-12345678",
    }
    with pytest.raises(
        customer.Refused, match="dataset_url: not allowed by this service's DATASET_URL_ALLOW"
    ):
        customer.parse_start(body)


def test_batch_size_and_the_six_others_map_onto_axolotl_within_the_apis_bounds():
    overrides, batch = customer.check_hyperparameters(
        {
            "num_epochs": 3,
            "batch_size": 8,
            "learning_rate": "2e-4",
            "lora_r": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.05,
            "warmup_ratio": 0.03,
        }
    )
    assert batch == 8 and overrides == [
        "num_epochs=3.0", "learning_rate=0.0002", "lora_r=16", "lora_alpha=32.0", "lora_dropout=0.05", "warmup_ratio=0.03"
    ]  # fmt: skip
    for bad in (
        {"batch_size": 0},
        {"batch_size": 2.5},
        {"lora_dropout": 0.95},
        {"learning_rate": float("nan")},
    ):
        with pytest.raises(customer.Refused, match=f"hyperparameters.{next(iter(bad))}"):
            customer.check_hyperparameters(bad)


def test_a_sealed_secret_opens_only_with_the_service_secret_it_was_sealed_under():
    sealed = secrets.seal("service-secret-a", "their-whsec")
    assert "their-whsec" not in sealed and secrets.open_secret("service-secret-a", sealed) == "their-whsec"
    with pytest.raises(secrets.SealError, match="TRAINING_WEBHOOK_SECRET"):
        secrets.open_secret("service-secret-b", sealed)
    with pytest.raises(secrets.SealError):
        secrets.open_secret("service-secret-a", sealed[:-4] + "AAAA")
