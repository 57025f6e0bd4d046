"""Every setting, from LEDGER_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore")

    database_url: str | None = Field(
        None, description="PostgreSQL to use; unset, an embedded server in LEDGER_HOME."
    )
    read_database_url: str | None = Field(
        None,
        description="A read replica of it, for queries of the users table and of history "
        "(falling back to the primary while it cannot be reached).",
    )
    home: Path = Field(Path(".ledger"), description="Embedded database and generated key.")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(1, ge=1, description="API processes (each with its own writer).")
    api_keys: str | None = Field(None, description="role:key,role:key (admin, service, reader).")
    projector: bool = Field(True, description="Run a projector process with `ledger serve`.")
    log_level: str = "info"
    stripe_webhook_secrets: str | None = Field(
        None,
        description="whsec_...,whsec_... : the signing secrets of the Stripe webhook endpoint "
        "(two while one is rotated). Unset, POST /v1/stripe/webhook answers 404.",
    )
    stripe_catalog: Path | None = Field(
        None, description="The TOML catalogue of what each SKU buys and costs."
    )
    webhooks: bool = Field(
        True,
        description="Run the webhook outbox and sender beside the projector (`ledger serve`, "
        "`ledger project`).",
    )
    webhooks_allow_http: bool = Field(
        False, description="Allow http:// webhook endpoints (https only otherwise)."
    )
    webhooks_allow_private: bool = Field(
        False,
        description="Allow webhook endpoints at loopback, private, link-local or multicast "
        "addresses (refused otherwise, when created and when sending).",
    )
    webhooks_per_endpoint: int = Field(
        16, ge=1, le=100, description="Deliveries in flight to one endpoint at a time."
    )
    webhooks_nice: int = Field(
        5,
        ge=0,
        le=19,
        description="How much lower the webhooks process's CPU priority is (its nice value): "
        "on a busy machine commands come first, and deliveries take what is left.",
    )
    webhooks_timeout_seconds: float = Field(
        10.0, gt=0, le=60, description="How long a delivery waits for the endpoint's answer."
    )
    webhooks_concurrency: int = Field(
        256, ge=1, le=1000, description="Deliveries in flight per sender."
    )
    webhooks_retention_days: float = Field(
        30,
        gt=0,
        description="How long delivered and failed webhook messages (and their attempts) "
        "are kept, counted from their event; pending ones are kept until they are done.",
    )
    clock_offset_file: Path | None = Field(
        None,
        description="A file holding seconds to move the ledger's clock by (tests and "
        "rehearsals only; never in production).",
    )

    group_commit_window_ms: float = Field(
        0.5, ge=0, le=10, description="How long a busy writer waits to fill a batch."
    )
    group_commit_max_batch: int = Field(500, ge=1, le=10_000)
    projector_batch_size: int = Field(1000, ge=1, le=100_000)
    pool_size: int = Field(4, ge=1)
    cache_size: int = Field(50_000, ge=0, description="Users kept in each writer's memory.")
    wait_timeout_seconds: float = Field(5.0, gt=0, le=60)
    direct_routes: bool = Field(
        True,
        description="Call the endpoints of requests that are in order without FastAPI's "
        "per-request machinery (api.http.direct); off, FastAPI serves every request.",
    )
    gc_threshold: int = Field(
        20_000,
        ge=100,
        description="Allocations between young-generation collections (api.collector), "
        "in the API's and the projector's processes.",
    )
