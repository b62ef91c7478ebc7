"""What the CodeBuild and Batch backends share (``controller.plumbing.awsbackend``): SDK failures
become the backend being unavailable under the service's name, the reconciliation counts come from
the process's tally, and closing the backend closes its client. No AWS calls: a stand-in client."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from controller.core.domain import Path
from controller.core.errors import BackendUnavailableError
from controller.core.ports import ReconcileCounts
from controller.plumbing.aws import Backoff, Retrier
from controller.plumbing.awsbackend import AwsBackend
from controller.plumbing.tally import ReconcileTally
from legacy_adapter.codebuild import CodeBuildBackend
from new_adapter.batch import BatchBackend


class Client:
    closed = 0

    def close(self) -> None:
        self.closed += 1


class Shared(AwsBackend):
    path = Path.NEW
    service = "Batch"


def throttled() -> ClientError:
    return ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "ListJobs")


def test_both_adapters_share_it_under_their_service_names() -> None:
    assert issubclass(CodeBuildBackend, AwsBackend)
    assert issubclass(BatchBackend, AwsBackend)
    assert (CodeBuildBackend.service, BatchBackend.service) == ("CodeBuild", "Batch")


def test_an_sdk_failure_is_the_backend_unavailable_naming_the_service_and_the_call() -> None:
    backend = Shared(Client(), retrier=None, tally=None)
    listing = pytest.raises(
        BackendUnavailableError, match=r"^Batch ListJobs: ThrottlingException: Rate exceeded$"
    )
    with listing, backend._unknown("ListJobs"):
        raise throttled()
    describing = pytest.raises(BackendUnavailableError, match=r"^Batch DescribeJobs: EndpointConnectionError")
    with describing, backend._unknown("DescribeJobs"):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    # not an SDK failure: the caller's own bug, left as it is
    with pytest.raises(KeyError), backend._unknown("DescribeJobs"):
        raise KeyError("jobId")


def test_a_read_is_retried_while_it_fails_transiently() -> None:
    waits: list[float] = []
    retrier = Retrier(backoff=Backoff(attempts=3), sleep=waits.append)
    backend = Shared(Client(), retrier=retrier, tally=None)
    answers = iter([throttled(), throttled(), "answer"])

    def call() -> str:
        answer = next(answers)
        if isinstance(answer, ClientError):
            raise answer
        return answer

    assert backend._read(call) == "answer"
    assert len(waits) == 2


def test_reconciliation_counts_come_from_the_tally_of_its_own_path() -> None:
    assert Shared(Client(), retrier=None, tally=None).reconcile_counts() == {"duplicates": 0, "orphans": 0}
    tally = ReconcileTally()
    tally.add(Path.NEW, "orphans", {"a", "b"})
    tally.add(Path.LEGACY, "duplicates", {"c"})
    backend = Shared(Client(), retrier=None, tally=tally)
    assert isinstance(backend, ReconcileCounts)
    assert backend.reconcile_counts() == {"duplicates": 0, "orphans": 2}


def test_slots_in_use_start_at_zero_and_closing_closes_the_client() -> None:
    client = Client()
    backend = Shared(client, retrier=None, tally=None)
    assert backend.in_use() == 0
    backend.close()
    assert client.closed == 1
