"""finetune.piigate: the exact pre-checks in front of Presidio's phone and IP recognizers.

Each gate must hold for every match the recognizer it guards can find: on the real oasst1 texts, on the
planted PII of ``tests/test_pii.py`` and on generated phone-like and IP-like strings, the gated
recognizers return exactly what Presidio's own return, and no text a pattern recognizer matches is
dropped by the Arrow pre-filter.
"""

from __future__ import annotations

import ipaddress
import random
import re

import phonenumbers
import pyarrow as pa
import pytest
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IpRecognizer,
    PhoneRecognizer,
)

from finetune.pii import PiiRedactor
from finetune.piigate import (
    CARD_GATE,
    IP_GATE,
    GatedCreditCardRecognizer,
    GatedIpRecognizer,
    GatedPhoneRecognizer,
    arrow_candidates,
    arrow_phone_hits,
    min_digits,
    phone_gate,
)
from tests.test_pii import PLANTED, _oasst1_texts

REGIONS = PhoneRecognizer.DEFAULT_SUPPORTED_REGIONS


def _key(results) -> list[tuple]:
    return [(r.entity_type, r.start, r.end, r.score) for r in results]


@pytest.fixture(scope="module")
def texts(data_dir) -> list[str]:
    """Real oasst1 texts holding a digit, ``@`` or ``:``, plus the planted PII in its carrier phrases."""
    real = [t for t in _oasst1_texts(data_dir) if re.search(r"[\d@:]", t)]
    return real + [phrase.format(value) for _, value, phrase in PLANTED]


def _phone_like(rng: random.Random) -> str:
    parts = list("0123456789") * 6 + list("-x.()/ +X#,\t~") + ["ext", "ext.", " x", "int", "(0)", "+49", "+1",
                                                               "00", "0", "+x", "xx", "a", "e", "t", "\n"]
    body = "".join(rng.choice(parts) for _ in range(rng.randint(1, 16)))
    return rng.choice(["", "call ", "Tel: ", "abc ", "1999 "]) + body + rng.choice(["", " now", ".", "x", "%"])


def test_gated_phone_recognizer_returns_what_presidio_returns(texts):
    plain, gated = PhoneRecognizer(), GatedPhoneRecognizer()
    found = 0
    for text in texts:
        expected = _key(plain.analyze(text, ["PHONE_NUMBER"]))
        assert _key(gated.analyze(text, ["PHONE_NUMBER"])) == expected, text
        found += bool(expected)
    assert found >= 7  # the planted numbers at least: the comparison covers real matches


def test_phone_gate_finds_what_its_unfactored_form_finds(texts):
    """phone_gate takes the alternatives' first digit out in front: the spans found are those of the plain
    alternation of the module doc (a run of k digits, or a digit and an x or extension word)."""
    from phonenumbers.phonenumberutil import _VALID_PUNCTUATION

    rng = random.Random(7)
    sample = texts + [_phone_like(rng) for _ in range(3000)]
    punct = f"[{_VALID_PUNCTUATION}]"
    for k in (4, 6):
        plain = re.compile(rf"\d(?:{punct}{{0,4}}\d){{{k - 1},}}|\d{punct}{{0,4}}x|"
                           r"\d[ \u00a0\t,\-]*(?:;ext=|e?xt|x|ｅ?ｘｔ|int|ｉｎｔ|anexo|доб)", re.IGNORECASE)
        spans = [[m.span() for m in phone_gate(k).finditer(t)] for t in sample]
        assert spans == [[m.span() for m in plain.finditer(t)] for t in sample]
        assert sum(map(bool, spans)) > 1000


def _unusual(rng: random.Random) -> str:
    """Phone-like strings with characters where Python's and RE2's matching could part: Unicode digits
    (full-width, Arabic-Indic, Devanagari), letters that match case-insensitively only through Unicode folding
    (dotted/dotless i, long s, Kelvin sign), Cyrillic and full-width extension words, NUL, emoji."""
    parts = list("0123456789 -.x") + ["０１２", "٣٤٥", "६७८", "İnt", "ınt", "INT", "ſ", "\u212a", "ДОБ", "доб", "ｅｘｔ",
                                       "ＥＸＴ", "ｉｎｔ", "anexo", "ANEXO", "\x00", "\u00a0", "\u2010", "－", "😀", "\n"]
    return "".join(rng.choice(parts) for _ in range(rng.randint(1, 24)))


