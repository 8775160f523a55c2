"""The package's own unit tests: what needs no server."""

import time

import grpc
import pytest

from contact_client import PermanentFailure, Retry, TaskInfo
from contact_client._connection import Connection, target
from contact_client.producer import _request, status_code


@pytest.mark.parametrize(
    "address, expected",
    [
        ("127.0.0.1:50051", ("127.0.0.1:50051", False)),
        ("http://127.0.0.1:1234/", ("127.0.0.1:1234", False)),
        ("https://tasks.example:443", ("tasks.example:443", True)),
        ("localhost", ("localhost:50051", False)),
        ("[::1]", ("[::1]:50051", False)),
        ("[::1]:7", ("[::1]:7", False)),
    ],
)
def test_addresses_take_every_form(address, expected):
    assert target(address) == expected


def test_the_token_is_sent_as_a_bearer():
    assert Connection("a:1", token="ct_x").metadata() == [("authorization", "Bearer ct_x")]
    assert Connection("a:1").metadata() == []


def test_requests_carry_every_option():
    before = time.time()
    request = _request(
        "t", queue="q", payload=b"p", priority=2, delay=10, ttl=1.5, idempotency_key="k", lease=3
    )
    assert (request.text, request.queue, request.payload, request.priority) == ("t", "q", b"p", 2)
    assert request.not_before_unix_ms >= int((before + 10) * 1000)
    assert (request.ttl_ms, request.lease_ms, request.idempotency_key) == (1500, 3000, "k")
    assert _request("t").not_before_unix_ms == 0


def test_status_codes_map_back():
    assert status_code(5) == grpc.StatusCode.NOT_FOUND
    assert status_code(999) == grpc.StatusCode.UNKNOWN


def test_handler_exceptions_say_what_they_mean():
    retry = Retry(after=2.5, reason="busy")
    assert (retry.after, retry.reason) == (2.5, "busy")
    assert Retry().after is None
    assert str(PermanentFailure("no")) == "no"


def test_finished_states():
    def info(state):
        return TaskInfo("id", state, "q", "", 1, "", "", "", b"", "")

    assert [info(s).finished for s in ("pending", "delivered", "done", "dead_lettered", "cancelled")] == [
        False,
        False,
        True,
        True,
        True,
    ]


def test_handler_threads_default_to_the_credit_up_to_two():
    from contact_client import Worker

    assert Worker(credit=1).threads == 1
    assert Worker(credit=64).threads == 2
    assert Worker(credit=64, threads=16).threads == 16
    with pytest.raises(ValueError):
        Worker(credit=4, threads=0)
    with pytest.raises(ValueError):
        Worker(credit=0)


def test_outcomes_a_handler_hands_over_are_always_sendable():
    from contact_client import _outcome
    from contact_client._proto import contact_pb2 as pb

    for after, expected in [(1.5, 1500), (-3, 0), (float("nan"), 0)]:
        assert _outcome.milliseconds(after) == expected
    huge = pb.Result(retry_after_ms=_outcome.milliseconds(float("inf")))
    assert huge.retry_after_ms == _outcome.milliseconds(1e30) == 2**64 - 1
    surrogate = "bad \udcff byte"
    assert pb.Result(error=_outcome.text(surrogate)).error == "bad ? byte"
    assert _outcome.failure(SystemExit(3)) == "SystemExit: 3"
