"""The claims of a Taskwarden credential, exactly as the product contract lists them.

What for: a credential is a JWT-SVID-compatible JWS; this module is the single place that
knows its claims: `build_claims` for one issue or rotation, `actor` for the RFC 8693 `act`
chain of a delegated task, `describe_claims` for logs and audit (never log the token itself).

Who calls it: the issuing service (build, then sign with a `signing.Signer`), delegation
(`policy.delegation` builds the act chain), verification (`REQUIRED_CLAIMS`, `TASK_CLAIM`),
the CLI and tool owners. Pure: no kopf, no Kubernetes client; time comes in as ``now``.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Final

from taskwarden import names
from taskwarden.credentials import keys as keys_mod
from taskwarden_verifier import contract

TASK_CLAIM: Final = contract.TASK_CLAIM
REQUIRED_CLAIMS: Final[tuple[str, ...]] = contract.REQUIRED_CLAIMS
JTI_BYTES: Final = 16
"""Random bytes in a jti (128 bits, from ``secrets``); 22 base64url characters."""
MAX_ACT_DEPTH: Final = contract.MAX_ACT_DEPTH
"""Deepest accepted RFC 8693 actor chain (see ``taskwarden_verifier.contract``)."""
MAX_INTENT_LENGTH: Final = 256
SPIFFE_PREFIX: Final = "spiffe://"


def _string_list(value: object, what: str) -> list[str]:
    # A bare str is a Sequence[str] too; refuse it so "read" never becomes ["r","e","a","d"].
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError(f"{what} must be a list of strings")
    items = list(value)
    if not items:
        raise ValueError(f"{what} must not be empty")
    for item in items:
        if not isinstance(item, str) or not item:
            raise ValueError(f"{what} must contain only non-empty strings")
    return items


def _token_part(value: str, what: str, *, colon_ok: bool) -> str:
    # Scope triples are space-separated and colon-joined: keep them parseable.
    if any(ch.isspace() for ch in value):
        raise ValueError(f"{what} {value!r} must not contain whitespace")
    if not colon_ok and ":" in value:
        raise ValueError(f"{what} {value!r} must not contain ':'")
    return value


def _task_claim(task: Mapping[str, str], what: str = "task") -> dict[str, str]:
    if not isinstance(task, Mapping):
        raise ValueError(f"{what} must be a mapping with namespace, name and uid")
    out: dict[str, str] = {}
    for name in ("namespace", "name", "uid"):
        value = task.get(name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{what}.{name} must be a non-empty string")
        out[name] = value
    return out


def _spiffe_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.startswith(SPIFFE_PREFIX):
        raise ValueError(f"{what} must be a SPIFFE ID (spiffe://...)")
    return value


def actor(
    *, spiffe_id: str, task: Mapping[str, str], parent_act: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The RFC 8693 ``act`` claim for a token delegated by the task (``spiffe_id``, ``task``).

    ``parent_act`` is that parent's own ``act`` (if it was itself delegated), nested as the
    prior actor. Called by the issuing service when a task has ``delegatedFrom``.
    """
    claim: dict[str, Any] = {"sub": _spiffe_id(spiffe_id, "act.sub"), TASK_CLAIM: _task_claim(task)}
    if parent_act is not None:
        claim["act"] = _actor_claim(parent_act, depth=2)
    return claim


def actor_from_claims(parent_claims: Mapping[str, Any]) -> dict[str, Any]:
    """The ``act`` claim for a child token, taken from the parent token's verified claims."""
    return actor(
        spiffe_id=parent_claims["sub"],
        task=parent_claims[TASK_CLAIM],
        parent_act=parent_claims.get("act"),
    )


def _actor_claim(act: Mapping[str, Any], depth: int = 1) -> dict[str, Any]:
    """Validate and copy an actor chain; only sub, the task claim and a nested act."""
    if depth > MAX_ACT_DEPTH:
        raise ValueError(f"act chain deeper than {MAX_ACT_DEPTH}")
    if not isinstance(act, Mapping):
        raise ValueError("act must be a mapping")
    unknown = set(act) - {"sub", TASK_CLAIM, "act"}
    if unknown:
        raise ValueError(f"act has unsupported members: {', '.join(sorted(unknown))}")
    claim: dict[str, Any] = {"sub": _spiffe_id(act.get("sub"), "act.sub")}
    if TASK_CLAIM in act:
        claim[TASK_CLAIM] = _task_claim(act[TASK_CLAIM], f"act.{TASK_CLAIM}")
    if act.get("act") is not None:
        claim["act"] = _actor_claim(act["act"], depth + 1)
    return claim


def delegation_depth(claims: Mapping[str, Any]) -> int:
    """How many actors are in the chain: 0 for a direct token, 1 for a child, and so on."""
    depth = 0
    act = claims.get("act")
    while isinstance(act, Mapping):
        depth += 1
        act = act.get("act")
    return depth


def new_jti() -> str:
    """A fresh token ID: 128 random bits from ``secrets``, base64url without padding."""
    return keys_mod.b64url_encode(secrets.token_bytes(JTI_BYTES))


