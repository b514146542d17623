"""One Settings object, read from the environment (prefix ``PHASESCOPE_``) and ``.env``.

Every setting is documented with its unit. ``REDIS_URL`` is read without the prefix because that is
the name every Redis tool and docker-compose file already uses.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PHASESCOPE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default=Path.home() / ".phasescope",
        description="Root of everything phasescope writes: zoo series, results store, embedded Redis.",
    )
    # NoDecode: the env value is split by our validator (PATH style) instead of parsed as JSON first.
    model_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Directories local model paths may resolve under (JSON list or ':'-separated). "
        "The zoo directory and <data_dir>/models are always allowed.",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "PHASESCOPE_REDIS_URL"),
        description="External Redis (redis://host:port/db). Unset: an embedded redis-server under data_dir.",
    )
    api_token: str | None = Field(
        default=None, description="When set, write endpoints require 'Authorization: Bearer <token>'."
    )
    dashboard_api_url: str | None = Field(
        default=None,
        description="Base URL (http[s]://host:port) at which the dashboard calls the API. Unset: the API "
        "in the same process, with no network hop. Never taken from a request.",
    )
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest request body the API and the dashboard accept, in bytes (8 MiB: room for "
        "max_texts texts of max_text_chars ASCII characters); larger bodies get 413.",
    )
    device: str = Field(default="auto", description="'auto' (cuda when available), 'cpu' or 'cuda[:n]'.")
    torch_threads: int = Field(default=0, ge=0, description="CPU threads for torch; 0 = number of cores.")
    auto_half_precision_params: int = Field(
        default=1_000_000_000,
        ge=0,
        description="Parameters (a count) from which an analysis with dtype 'auto' loads the model in "
        "bfloat16 on a GPU (float16 where the GPU has no bfloat16); smaller models, and every model on a "
        "CPU, load in float32.",
    )

    # The job system (phasescope.service.queue and the RQ workers).
    queue_name: str = Field(default="phasescope", description="RQ queue the analyses' jobs go on.")
    job_retries: int = Field(default=3, ge=0, le=20, description="Retries of a job whose worker died.")
    job_timeout_base_s: int = Field(default=120, ge=1, description="Seconds every job may take (model load).")
    job_timeout_per_unit_s: float = Field(
        default=10.0,
        ge=0,
        description="Extra seconds a job may take per work unit (one forward pass of "
        "16 × 64 tokens; phasescope.service.cost): the time of a unit on the slowest hardware expected.",
    )
    job_timeout_max_s: int = Field(
        default=6 * 3600, ge=1, description="Most seconds any job may run, whatever its estimated work."
    )
    worker_heartbeat_s: int = Field(
        default=5,
        ge=1,
        le=300,
        description="Seconds between heartbeats of a busy worker; a job whose "
        "worker misses about three is taken as abandoned and retried.",
    )
    worker_maintenance_s: int = Field(
        default=30, ge=1, description="Seconds between a worker's clean-ups of RQ's registries."
    )
    prefetch_checkpoints: bool = Field(
        default=True,
        description="Read the next checkpoint's weights in a background thread while the current one "
        "is measured (true/false): in a local sweep the next step, in a worker the next step of the "
        "same analysis still queued. Costs at most one checkpoint's weights of extra memory; applies to "
        "zoo: and series-directory models (phasescope.models.prefetch).",
    )

    # The supervisor of `phasescope up` (phasescope.service.supervisor): restarts a dead Redis, worker or API.
    restart_backoff_initial_s: float = Field(
        default=1.0,
        gt=0,
        description="Seconds before the first restart of a child that exited; "
        "doubled for each further exit within restart_window_s.",
    )
    restart_backoff_max_s: float = Field(
        default=30.0, gt=0, description="Most seconds the supervisor waits before restarting a child."
    )
    restart_give_up_exits: int = Field(
        default=5,
        ge=1,
        description="Exits of one child within restart_window_s after which the "
        "supervisor gives up and stops everything.",
    )
    restart_window_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds over which a child's exits are counted (for the "
        "backoff and the give-up rule); exits older than this are forgotten.",
    )
    api_ready_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Seconds `phasescope up` waits for the API to answer its "
        "readiness check before it stops and reports why.",
    )
    result_ttl_s: int = Field(default=7 * 86400, ge=1, description="Seconds RQ keeps finished jobs' records.")
    max_page_size: int = Field(default=200, ge=1, description="Analyses per page of GET /analyses.")
    min_free_disk_mb: float = Field(
        default=100.0,
        ge=0,
        description="MiB that must stay free on the disk of the data directory: "
        "below it POST /analyses answers 507 and /health reports 'degraded'. 0 disables the check.",
    )

    # Limits on what one analysis may ask for (each is checked by phasescope.schemas).
    max_checkpoints: int = Field(default=500, ge=1, description="Checkpoints per analysis.")
    max_texts: int = Field(default=256, ge=1, description="Input texts per analysis.")
    max_text_chars: int = Field(default=20_000, ge=1, description="Characters per input text.")
    max_prompts: int = Field(default=256, ge=1, description="Prompts (sequences) measured per checkpoint.")
    max_seq_len: int = Field(default=1024, ge=2, description="Tokens per prompt.")
    max_beta_points: int = Field(default=400, ge=3, description="Points on the thermodynamic beta grid.")

    # Bounds on the work and the state the service takes on (phasescope.service.cost, phasescope.service.ratelimit,
    # phasescope.service.gc, phasescope.service.redis_conn); docs/deployment.md explains each.
    max_job_units: float = Field(
        default=20_000,
        gt=0,
        description="Work units one checkpoint (job) of an analysis may cost "
        "(a unit is one forward pass of 16 × 64 tokens; phasescope.service.cost gives the formulas).",
    )
    max_analysis_units: float = Field(
        default=2_000_000, gt=0, description="Work units a whole analysis (all its checkpoints) may cost."
    )
    max_slq_basis_mib: int = Field(
        default=4096,
        ge=1,
        description="MiB the Lanczos basis of hessian_density may take (slq_steps × parameters × 8 bytes, "
        "float64); a job over it fails with a measure error naming slq_steps (phasescope.measures.slq).",
    )
    write_rate_per_min: float = Field(
        default=60.0,
        gt=0,
        description="Writes (POST, DELETE) per minute one client may make, on average "
        "(the refill rate of its token bucket); a client is its API token, else its IP address.",
    )
    write_burst: int = Field(
        default=30,
        ge=1,
        description="Writes one client may make at once before the rate applies "
        "(the bucket's size, in requests).",
    )
    max_queued_jobs: int = Field(
        default=10_000,
        ge=1,
        description="Jobs waiting on the queue at most; a POST that would go over "
        "is answered 503 until workers catch up.",
    )
    retention_days: float = Field(
        default=30.0,
        gt=0,
        description="Days a finished analysis is kept after it finished; "
        "`phasescope gc` deletes older ones (and stale unfinished ones with no live job).",
    )
    redis_maxmemory_mib: int = Field(
        default=1024,
        ge=16,
        description="Memory cap of the embedded Redis, in MiB (maxmemory, with the "
        "noeviction policy: writes fail loudly when it is full, queue state is never evicted).",
    )

    # The Hugging Face hub (phasescope.models.hub): tl: and hub: models. The hub address is huggingface_hub's
    # own HF_ENDPOINT, the cache its HF_HUB_CACHE / HF_HOME, the credential its HF_TOKEN.
    hub_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Seconds one hub metadata call (branch or file list) may take.",
    )
    hub_refs_ttl_s: float = Field(
        default=600.0,
        ge=0,
        description="Seconds a repository's branch list (steps and commits) is reused "
        "in a process before the hub is asked again.",
    )
    hub_failure_ttl_s: float = Field(
        default=60.0,
        ge=0,
        description="Seconds a failed hub call is remembered, so repeated requests for "
        "an unreachable or missing repository do not call the hub again.",
    )
    hub_keep_revisions: bool = Field(
        default=False,
        description="Keep a hub revision's files in the Hugging Face cache after its "
        "checkpoint is measured (true/false). False: a worker deletes them, so a sweep holds about one "
        "revision on disk at a time.",
    )
    allow_pickled_checkpoints: bool = Field(
        default=False,
        description="Allow TransformerLens models whose weights are Python pickles "
        "(NeelNanda's .pth checkpoints; true/false). Unpickling runs code from the file.",
    )
    allow_remote_code: bool = Field(
        default=False,
        description="Allow TransformerLens models it loads with trust_remote_code=True "
        "(Qwen 1/Qwen3, phi-2, phi-4, ... on the hub; true/false), which can run code from the repository.",
    )

    @field_validator("model_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        # Accept the shell-friendly PATH style as well as a JSON list.
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [p for p in value.split(":") if p]
        return value

    @property
    def zoo_dir(self) -> Path:
        """Where zoo series are trained to and loaded from."""
        return self.data_dir / "zoo"

    @property
    def store_dir(self) -> Path:
        """The results store (see docs/architecture.md for its layout)."""
        return self.data_dir / "results"

    @property
    def redis_dir(self) -> Path:
        """The embedded Redis server's working directory (append-only file, socket, log)."""
        return self.data_dir / "redis"

    @property
    def allowed_roots(self) -> list[Path]:
        """Every directory a local model path may resolve under, made absolute and real."""
        roots = [self.zoo_dir, self.data_dir / "models", *self.model_roots]
        return [Path(r).expanduser().resolve() for r in roots]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests clear it with ``get_settings.cache_clear()``)."""
    return Settings()
