"""Settings from environment variables (and an optional `.env` file)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = Path("models/SmolLM2-135M-Instruct.Q4_1.gguf")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    data_dir: Path = Path("data")
    # Empty: the SQLite file DATA_DIR/events.sqlite; `postgresql://...`: that database.
    event_store: str = ""
    model_path: Path = DEFAULT_MODEL
    models_dir: Path = Path("models")  # every *.gguf here is listed (the model registry)
    model_paths: str = ""  # more GGUF files or directories, separated by commas or colons
    n_ctx: int = Field(default=4096, ge=256)
    n_threads: int = Field(default=2, ge=1)
    n_gpu_layers: int = Field(default=0, ge=-1)
    host: str = "127.0.0.1"
    port: int = 8000

    # Request limits (API.md "Limits").
    max_message_chars: int = 32_000
    max_title_chars: int = 200
    max_system_prompt_chars: int = 8_000
    max_tokens_limit: int = 4_096
    max_body_bytes: int = 5 * 1024 * 1024
    max_import_messages: int = Field(default=2_000, ge=1)  # per imported chat
    max_import_chats: int = Field(default=500, ge=1)  # per imported file

    # Defaults for a new chat session.
    default_system_prompt: str = "You are a helpful assistant."
    default_temperature: float = 0.7
    default_top_p: float = 0.95
    default_max_tokens: int = 512

    # Inference actor.
    max_queue: int = Field(default=32, ge=1)
    generation_timeout: float = Field(default=300.0, gt=0)
    # Waiting tokens of every reply being written go in one commit per interval (seconds);
    # a reply's own at `count` tokens. Fewer commits leave the model more CPU time.
    token_flush_interval: float = Field(default=0.1, gt=0)
    token_flush_count: int = Field(default=16, ge=1)
    # Seconds a reply may wait for its first token (None: only GENERATION_TIMEOUT applies).
    first_token_timeout: float | None = Field(default=None, gt=0)
    max_queued_per_user: int = Field(default=8, ge=1)  # more waiting replies: 429

    # Engine tuning (the batching engine reads these): replies decoded together, prompt
    # tokens per decode call, how the weights are mapped, flash attention (None: auto).
    n_parallel: int = Field(default=4, ge=1)
    n_batch: int = Field(default=256, ge=1)
    use_mmap: bool = True
    use_mlock: bool = False
    flash_attn: bool | None = None
    # Saved KV state of chats that lost their slot, under DATA_DIR/kv-cache, at most this.
    kv_cache_bytes: int = Field(default=1 << 30, ge=0)

    # A remote engine instead of the in-process model: OpenAI-compatible servers' base URLs
    # (comma-separated; each serves ENGINE_PARALLEL replies at once), the bearer token they
    # take, the model to ask for (empty: the first their /v1/models lists).
    engine_url: str = ""
    engine_api_key: str = Field(default="", repr=False)
    engine_parallel: int = Field(default=4, ge=1)
    engine_model: str = ""

    # Security.
    token_ttl_days: int = Field(default=30, ge=1)
    login_max_failures: int = Field(default=5, ge=1)
    login_window_seconds: int = Field(default=300, ge=1)
    secret_key: str = ""  # signs CSRF tokens; generated into DATA_DIR when empty
    cookie_secure: bool = False
    # Peers (addresses or CIDR networks, comma-separated) whose X-Forwarded-For is believed;
    # empty: none, the TCP peer is the client. Run uvicorn with --no-proxy-headers so it
    # does not rewrite the peer itself (it trusts loopback by default).
    trusted_proxies: str = ""
    # Sign-up: false closes it once the first user (the admin) exists.
    open_registration: bool = True
    register_max_per_address: int = Field(default=60, ge=1)
    register_window_seconds: int = Field(default=60, ge=1)
    # Password hashes (64 MiB each) computed at once; more wait, other work goes on.
    hash_concurrency: int = Field(default=2, ge=1)

    sse_ping_seconds: float = 15.0
    max_streams_per_user: int = Field(default=20, ge=1)  # open SSE streams (tabs) per user

    @cached_property
    def event_store_path(self) -> Path:
        return self.data_dir / "events.sqlite"

    @cached_property
    def read_model_path(self) -> Path:
        return self.data_dir / "readmodels.sqlite"

    @property
    def model_id(self) -> str:
        return self.model_path.stem
