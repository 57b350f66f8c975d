"""`taskwarden verify`: check a token (string, file or -) against the JWKS and the revocation
list, as a tool owner's verifier would. Fails closed; prints claims, never the token."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from taskwarden.commands import session


def _cluster_doc(args: argparse.Namespace, ns: str, name: str, key: str) -> str:
    from kubernetes import client

    cm = client.CoreV1Api(session.api_client(args)).read_namespaced_config_map(name, ns)
    return str((cm.data or {})[key])


def _is_file(raw: str) -> bool:
    try:
        return Path(raw).is_file()
    except OSError:  # e.g. a token longer than a file name may be
        return False


def cmd_verify(args: argparse.Namespace) -> int:
    from taskwarden.credentials import tokens

    raw = args.token
    if raw == "-":
        token = sys.stdin.read().strip()
    elif len(raw) < 4096 and _is_file(raw):
        token = Path(raw).read_text().strip()
    else:
        token = raw.strip()
    from taskwarden import verifier

    ns = args.operator_namespace
    try:
        if args.jwks:
            jwks_doc = verifier.parse_jwks(verifier.read_source(args.jwks))
        else:
            jwks_doc = verifier.parse_jwks(
                _cluster_doc(args, ns, "taskwarden-jwks", "jwks.json").encode()
            )
    except Exception as e:
        print(f"error: cannot load JWKS: {e}", file=sys.stderr)
        return 1
    # Fail closed: a list we cannot read (403, timeout, garbage) never means "nothing revoked".
    revoked: verifier.RevocationSnapshot | frozenset[str] = frozenset()
    try:
        if args.revocations:
            revoked = verifier.parse_revocations(verifier.read_source(args.revocations))
        elif not args.jwks:
            from kubernetes.client.exceptions import ApiException

            try:
                doc = _cluster_doc(args, ns, "taskwarden-revocations", "revocations.json")
            except ApiException as e:
                if e.status != 404:
                    raise
                # The operator creates it with the first revocation: nothing revoked yet.
                print("note: ConfigMap taskwarden-revocations not found", file=sys.stderr)
            else:
                revoked = verifier.parse_revocations(doc.encode())
        else:
            print("warning: no --revocations given: revocation was NOT checked", file=sys.stderr)
    except Exception as e:
        status = getattr(e, "status", None)
        why = f"HTTP {status} {getattr(e, 'reason', '')}" if status else str(e)
        print(
            "UNAVAILABLE: the revocation list could not be read, so the token was NOT "
            f"accepted (it is not known to be revoked): {type(e).__name__}: {why}"
        )
        return 1
    try:
        claims = verifier.check(
            token,
            jwks_doc,
            now=time.time(),
            audience=args.audience,
            issuer=args.issuer,
            revoked=revoked,
        )
    except tokens.TokenError as e:
        print(f"INVALID: {e.reason}: {e.message}")
        return 1
    print("VALID")
    summary = tokens.describe_claims(claims, kid=tokens.unverified_header(token).get("kid"))
    print(json.dumps(summary if not args.claims else claims, indent=2, sort_keys=True))
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    ver = sub.add_parser(
        "verify", parents=[common], help="verify a token (string, file or -) against the JWKS"
    )
    ver.add_argument("token")
    ver.add_argument("--audience")
    ver.add_argument("--issuer")
    ver.add_argument("--jwks", help="JWKS file or URL (default: ConfigMap taskwarden-jwks)")
    ver.add_argument("--revocations", help="revocation list file (default: the ConfigMap)")
    ver.add_argument("--operator-namespace", default="taskwarden-system")
    ver.add_argument("--claims", action="store_true", help="print all claims")
    ver.set_defaults(fn=cmd_verify)
