"""kubeconfig.py: the cluster settings kube.py and kopf's login use, read without `kubernetes`."""

from __future__ import annotations

import base64
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from taskwarden import kubeconfig

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def doc(user: dict[str, Any], cluster: dict[str, Any] | None = None, **ctx: Any) -> dict[str, Any]:
    return {
        "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://k:6443/", **(cluster or {})}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", **ctx}}],
    }


def test_client_certificate_files_resolve_against_the_kubeconfig_directory() -> None:
    cfg = kubeconfig.parse(
        [
            (
                doc(
                    {"client-certificate": "admin.crt", "client-key": "/abs/admin.key"},
                    {"certificate-authority": "pki/ca.crt"},
                    namespace="team",
                ),
                Path("/etc/kube"),
            )
        ]
    )
    assert cfg.server == "https://k:6443"
    assert cfg.ca_file == "/etc/kube/pki/ca.crt"
    assert (cfg.cert_file, cfg.key_file) == ("/etc/kube/admin.crt", "/abs/admin.key")
    assert (cfg.token, cfg.namespace, cfg.needs_client, cfg.context) == (None, "team", "", "c")


def test_embedded_data_is_decoded_to_pem() -> None:
    cfg = kubeconfig.parse(
        [
            (
                doc(
                    {"client-certificate-data": b64(PEM), "client-key-data": b64("KEY")},
                    {"certificate-authority-data": b64(PEM), "insecure-skip-tls-verify": True},
                ),
                Path("/"),
            )
        ]
    )
    assert (cfg.ca_data, cfg.cert_data, cfg.key_data) == (PEM, PEM, "KEY")
    assert cfg.insecure is True


def test_bad_base64_names_the_field() -> None:
    with pytest.raises(kubeconfig.KubeconfigError, match=r"users\[u\]\.client-key-data"):
        kubeconfig.parse([(doc({"client-key-data": "not base64!"}), Path("/"))])


def test_token_and_token_file() -> None:
    cfg = kubeconfig.parse([(doc({"token": "abc", "tokenFile": "tok"}), Path("/x"))])
    assert (cfg.token, cfg.token_file) == ("abc", "/x/tok")
    assert "abc" not in repr(cfg)


@pytest.mark.parametrize("field", ["exec", "auth-provider", "username"])
def test_plugins_need_the_official_client(field: str) -> None:
    cfg = kubeconfig.parse(
        [(doc({field: {"command": "x"} if field != "username" else "me"}), Path("/"))]
    )
    assert cfg.needs_client == f"users[u].{field}"


def test_files_merge_as_kubectl_merges_them() -> None:
    first = {
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }
    second = doc({"token": "second"})
    second["current-context"] = "ignored"
    second["users"].insert(0, {"name": "u", "user": {"token": "first-of-second"}})
    cfg = kubeconfig.parse([(first, Path("/a")), (second, Path("/b"))])
    assert cfg.token == "first-of-second" and cfg.context == "c"
    assert kubeconfig.parse([(second, Path("/b"))], context="c").context == "c"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("current-context"), "current-context is not set"),
        (lambda d: d.update({"current-context": "nope"}), r"contexts\[nope\] is not defined"),
        (lambda d: d["clusters"].clear(), r"clusters\[k\] is not defined"),
        (lambda d: d["clusters"][0]["cluster"].pop("server"), r"clusters\[k\]\.server"),
    ],
)
def test_unusable_kubeconfigs_say_which_field(mutate: Any, message: str) -> None:
    d = doc({"token": "t"})
    mutate(d)
    with pytest.raises(kubeconfig.KubeconfigError, match=message):
        kubeconfig.parse([(d, Path("/"))])


