"""A FastAPI tool that accepts Taskwarden task tokens, with ``AsyncVerifier``.

    TASKWARDEN_JWKS=https://taskwarden.taskwarden-system.svc/.well-known/jwks.json \\
    TASKWARDEN_REVOCATIONS=https://taskwarden.taskwarden-system.svc/revocations \\
    TASKWARDEN_CA=/etc/taskwarden/ca.crt TOOL_AUDIENCE=https://api.github.com \\
    uvicorn --factory fastapi_tool:app_from_env

``task_claims(verifier)`` is the dependency: no or a refused token is 401 (with
``WWW-Authenticate: Bearer``), a JWKS or revocation list that cannot be used is 503 (fail
closed, with ``Retry-After``), a valid token without the scope is 403. Tested by
tests/unit/test_verifier_sdk_examples.py in the Taskwarden repository.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations, and TaskClaims
# is local to make_app.
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from taskwarden_verifier import Claims, ScopeError, SourceUnavailable, TokenError
from taskwarden_verifier.aio import AsyncVerifier

CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header; 401 without one."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "a Bearer task token is required", headers=CHALLENGE)
    return token.strip()


def task_claims(verifier: AsyncVerifier) -> Callable[[Request], Awaitable[Claims]]:
    """A dependency that returns the verified claims of the request's task token."""

    async def dependency(request: Request) -> Claims:
        token = bearer(request.headers.get("authorization"))
        try:
            return await verifier.verify(token)
        except SourceUnavailable:
            # Not a verdict on the token: the keys or the revocation list cannot be trusted.
            raise HTTPException(
                503, "token verification unavailable", headers={"Retry-After": "5"}
            ) from None
        except TokenError as e:
            raise HTTPException(401, f"token refused: {e.reason}", headers=CHALLENGE) from None

    return dependency


def make_app(verifier: AsyncVerifier) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await verifier.aclose()

    app = FastAPI(lifespan=lifespan)
    TaskClaims = Annotated[Claims, Depends(task_claims(verifier))]

    @app.exception_handler(ScopeError)
    async def forbidden(_: Request, exc: ScopeError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.get("/repos/{owner}/{repo}/issues")
    async def list_issues(owner: str, repo: str, claims: TaskClaims) -> dict[str, str]:
        claims.require("github", "read", f"repo:{owner}/{repo}")
        return {"task": f"{claims.namespace}/{claims.task}", "jti": claims.jti}

    return app


def app_from_env() -> FastAPI:
    return make_app(
        AsyncVerifier(
            jwks=os.environ["TASKWARDEN_JWKS"],
            revocations=os.environ["TASKWARDEN_REVOCATIONS"],
            audience=os.environ["TOOL_AUDIENCE"],
            ca_file=os.environ.get("TASKWARDEN_CA"),
        )
    )
