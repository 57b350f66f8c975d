"""A Flask (WSGI) tool that accepts Taskwarden task tokens, with the sync ``Verifier``.

    TASKWARDEN_JWKS=https://taskwarden.taskwarden-system.svc/.well-known/jwks.json \\
    TASKWARDEN_REVOCATIONS=https://taskwarden.taskwarden-system.svc/revocations \\
    TASKWARDEN_CA=/etc/taskwarden/ca.crt TOOL_AUDIENCE=https://api.github.com \\
    flask --app 'flask_tool:app_from_env()' run

``@require_task(verifier, tool, action, resource)`` guards a view: no or a refused token is 401
(with ``WWW-Authenticate: Bearer``), a JWKS or revocation list that cannot be used is 503
(fail closed, with ``Retry-After``), a valid token without the scope is 403. The verified
claims are in ``flask.g.task_claims``. One Verifier is shared by all threads (it is
thread-safe). Tested by tests/unit/test_verifier_sdk_examples.py in the Taskwarden repository.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, ParamSpec

from flask import Flask, Response, g, jsonify, request
from flask.typing import ResponseReturnValue

from taskwarden_verifier import Claims, ScopeError, SourceUnavailable, TokenError, Verifier

P = ParamSpec("P")
View = Callable[P, ResponseReturnValue]


def _refuse(status: int, message: str, **headers: str) -> Response:
    response = jsonify({"detail": message})
    response.status_code = status
    response.headers.update(headers)
    return response


def _unauthorized(message: str) -> Response:
    return _refuse(401, message, **{"WWW-Authenticate": 'Bearer error="invalid_token"'})


def require_task(
    verifier: Verifier, tool: str, action: str, resource: Callable[..., str]
) -> Callable[[View[P]], View[P]]:
    """Guard a view; ``resource`` builds the resource from the view's arguments."""

    def decorate(view: View[P]) -> View[P]:
        @functools.wraps(view)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return _unauthorized("a Bearer task token is required")
            try:
                claims: Claims = verifier.verify(token.strip())
                claims.require(tool, action, resource(*args, **kwargs))
            except SourceUnavailable:
                return _refuse(503, "token verification unavailable", **{"Retry-After": "5"})
            except TokenError as e:
                return _unauthorized(f"token refused: {e.reason}")
            except ScopeError as e:
                return _refuse(403, str(e))
            g.task_claims = claims
            return view(*args, **kwargs)

        return guarded

    return decorate


def make_app(verifier: Verifier) -> Flask:
    app = Flask(__name__)

    @app.get("/repos/<owner>/<repo>/issues")
    @require_task(verifier, "github", "read", lambda owner, repo: f"repo:{owner}/{repo}")
    def list_issues(owner: str, repo: str) -> dict[str, Any]:
        claims: Claims = g.task_claims
        return {"task": f"{claims.namespace}/{claims.task}", "jti": claims.jti}

    return app


def app_from_env() -> Flask:
    return make_app(
        Verifier(
            jwks=os.environ["TASKWARDEN_JWKS"],
            revocations=os.environ["TASKWARDEN_REVOCATIONS"],
            audience=os.environ["TOOL_AUDIENCE"],
            ca_file=os.environ.get("TASKWARDEN_CA"),
        )
    )
