"""Operator settings: one frozen dataclass per concern, built from flags and environment.

Called by cli.py (`taskwarden run`), which passes the result to every service. Stdlib only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from e


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as e:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from e


def _as_int(value: object) -> int:
    """An override from a flag (int or text) as an int."""
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        return int(value)
    raise TypeError(f"expected an integer, got {value!r}")


def _as_strings(value: object) -> tuple[str, ...]:
    """An override from a repeated flag (a sequence of names) as a tuple of str."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(f"expected a sequence of names, got {value!r}")
    return tuple(str(v) for v in value)


@dataclass(frozen=True)
class WatchSettings:
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means cluster-wide."""
    operator_namespace: str = "taskwarden-system"
    """Where signing keys, JWKS, revocation list, webhook TLS and peering live."""
    peering: str = "taskwarden"
    """Sharding group: replicas with the same name split the tasks between them through Leases
    named after it (sharding/); empty string runs standalone (one replica owning everything)."""


@dataclass(frozen=True)
class IdentitySettings:
    trust_domain: str = "cluster.local"
    issuer: str = "https://taskwarden.taskwarden-system.svc"


@dataclass(frozen=True)
class KeySettings:
    alg: str = "ES256"
    rotation_period: float = 24 * 3600.0
    """Seconds a signing key stays active before the next one takes over."""
    publish_delay: float = 600.0
    """Seconds a new key sits in the JWKS before it signs, so verifiers have fetched it."""
    retain: float = 24 * 3600.0
    """Seconds a retired key stays in the JWKS; must exceed the longest credential TTL."""
    check_interval: float = 60.0


@dataclass(frozen=True)
class LifecycleSettings:
    sweep_interval: float = 60.0
    """Seconds between full reconciliations (orphans, missed expiries, re-attestation)."""
    revocation_flush: float = 0.02
    """Seconds to coalesce revocation-list writes; bounds revocation lag from above."""
    revocation_max_entries: int = 10000
    api_workers: int = 32
    """Kubernetes API requests in flight at once on the main connection pool (kubehttp.py;
    TASKWARDEN_API_WORKERS). The revocation list has two slots of its own besides."""
    rotation_concurrency: int = 16
    """Rotations in flight at once (TASKWARDEN_ROTATION_CONCURRENCY). When more are due, the
    credential that expires first is renewed first (tasks/scheduler.py), and the other API
    threads stay free for first issuance and revocation."""
    test_crash_after: str = ""
    """Tests only (TASKWARDEN_TEST_CRASH_AFTER): `ledger` exits the process right after the
    first ledger write of an issuance, before status and Secret: a crash at the worst moment."""


@dataclass(frozen=True)
class ServerSettings:
    metrics_port: int = 9090
    health_port: int = 8080
    webhook_port: int = 9443
    """Admission only (/mutate-*, /validate-*): what the API server calls."""
    public_port: int = 8443
    """OIDC discovery, JWKS and the revocation list: what anyone may read. No admission here."""
    admission_client_ca: str = ""
    """PEM file of the CA whose client certificates the admission port requires (the API
    server's, from its --admission-control-config-file). Empty: any caller is answered, but a
    refusal's message names nothing read from the cluster and no audit record is written."""
    webhook_url: str = ""
    """Base URL the apiserver calls for webhooks (local development), e.g. https://127.0.0.1:9443."""
    webhook_service: str = ""
    """Service name for webhooks in a cluster; used when webhook_url is empty."""
    manage_webhooks: bool = True
    admission_mode: str = "auto"
    """TASKWARDEN_ADMISSION_MODE: `auto` (CEL admission policies where the API server serves
    them, else webhooks only), `webhook` (webhooks only) or `cel` (as auto, logging an error
    when the API server does not serve them). See admission/cel.py."""


ADMISSION_MODES = ("auto", "webhook", "cel")


def admission_path(server: ServerSettings) -> str:
    """How the API server reaches the admission webhooks, or "" when nothing does: then requester
    binding, approvals and the pod guard are not enforced, and `taskwarden run` refuses to start
    unless told `--no-admission`."""
    if server.webhook_url:
        return f"webhook URL {server.webhook_url}"
    if server.webhook_service:
        return f"Service {server.webhook_service}"
    if not server.manage_webhooks:
        return "webhook configurations managed outside the operator (TASKWARDEN_MANAGE_WEBHOOKS)"
    return ""


@dataclass(frozen=True)
class ShardingSettings:
    """Sharded active-active replicas (sharding/; docs/operations.md "Sharding")."""

    shards: int = 16
    """Shards the namespaces are hashed into; every replica of a group must agree."""
    lease_duration: float = 15.0
    """Seconds a Lease must stay unchanged before another replica may take it."""
    renew_deadline: float = 10.0
    """Seconds after a renewal began that its holder stops acting unless renewed again."""
    retry_period: float = 2.0
    """Seconds between ticks of the Lease loop (list, renew, acquire, release)."""
    identity: str = ""
    """This replica's holderIdentity; empty: pod name (POD_NAME) or host name, plus the pid."""


def _sharding(env: Mapping[str, str]) -> ShardingSettings:
    s = ShardingSettings(
        shards=_env_int(env, "TASKWARDEN_SHARDS", 16),
        lease_duration=_env_float(env, "TASKWARDEN_LEASE_DURATION_SECONDS", 15.0),
        renew_deadline=_env_float(env, "TASKWARDEN_LEASE_RENEW_DEADLINE_SECONDS", 10.0),
        retry_period=_env_float(env, "TASKWARDEN_LEASE_RETRY_SECONDS", 2.0),
        identity=env.get("TASKWARDEN_REPLICA_ID", ""),
    )
    if not 1 <= s.shards <= 1024:
        raise ValueError(f"TASKWARDEN_SHARDS must be between 1 and 1024, got {s.shards}")
    if not 0 < s.retry_period < s.renew_deadline < s.lease_duration:
        raise ValueError(
            "Lease timings must satisfy 0 < TASKWARDEN_LEASE_RETRY_SECONDS < "
            "TASKWARDEN_LEASE_RENEW_DEADLINE_SECONDS < TASKWARDEN_LEASE_DURATION_SECONDS "
            f"(got {s.retry_period}, {s.renew_deadline}, {s.lease_duration}): a holder must "
            "stop acting before its Lease can expire for another replica"
        )
    return s


@dataclass(frozen=True)
class Settings:
    watch: WatchSettings = field(default_factory=WatchSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    keys: KeySettings = field(default_factory=KeySettings)
    lifecycle: LifecycleSettings = field(default_factory=LifecycleSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    sharding: ShardingSettings = field(default_factory=ShardingSettings)


def from_env(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build settings from TASKWARDEN_* variables; keyword overrides (from flags) win."""
    env = os.environ if env is None else env
    op_ns = (
        env.get("TASKWARDEN_OPERATOR_NAMESPACE")
        or env.get("POD_NAMESPACE")
        or ("taskwarden-system")
    )
    namespaces = tuple(n for n in env.get("TASKWARDEN_NAMESPACES", "").split(",") if n.strip())
    ov = dict(overrides)
    watch = WatchSettings(
        namespaces=_as_strings(ov.pop("namespaces", None) or namespaces),
        operator_namespace=str(ov.pop("operator_namespace", None) or op_ns),
        peering=str(ov.pop("peering", env.get("TASKWARDEN_PEERING", "taskwarden"))),
    )
    identity = IdentitySettings(
        trust_domain=str(
            ov.pop("trust_domain", None) or env.get("TASKWARDEN_TRUST_DOMAIN", "cluster.local")
        ),
        issuer=str(
            ov.pop("issuer", None)
            or env.get("TASKWARDEN_ISSUER")
            or f"https://taskwarden.{watch.operator_namespace}.svc"
        ),
    )
    keys = KeySettings(
        alg=env.get("TASKWARDEN_SIGNING_ALG", "ES256"),
        rotation_period=_env_float(env, "TASKWARDEN_KEY_ROTATION_SECONDS", 24 * 3600.0),
        publish_delay=_env_float(env, "TASKWARDEN_KEY_PUBLISH_DELAY_SECONDS", 600.0),
        retain=_env_float(env, "TASKWARDEN_KEY_RETAIN_SECONDS", 24 * 3600.0),
    )
    lifecycle = LifecycleSettings(
        sweep_interval=_env_float(env, "TASKWARDEN_SWEEP_SECONDS", 60.0),
        revocation_max_entries=_env_int(env, "TASKWARDEN_REVOCATION_MAX_ENTRIES", 10000),
        test_crash_after=env.get("TASKWARDEN_TEST_CRASH_AFTER", ""),
        rotation_concurrency=_env_int(env, "TASKWARDEN_ROTATION_CONCURRENCY", 16),
        api_workers=_env_int(env, "TASKWARDEN_API_WORKERS", 32),
    )
    for var, value in (
        ("TASKWARDEN_ROTATION_CONCURRENCY", lifecycle.rotation_concurrency),
        ("TASKWARDEN_API_WORKERS", lifecycle.api_workers),
    ):
        if value < 1:
            raise ValueError(f"{var} must be at least 1, got {value}")
    server = ServerSettings(
        metrics_port=_as_int(
            ov.pop("metrics_port", None) or _env_int(env, "TASKWARDEN_METRICS_PORT", 9090)
        ),
        health_port=_as_int(
            ov.pop("health_port", None) or _env_int(env, "TASKWARDEN_HEALTH_PORT", 8080)
        ),
        webhook_port=_as_int(
            ov.pop("webhook_port", None) or _env_int(env, "TASKWARDEN_WEBHOOK_PORT", 9443)
        ),
        public_port=_as_int(
            ov.pop("public_port", None) or _env_int(env, "TASKWARDEN_PUBLIC_PORT", 8443)
        ),
        admission_client_ca=env.get("TASKWARDEN_ADMISSION_CLIENT_CA", ""),
        webhook_url=env.get("TASKWARDEN_WEBHOOK_URL", ""),
        webhook_service=env.get("TASKWARDEN_WEBHOOK_SERVICE", ""),
        manage_webhooks=env.get("TASKWARDEN_MANAGE_WEBHOOKS", "true").lower() != "false",
        admission_mode=env.get("TASKWARDEN_ADMISSION_MODE", "auto").strip().lower() or "auto",
    )
    if ov:
        raise TypeError(f"unknown settings: {sorted(ov)}")
    if server.admission_mode not in ADMISSION_MODES:
        raise ValueError(
            f"TASKWARDEN_ADMISSION_MODE {server.admission_mode!r} must be one of "
            f"{', '.join(ADMISSION_MODES)}"
        )
    if server.public_port == server.webhook_port:
        raise ValueError(
            f"TASKWARDEN_PUBLIC_PORT must differ from TASKWARDEN_WEBHOOK_PORT "
            f"({server.webhook_port}): admission is served apart from the public endpoints"
        )
    return Settings(
        watch=watch,
        identity=identity,
        keys=keys,
        lifecycle=lifecycle,
        server=server,
        sharding=_sharding(env),
    )