def test_arrow_phone_hits_are_the_python_gates_hits(texts):
    """RE2 over the whole array (Arrow) finds, per text, the spans Python's ``finditer`` of the phone gate
    finds: on the real texts, 3,000 phone-like strings and 3,000 with Unicode digits, case-folding letters
    and NULs (code-point offsets, also after multi-byte characters)."""
    rng = random.Random(11)
    sample = texts + [_phone_like(rng) for _ in range(3000)] + [_unusual(rng) for _ in range(3000)]
    for k in (4, 6):
        expected = [[m.span() for m in phone_gate(k).finditer(t)] for t in sample]
        assert arrow_phone_hits(pa.array(sample, pa.string()), k) == expected
        assert sum(map(bool, expected)) > 1500
    assert arrow_phone_hits(pa.array([], pa.string()), 4) == []


def test_prescanned_phone_hits_change_no_result(texts):
    """A phone recognizer given the hits of all texts at once (``PiiRedactor.prescan``) returns what
    Presidio's returns, and a redactor finds the same with and without it."""
    rng = random.Random(5)
    sample = texts + [_phone_like(rng) for _ in range(500)] + [_unusual(rng) for _ in range(500)]
    plain, gated = PhoneRecognizer(), GatedPhoneRecognizer()
    gated.scan(pa.array(sample, pa.string()))
    assert [_key(gated.analyze(t, ["PHONE_NUMBER"])) for t in sample] \
        == [_key(plain.analyze(t, ["PHONE_NUMBER"])) for t in sample]
    redactor = PiiRedactor(entities=["PHONE_NUMBER", "EMAIL_ADDRESS"])
    without = redactor.redact_found(sample)
    redactor.prescan(pa.array(sample, pa.string()))
    assert redactor.redact_found(sample) == without and len(without) >= 7
    redactor.prescan(None)


def test_phone_gate_holds_for_every_number_the_matcher_finds():
    """On generated phone-like strings (some of several lines), every region's matcher finds something only
    where that region's gate does, and the gated recognizer returns what Presidio's does; the bound is
    tight for DE (a 4-digit number)."""
    rng = random.Random(0)
    plain, gated = PhoneRecognizer(), GatedPhoneRecognizer()
    matched = 0
    for i in range(6000):
        text = _phone_like(rng)
        if i % 3 == 0:  # several lines: the gated recognizer matches line by line
            text += "\n" + _phone_like(rng) + "\n\n" + _phone_like(rng)
        if i < 2000:
            assert _key(gated.analyze(text, ["PHONE_NUMBER"])) == _key(plain.analyze(text, ["PHONE_NUMBER"])), text
        for region in REGIONS:
            if next(iter(phonenumbers.PhoneNumberMatcher(text, region, leniency=1)), None) is not None:
                matched += 1
                assert phone_gate(min_digits(region)).search(text), (region, text)
    assert matched > 100
    assert next(iter(phonenumbers.PhoneNumberMatcher("born in 1699", "DE", leniency=1)), None) is not None
    assert min_digits("DE") == 4 and not phone_gate(5).search("born in 1699")
    assert all(min_digits(r) >= min_digits("DE") for r in REGIONS)
    with pytest.raises(ValueError):
        min_digits("ZZ")


def test_gated_ip_recognizer_returns_what_presidio_returns(texts):
    rng = random.Random(1)
    made = []
    for _ in range(300):
        v4 = ipaddress.IPv4Address(rng.getrandbits(32))
        v6 = ipaddress.IPv6Address(rng.getrandbits(128) & ~((1 << rng.randint(0, 96)) - 1))
        made += [f"host {v4} up", f"from {v6.compressed}.", f"at {v6.exploded}", f"cidr {v4}/24", f"::ffff:{v4}"]
    plain, gated = IpRecognizer(), GatedIpRecognizer()
    found = 0
    for text in texts + made:
        expected = _key(plain.analyze(text, ["IP_ADDRESS"]))
        assert _key(gated.analyze(text, ["IP_ADDRESS"])) == expected, text
        assert not expected or IP_GATE.search(text)
        found += bool(expected)
    assert found > 1000