def build_claims(
    *,
    issuer: str,
    spiffe_id: str,
    audiences: Sequence[str],
    now: float,
    ttl: float,
    not_after: float | None,
    task: Mapping[str, str],
    scopes: Sequence[Mapping[str, Any]],
    data_class: str,
    intent: str,
    pod: Mapping[str, str] | None,
    act: Mapping[str, Any] | None = None,
    jti: str | None = None,
) -> dict[str, Any]:
    """The claims of one credential, exactly as the contract lists them.

    ``iat = nbf = floor(now)``; ``exp = floor(min(now + ttl, not_after))`` (whole seconds, so
    exp never passes ``not_after``, the task's or parent's expiry). ``scope`` is the
    space-separated ``tool:action:resource`` triples in request order without duplicates,
    ``scopes`` the structured list. ``pod`` is omitted when None (no pod binding); ``act`` only
    for delegated tasks (build it with :func:`actor`). ``jti`` defaults to :func:`new_jti`.

    Raises ValueError on inputs that would make a malformed or already-expired token.
    Called by the issuing service, once per issue and rotation.
    """
    if not isinstance(issuer, str) or not issuer:
        raise ValueError("issuer must be a non-empty string")
    for name, value in (("now", now), ("ttl", ttl)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number of seconds")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite")
    if ttl <= 0:
        raise ValueError("ttl must be > 0")
    if not_after is not None and not math.isfinite(not_after):
        raise ValueError("not_after must be finite")
    issued = math.floor(now)
    expires = math.floor(now + ttl if not_after is None else min(now + ttl, not_after))
    if expires <= issued:
        raise ValueError("the credential would already be expired (not_after <= now)")

    auds = list(dict.fromkeys(_string_list(audiences, "audiences")))

    if isinstance(scopes, str | bytes) or not isinstance(scopes, Sequence) or not scopes:
        raise ValueError("scopes must be a non-empty list")
    structured: list[dict[str, Any]] = []
    triples: list[str] = []
    for index, scope in enumerate(scopes):
        where = f"scopes[{index}]"
        if not isinstance(scope, Mapping):
            raise ValueError(f"{where} must be a mapping with tool, actions and resources")
        tool = scope.get("tool")
        if not isinstance(tool, str) or not tool:
            raise ValueError(f"{where}.tool must be a non-empty string")
        _token_part(tool, f"{where}.tool", colon_ok=False)
        actions = _string_list(scope.get("actions"), f"{where}.actions")
        resources = _string_list(scope.get("resources"), f"{where}.resources")
        for action in actions:
            _token_part(action, f"{where}.actions", colon_ok=False)
        for resource in resources:
            _token_part(resource, f"{where}.resources", colon_ok=True)
        structured.append({"tool": tool, "actions": actions, "resources": resources})
        triples.extend(f"{tool}:{a}:{r}" for a in actions for r in resources)

    if data_class not in names.DATA_CLASSES:
        raise ValueError(f"data_class must be one of {', '.join(names.DATA_CLASSES)}")
    if not isinstance(intent, str) or not intent:
        raise ValueError("intent must be a non-empty string")
    if len(intent) > MAX_INTENT_LENGTH:
        raise ValueError(f"intent must be at most {MAX_INTENT_LENGTH} characters")
    if jti is None:
        jti = new_jti()
    elif not isinstance(jti, str) or not jti:
        raise ValueError("jti must be a non-empty string")

    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": _spiffe_id(spiffe_id, "spiffe_id"),
        "aud": auds,
        "iat": issued,
        "nbf": issued,
        "exp": expires,
        "jti": jti,
        TASK_CLAIM: _task_claim(task),
        "scope": " ".join(dict.fromkeys(triples)),
        "scopes": structured,
        "data_class": data_class,
        "intent": intent,
    }
    if pod is not None:
        if not isinstance(pod, Mapping):
            raise ValueError("pod must be a mapping with name and uid")
        pod_claim: dict[str, str] = {}
        for name in ("name", "uid"):
            member = pod.get(name)
            if not isinstance(member, str) or not member:
                raise ValueError(f"pod.{name} must be a non-empty string")
            pod_claim[name] = member
        claims["pod"] = pod_claim
    if act is not None:
        claims["act"] = _actor_claim(act)
    return claims


def describe_claims(claims: Mapping[str, Any], *, kid: str | None = None) -> dict[str, Any]:
    """A safe summary of a token for logs, audit and the CLI: jti, kid, sub, aud, exp, scope.

    Contains no token and no signature. ``kid`` comes from the signing key or
    :func:`unverified_header`; it is included only when given.
    """
    summary: dict[str, Any] = {"jti": claims.get("jti")}
    if kid is not None:
        summary["kid"] = kid
    summary.update(
        {
            "sub": claims.get("sub"),
            "aud": claims.get("aud"),
            "exp": claims.get("exp"),
            "scope": claims.get("scope"),
        }
    )
    task = claims.get(TASK_CLAIM)
    if isinstance(task, Mapping):
        summary["task"] = f"{task.get('namespace')}/{task.get('name')}"
    return summary
