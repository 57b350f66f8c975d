"""The agent side of `spec.delivery: exchange`: get the task token from the operator.

Stdlib only, so an agent image can copy this one file. In a pod the pod mutation set
TASKWARDEN_SUBJECT_TOKEN_FILE (the projected, pod-bound ServiceAccount token, audience = the
operator's issuer; the kubelet renews it), TASKWARDEN_EXCHANGE_URL and TASKWARDEN_TASK:

    from taskwarden import agent
    token = agent.TokenSource.from_env().token()   # cached until half its lifetime

Each call to `exchange` POSTs an RFC 8693 token exchange (server/exchange.py) and raises
`ExchangeError` with the operator's RFC 6749 error code when refused. The token is never logged.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


class ExchangeError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.status, self.error, self.description = status, error, description


def exchange(
    url: str,
    subject_token: str,
    resource: str,
    *,
    context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """One RFC 8693 exchange; the operator's JSON answer (access_token, expires_in, ...)."""
    form = urllib.parse.urlencode(
        {
            "grant_type": GRANT_TYPE,
            "subject_token": subject_token,
            "subject_token_type": JWT_TYPE,
            "resource": resource,
        }
    ).encode()
    request = urllib.request.Request(  # noqa: S310 - the URL is the operator's https issuer
        url, data=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            body: dict[str, Any] = json.loads(response.read())
            return body
    except urllib.error.HTTPError as e:
        try:
            err = json.loads(e.read())
        except ValueError:
            err = {}
        raise ExchangeError(
            e.code, str(err.get("error", "http_error")), str(err.get("error_description", ""))
        ) from None


class TokenSource:
    """The task token, exchanged again once half of its lifetime has passed."""

    def __init__(
        self,
        url: str,
        subject_file: str,
        resource: str,
        *,
        context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url, self.subject_file, self.resource = url, subject_file, resource
        self.context, self.clock = context, clock
        self._token = ""
        self._refresh_at = 0.0
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, context: ssl.SSLContext | None = None) -> TokenSource:
        env = os.environ
        return cls(
            env["TASKWARDEN_EXCHANGE_URL"],
            env["TASKWARDEN_SUBJECT_TOKEN_FILE"],
            env["TASKWARDEN_TASK"],
            context=context,
        )

    def token(self) -> str:
        with self._lock:
            now = self.clock()
            if not self._token or now >= self._refresh_at:
                with open(self.subject_file, encoding="utf-8") as f:
                    subject = f.read().strip()  # read each time: the kubelet renews it
                answer = exchange(self.url, subject, self.resource, context=self.context)
                self._token = str(answer["access_token"])
                self._refresh_at = now + max(0, int(answer.get("expires_in", 0))) / 2
            return self._token
