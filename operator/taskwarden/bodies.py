"""Typed views of the Kubernetes bodies Taskwarden reads most: AgentTask spec and status.

The watch and the API hand us plain JSON dicts; these TypedDicts (all keys optional, as in a
body read from the cluster) let mypy check the field names the controller and the reviews read.
Pure and stdlib only; used by tasks/facts.py and the status builders. Field names are the CRD's
(crds/agenttask.yaml): values read from them carry the CRD's types, and a subscript with a name
the CRD lacks is a type error (mypy lets `.get` of an unknown key through, returning object).
"""

from __future__ import annotations

from typing import TypedDict


class AgentRef(TypedDict, total=False):
    serviceAccountName: str
    podName: str


class Scope(TypedDict, total=False):
    tool: str
    actions: list[str]
    resources: list[str]


class TaskSpec(TypedDict, total=False):
    agent: AgentRef
    intent: str
    scopes: list[Scope]
    audiences: list[str]
    dataClass: str
    ttl: str
    credentialTTL: str
    delegatedFrom: str
    completed: bool
    delivery: str


class IdentityStatus(TypedDict, total=False):
    spiffeID: str
    podName: str
    podUID: str
    nodeName: str


class DecisionStatus(TypedDict, total=False):
    allowed: bool
    needsApproval: bool
    policy: str
    rule: int
    reason: str
    evaluatedAt: str


class CredentialStatus(TypedDict, total=False):
    secretName: str
    jti: str
    keyID: str
    issuedAt: str
    expiresAt: str
    rotations: int


class TaskStatus(TypedDict, total=False):
    phase: str
    reason: str
    message: str
    identity: IdentityStatus
    decision: DecisionStatus
    credential: CredentialStatus
    expiresAt: str
    specHash: str
