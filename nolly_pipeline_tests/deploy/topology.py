"""``docker/docker-compose.yml`` run as processes on one machine, wired exactly as compose wires it.

No container engine here, so each service becomes a process: the code location from the
project's environment, the webserver and daemon from a virtual environment holding only the
``dagster`` image's pins (no ``nolly_pipeline``), PostgreSQL databases and roles as the
``postgres`` image and ``postgres-init.sql`` make them, moto's S3 server for MinIO with the
buckets ``createbuckets`` makes. Every environment variable, command, working directory and
copied file is read from the compose file, ``.env.example`` and the Dockerfile; what must
differ on one machine (host names, ports, each container's own filesystem) is the one
mapping :data:`COMPOSE_TO_PROCESSES`, so a change to the deployment files reaches the test.
"""

from __future__ import annotations

import re
import subprocess
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import boto3
import httpx
import sqlalchemy as sa
import yaml

from nolly_pipeline.config import Settings
from nolly_pipeline_tests import services
from nolly_pipeline_tests.deploy import images, stand_ins
from nolly_pipeline_tests.deploy.conftest import DOCKER_DIR, REPO_ROOT, env_example
from nolly_pipeline_tests.e2e.daemon import stop_group, wait_until
from nolly_pipeline_tests.ui.webserver import Webserver

COMPOSE = DOCKER_DIR / "docker-compose.yml"
PROJECT_BIN = REPO_ROOT / ".venv" / "bin"

# Everything that differs between the compose stack and its processes here, and nothing else.
COMPOSE_TO_PROCESSES: dict[str, Any] = {
    # "<service>:<container port>" -> the stand-in running here (see Site).
    "addresses": {"postgres:5432": "postgres", "minio:9000": "s3", "code:4000": "code", "webserver:3000": "webserver"},
    # Variables that spell one of those addresses as two values.
    "host_port_variables": [("DAGSTER_POSTGRES_HOST", "DAGSTER_POSTGRES_PORT")],
    # Containers listen on every interface; processes here on loopback only.
    "listen": {"0.0.0.0": "127.0.0.1"},
    # Each container has a filesystem of its own: these image paths live under a folder per
    # service; what an image build puts there (the roto model) is provided from this machine.
    "container_paths": ["/opt/dagster", "/opt/nolly", "/tmp"],
    "built_into_image": {"/opt/nolly/models": "models_dir"},
    # PostgreSQL is shared here: the image's role and database (these variables) and every
    # database postgres-init.sql creates get names unique to the session.
    "unique_postgres_names": ["POSTGRES_USER", "POSTGRES_DB"],
}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _one(variables: Mapping[str, str]) -> Callable[[re.Match[str]], str]:
    return lambda m: "$" if m.group(0) == "$$" else variables.get(m.group(1), "")


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's interpolation as the compose file uses it: ``${VAR}`` from the env file, ``$$`` -> ``$``."""
    result = re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}", _one(variables), text)
    assert "${" not in result, f"compose syntax the topology does not read: {text}"
    return result


def service_environment(name: str, variables: Mapping[str, str]) -> dict[str, str]:
    """A compose service's ``environment`` with ``.env.example``'s values substituted."""
    environment = compose()["services"][name].get("environment") or {}
    return {key: interpolate(str(value), variables) for key, value in environment.items()}


