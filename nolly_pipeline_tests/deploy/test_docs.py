"""Configuration shown in the docs is accepted by the service it is meant for."""

from __future__ import annotations

import json
import re
import uuid

import boto3

from nolly_pipeline_tests.deploy.conftest import REPO_ROOT


def test_intermediates_lifecycle_rule_is_valid_s3(s3_endpoint: str) -> None:
    doc = (REPO_ROOT / "docs" / "scaling.md").read_text()
    match = re.search(r"<!-- lifecycle:begin -->\s*```json\n(.*?)```\s*<!-- lifecycle:end -->", doc, re.DOTALL)
    assert match, "docs/scaling.md lost its lifecycle block"
    rules = json.loads(match.group(1))
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    bucket = f"inter-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=rules)
    (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    # The prefix the IO manager writes under by default (NOLLY_INTERMEDIATE_PREFIX).
    assert rule["Filter"]["Prefix"] == "dagster-io/" and rule["Expiration"]["Days"] == 7
