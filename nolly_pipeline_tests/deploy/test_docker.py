"""The Docker files, checked without Docker: they parse, name what exists and agree with the code.

Nothing here builds or runs an image (no Docker engine on CI). What can drift silently is
checked instead: unpinned images, build paths that moved, variables missing from
``.env.example``, and pins in the Dockerfile that disagree with ``pyproject.toml``.
"""

from __future__ import annotations

import functools
import re
import tomllib
from typing import Any

import yaml

from nolly_pipeline.job_types import JOB_TYPES
from nolly_pipeline_tests.deploy.conftest import DOCKER_DIR, REPO_ROOT, env_example

COMPOSE = DOCKER_DIR / "docker-compose.yml"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
# ${VAR}, ${VAR:-default}, ${VAR?err}; "$$" escapes a literal dollar for the container shell.
COMPOSE_VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
# Read by the package but deliberately not passed by compose: set in the image, or only
# meaningful for the local (non-S3) storage of the embedded default.
NOT_PASSED_BY_COMPOSE = {"NOLLY_MODELS_DIR", "NOLLY_WORK_DIR", "NOLLY_LOCAL_STORAGE_DIR", "DAGSTER_HOME", "AWS_DEFAULT_REGION"}


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _pinned(image: str) -> bool:
    """A digest, or a tag naming an exact release (no ``latest``, no bare major version)."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag or tag in ("", "latest"):
        return False
    return bool(re.search(r"\d+\.\d+", tag) or re.fullmatch(r"RELEASE\.\d{4}-\d{2}-\d{2}T[\d-]+Z", tag))


@functools.cache
def package_env_vars() -> frozenset[str]:
    """Every environment variable the package reads, per-type names expanded."""
    names: set[str] = set()
    suffixes = [t.env_suffix for t in JOB_TYPES.values()]
    for source in (REPO_ROOT / "nolly_pipeline").rglob("*.py"):
        text = source.read_text()
        names |= set(re.findall(r"""(?:_env|_positive|environ\.get|getenv)\(\s*"([A-Z][A-Z0-9_]+)\"""", text))
        for prefix in re.findall(r"""(?:_env|_positive)\(\s*f"([A-Z][A-Z0-9_]+_)\{suffix\}\"""", text):
            names |= {prefix + suffix for suffix in suffixes}
    return frozenset(names)


def test_compose_services_use_pinned_images_and_existing_build_files() -> None:
    services = _compose()["services"]
    assert {"postgres", "minio", "createbuckets", "migrate", "code", "webserver", "daemon"} <= set(services)
    targets = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE | re.IGNORECASE))
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = (DOCKER_DIR / build["context"]).resolve()
            assert context == REPO_ROOT, name
            assert (context / build["dockerfile"]).is_file(), name
            assert build["target"] in targets, (name, build["target"])
        else:
            assert _pinned(service["image"]), (name, service["image"])
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DOCKER_DIR / source).is_file(), (name, source)


def test_compose_variables_are_all_in_env_example() -> None:
    used = set(COMPOSE_VAR.findall(COMPOSE.read_text()))
    assert used, "compose file uses no variables?"
    assert used <= set(env_example()), sorted(used - set(env_example()))


def test_env_example_names_every_variable_the_package_reads() -> None:
    missing = package_env_vars() - set(env_example())
    assert not missing, sorted(missing)


def test_code_container_receives_every_pipeline_variable() -> None:
    code_env = _compose()["services"]["code"]["environment"]
    assert package_env_vars() - NOT_PASSED_BY_COMPOSE <= set(code_env), sorted(
        package_env_vars() - NOT_PASSED_BY_COMPOSE - set(code_env)
    )
    # The code server spawns run workers that open the instance: they need its variables too.
    assert {"DAGSTER_POSTGRES_PASSWORD", "DAGSTER_COMPUTE_LOGS_BUCKET"} <= set(code_env)


