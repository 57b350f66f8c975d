"""Issue 14, verifier SDK: the taskwarden-verifier distribution (sdk/python) is built into a
wheel and installed into a fresh venv that never saw the operator. It declares only pyjwt and
cryptography (aiohttp only under its [aiohttp] extra), kopf, kubernetes and the operator cannot
be imported there, and it verifies a token, refuses a revoked one and fails closed on a list it
does not recognise. Needs pyjwt and cryptography from PyPI or the local pip cache; no cluster."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from email.parser import Parser
from pathlib import Path
from zipfile import ZipFile

import pytest

from tests.unit import _verifier_support as s

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "sdk" / "python"

CHECK = """
import importlib, json, sys
out = {}
for name in ("kopf", "kubernetes", "taskwarden", "aiohttp"):
    try:
        importlib.import_module(name)
        out[name] = "imported"
    except ImportError:
        out[name] = "missing"
from taskwarden_verifier import SourceUnavailable, TokenError, Verifier
d = sys.argv[1]
now = float(sys.argv[2])
def verdict(revocations, token):
    v = Verifier(jwks=d + "/jwks.json", revocations=d + "/" + revocations,
                 audience=sys.argv[3], clock=lambda: now)
    try:
        return "ok:" + v.verify(open(d + "/" + token).read()).task
    except TokenError as e:
        return type(e).__name__ + ":" + e.reason
out["valid"] = verdict("revocations.json", "token")
out["revoked"] = verdict("revocations.json", "revoked-token")
out["unrecognised list"] = verdict("empty.json", "token")
out["module"] = __import__("taskwarden_verifier").__file__
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sdk-wheel")
    # Build from a copy: pip builds in the source tree and would leave build/ and egg-info there.
    source = shutil.copytree(
        SDK, out / "source", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(source)],
        check=True,
        timeout=300,
    )
    (built,) = out.glob("taskwarden_verifier-*.whl")
    return built


def test_the_wheel_declares_only_pyjwt_and_cryptography(wheel: Path) -> None:
    with ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(z.read(name).decode())
        files = z.namelist()
    requires = meta.get_all("Requires-Dist") or []
    runtime = sorted(r.split(">")[0].strip().lower() for r in requires if "extra ==" not in r)
    assert runtime == ["cryptography", "pyjwt"]
    assert [r for r in requires if "extra ==" in r] == ['aiohttp>=3.9; extra == "aiohttp"']
    assert not [f for f in files if f.startswith("taskwarden/")], "the operator is in the SDK"
    assert "taskwarden_verifier/py.typed" in files


def test_the_sdk_verifies_in_a_clean_venv_without_kopf_or_kubernetes(
    wheel: Path, tmp_path: Path
) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # The wheel with its declared dependencies: pyjwt and cryptography (PyPI or the pip cache).
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        check=True,
        timeout=600,
    )
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    )
    installed = {d["name"].lower() for d in json.loads(listed.stdout)}
    allowed = {"taskwarden-verifier", "pyjwt", "cryptography", "cffi", "pycparser"}
    assert installed - allowed <= {"pip", "setuptools", "wheel"}, installed

    s.write(tmp_path / "jwks.json", s.jwks())
    s.write(tmp_path / "revocations.json", s.revocations("jti-revoked"))
    s.write(tmp_path / "empty.json", {})
    (tmp_path / "token").write_text(s.token())
    (tmp_path / "revoked-token").write_text(s.token(jti="jti-revoked"))
    run = subprocess.run(
        [str(python), "-I", "-c", CHECK, str(tmp_path), str(s.NOW), s.AUDIENCE],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = json.loads(run.stdout)
    assert out["module"].startswith(str(env_dir)), out["module"]
    assert {n: out[n] for n in ("kopf", "kubernetes", "taskwarden", "aiohttp")} == {
        "kopf": "missing",
        "kubernetes": "missing",
        "taskwarden": "missing",
        "aiohttp": "missing",
    }
    assert out["valid"] == "ok:triage-4711"
    assert out["revoked"] == "TokenError:Revoked"
    assert out["unrecognised list"] == "SourceUnavailable:Unavailable"
