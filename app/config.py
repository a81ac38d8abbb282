"""One typed settings object, read from the environment (or `.env`) through get_settings()."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.explain.names import METHOD_NAMES

DEV_SECRET_KEY = "lumen-development-secret-change-me"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# One folder of a blob key or of LUMEN_S3_PREFIX: no empty, hidden, "." or ".." parts (app.storage.base).
_KEY_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# A C-STORE destination: the called AE title (printable ASCII but the backslash), "@", host, ":", port.
_PUSH_AE = re.compile(r"[ -\[\]-~]{1,16}@[^\s@:]+:[0-9]{1,5}")


class Settings(BaseSettings):
    """Every setting of Lumen. Unset database and broker mean the embedded default."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: str = Field("development", alias="LUMEN_ENV")
    data_dir: Path = Field(Path("var"), alias="LUMEN_DATA_DIR")
    database_url: str | None = Field(None, alias="DATABASE_URL")
    broker_url: str | None = Field(None, alias="BROKER_URL")
    secret_key: str = Field(DEV_SECRET_KEY, alias="LUMEN_SECRET_KEY")
    models_dir: Path | None = Field(None, alias="LUMEN_MODELS_DIR")
    inference_queue: str = Field("gpu", alias="LUMEN_INFERENCE_QUEUE")
    # Prefix of every key the broker writes in Redis, so that several deployments (or test runs) share one
    # Redis without taking or wiping each other's messages. Not used by the embedded filesystem broker.
    broker_namespace: str = Field("", alias="LUMEN_BROKER_NAMESPACE")
    # The explanation bundle computed for every new study (one shared pass + the IG path).
    default_methods: Annotated[list[str], NoDecode] = Field(
        [
            "gradient",
            "saliency",
            "input_x_gradient",
            "gradcam",
            "guided_backprop",
            "deconvnet",
            "guided_gradcam",
            "integrated_gradients",
        ],
        alias="LUMEN_DEFAULT_METHODS",
    )
    max_upload_bytes: int = Field(512 * 1024 * 1024, alias="LUMEN_MAX_UPLOAD_BYTES")
    # A model file brought through the onboarding pages (a DenseNet-121 is 30 MB, a ViT-L 1.2 GB).
    max_model_bytes: int = Field(2 * 1024 * 1024 * 1024, alias="LUMEN_MAX_MODEL_BYTES")
    # DICOM networking (docs/interoperability.md): Lumen's own AE title, the port `lumen dicom-listener` takes
    # C-STORE on, and the calling AE titles it accepts (comma-separated; empty: it refuses every association).
    dicom_ae_title: str = Field("LUMEN", alias="LUMEN_DICOM_AE_TITLE", pattern=r"^[ -~]{1,16}$")
    dicom_port: int = Field(11112, alias="LUMEN_DICOM_PORT", ge=1, le=65535)
    dicom_allowed_aes: Annotated[list[str], NoDecode] = Field(default_factory=list, alias="LUMEN_DICOM_ALLOWED_AES")
    # Where a finished job's results go as DICOM objects (app/dicom_results/push.py): a DICOMweb STOW-RS base URL,
    # or a C-STORE SCP as AE@host:port (called with LUMEN_DICOM_AE_TITLE). Neither: results stay in Lumen.
    # The archive coordinators search and import reader-study cases from (app/archive): its DICOMweb base URL, and
    # the Authorization header value it wants ("Bearer ...", "Basic ..."), if any.
    archive_dicomweb_url: str | None = Field(None, alias="LUMEN_ARCHIVE_DICOMWEB_URL")
    archive_authorization: str | None = Field(None, alias="LUMEN_ARCHIVE_AUTHORIZATION", repr=False)
    dicom_push_url: str | None = Field(None, alias="LUMEN_DICOM_PUSH_URL")
    dicom_push_ae: str | None = Field(None, alias="LUMEN_DICOM_PUSH_AE")
    max_job_attempts: int = Field(3, alias="LUMEN_MAX_JOB_ATTEMPTS")
    stale_job_seconds: int = Field(120, alias="LUMEN_STALE_JOB_SECONDS")
    # Expensive explanation jobs (app.jobs.limits) one coordinator or admin may have queued or running at once
    # through POST /api/jobs; beyond it 429. Readers may not request expensive methods at all.
    max_expensive_jobs_per_user: int = Field(2, ge=0, alias="LUMEN_MAX_EXPENSIVE_JOBS_PER_USER")
    # Jobs a worker runs together: a claimed job takes up to this many - 1 queued first-try jobs of the same
    # model and methods into one batch (app.jobs.service.co_claim). 1: each job alone. Unset: 8 on a GPU
    # worker, 1 on a CPU worker, where batching measured 0.73-0.96x (docs/worker-batching.md).
    worker_batch_size: int | None = Field(None, ge=1, alias="LUMEN_WORKER_BATCH_SIZE")
    # A worker times a few batch sizes of each model when it first loads it and keeps the fastest in
    # data_dir/batch-sizes.json (models.explain.batch_calibration); off: batches as large as memory allows.
    batch_calibration: bool = Field(True, alias="LUMEN_BATCH_CALIBRATION")
    sweep_interval_seconds: int = Field(30, alias="LUMEN_SWEEP_INTERVAL_SECONDS")
    session_hours: int = Field(12, alias="LUMEN_SESSION_HOURS")
    token_hours: int = Field(24, alias="LUMEN_TOKEN_HOURS")
    secure_cookies: bool = Field(False, alias="LUMEN_SECURE_COOKIES")
    # Connections of one process to Postgres: the API's threads (40 by default) share pool + overflow. A request
    # that cannot get one within the timeout is answered 503 with Retry-After instead of waiting on.
    # Requests one API process works on at once (fewer than its threads and connections, so each one in progress
    # has both); the others wait their turn, and one that waits longer than the queue time is answered 503.
    max_concurrent_requests: int = Field(32, ge=1, alias="LUMEN_MAX_CONCURRENT_REQUESTS")
    request_queue_seconds: float = Field(10.0, gt=0, alias="LUMEN_REQUEST_QUEUE_SECONDS")
    db_pool_size: int = Field(10, ge=1, alias="LUMEN_DB_POOL_SIZE")
    db_max_overflow: int = Field(30, ge=0, alias="LUMEN_DB_MAX_OVERFLOW")
    db_pool_timeout_seconds: float = Field(10.0, gt=0, alias="LUMEN_DB_POOL_TIMEOUT_SECONDS")
    # How long to wait for the database to accept a connection (Postgres) or a write lock (SQLite).
    db_connect_timeout_seconds: int = Field(5, ge=1, alias="LUMEN_DB_CONNECT_TIMEOUT_SECONDS")
    # Blobs go to this S3 bucket when it is set (any S3-compatible server), else under data_dir/blobs
    # (docs/storage.md). Unset keys mean boto3's own credential chain (AWS_* variables, instance role).
    s3_bucket: str | None = Field(None, alias="LUMEN_S3_BUCKET")
    s3_endpoint_url: str | None = Field(None, alias="LUMEN_S3_ENDPOINT_URL")
    s3_region: str = Field("us-east-1", alias="LUMEN_S3_REGION")
    s3_access_key_id: str | None = Field(None, alias="LUMEN_S3_ACCESS_KEY_ID")
    s3_secret_access_key: SecretStr | None = Field(None, alias="LUMEN_S3_SECRET_ACCESS_KEY")
    s3_prefix: str = Field("", alias="LUMEN_S3_PREFIX")
    # Connect and read timeout of each S3 request; a request is tried at most 3 times (app.storage.s3).
    s3_timeout_seconds: float = Field(5.0, gt=0, le=300, alias="LUMEN_S3_TIMEOUT_SECONDS")

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production":
            if self.secret_key == DEV_SECRET_KEY or len(self.secret_key) < 32:
                raise ValueError("LUMEN_SECRET_KEY must be set to 32+ random characters in production")
            if not self.secure_cookies:
                raise ValueError("LUMEN_SECURE_COOKIES must be true in production (HTTPS only)")
        return self

    @field_validator("s3_bucket", "s3_endpoint_url", "s3_access_key_id", "s3_secret_access_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `LUMEN_S3_BUCKET=` (as compose files write an optional variable) means unset.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_s3(self) -> Settings:
        if self.s3_bucket is None:
            given = [name for name, value in self._s3_options().items() if value]
            if given:
                raise ValueError(f"{', '.join(given)} set without LUMEN_S3_BUCKET: set the bucket to keep blobs in S3")
            return self
        if not _BUCKET.fullmatch(self.s3_bucket):
            raise ValueError(f"LUMEN_S3_BUCKET {self.s3_bucket!r} is not a bucket name (3-63 of a-z 0-9 . -)")
        if self.s3_endpoint_url is not None and not self.s3_endpoint_url.startswith(("http://", "https://")):
            raise ValueError(f"LUMEN_S3_ENDPOINT_URL {self.s3_endpoint_url!r} must start with http:// or https://")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("set both LUMEN_S3_ACCESS_KEY_ID and LUMEN_S3_SECRET_ACCESS_KEY, or neither")
        return self

    @field_validator("s3_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        prefix = value.strip("/")
        if prefix and not all(_KEY_PART.fullmatch(part) for part in prefix.split("/")):
            raise ValueError(f"LUMEN_S3_PREFIX {value!r}: use folders of letters, digits, . _ - (no . or ..)")
        return prefix

    def _s3_options(self) -> dict[str, object]:
        return {
            "LUMEN_S3_ENDPOINT_URL": self.s3_endpoint_url,
            "LUMEN_S3_ACCESS_KEY_ID": self.s3_access_key_id,
            "LUMEN_S3_SECRET_ACCESS_KEY": self.s3_secret_access_key,
            "LUMEN_S3_PREFIX": self.s3_prefix,
        }

    @field_validator("dicom_push_url", "dicom_push_ae", mode="before")
    @classmethod
    def _empty_push_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_dicom_push(self) -> Settings:
        if self.dicom_push_url is not None and self.dicom_push_ae is not None:
            raise ValueError("set LUMEN_DICOM_PUSH_URL or LUMEN_DICOM_PUSH_AE, not both: results go to one destination")
        if self.dicom_push_url is not None and not self.dicom_push_url.startswith(("http://", "https://")):
            raise ValueError(f"LUMEN_DICOM_PUSH_URL {self.dicom_push_url!r} must start with http:// or https://")
        if self.dicom_push_ae is not None and not _PUSH_AE.fullmatch(self.dicom_push_ae):
            raise ValueError(f"LUMEN_DICOM_PUSH_AE {self.dicom_push_ae!r} is not AE@host:port (an AE title of 1-16 "
                             "characters, e.g. ORTHANC@pacs.example.org:4242)")
        return self

    @field_validator("dicom_allowed_aes", mode="before")
    @classmethod
    def _ae_titles(cls, value: object) -> object:
        if isinstance(value, str):
            return [title.strip() for title in value.split(",") if title.strip()]
        return value

    @field_validator("default_methods", mode="before")
    @classmethod
    def _split_methods(cls, value: object) -> object:
        return [m.strip() for m in value.split(",") if m.strip()] if isinstance(value, str) else value

    @field_validator("default_methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(METHOD_NAMES))
        if unknown or not value:
            raise ValueError(f"LUMEN_DEFAULT_METHODS: unknown methods {unknown}; known: {list(METHOD_NAMES)}")
        return value

    @property
    def embedded(self) -> bool:
        """True when no external database is configured (SQLite + filesystem broker)."""
        return self.database_url is None

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            # Plain postgres URLs mean psycopg 3, the driver Lumen installs.
            url = self.database_url
            for prefix in ("postgresql://", "postgres://"):
                if url.startswith(prefix):
                    return "postgresql+psycopg://" + url[len(prefix) :]
            return url
        return f"sqlite:///{(self.data_dir / 'lumen.db').resolve()}"

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or "filesystem://localhost/"

    @property
    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def blob_dir(self) -> Path:
        return (self.data_dir / "blobs").resolve()

    @property
    def model_dirs(self) -> list[Path]:
        """Where model folders (card + weights) are looked up: the shipped ones, the user's (LUMEN_MODELS_DIR), and
        the models onboarded through Lumen (`onboarded_models_dir`, once the first one is installed)."""
        shipped = Path(__file__).resolve().parent.parent / "models" / "zoo"
        onboarded = self.onboarded_models_dir
        return [shipped] + ([self.models_dir] if self.models_dir else []) + ([onboarded] if onboarded.is_dir() else [])

    @property
    def onboarded_models_dir(self) -> Path:
        """Where `lumen models add` and the onboarding pages install a model that passed its checks. Workers on
        other hosts need it shared with them, as LUMEN_MODELS_DIR (docs/onboarding.md)."""
        return (self.data_dir / "models").resolve()

    @property
    def onboarding_dir(self) -> Path:
        """Uploads of models on their way in, one folder per onboarding."""
        return (self.data_dir / "onboarding").resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