def test_gated_card_and_email_recognizers_return_what_presidio_returns(texts):
    rng = random.Random(2)
    made = []
    for _ in range(400):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(12, 19)))
        groups = [digits[i:i + 4] for i in range(0, len(digits), 4)]
        made += [f"card {rng.choice(['', '-', ' ']).join(groups)} ok", f"pay {digits}", f"mail x{digits[:5]}@ex.com"]
    card, gated_card = CreditCardRecognizer(), GatedCreditCardRecognizer()
    # the redactor's offline e-mail recognizer, with and without its "@" gate (EmailRecognizer.analyze is
    # Presidio's own, still validating domains offline)
    offline_email = next(r for r in PiiRedactor(entities=["EMAIL_ADDRESS"])._pattern_recognizers)
    found = 0
    for text in texts + made:
        expected = _key(card.analyze(text, ["CREDIT_CARD"]))
        assert _key(gated_card.analyze(text, ["CREDIT_CARD"])) == expected, text
        assert not expected or CARD_GATE.search(text)
        found += bool(expected)
        assert (_key(offline_email.analyze(text, ["EMAIL_ADDRESS"]))
                == _key(EmailRecognizer.analyze(offline_email, text, ["EMAIL_ADDRESS"])))
    assert found > 20


def test_arrow_prefilter_keeps_every_text_a_pattern_recognizer_matches(texts, data_dir):
    everything = _oasst1_texts(data_dir)[:3000] + texts + ["plain words only", "ünïcode ４２ digits", "a@b"]
    mask = arrow_candidates(pa.array(everything, pa.string())).to_pylist()
    recognizers = [EmailRecognizer(), PhoneRecognizer(), CreditCardRecognizer(), IpRecognizer()]
    for text, candidate in zip(everything, mask):
        if not candidate:
            assert not any(r.analyze(text, r.supported_entities) for r in recognizers), text
    assert mask.count(False) > 500  # it does skip texts
    assert mask[-2:] == [True, True]


def test_arrow_prefilter_per_entity_keeps_what_its_recognizer_matches(texts, data_dir):
    """Asked for one entity, the RE2 pre-filter drops only texts that entity's recognizer finds nothing in
    (real texts, generated phone-like strings, and the case-folding corners of the gates)."""
    rng = random.Random(3)
    corners = ["call 1699 now", "1 2 3", "12-34", "tel 123 ext 4", "4X5", "2ｘｔ", "5 доб 7", "ab::", "F:a",
               "1.22.3", "١٢٣٤٥٦٧", "card 4111-111", "x@y"]
    everything = _oasst1_texts(data_dir)[:2000] + texts + corners + [_phone_like(rng) for _ in range(3000)]
    recognizers = {"EMAIL_ADDRESS": next(r for r in PiiRedactor(entities=["EMAIL_ADDRESS"])._pattern_recognizers),
                   "PHONE_NUMBER": PhoneRecognizer(), "CREDIT_CARD": CreditCardRecognizer(),
                   "IP_ADDRESS": IpRecognizer()}
    for entity, recognizer in recognizers.items():
        mask = arrow_candidates(pa.array(everything, pa.string()), [entity]).to_pylist()
        for text, candidate in zip(everything, mask):
            if not candidate:
                assert not recognizer.analyze(text, [entity]), (entity, text)
        assert mask.count(False) > 1000, entity  # it does skip texts
    with pytest.raises(ValueError):
        arrow_candidates(pa.array(["x"]), ["PERSON"])


def test_arrow_ip_gate_needs_no_case_folding_beyond_ascii():
    """The RE2 form of :data:`IP_GATE` lists A-F beside a-f; Python's case-insensitive class matches no other
    character (checked over every code point)."""
    hex_class = re.compile(r"[0-9a-f]", re.IGNORECASE)
    assert [c for c in map(chr, range(0x80, 0x110000)) if hex_class.match(c)] == []