def test_ecs_run_tasks_receive_every_pipeline_variable() -> None:
    """A run task rebuilds the resources from its own environment: same settings as the server."""
    launcher = yaml.safe_load((DOCKER_DIR / "dagster.ecs.yaml").read_text())["run_launcher"]["config"]
    from_secrets = {secret["name"] for secret in launcher["secrets"]}
    # Optional secrets travel by `secrets_tag` (a secret named after the variable): a secret
    # cannot be empty, so listing one explicitly would force a placeholder (dagster.ecs.yaml).
    by_tag = {"REPLICATE_API_TOKEN"}
    assert launcher["secrets_tag"]
    expected = package_env_vars() - NOT_PASSED_BY_COMPOSE - from_secrets - by_tag
    assert expected <= set(launcher["env_vars"]), sorted(expected - set(launcher["env_vars"]))
    assert not (from_secrets | by_tag) & set(launcher["env_vars"]), "a secret would be copied as a plain value"


def test_workspace_points_at_the_code_service() -> None:
    workspace = yaml.safe_load((DOCKER_DIR / "workspace.docker.yaml").read_text())
    (entry,) = workspace["load_from"]
    server = entry["grpc_server"]
    code = _compose()["services"]["code"]
    assert server["host"] == "code"
    assert f"-p {server['port']}" in " ".join(_dockerfile_cmd("code"))
    assert code["healthcheck"]["test"][-1] == str(server["port"])


def _dockerfile_stage(target: str) -> str:
    text = DOCKERFILE.read_text()
    stages = re.split(r"^(?=FROM\s)", text, flags=re.MULTILINE)
    (stage,) = [s for s in stages if re.match(rf"FROM\s+\S+\s+AS\s+{target}\s*$", s.splitlines()[0], re.IGNORECASE)]
    return stage


def _dockerfile_cmd(target: str) -> list[str]:
    match = re.search(r"^CMD\s+(\[.*\])\s*$", _dockerfile_stage(target), re.MULTILINE)
    assert match
    return yaml.safe_load(match.group(1))


def test_dockerfile_installs_the_project_as_pyproject_declares() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    pins = {
        m.group(1).lower(): m.group(2)
        for dep in pyproject["project"]["dependencies"]
        if (m := re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", dep.replace(" ", "")))
    }
    text = DOCKERFILE.read_text()
    base = re.search(r"^FROM\s+python:(\S+)\s+AS\s+base", text, re.MULTILINE | re.IGNORECASE)
    assert base and re.fullmatch(r"3\.11\.\d+-slim-bookworm", base.group(1)), "pinned Python 3.11 base image"

    code = _dockerfile_stage("code")
    # The code image installs the project itself (all its pins, no dev extras) and nothing else.
    installs = re.findall(r"pip install ([^\n&]+)", code)
    assert [i.strip() for i in installs] == ["."], installs
    assert "COPY pyproject.toml" in code and "COPY nolly_pipeline " in code
    assert re.search(r"^RUN nolly-pipeline models fetch", code, re.MULTILINE)
    assert re.search(r"^ENV NOLLY_MODELS_DIR=\S+", code, re.MULTILINE)
    assert _dockerfile_cmd("code") == ["dagster", "api", "grpc", "-m", "nolly_pipeline.definitions", "-h", "0.0.0.0", "-p", "4000"]

    # The webserver/daemon image pins the same Dagster versions as pyproject.toml.
    dagster = _dockerfile_stage("dagster")
    explicit = dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', dagster))
    assert set(explicit) == {"dagster", "dagster-webserver", "dagster-postgres", "dagster-aws"}
    for name, version in explicit.items():
        assert pins[name] == version, (name, version, pins.get(name))

    # Both images run as an unprivileged user.
    for target in ("dagster", "code"):
        users = re.findall(r"^USER\s+(\S+)", _dockerfile_stage(target), re.MULTILINE)
        assert users and users[-1] not in ("root", "0"), target


def test_dockerignore_lets_in_what_the_dockerfile_copies() -> None:
    allowed = [line[1:].rstrip("/") for line in (DOCKER_DIR / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")]
    for line in re.findall(r"^COPY\s+(.+)$", DOCKERFILE.read_text(), re.MULTILINE):
        for source in line.split()[:-1]:
            assert source in allowed, source
            assert (REPO_ROOT / source).exists(), source
