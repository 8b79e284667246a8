"""The ECS shape as processes: ``docker/dagster.ecs.yaml`` in a daemon without our package.

The same topology as :mod:`test_topology` (code server, webserver, daemon, PostgreSQL, S3), with
the ECS instance file and AWS played by moto's server. The daemon (dagster image, no
``nolly_pipeline``) launches the run through EcsRunLauncher: it registers a task definition
from the image the code server reports and calls ``RunTask``. moto does not execute tasks,
so this test does what Fargate would: it starts the task's container command in the code
image's environment with only what ECS would give it (the task definition's environment,
its Secrets Manager secrets resolved, the run's overrides), and the job must end ``done``.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest

from nolly_pipeline_tests.deploy.conftest import DOCKER_DIR, env_example
from nolly_pipeline_tests.deploy.images import stages
from nolly_pipeline_tests.deploy.test_topology import check_done, run_of, submit, wait_terminal
from nolly_pipeline_tests.deploy.topology import PROJECT_BIN, Container, Topology, running_topology
from nolly_pipeline_tests.e2e.daemon import wait_until

# Stand-in for the ECS task role's credentials (the run task gets no keys from the launcher).
TASK_ROLE_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def aws(topology: Topology, service: str) -> Any:
    return boto3.client(
        service, endpoint_url=f"http://{topology.site.s3}", region_name=topology.env["code"]["AWS_REGION"],
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )


def prepare_ecs(topology: Topology) -> None:
    """What an ECS deployment has before the daemon starts: cluster, network, secrets, env.

    The daemon gets every variable of ``.env.example`` (the ECS deployment's one list) except
    ``DAGSTER_CURRENT_IMAGE``, which only the code server has: the launcher must learn the
    image from the code location. The two lists marked EDIT get moto's ids.
    """
    variables = env_example()
    code_env = topology.env["code"]
    code_env["DAGSTER_CURRENT_IMAGE"] = variables["DAGSTER_CURRENT_IMAGE"]
    aws(topology, "ecs").create_cluster(clusterName=variables["NOLLY_ECS_CLUSTER"])
    ec2 = aws(topology, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="run-tasks", Description="runs", VpcId=vpc)["GroupId"]
    launcher = topology.instance["run_launcher"]["config"]
    launcher["run_task_kwargs"]["networkConfiguration"]["awsvpcConfiguration"].update(
        subnets=[subnet], securityGroups=[group]
    )

    daemon_env = topology.site.environment("daemon", {k: v for k, v in variables.items() if k != "DAGSTER_CURRENT_IMAGE"})
    secrets = aws(topology, "secretsmanager")
    for secret in launcher["secrets"]:
        # The secret holds what the code server has for that variable; Secrets Manager refuses
        # an empty value, so every explicitly listed secret must be one a deployment always has.
        arn = secrets.create_secret(Name=f"nolly/{secret['name']}-{uuid.uuid4().hex[:6]}",
                                    SecretString=code_env[secret["name"]])["ARN"]
        daemon_env[secret["valueFrom"]["env"]] = arn
    daemon_env["AWS_ENDPOINT_URL"] = f"http://{topology.site.s3}"  # every AWS API: moto
    topology.env["daemon"] = {**topology.env["daemon"], **daemon_env}


@pytest.fixture
def ecs_topology(tmp_path: Path, postgres_url: str, dagster_bin: Path) -> Iterator[Topology]:
    with running_topology(
        tmp_path, DOCKER_DIR / "dagster.ecs.yaml", "nolly_pipeline_tests.deploy.moto_ecs_server", prepare_ecs
    ) as running:
        yield running


def task_environment(topology: Topology, task: dict[str, Any]) -> dict[str, str]:
    """What Fargate puts in the run container: image ENV, task definition env and secrets, overrides."""
    ecs, secrets = aws(topology, "ecs"), aws(topology, "secretsmanager")
    definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
    (container,) = definition["containerDefinitions"]
    # The image's ENV (paths mapped); the rest was mapped already in the daemon's environment.
    env = topology.site.environment("task", stages()["code"].env)
    env.update({p["name"]: p["value"] for p in container.get("environment", [])})
    for secret in container.get("secrets", []):
        env[secret["name"]] = secrets.get_secret_value(SecretId=secret["valueFrom"])["SecretString"]
    (override,) = task["overrides"]["containerOverrides"]
    env.update({p["name"]: p["value"] for p in override.get("environment", [])})
    return env | {k: topology.env["code"][k] for k in TASK_ROLE_KEYS}


@pytest.mark.slow
def test_ecs_topology_daemon_launches_and_task_completes(ecs_topology: Topology, tmp_path: Path) -> None:
    topology = ecs_topology
    ecs = aws(topology, "ecs")
    cluster = env_example()["NOLLY_ECS_CLUSTER"]
    # roto: a type with a default Replicate model, so a stray token in the task would switch it.
    job_id = submit(topology, "roto")

    def launched() -> bool:
        topology.check_alive()
        return bool(ecs.list_tasks(cluster=cluster)["taskArns"])

    wait_until(launched, timeout=180, interval=1, what="an ECS task", on_timeout=topology.logs)
    (task,) = ecs.describe_tasks(cluster=cluster, tasks=ecs.list_tasks(cluster=cluster)["taskArns"])["tasks"]
    definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
    # The image came from the code server (the daemon has no DAGSTER_CURRENT_IMAGE).
    assert "DAGSTER_CURRENT_IMAGE" not in topology.env["daemon"]
    assert definition["containerDefinitions"][0]["image"] == topology.env["code"]["DAGSTER_CURRENT_IMAGE"]
    (override,) = task["overrides"]["containerOverrides"]
    assert override["command"][:3] == ["dagster", "api", "execute_run"]

    # Fargate's part: run the container's command with what ECS hands it, nothing else.
    env = task_environment(topology, task)
    run_id = run_of(topology, job_id)["runId"]
    log = tmp_path / "task.log"
    workdir = Path(topology.site.path("task", stages()["code"].workdir))
    workdir.mkdir(parents=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            override["command"], env={**env, "PATH": f"{PROJECT_BIN}:/usr/bin:/bin", "HOME": str(tmp_path)},
            cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    topology.containers["task"] = Container("task", proc, log, one_shot=True)
    row = wait_terminal(topology, [job_id], timeout=180)[job_id]
    seconds = check_done(topology, job_id, row)
    assert run_of(topology, job_id)["runId"] == run_id
    print(f"\nroto via ECS launch + task command: {seconds:.1f} s insert to done")