@dataclass
class Site:
    """The stand-ins of this session: addresses, names and folders that replace compose's."""

    root: Path
    postgres: str  # host:port
    s3: str
    code: str
    webserver: str
    names: dict[str, str]  # compose role/database name -> unique name here
    models_dir: str

    def address(self, compose_address: str) -> str:
        return getattr(self, COMPOSE_TO_PROCESSES["addresses"][compose_address])

    def published(self) -> dict[str, str]:
        """``localhost:<published port>`` -> ``<service>:<container port>``, from compose's ``ports``."""
        result = {}
        for name, service in compose()["services"].items():
            for spec in service.get("ports", []):
                published, container = str(spec).split(":")[-2:]
                result[f"localhost:{published}"] = f"{name}:{container}"
        return result

    def path(self, service: str, path: str) -> str:
        for image_path, attribute in COMPOSE_TO_PROCESSES["built_into_image"].items():
            if path == image_path or path.startswith(image_path + "/"):
                return getattr(self, attribute) + path[len(image_path):]
        if any(path == p or path.startswith(p + "/") for p in COMPOSE_TO_PROCESSES["container_paths"]):
            return str(self.root / service) + path
        return path

    def value(self, service: str, name: str, value: str) -> str:
        """One variable's value as the process here must see it."""
        for public, internal in self.published().items():
            value = value.replace(public, internal)
        for compose_address in COMPOSE_TO_PROCESSES["addresses"]:
            value = value.replace(compose_address, self.address(compose_address))
        if value.startswith("postgresql"):
            url = sa.make_url(value)
            value = url.set(
                username=self.names.get(url.username or "", url.username),
                database=self.names.get(url.database or "", url.database),
            ).render_as_string(hide_password=False)
        elif re.search(r"_(DB|USER)$", name) and value in self.names:
            value = self.names[value]
        return self.path(service, value) if value.startswith("/") else value

    def environment(self, service: str, env: Mapping[str, str]) -> dict[str, str]:
        mapped = {name: self.value(service, name, value) for name, value in env.items()}
        for host_var, port_var in COMPOSE_TO_PROCESSES["host_port_variables"]:
            if host_var in mapped:
                host, port = self.address(f"{mapped[host_var]}:{mapped[port_var]}").rsplit(":", 1)
                mapped[host_var], mapped[port_var] = host, port
        services_by_name = set(compose()["services"])
        for name, value in mapped.items():
            for host in re.findall(r"://(?:[^@/]*@)?([^:/]+)", value) + ([value] if name.endswith("_HOST") else []):
                assert host not in services_by_name, f"{name}={value}: compose host {host!r} not in COMPOSE_TO_PROCESSES"
        return mapped

    def command(self, service: str, command: list[str]) -> list[str]:
        """A service's command with its listen address and port mapped."""
        result = []
        for i, token in enumerate(command):
            if i and command[i - 1] in ("-p", "--port"):
                token = self.address(f"{service}:{token}").rsplit(":", 1)[1]
            result.append(COMPOSE_TO_PROCESSES["listen"].get(token, token))
        return result


@dataclass
class Container:
    """One compose service as a process group (killed as a whole on exit)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    one_shot: bool = False  # exits when done (compose `migrate`), unlike a service

    def tail(self, chars: int = 4000) -> str:
        return f"--- {self.name} ({self.log}):\n" + self.log.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        stop_group(self.proc)


@dataclass
class Topology:
    """The running stack, and the clients a test needs to talk to it from outside."""

    site: Site
    env: dict[str, dict[str, str]]  # service -> its environment here
    containers: dict[str, Container] = field(default_factory=dict)
    nolly_url: str = ""
    instance: dict[str, Any] = field(default_factory=dict)  # docker/dagster.yaml (or its ECS variant)

    def logs(self) -> str:
        return "\n".join(c.tail() for c in self.containers.values())

    def check_alive(self) -> None:
        """Fail with its log if a service process has exited (compose would show it exited)."""
        for container in self.containers.values():
            if not container.one_shot:
                assert container.proc.poll() is None, container.tail()

    def s3(self) -> Any:
        env = self.env["code"]
        return boto3.client(
            "s3", endpoint_url=env["NOLLY_S3_ENDPOINT_URL"], region_name=env["AWS_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One GraphQL request to the webserver, as the UI makes it."""
        return Webserver(f"http://{self.site.webserver}").graphql(query, variables)


def _start(topology: Topology, service: str, command: list[str], bin_dir: Path, cwd: str) -> Container:
    log = topology.site.root / f"{service}.log"
    env = {
        **topology.env[service],
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(topology.site.root / service / "home"),
        "LANG": "C.UTF-8",
        "TMPDIR": topology.site.path(service, "/tmp"),
    }
    for folder in (env["HOME"], env["TMPDIR"], cwd):
        Path(folder).mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    container = Container(service, proc, log)
    topology.containers[service] = container
    return container


def _run_once(topology: Topology, service: str, command: list[str], bin_dir: Path, cwd: str) -> str:
    """A one-shot service (compose ``migrate``): must exit 0, as ``service_completed_successfully``."""
    container = _start(topology, service, command, bin_dir, cwd)
    container.one_shot = True
    container.proc.wait(timeout=120)
    assert container.proc.returncode == 0, container.tail()
    return container.log.read_text()


def _copy_image_files(topology: Topology, service: str, stage: images.Stage) -> None:
    """The ``COPY`` of files from ``docker/`` into the image, mapped (paths, code address)."""
    site = topology.site
    for sources, dest in stage.copies:
        for source in sources:
            if not source.startswith("docker/"):
                continue  # the package itself: installed in the project's environment here
            target = Path(site.path(service, dest))
            if dest.endswith("/"):
                target = target / Path(source).name
            is_instance = source == "docker/dagster.yaml"
            document = topology.instance if is_instance else yaml.safe_load((REPO_ROOT / source).read_text())
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(yaml.safe_dump(_map_document(site, service, document)))


