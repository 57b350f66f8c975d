"""The command line's pure parts: argument parsing, namespace choice, output formats, API errors
as one line, the admission-path check of `run`, and the generated shell completion (run in a
real bash)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskwarden import cli, config
from taskwarden.commands import cluster, completion, output, session

NOW = 1_800_000_000.0


def task(name: str, ns: str = "agents", **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "taskwarden.dev/v1alpha1",
        "kind": "AgentTask",
        "metadata": {
            "name": name,
            "namespace": ns,
            "creationTimestamp": "2027-01-15T07:40:00Z",  # NOW - 20 min
            "annotations": {"taskwarden.dev/requester": json.dumps({"username": "alice"})},
        },
        "spec": {"agent": {"serviceAccountName": "research-agent"}},
        "status": status,
    }


ACTIVE = task(
    "triage",
    phase="Active",
    reason="Issued",
    expiresAt="2027-01-15T08:30:00Z",
    decision={"policy": "research", "rule": "read-only"},
    credential={"secretName": "triage-credential"},
)


def test_global_cluster_flags_work_before_and_after_the_subcommand() -> None:
    p = cli.build_parser()
    before = p.parse_args(["--kubeconfig", "k", "--context", "c", "get"])
    after = p.parse_args(["get", "--kubeconfig", "k", "--context", "c"])
    plain = p.parse_args(["get"])
    for args in (before, after):
        assert (args.kubeconfig, args.context) == ("k", "c")
    assert (plain.kubeconfig, plain.context, plain.namespace) == (None, None, None)


def test_output_flag_takes_only_kubectl_formats() -> None:
    p = cli.build_parser()
    assert p.parse_args(["get", "-o", "wide"]).output == "wide"
    with pytest.raises(SystemExit) as e:
        p.parse_args(["get", "-o", "table"])
    assert e.value.code == 2


def test_kubectl_plugin_names_itself_kubectl_taskwarden() -> None:
    assert cli._prog("/usr/local/bin/kubectl-taskwarden") == "kubectl taskwarden"
    assert cli._prog("/venv/bin/taskwarden") == "taskwarden"
    assert (
        cli.build_parser("kubectl taskwarden")
        .format_usage()
        .startswith("usage: kubectl taskwarden")
    )


CONTEXTS = [
    {"name": "a", "context": {"cluster": "c", "user": "u", "namespace": "agents"}},
    {"name": "b", "context": {"cluster": "c", "user": "u"}},
]


def test_namespace_defaults_to_the_contexts_namespace() -> None:
    assert session.context_namespace(CONTEXTS, CONTEXTS[0], None) == "agents"
    assert session.context_namespace(CONTEXTS, CONTEXTS[0], "b") == "default"
    assert session.context_namespace(CONTEXTS, CONTEXTS[1], "a") == "agents"
    assert session.context_namespace([], None, None) == "default"


def test_namespace_is_read_from_the_kubeconfig_file(tmp_path: Path) -> None:
    kc = tmp_path / "kubeconfig"
    kc.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "x"}}],
                "contexts": CONTEXTS,
                "current-context": "a",
            }
        )
    )
    p = cli.build_parser()
    assert session.namespace(p.parse_args(["get", "--kubeconfig", str(kc)])) == "agents"
    assert session.namespace(p.parse_args(["get", "--kubeconfig", str(kc), "--context", "b"])) == (
        "default"
    )
    assert session.namespace(p.parse_args(["get", "--kubeconfig", str(kc), "-n", "x"])) == "x"


def test_table_and_wide_columns() -> None:
    rows = output.task_rows([ACTIVE], NOW, all_namespaces=False, wide=False)
    assert rows == [
        ["NAME", "PHASE", "AGENT", "EXPIRES", "REASON", "POLICY", "AGE"],
        ["triage", "Active", "research-agent", "in 1800s", "Issued", "research", "20m"],
    ]
    wide = output.task_rows([ACTIVE, task("new", ns="a")], NOW, all_namespaces=True, wide=True)
    assert wide[0] == ["NAMESPACE", *rows[0], "RULE", "REQUESTER", "SECRET"]
    assert wide[1][0] == "a" and wide[1][1:] == [
        "new",
        "-",
        "research-agent",
        "-",
        "-",
        "-",
        "20m",
        "-",
        "alice",
        "-",
    ]
    assert wide[2][-3:] == ["read-only", "alice", "triage-credential"]


def test_name_json_and_yaml_output() -> None:
    two = [ACTIVE, task("other")]
    assert output.render(two, "name", NOW) == (
        "agenttask.taskwarden.dev/triage\nagenttask.taskwarden.dev/other"
    )
    listed = json.loads(output.render(two, "json", NOW))
    assert listed["kind"] == "List" and [i["metadata"]["name"] for i in listed["items"]] == [
        "triage",
        "other",
    ]
    one = yaml.safe_load(output.render([ACTIVE], "yaml", NOW, single=True))
    assert one["kind"] == "AgentTask" and one["metadata"]["name"] == "triage"
    assert json.loads(output.render([], "json", NOW))["items"] == []
    assert output.render([], None, NOW) == ""


def test_api_errors_become_one_kubectl_line() -> None:
    body = json.dumps(
        {
            "kind": "Status",
            "reason": "Forbidden",
            "message": 'agenttasks.taskwarden.dev is forbidden: User "bob"\ncannot list',
        }
    )
    assert session.api_message(403, "Forbidden", body) == (
        'Error from server (Forbidden): agenttasks.taskwarden.dev is forbidden: User "bob" '
        "cannot list"
    )
    assert session.api_message(503, "Service Unavailable", "<html>") == (
        "Error from server (Service Unavailable): HTTP 503 Service Unavailable"
    )


def test_error_line_covers_api_config_and_connection_failures_only() -> None:
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    e = ApiException(status=404, reason="Not Found")
    assert session.error_line(e) == "Error from server (Not Found): HTTP 404 Not Found"
    assert session.error_line(ConfigException("Invalid kube-config file.")) == (
        "error: kubeconfig: Invalid kube-config file."
    )
    refused = MaxRetryError(None, "/apis", NewConnectionError(None, "Connection refused"))  # type: ignore[arg-type]
    assert (session.error_line(refused) or "").startswith("error: cannot reach the API server: ")
    assert session.error_line(ValueError("a bug")) is None  # bugs keep their traceback


@pytest.mark.parametrize(
    ("env", "path"),
    [
        ({}, ""),
        (
            {"TASKWARDEN_WEBHOOK_URL": "https://127.0.0.1:9443"},
            "webhook URL https://127.0.0.1:9443",
        ),
        ({"TASKWARDEN_WEBHOOK_SERVICE": "taskwarden"}, "Service taskwarden"),
        ({"TASKWARDEN_MANAGE_WEBHOOKS": "false"}, "webhook configurations managed outside"),
    ],
)
def test_admission_path(env: dict[str, str], path: str) -> None:
    found = config.admission_path(config.from_env(env).server)
    assert found.startswith(path) and bool(found) == bool(path)


def test_run_refuses_to_start_without_an_admission_path(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in (
        "TASKWARDEN_WEBHOOK_URL",
        "TASKWARDEN_WEBHOOK_SERVICE",
        "TASKWARDEN_MANAGE_WEBHOOKS",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")  # refused before any cluster call
    assert cli.main(["run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no admission path") and "--no-admission" in err
    assert len(err.strip().splitlines()) == 1


def test_controlplane_exports_what_a_local_run_needs() -> None:
    env = cluster.operator_env(
        {"webhook": 40001, "public": 40004, "metrics": 40002, "health": 40003}
    )
    assert config.admission_path(config.from_env(env).server) == (
        "webhook URL https://127.0.0.1:40001"
    )
    s = config.from_env(env)
    assert (s.server.webhook_port, s.server.metrics_port, s.server.health_port) == (
        40001,
        40002,
        40003,
    )
    assert s.server.public_port == 40004
    assert s.identity.issuer == "https://127.0.0.1:40004"  # JWKS is served apart from admission
    assert cluster.exports({"A": "x y", "B": "z"}) == "export A='x y'\nexport B=z"


BASH = shutil.which("bash")


def complete(script: str, line: str) -> list[str]:
    """Run the generated completion function in a real bash for the words of `line`."""
    words = line.split(" ")
    arr = " ".join(json.dumps(w) for w in words)
    probe = (
        f"{script}\nCOMP_WORDS=({arr}); COMP_CWORD={len(words) - 1}\n"
        '_taskwarden; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    out = subprocess.run([BASH or "bash", "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_bash_completion_is_generated_from_the_parser() -> None:
    script = completion.bash(cli.build_parser())
    assert "get" in complete(script, "taskwarden g")
    assert set(complete(script, "taskwarden ")) >= {"run", "get", "completion", "--kubeconfig"}
    assert complete(script, "taskwarden get -o ") == ["json", "yaml", "wide", "name"]
    assert complete(script, "taskwarden controlplane ") == ["up", "down", "env", "build"]
    assert "--no-admission" in complete(script, "taskwarden run --no")
    assert "--all-namespaces" in complete(script, "kubectl-taskwarden get --all")
    assert complete(script, "taskwarden completion ") == ["bash", "zsh"]
    zsh = completion.zsh(cli.build_parser())
    assert zsh.startswith("#compdef taskwarden kubectl-taskwarden") and "bashcompinit" in zsh
