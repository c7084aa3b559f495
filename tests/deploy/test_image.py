"""deploy/Dockerfile and .dockerignore, read statically (no Docker engine here)."""

from __future__ import annotations

import re
import tomllib

from services.runtime.settings import ENV_PREFIX, env_names
from tests.deploy import manifests as m


def test_base_image_is_pinned_and_shared_by_all_stages() -> None:
    image = m.dockerfile_args()["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image), image
    stages = m.dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: build and runtime"
    assert all(line.split()[1] == "${PYTHON_IMAGE}" for line, _ in stages)


def test_final_stage_is_non_root_without_compilers() -> None:
    final_from, final = m.dockerfile_stages()[-1]
    assert final_from.endswith("AS runtime")
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    text = "\n".join(final)
    for tool in ("build-essential", "gcc", "g++", "pip install", "apt-get install"):
        assert tool not in text, tool
    # Compilers do exist in the build stage, and only there.
    assert "build-essential" in "\n".join(m.dockerfile_stages()[0][1])


def test_torch_is_the_cpu_build_of_the_project_pin() -> None:
    project = tomllib.loads((m.ROOT / "pyproject.toml").read_text())["project"]
    pin = next(d for d in project["dependencies"] if d.startswith("torch"))
    build = "\n".join(m.dockerfile_stages()[0][1])
    match = re.search(r"pip install (torch==\S+) --index-url (\S+)", build)
    assert match, "torch installed from the CPU index"
    assert match[1] == pin
    assert match[2].endswith("/whl/cpu")


def test_image_environment_holds_real_settings() -> None:
    env = m.dockerfile_env(m.dockerfile_stages()[-1][1])
    shoptwin = {k for k in env if k.startswith(ENV_PREFIX)}
    from dataclasses import fields

    from services.runtime.config import ServerSettings

    known = {env_names(f.name, None)[0] for f in fields(ServerSettings)}
    assert shoptwin <= known, shoptwin - known
    assert env["SHOPTWIN_DATA_DIR"] == "/data"


def test_copied_sources_exist_and_are_not_ignored() -> None:
    ignore = (m.ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "**" in ignore, ".dockerignore starts from nothing and lists what goes in"
    for _, instructions in m.dockerfile_stages():
        for line in instructions:
            if line.upper().startswith("COPY ") and "--from=" not in line:
                *sources, _dest = [p for p in line.split()[1:] if not p.startswith("--")]
                for source in sources:
                    path = source.rstrip("/")
                    assert (m.ROOT / path).exists(), path
                    assert path in allowed, f"{path} is excluded by .dockerignore"