def test_phone_verdicts_are_remembered_and_change_nothing(texts):
    """The gated recognizer remembers whether a candidate can be a valid number per region; a second pass
    over the same texts answers from memory and gives the same results as Presidio's own recognizer."""
    plain, gated = PhoneRecognizer(), GatedPhoneRecognizer()
    first = [_key(gated.analyze(t, ["PHONE_NUMBER"])) for t in texts]
    remembered = len(gated._verdicts)
    second = [_key(gated.analyze(t, ["PHONE_NUMBER"])) for t in texts]
    assert first == second == [_key(plain.analyze(t, ["PHONE_NUMBER"])) for t in texts]
    assert remembered > 100 and len(gated._verdicts) == remembered


def test_context_free_shortcut_gives_the_analyzers_output(texts):
    """Without PERSON, texts whose pattern results are all above the threshold and apart skip spaCy and the
    analyzer; the redacted texts and the report equal those of the full Presidio path on every text."""
    extra = ["call 0171 2345678 or 0171-2345678", "ip ::1 and :: here, address :: ip",
             "fe80::1 and 10.0.0.1/24, phone 212-555-0147 212-555-0147", "a@b.com4111 1111 1111 1111"]
    redactor = PiiRedactor(entities=["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IP_ADDRESS"])
    fast, fast_report = redactor.redact_many(texts + extra)
    shortcuts = sum(bool(r) and redactor._context_free(r) for r in map(redactor._pattern_results, texts))
    redactor._context_free = lambda results: False  # every text with a match through spaCy and the analyzer
    redactor._context_triggers = {}  # (and no result dropped before it)
    full, full_report = redactor.redact_many(texts + extra)
    assert fast == full and fast_report == full_report
    assert shortcuts >= 15 and full_report.texts_changed >= 15  # the planted PII at least


def test_results_context_cannot_raise_are_dropped_before_the_analyzer(texts):
    """IpRecognizer scores a bare ``::`` 0.1, below the threshold unless a context word ("ip", "ipv4", "ipv6")
    is among the lemmas of the 5 words before it. Where no trigger of those words is in the text, the result
    is dropped without running spaCy (ASCII art, Haskell type signatures); where one is (the word itself, or en_core_web_sm's
    exception ``comics`` -> ``comic_strip``), the analyzer runs; the output is the full path's on every text."""
    from finetune.pii import context_triggers

    redactor = PiiRedactor(entities=["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IP_ADDRESS"])
    nlp = redactor._nlp_engine.nlp["en"]
    assert context_triggers(nlp, ["ip"]) == ("ip", "comics")
    assert context_triggers(nlp, []) == ()
    art = [t for t in texts if "::" in t][:40]
    extra = ["   ..::::::''\n  `-._ | _.-'  .::.", "map :: (a -> b) -> [a] -> [b]",
             "the ip is :: for now", "I collect comics :: and more", "my comics: ::", "Call 212-555-0147 :: ok",
             "COMICS ::", "IPv6 ::"]
    analyzed: list[int] = []
    run = redactor._analyze

    def counting(indices, *args, **kwargs):
        analyzed.extend(indices)
        return run(indices, *args, **kwargs)

    redactor._analyze = counting
    fast, fast_report = redactor.redact_many(art + extra)
    redactor._analyze = run
    spared = [t for t in extra[:2] if redactor._pattern_results(t)]
    assert len(spared) == 2 and not {len(art), len(art) + 1} & set(analyzed)  # matched, yet no spaCy
    assert {len(art) + 2, len(art) + 3} <= set(analyzed)
    redactor._context_triggers = {}
    full, full_report = redactor.redact_many(art + extra)
    assert fast == full and fast_report == full_report
    assert "<IP_ADDRESS>" in full[len(art) + 2] and "<IP_ADDRESS>" in full[len(art) + 3]  # raised by context
    assert full[len(art)] == extra[0] and full[len(art) + 1] == extra[1]


def test_one_dry_run_stands_for_the_regions_that_find_nothing(texts):
    """The regions' matchers run only on the pieces where a candidate of the shared dry run can be a valid
    number for that region: on the real texts most of the pieces a gate lets through are skipped, and
    (test above) the results are still Presidio's."""
    gated = GatedPhoneRecognizer()
    pieces = live = 0
    for text in texts:
        tried: dict[str, list[str]] = {}
        for region, region_pieces in gated._pieces(text).items():
            pieces += len(region_pieces)
            live += len(gated._live(region_pieces, region, tried))
    assert pieces > 500 and 0 < live < pieces / 4, (live, pieces)  # 52 of 671 here
