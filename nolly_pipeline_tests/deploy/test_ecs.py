"""``docker/dagster.ecs.yaml`` with a real ``dagster-daemon`` launching runs into ECS (moto).

moto's server process speaks ECS, Secrets Manager and S3, so the daemon's EcsRunLauncher
makes the same boto3 calls it makes against AWS: it registers a task definition from the
code location's image, its ``env_vars`` and ``secrets``, then calls ``RunTask`` with the
command and per-type cpu/memory overrides. The test then reads what ECS was asked for.

The launched task never executes under moto (there is no container runtime behind it), so
the test stops at the launch: the run stays ``STARTING`` and no job row reaches ``done``.
What happens inside the task is what the e2e daemon test covers with local run workers.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

import boto3
import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import deserialize_value

from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.job_types import JOB_TYPES
from nolly_pipeline_tests import services
from nolly_pipeline_tests.deploy.conftest import DOCKER_DIR, REPO_ROOT, env_example
from nolly_pipeline_tests.e2e.daemon import running_daemon, wait_until

CLUSTER = "nolly-runs"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/nolly-pipeline:test"
REGION = "us-east-1"


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION)


def _secret_arn(secrets: Any, name: str) -> str:
    return secrets.create_secret(Name=f"{name}-{uuid.uuid4().hex[:6]}", SecretString="x")["ARN"]


def _tags(task: Mapping[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in task.get("tags", [])}


def _env_list(pairs: list[dict[str, str]]) -> dict[str, str]:
    return {p["name"]: p.get("value", p.get("valueFrom", "")) for p in pairs}


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    """A moto server of our own, with the Fargate fix from :mod:`moto_ecs_server`."""
    with services.s3_server("nolly_pipeline_tests.deploy.moto_ecs_server", cwd=REPO_ROOT) as endpoint:
        yield endpoint


def test_daemon_launches_ecs_tasks_sized_per_job_type(
    tmp_path: Path, pg_store: JobStore, postgres_url: str, moto_endpoint: str,
    dagster_storage_env: Mapping[str, str], user_id: uuid.UUID, monkeypatch: pytest.MonkeyPatch,
) -> None:
    ecs = _client("ecs", moto_endpoint)
    ecs.create_cluster(clusterName=CLUSTER)
    secrets = _client("secretsmanager", moto_endpoint)
    explicit = {
        "NOLLY_SECRET_ARN_DATABASE_URL": _secret_arn(secrets, "database-url"),
        "NOLLY_SECRET_ARN_DAGSTER_POSTGRES_PASSWORD": _secret_arn(secrets, "dagster-pg"),
    }
    # Picked up by `secrets_tag: nolly-pipeline`, mounted under the secret's own name: the
    # optional Replicate token travels this way.
    tagged_name = "REPLICATE_API_TOKEN"
    tagged_arn = secrets.create_secret(
        Name=tagged_name, SecretString="x", Tags=[{"Key": "nolly-pipeline", "Value": "1"}]
    )["ARN"]
    logs_bucket = f"compute-logs-{uuid.uuid4().hex[:8]}"
    _client("s3", moto_endpoint).create_bucket(Bucket=logs_bucket)

    ec2 = _client("ec2", moto_endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    # As in a real Fargate VPC; moto needs it to describe the task's network interface.
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="run-tasks", Description="runs", VpcId=vpc)["GroupId"]

    home = tmp_path / "dagster_home"
    home.mkdir()
    # The deployed file as is, except the two lists it marks EDIT (ids that exist in moto).
    config = yaml.safe_load((DOCKER_DIR / "dagster.ecs.yaml").read_text())
    network = config["run_launcher"]["config"]["run_task_kwargs"]["networkConfiguration"]["awsvpcConfiguration"]
    network.update(subnets=[subnet], securityGroups=[group])
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    # A deployment's environment (.env.example), pointed at this test's services.
    env = {
        **env_example(),
        **dagster_storage_env,
        **explicit,
        "DAGSTER_HOME": str(home),
        # Every AWS client of the daemon (ECS, EC2, Secrets Manager, S3, logs) talks to moto.
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "DAGSTER_CURRENT_IMAGE": IMAGE,
        "DAGSTER_COMPUTE_LOGS_BUCKET": logs_bucket,
        "DAGSTER_S3_ENDPOINT_URL": moto_endpoint,
        "NOLLY_ECS_CLUSTER": CLUSTER,
        "NOLLY_ECS_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/nolly-exec",
        "NOLLY_ECS_TASK_ROLE_ARN": "arn:aws:iam::123456789012:role/nolly-task",
        "NOLLY_ECS_LOG_GROUP": "/ecs/nolly-runs",
        "NOLLY_DATABASE_URL": postgres_url,
        "NOLLY_S3_ENDPOINT_URL": moto_endpoint,
        "NOLLY_PUBLIC_BASE_URL": "",
        "NOLLY_BACKEND_ROTO": "replicate",
        "NOLLY_BACKEND_AUDIO_CLEAN": "replicate",
        "REPLICATE_API_TOKEN": "test-token",
        "NOLLY_SENSOR_INTERVAL_SECONDS": "1",
    }
    jobs = {
        job_type: pg_store.insert_job(job_type, {"file_url": f"s3://{bucket}/{user_id}/in.bin", "settings": {}}, user_id)
        for job_type, bucket in (("roto", "vfx-assets"), ("audio-clean", "audio-uploads"))
    }

    def task_arns() -> list[str]:
        return ecs.list_tasks(cluster=CLUSTER)["taskArns"]

    log = tmp_path / "daemon.log"
    with running_daemon(env, log) as daemon:

        def launched() -> bool:
            assert daemon.poll() is None, f"dagster-daemon exited:\n{log.read_text()[-3000:]}"
            return len(task_arns()) == len(jobs)

        wait_until(launched, timeout=90, what="one ECS task per job",
                   on_timeout=lambda: log.read_text()[-6000:])
    tasks = ecs.describe_tasks(cluster=CLUSTER, tasks=task_arns(), include=["TAGS"])["tasks"]

    for key, value in env.items():  # the instance file reads them, as in the daemon
        monkeypatch.setenv(key, value)
    instance = DagsterInstance.from_config(str(home))
    try:
        by_run = {_tags(t)["dagster/run_id"]: t for t in tasks}
        for job_type, job_id in jobs.items():
            (run,) = instance.get_runs(filters=RunsFilter(tags={"nolly/job_id": str(job_id)}))
            task = by_run[run.run_id]
            tags = _tags(task)
            assert tags["dagster/job_name"] == f"{JOB_TYPES[job_type].ident}_job"
            assert tags["app"] == "nolly-pipeline"
            assert tags["nolly/job_type"] == job_type and tags["nolly/job_id"] == str(job_id)
            # The launcher recorded the task on the run (used by run monitoring and cancel).
            assert run.status == DagsterRunStatus.STARTING
            assert instance.get_run_by_id(run.run_id).tags["ecs/task_arn"] == task["taskArn"]  # type: ignore[union-attr]

            # Task size from the job type's run tags, at task and container level.
            expected = JOB_TYPES[job_type].run_tags
            overrides = task["overrides"]
            assert (overrides["cpu"], overrides["memory"]) == (expected["ecs/cpu"], expected["ecs/memory"])
            (container,) = overrides["containerOverrides"]
            assert container["name"] == "run"
            assert (container["cpu"], container["memory"]) == (int(expected["ecs/cpu"]), int(expected["ecs/memory"]))
            command = container["command"]
            assert command[:3] == ["dagster", "api", "execute_run"]
            args = deserialize_value(command[3], ExecuteRunArgs)
            assert args.run_id == run.run_id and args.job_origin.job_name == run.job_name
            # The task gets the instance as configuration with env references, never values.
            assert args.instance_ref is not None
            assert "DAGSTER_POSTGRES_PASSWORD" in command[3] and dagster_storage_env["DAGSTER_POSTGRES_DB"] not in command[3]

            # The task definition the launcher registered: our image, env and secrets.
            definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
            assert definition["requiresCompatibilities"] == ["FARGATE"]
            assert definition["executionRoleArn"] == env["NOLLY_ECS_EXECUTION_ROLE_ARN"]
            assert definition["taskRoleArn"] == env["NOLLY_ECS_TASK_ROLE_ARN"]
            (run_container,) = definition["containerDefinitions"]
            assert run_container["image"] == IMAGE and run_container["name"] == "run"
            environment = _env_list(run_container["environment"])
            assert environment["DAGSTER_RUN_JOB_NAME"] == run.job_name
            assert environment["NOLLY_STORAGE"] == "s3" and environment["NOLLY_BACKEND_ROTO"] == "replicate"
            assert environment["DAGSTER_POSTGRES_HOST"] == env["DAGSTER_POSTGRES_HOST"]
            # Secrets travel as ARNs only; their values never appear in the task definition.
            assert "DAGSTER_POSTGRES_PASSWORD" not in environment and "NOLLY_DATABASE_URL" not in environment
            assert _env_list(run_container["secrets"]) == {
                "NOLLY_DATABASE_URL": explicit["NOLLY_SECRET_ARN_DATABASE_URL"],
                "DAGSTER_POSTGRES_PASSWORD": explicit["NOLLY_SECRET_ARN_DAGSTER_POSTGRES_PASSWORD"],
                tagged_name: tagged_arn,
            }
            assert run_container["logConfiguration"]["options"]["awslogs-group"] == "/ecs/nolly-runs"
            assert task["launchType"] == "FARGATE"
    finally:
        instance.dispose()
    # The two types ask for different sizes: the overrides are per run, not one task size.
    assert len({t["overrides"]["cpu"] for t in tasks}) == 2
