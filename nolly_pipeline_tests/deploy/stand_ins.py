"""What the one-shot and data containers of the compose file do, done on this machine's services.

``postgres``: the role and database the image creates from ``POSTGRES_*``, then
``postgres-init.sql`` run as that role, all under names unique to the session (the server is
shared). ``createbuckets``: its ``mc`` script carried out with boto3 on the S3 server.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

import sqlalchemy as sa

from nolly_pipeline_tests import services
from nolly_pipeline_tests.deploy.conftest import DOCKER_DIR


def create_buckets(s3: Any, env: Mapping[str, str], script: str) -> None:
    """What compose's ``createbuckets`` script does with ``mc``, done with boto3 here.

    Understands the script's three commands (``mc mb`` in a loop over bucket names, ``mc
    anonymous set download``, ``mc ilm rule add``); anything else in it fails the test, so a
    new step in compose cannot be skipped silently.
    """
    script = re.sub(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", lambda m: env[m.group(1)], script.replace("\\\n", " "))
    for line in filter(None, (line.strip() for line in script.splitlines())):
        words = shlex.split(line.split("||")[-1])
        if line.startswith("for bucket in"):
            buckets = shlex.split(line[len("for bucket in"):].split(";")[0])
            for bucket in buckets:
                s3.create_bucket(Bucket=bucket)
        elif words[:2] == ["mc", "mb"] or line == "done":
            continue  # the loop's body and end
        elif words[:4] == ["mc", "anonymous", "set", "download"]:
            bucket = words[4].split("/", 1)[1]
            s3.put_bucket_policy(Bucket=bucket, Policy=_public_read_policy(bucket))
        elif words[:4] == ["mc", "ilm", "rule", "add"]:
            bucket = words[-1].split("/", 1)[1]
            prefix, days = words[words.index("--prefix") + 1], int(words[words.index("--expire-days") + 1])
            s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
                {"ID": "expire-intermediates", "Status": "Enabled", "Filter": {"Prefix": prefix},
                 "Expiration": {"Days": days}},
            ]})
        else:
            raise AssertionError(f"createbuckets does something the topology does not: {line}")


def _public_read_policy(bucket: str) -> str:
    """The policy ``mc anonymous set download`` sets: anyone may read objects."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": ["s3:GetObject"],
         "Resource": [f"arn:aws:s3:::{bucket}/*"]},
    ]})


@contextmanager
def postgres(site_names: dict[str, str], variables: Mapping[str, str]) -> Iterator[None]:
    """What the ``postgres`` image and ``postgres-init.sql`` create, with unique names here.

    The image makes ``POSTGRES_USER`` (with ``POSTGRES_PASSWORD``) and ``POSTGRES_DB`` owned by
    it, then runs the init script as that user in that database. The role gets CREATEDB only
    (the image makes it a superuser): the init script must not need more.
    """
    admin = sa.create_engine(services.admin_url(), isolation_level="AUTOCOMMIT")
    role, dagster_db = site_names[variables["POSTGRES_USER"]], site_names[variables["POSTGRES_DB"]]
    created: list[str] = []
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN CREATEDB PASSWORD :pw'), {"pw": variables["POSTGRES_PASSWORD"]})
            conn.execute(sa.text(f'CREATE DATABASE "{dagster_db}" OWNER "{role}"'))
            created.append(dagster_db)
        as_role = admin.url.set(username=role, password=variables["POSTGRES_PASSWORD"], database=dagster_db)
        init = sa.create_engine(as_role, isolation_level="AUTOCOMMIT")
        sql = (DOCKER_DIR / "postgres-init.sql").read_text()
        for name in re.findall(r"CREATE DATABASE\s+(\w+)", sql, re.IGNORECASE):
            sql = re.sub(rf"\b{name}\b(?=\s*;)", f'"{site_names[name]}"', sql)
            created.append(site_names[name])
        with init.connect() as conn:
            for statement in filter(str.strip, re.sub(r"--[^\n]*", "", sql).split(";")):
                conn.execute(sa.text(statement))
        init.dispose()
        yield
    finally:
        with admin.connect() as conn:
            for name in created:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


def unique_names(variables: Mapping[str, str], name_variables: Sequence[str]) -> dict[str, str]:
    """Compose's role/database name -> a name unique to this session."""
    tag = uuid.uuid4().hex[:8]
    names = [variables[name] for name in name_variables]
    names += re.findall(r"CREATE DATABASE\s+(\w+)", (DOCKER_DIR / "postgres-init.sql").read_text(), re.IGNORECASE)
    return {name: f"topo_{name}_{tag}" for name in names}


def admin_host_port() -> str:
    url = sa.make_url(services.admin_url())
    return f"{url.host or '127.0.0.1'}:{url.port or 5432}"