def test_in_cluster_uses_the_service_account(tmp_path: Path) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    assert kubeconfig.in_cluster(env, tmp_path) is None  # no token file: not in a pod
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "ca.crt").write_text(PEM)
    (tmp_path / "namespace").write_text("ops")
    cfg = kubeconfig.load({**env, "KUBECONFIG": "/nonexistent"}, tmp_path)
    assert cfg.server == "https://[fd00::1]:443"
    assert (cfg.ca_file, cfg.token_file) == (str(tmp_path / "ca.crt"), str(tmp_path / "token"))
    assert cfg.namespace == "ops"


def test_load_reads_kubeconfig_lists(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text("current-context: c\n")
    (tmp_path / "two.yaml").write_text(
        textwrap.dedent(
            """
            clusters: [{name: k, cluster: {server: "https://k", certificate-authority: ca.crt}}]
            users: [{name: u, user: {token: t}}]
            contexts: [{name: c, context: {cluster: k, user: u}}]
            """
        )
    )
    paths = f"{tmp_path / 'one.yaml'}:{tmp_path / 'missing.yaml'}:{tmp_path / 'two.yaml'}"
    cfg = kubeconfig.load({"KUBECONFIG": paths}, tmp_path / "no-sa")
    assert (cfg.server, cfg.token, cfg.ca_file) == ("https://k", "t", str(tmp_path / "ca.crt"))
    with pytest.raises(kubeconfig.KubeconfigError, match="no such file"):
        kubeconfig.load({"KUBECONFIG": str(tmp_path / "missing.yaml")}, tmp_path / "no-sa")


def test_a_token_file_is_reread_once_a_minute(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one")
    now = [1000.0]
    bearer = kubeconfig.BearerToken(None, str(token), clock=lambda: now[0])
    assert bearer.value() == "one"
    token.write_text("two\n")  # the kubelet rotated it
    now[0] += kubeconfig.TOKEN_REREAD_SECONDS - 1
    assert bearer.value() == "one"
    now[0] += 1
    assert bearer.value() == "two"
    token.unlink()  # a failed re-read keeps the token it has
    now[0] += kubeconfig.TOKEN_REREAD_SECONDS
    assert bearer.value() == "two"


def test_the_operator_starts_without_importing_the_kubernetes_client(tmp_path: Path) -> None:
    """The `run` path (cli, handlers, runtime, kopf and its login, a Kube and its session) never
    imports `kubernetes`: its import alone is ~32 MiB of RSS."""
    kc = tmp_path / "kubeconfig"
    kc.write_text(
        "current-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    script = textwrap.dedent(
        """
        import asyncio, sys
        import taskwarden.cli, taskwarden.handlers, taskwarden.runtime, taskwarden.server
        from taskwarden import kube, handlers
        from taskwarden.kopf_without_client import kopf

        async def main():
            k = kube.Kube(workers=2)
            k._session()
            info = await handlers.login(settings=kopf.OperatorSettings(), logger=None)
            assert info.server == "https://127.0.0.1:1" and info.token == "t", info
            await k.aclose()
            registry = kopf.get_default_registry()
            assert type(registry) is kopf.OperatorRegistry  # not kopf's client-probing one

        asyncio.run(main())
        taskwarden.cli.build_parser()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("kubernetes", "pykube"))
        assert not loaded, loaded
        import kubernetes.client  # still importable afterwards, for the other commands
        """
    )
    env = {"KUBECONFIG": str(kc), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_request_paths_quote_every_segment() -> None:
    """A name from a request (a token's claim, a review) can never reach another path."""
    from taskwarden import kube

    assert kube._at(kube.CORE_V1, "secrets", "ns", "a/../b?x") == (
        "/api/v1/namespaces/ns/secrets/a%2F..%2Fb%3Fx"
    )
    assert kube._path(kube.TASKS) == "/apis/taskwarden.dev/v1alpha1/agenttasks"
    assert kube._path("pods", "ns") == "/api/v1/namespaces/ns/pods"
    with pytest.raises(ValueError, match="empty name"):
        kube._path(kube.TASKS, "ns", "")  # would be the LIST of the namespace
