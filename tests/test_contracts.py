"""The v1 JSON Schema contracts accept every kind of valid event and reject bad ones with a reason."""

import json

import pytest

from feedback import contracts
from feedback.config import MAX_EVENT_BYTES
from feedback.errors import ContractError


def event(event_type, body, **env):
    return {**contracts.build_event(event_type, body, project="p", source="test", event_id="e-1",
                                    occurred_at="2023-04-01T10:00:00+02:00"), **env}


INTERACTION = {"conversation_id": "c1", "message_id": "m1", "prompt": [{"role": "user", "content": "hi"}],
               "response": "hello", "model": "m", "tokens_in": 1, "tokens_out": 1, "latency_ms": 12.5, "cost_usd": 0.0001}
FEEDBACK = {
    "thumb": {"kind": "thumb", "thumb": "down"},
    "rating": {"kind": "rating", "rating": {"value": 4, "scale_min": 1, "scale_max": 5, "name": "overall"}},
    "category": {"kind": "category", "category": "wrong_answer"},
    "comment": {"kind": "comment", "comment": "too long"},
    "correction": {"kind": "correction", "correction": "better answer"},
    "preference": {"kind": "preference", "preference": {"chosen_message_id": "m1", "rejected_message_id": "m2", "strength": 0.5, "tie": False}},
}


def test_valid_events_of_every_type_and_kind_pass():
    contracts.validate(event("interaction", INTERACTION))
    contracts.validate(event("metric", {"message_id": "m1", "name": "retrieval_latency_ms", "value": 31.0}))
    for body in FEEDBACK.values():
        contracts.validate(event("feedback", {"conversation_id": "c1", "message_id": "m1", "source": "end_user", **body}))


@pytest.mark.parametrize("kind", list(FEEDBACK))
def test_feedback_kind_without_its_payload_is_rejected(kind):
    with pytest.raises(ContractError) as err:
        contracts.validate(event("feedback", {"conversation_id": "c1", "message_id": "m1", "source": "end_user", "kind": kind}))
    assert err.value.reason_code == "schema_invalid"
    assert "required" in err.value.detail


@pytest.mark.parametrize("mutate, code", [
    (lambda e: e.pop("event_id"), "schema_invalid"),
    (lambda e: e.update(schema_version="2.0"), "unsupported_version"),
    (lambda e: e.update(occurred_at="2023-04-01 10:00:00"), "schema_invalid"),
    (lambda e: e.update(occurred_at="2023-02-30T10:00:00Z"), "schema_invalid"),
    (lambda e: e.update(event_type="click"), "schema_invalid"),
    (lambda e: e["body"].update(tokens_in=-1), "schema_invalid"),
    (lambda e: e["body"].update(latency_ms="fast"), "schema_invalid"),
    (lambda e: e["body"].pop("model"), "schema_invalid"),
    (lambda e: e["body"]["prompt"].append({"role": "robot", "content": "x"}), "schema_invalid"),
])
def test_invalid_events_are_rejected_with_a_reason_code(mutate, code):
    e = event("interaction", json.loads(json.dumps(INTERACTION)))
    mutate(e)
    with pytest.raises(ContractError) as err:
        contracts.validate(e)
    assert err.value.reason_code == code


def test_error_detail_names_the_path_not_the_value():
    e = event("interaction", {**INTERACTION, "tokens_in": "secret user text"})
    with pytest.raises(ContractError) as err:
        contracts.validate(e)
    assert "data.body.tokens_in" in err.value.detail
    assert "secret" not in str(err.value)


def test_decode_rejects_oversized_undecodable_and_non_objects():
    big = contracts.encode(event("feedback", {"conversation_id": "c", "kind": "comment", "source": "end_user",
                                              "comment": "x" * MAX_EVENT_BYTES}))
    for raw, code in [(big, "oversized"), (b"\xff\xfe{", "undecodable"), (b"{not json", "undecodable"),
                      (None, "undecodable"), (b"[1,2]", "schema_invalid")]:
        with pytest.raises(ContractError) as err:
            contracts.decode(raw)
        assert err.value.reason_code == code


def test_occurred_at_is_normalised_to_utc():
    assert contracts.parse_occurred_at("2023-04-01T10:00:00+02:00").isoformat() == "2023-04-01T08:00:00+00:00"


def test_stable_ids_are_deterministic_and_distinct():
    assert contracts.stable_event_id("oasst1", "m1", "thumb") == contracts.stable_event_id("oasst1", "m1", "thumb")
    assert contracts.stable_event_id("oasst1", "m1", "thumb") != contracts.stable_event_id("oasst1", "m1", "rating")


def test_sample_files_in_data_are_valid_and_invalid_as_labelled():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "data"
    for line in (root / "sample_events.jsonl").read_text().splitlines():
        contracts.validate(json.loads(line))
    for line in (root / "invalid_events.jsonl").read_text().splitlines():
        with pytest.raises(ContractError):
            contracts.validate(json.loads(line)["event"])