def _map_document(site: Site, service: str, value: Any) -> Any:
    """Container paths and gRPC addresses inside an instance or workspace file."""
    if isinstance(value, dict):
        if "grpc_server" in value:
            server = value["grpc_server"]
            host, port = site.address(f"{server['host']}:{server['port']}").rsplit(":", 1)
            return {"grpc_server": {**server, "host": host, "port": int(port)}}
        return {k: _map_document(site, service, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_document(site, service, v) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        return site.path(service, value)
    return value


@contextmanager
def running_topology(
    root: Path,
    instance_file: Path = DOCKER_DIR / "dagster.yaml",
    s3_module: str = "moto.server",
    prepare: Callable[[Topology], None] | None = None,
) -> Iterator[Topology]:
    """Bring the compose stack up as processes, in compose's dependency order; tear all down.

    ``instance_file`` replaces ``docker/dagster.yaml`` in both images (the ECS variant);
    ``prepare`` may change environments and the instance document before any process starts
    (what a deployment other than compose sets).
    """
    variables = env_example()
    dagster_bin = images.dagster_only_venv()
    stages = images.stages()
    spec = compose()["services"]
    with ExitStack() as stack:
        s3_endpoint = stack.enter_context(services.s3_server(s3_module, cwd=REPO_ROOT))
        names = stand_ins.unique_names(variables, COMPOSE_TO_PROCESSES["unique_postgres_names"])
        site = Site(
            root=root, postgres=stand_ins.admin_host_port(), s3=s3_endpoint.split("://", 1)[1],
            code=f"127.0.0.1:{services.free_port()}", webserver=f"127.0.0.1:{services.free_port()}",
            names=names, models_dir=str(Settings.from_env().models_dir),
        )
        stack.enter_context(stand_ins.postgres(names, variables))
        topology = Topology(site, env={}, instance=yaml.safe_load(instance_file.read_text()))
        # Registered after PostgreSQL and S3, so every process is gone before they are.
        stack.callback(lambda: [c.stop() for c in reversed(list(topology.containers.values()))])

        for service in ("createbuckets", "migrate", "code", "webserver", "daemon"):
            stage = stages[(spec[service].get("build") or {}).get("target", "base")]
            env = {**stage.env, **service_environment(service, variables)}
            topology.env[service] = site.environment(service, env)
        nolly = sa.make_url(topology.env["code"]["NOLLY_DATABASE_URL"])
        topology.nolly_url = nolly.render_as_string(hide_password=False)

        # createbuckets: its shell script, on the S3 server standing in for MinIO.
        script = spec["createbuckets"]["command"][0]
        stand_ins.create_buckets(topology.s3(), topology.env["createbuckets"], interpolate(script, variables))
        if prepare:
            prepare(topology)

        # migrate, then the code server (its image's CMD) until compose's health check passes.
        code_stage = stages["code"]
        code_dir = site.path("code", code_stage.workdir)
        _copy_image_files(topology, "code", code_stage)
        _run_once(topology, "migrate", spec["migrate"]["command"], PROJECT_BIN, code_dir)
        code_command = site.command("code", spec["code"].get("command") or code_stage.cmd)
        _start(topology, "code", code_command, PROJECT_BIN, code_dir)
        health = site.command("code", spec["code"]["healthcheck"]["test"][1:])

        def healthy() -> bool:
            topology.check_alive()
            return subprocess.run(
                health, env=topology.env["code"] | {"PATH": f"{PROJECT_BIN}:/usr/bin:/bin"}, cwd=code_dir,
                capture_output=True,
            ).returncode == 0

        wait_until(healthy, timeout=120, interval=1, what="code server healthy", on_timeout=topology.logs)

        # webserver and daemon: the dagster image, files copied as its COPY does.
        dagster_stage = stages["dagster"]
        for service in ("webserver", "daemon"):
            _copy_image_files(topology, service, dagster_stage)
            command = site.command(service, spec[service].get("command") or dagster_stage.cmd)
            _start(topology, service, command, dagster_bin, site.path(service, dagster_stage.workdir))
        web_port = int(site.webserver.rsplit(":", 1)[1])
        services.wait_for_port(web_port, timeout=120)
        wait_until(lambda: _location_loaded(topology), timeout=120, interval=1,
                   what="webserver loaded the code location", on_timeout=topology.logs)
        wait_until(lambda: _daemons_healthy(topology), timeout=120, interval=1,
                   what="daemon healthy (UI status page)", on_timeout=topology.logs)
        yield topology


def _location_loaded(topology: Topology) -> bool:
    topology.check_alive()
    try:
        return Webserver(f"http://{topology.site.webserver}").location_loaded()
    except httpx.HTTPError:
        return False


DAEMON_HEALTH_QUERY = """
query { instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }
"""


def _daemons_healthy(topology: Topology) -> bool:
    """Every required daemon heartbeating, as the UI's Deployment > Daemons page shows it."""
    topology.check_alive()
    statuses = topology.graphql(DAEMON_HEALTH_QUERY)["instance"]["daemonHealth"]["allDaemonStatuses"]
    return all(status["healthy"] for status in statuses if status["required"])
