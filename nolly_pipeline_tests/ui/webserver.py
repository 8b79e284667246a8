"""Run a real ``dagster-webserver`` and speak to it as the Dagster UI does: GraphQL over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import httpx

from nolly_pipeline_tests.e2e.daemon import REPO_ROOT, stop_group, wait_until
from nolly_pipeline_tests.services import free_port

LOCATION = "nolly_pipeline"
REPOSITORY = "__repository__"  # the repository name Dagster gives a Definitions object


class GraphQLError(AssertionError):
    pass


@dataclass
class Webserver:
    url: str

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """POST a query to ``/graphql`` as the UI does; raise on transport or GraphQL errors."""
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
        try:  # a mutation that raised comes back as HTTP 500 with a PythonError in `data`
            body = response.json()
        except ValueError:
            raise GraphQLError(f"HTTP {response.status_code} from /graphql: {response.text[:2000]}") from None
        if body.get("errors") or "data" not in body:
            raise GraphQLError(str(body["errors"]))
        return body["data"]

    def location_loaded(self) -> bool:
        data = self.graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { name "
            "locationOrLoadError { __typename } } } } }"
        )
        entries = data["workspaceOrError"].get("locationEntries") or []
        return any(
            e["name"] == LOCATION and (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
            for e in entries
        )


@contextmanager
def running_webserver(env: Mapping[str, str], log_path: Path) -> Iterator[Webserver]:
    """``dagster-webserver`` on the repo's workspace and a free port, in its own process group
    (it starts a code server of its own, which must go with it); yields once the code location
    has loaded."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("dagster-webserver")), "-w", str(REPO_ROOT / "workspace.yaml"),
               "-h", "127.0.0.1", "-p", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command, cwd=REPO_ROOT, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            server = Webserver(f"http://127.0.0.1:{port}")

            def ready() -> bool:
                try:
                    return server.location_loaded()
                except httpx.HTTPError:
                    return False

            wait_until(ready, timeout=120, what="dagster-webserver with the code location loaded",
                       on_timeout=lambda: log_path.read_text()[-3000:])
            yield server
        finally:
            stop_group(proc)


# --- the UI's own calls -------------------------------------------------------------------
_LAUNCH = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on Error { message }
  }
}"""
_REEXECUTE = """
mutation LaunchPipelineReexecution($reexecutionParams: ReexecutionParams) {
  launchPipelineReexecution(reexecutionParams: $reexecutionParams) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on Error { message }
  }
}"""
_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on Error { message }
  }
}"""
_RUN = """
query RunRoot($runId: ID!) {
  runOrError(runId: $runId) {
    __typename ... on Run { runId status tags { key value } stepStats { stepKey status } }
  }
}"""
_RUNS = """
query RunsRoot($filter: RunsFilter!) {
  runsOrError(filter: $filter) { ... on Runs { results { runId status } } }
}"""
_STEP_FAILURES = """
query RunLogs($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events { __typename ... on ExecutionStepFailureEvent { stepKey error { message } } } }
  }
}"""


def _launched(result: dict[str, Any]) -> str:
    if result["__typename"] != "LaunchRunSuccess":
        raise GraphQLError(f"launch refused: {result}")
    return result["run"]["runId"]


def _selector(job_name: str, assets: list[str] | None = None) -> dict[str, Any]:
    selector: dict[str, Any] = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY,
                                "pipelineName": job_name}
    if assets is not None:
        selector["assetSelection"] = [{"path": [a]} for a in assets]
    return selector


def materialize(server: Webserver, asset: str, partition: str) -> str:
    """The asset page's "Materialize" of one partition: a run of the implicit asset job."""
    return launch(server, "__ASSET_JOB", partition, assets=[asset])


def launch(server: Webserver, job_name: str, partition: str, assets: list[str] | None = None) -> str:
    """The launchpad's "Launch run" of ``job_name`` for one partition."""
    params = {
        "selector": _selector(job_name, assets),
        "runConfigData": {},
        "mode": "default",
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
    }
    return _launched(server.graphql(_LAUNCH, {"executionParams": params})["launchPipelineExecution"])


def reexecute(server: Webserver, parent_run_id: str, strategy: str) -> str:
    """The run page's "Re-execute": ``FROM_FAILURE`` or ``ALL_STEPS``."""
    params = {"parentRunId": parent_run_id, "strategy": strategy}
    return _launched(server.graphql(_REEXECUTE, {"reexecutionParams": params})["launchPipelineReexecution"])


def backfill(server: Webserver, asset: str, partitions: list[str]) -> str:
    """The asset page's "Launch backfill" for selected partitions (an asset backfill)."""
    params = {"assetSelection": [{"path": [asset]}], "partitionNames": partitions, "fromFailure": False, "tags": []}
    result = server.graphql(_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise GraphQLError(f"backfill refused: {result}")
    return result["backfillId"]


def run(server: Webserver, run_id: str) -> dict[str, Any]:
    return server.graphql(_RUN, {"runId": run_id})["runOrError"]


def backfill_runs(server: Webserver, backfill_id: str) -> list[dict[str, Any]]:
    flt = {"tags": [{"key": "dagster/backfill", "value": backfill_id}]}
    return server.graphql(_RUNS, {"filter": flt})["runsOrError"]["results"]


def step_failures(server: Webserver, run_id: str) -> list[str]:
    events = server.graphql(_STEP_FAILURES, {"runId": run_id})["logsForRun"]["events"]
    return [e["error"]["message"] for e in events if e["__typename"] == "ExecutionStepFailureEvent"]


_CHECK_EXECUTIONS = """
query AssetCheckExecutions($assetKey: AssetKeyInput!, $checkName: String!, $limit: Int!) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, limit: $limit) {
    runId status
    evaluation { success severity description targetMaterialization { runId } }
  }
}"""
_ASSET_CHECKS = """
query AssetChecks($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks { name description } } } }
  }
}"""


def check_names(server: Webserver, asset: str) -> list[str]:
    """The checks the asset's Checks tab lists."""
    node = server.graphql(_ASSET_CHECKS, {"assetKey": {"path": [asset]}})["assetNodeOrError"]
    return [c["name"] for c in node["assetChecksOrError"]["checks"]]


def check_executions(server: Webserver, asset: str, check_name: str, limit: int = 20) -> list[dict[str, Any]]:
    """The latest executions of one asset check, newest first, as the Checks tab shows them."""
    variables = {"assetKey": {"path": [asset]}, "checkName": check_name, "limit": limit}
    return server.graphql(_CHECK_EXECUTIONS, variables)["assetCheckExecutions"]


def checks_of_run(server: Webserver, asset: str, run_id: str) -> dict[str, dict[str, Any]]:
    """Check name -> its execution in ``run_id`` (absent when the run did not evaluate it)."""
    found = {}
    for name in check_names(server, asset):
        for execution in check_executions(server, asset, name):
            if execution["runId"] == run_id:
                found[name] = execution
    return found
