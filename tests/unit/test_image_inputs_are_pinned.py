"""The image's inputs are pinned and agree with each other: requirements/image.txt pins every
runtime dependency (and the build backend) by version and sha256 within pyproject's ranges; the
Dockerfile installs only with --require-hashes; `make image` builds the very image the chart
defaults to, and the README and the chart's NOTES say how to get it into kind.

`make image-check` runs the Dockerfile's install itself (it needs PyPI); this test needs nothing."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from the pip-compile output."""
    text = (ROOT / "requirements/image.txt").read_text()
    out: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[a-z0-9])", text, flags=re.IGNORECASE):
        m = re.match(r"([A-Za-z0-9_.-]+)==([^\s\\]+)", block)
        if m:
            out[canonicalize_name(m[1])] = (
                m[2],
                re.findall(r"--hash=sha256:([0-9a-f]{64})", block),
            )
    return out


def test_every_dependency_is_pinned_with_hashes_within_pyproject_ranges() -> None:
    pins = locked()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [Requirement(r) for r in project["project"]["dependencies"]]
    wanted += [Requirement(r) for r in project["build-system"]["requires"]]
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"requirements/image.txt lacks {name}: run `make lock`"
        version, _ = pins[name]
        assert req.specifier.contains(version), f"{name}=={version} outside {req.specifier}"
    for name, (version, hashes) in pins.items():
        assert hashes, f"{name}=={version} has no --hash: pip --require-hashes would refuse it"
    assert not re.search(
        r"^\s*(-e|--index-url|--extra-index-url|--find-links)",
        (ROOT / "requirements/image.txt").read_text(),
        re.M,
    )


def test_dockerfile_installs_only_hashed_wheels() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    pip_runs = re.findall(r"pip (?:download|install)[^&]*?-r [^\s]*image\.txt", docker)
    assert len(pip_runs) == 3 and all("--require-hashes" in r for r in pip_runs), pip_runs
    assert "--only-binary=:all:" in docker and "--no-build-isolation" in docker
    assert "!requirements/image.txt" in (ROOT / ".dockerignore").read_text().splitlines()


def test_make_image_builds_the_charts_default_image_and_the_docs_say_how_to_load_it() -> None:
    chart = yaml.safe_load((ROOT / "charts/taskwarden/Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "charts/taskwarden/values.yaml").read_text())
    default = f"{values['image']['repository']}:{values['image']['tag'] or chart['appVersion']}"
    make = re.search(r"^IMAGE \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert make and make[1] == default
    load = f"kind load docker-image {default}"
    for doc in ("README.md", "docs/release.md", "charts/taskwarden/templates/NOTES.txt"):
        text = (ROOT / doc).read_text()
        assert "make image" in text and (load in text or "kind load docker-image {{" in text), doc
