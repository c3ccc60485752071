"""Exact pre-checks ("gates") that let PII redaction skip Presidio's slow recognizers on texts they cannot match.

A gate is a cheap regular expression that every match of a recognizer must contain: a text the gate does
not find cannot give that recognizer a result, so skipping the recognizer there changes no output. Each
gate below is derived from the recognizer's own patterns (Presidio 2.2.366, python-phonenumbers 9.x) and
checked against them in ``tests/test_pii.py`` (real texts, and generated phone-like strings).

**Phone numbers** (:class:`GatedPhoneRecognizer`). Presidio's ``PhoneRecognizer`` runs
``phonenumbers.PhoneNumberMatcher(text, region, leniency=VALID)`` for 8 regions, the costliest step of
redaction (~1,000 texts/s for texts with a digit). A match is a substring of a candidate found by the
matcher's ``_PATTERN``: digit blocks joined by at most 4 of ``_VALID_PUNCTUATION`` (which holds ``x``,
matched case-insensitively), possibly led by ``+``/brackets and followed by an extension (``ext``, ``x``,
``#``, ``int``, ...). It must parse to a *valid* number, whose national significant number (NSN) has at
least as many digits as the shortest possible length of some number type of its region. The NSN's digits
come from the candidate:

* if the candidate has 3 or more ASCII letters, letters become digits (vanity numbers). Letters in a
  candidate are ``x`` among the punctuation or an extension word, both after a digit (the second branch
  of :func:`phone_gate`), or ``x`` before the first digit: the parser drops those unless the text starts
  with ``+``, and then 3 or more of them give the country code 999, which is unassigned;
* otherwise the NSN digits are digits of the candidate's main part (an extension is stripped, or the
  number is not viable), i.e. of one run of digits joined by at most 4 punctuation characters, minus any
  country code, international or national prefix. So a run of at least ``K`` digits is needed, where
  ``K`` is the region's shortest national length, or the shortest country code + national length of any
  region for numbers written with ``+`` or an international prefix (:func:`min_digits`): 4 for DE (e.g.
  Presidio reads the years 1640-1699 as German numbers), 6 for the other default regions.

A region whose gate fails yields no match and is skipped; results of the others come in the same order,
so :meth:`GatedPhoneRecognizer.analyze` returns what ``PhoneRecognizer.analyze`` returns.

**IP addresses** (:data:`IP_GATE`). Every IPv4 pattern of ``IpRecognizer`` contains a dotted quad, so a
digit, a dot, 1-3 digits, a dot and a digit; every IPv6 pattern contains ``::`` or a hex digit, a colon
and a hex digit.

**Texts with none of the characters** (:func:`arrow_candidates`): the pattern recognizers need a digit,
``@`` or ``:``; a pure-ASCII text without any of ``0-9 @ :`` is skipped without reaching Python.
"""

from __future__ import annotations

import functools
import re
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["GatedPhoneRecognizer", "GatedIpRecognizer", "IP_GATE", "min_digits", "phone_gate", "arrow_candidates"]

IP_GATE = re.compile(r"[0-9]\.[0-9]{1,3}\.[0-9]|::|[0-9a-f]:[0-9a-f]", re.IGNORECASE)
"""Found in every text ``IpRecognizer`` has a match in (see the module doc)."""

_NUMBER_TYPES = ("fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "personal_number", "voip",
                 "pager", "uan", "voicemail")


def _national_min(region: str | int) -> int | None:
    """Shortest possible NSN length of any number type of ``region`` (a region code, or the country code
    of a non-geographic entity such as 800), None when it has none."""
    from phonenumbers import PhoneMetadata

    meta = (PhoneMetadata.metadata_for_nongeo_region(region) if isinstance(region, int)
            else PhoneMetadata.metadata_for_region(region))
    if meta is None:
        return None
    lengths = [n for t in _NUMBER_TYPES if getattr(meta, t) is not None
               for n in (getattr(meta, t).possible_length or ()) if n > 0]
    lengths += [n for n in (meta.general_desc.possible_length or ()) if n > 0]
    return min(lengths) if lengths else None


@functools.lru_cache(maxsize=None)
def min_digits(region: str) -> int:
    """Fewest digits a valid number found with ``region`` as the preferred region can have: the region's
    shortest national length, or, written internationally, the shortest country code + national length
    of any region (python-phonenumbers' metadata). Raises ``ValueError`` for an unknown region."""
    from phonenumbers.phonenumberutil import (
        COUNTRY_CODES_FOR_NON_GEO_REGIONS,
        SUPPORTED_REGIONS,
        country_code_for_region,
    )

    national = _national_min(region)
    if national is None:
        raise ValueError(f"unknown phone region {region!r}")
    codes = [(country_code_for_region(r), r) for r in SUPPORTED_REGIONS]
    codes += [(cc, cc) for cc in COUNTRY_CODES_FOR_NON_GEO_REGIONS]
    international = min(len(str(cc)) + n for cc, r in codes if (n := _national_min(r)) is not None)
    return min(national, international)


@functools.lru_cache(maxsize=None)
def phone_gate(k: int) -> re.Pattern:
    """A run of at least ``k`` digits joined by at most 4 of python-phonenumbers' punctuation characters,
    or a digit followed by an ``x`` or an extension word (see the module doc). Case-insensitive, Unicode
    digits, like the matcher."""
    from phonenumbers.phonenumberutil import _VALID_PUNCTUATION

    punct = f"[{_VALID_PUNCTUATION}]"
    run = rf"\d(?:{punct}{{0,4}}\d){{{k - 1},}}"
    alpha = (rf"\d{punct}{{0,4}}x|\d[ \u00a0\t,\-]*(?:;ext=|e?xt|x|ｅ?ｘｔ|int|ｉｎｔ|anexo|доб)")
    return re.compile(f"{run}|{alpha}", re.IGNORECASE | re.UNICODE)


@functools.lru_cache(maxsize=1)
def _gated_phone_class():
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    class _Gated(PhoneRecognizer):
        def analyze(self, text, entities, nlp_artifacts=None):
            # a run of k digits holds a run of any fewer: test the smallest k first, each k once
            passed: dict[int, bool] = {}
            for k in sorted({min_digits(r) for r in self.supported_regions}):
                passed[k] = bool(phone_gate(k).search(text)) if not passed or all(passed.values()) else False
            regions = [r for r in self.supported_regions if passed[min_digits(r)]]
            if not regions:
                return []
            if len(regions) == len(self.supported_regions):
                return super().analyze(text, entities, nlp_artifacts)
            full = self.supported_regions
            try:  # the skipped regions have no match: the same results in the same order
                self.supported_regions = regions
                return super().analyze(text, entities, nlp_artifacts)
            finally:
                self.supported_regions = full

    _Gated.__name__ = _Gated.__qualname__ = "GatedPhoneRecognizer"
    return _Gated


def GatedPhoneRecognizer(**kwargs):  # noqa: N802 - builds a Presidio recognizer (a class made on first use)
    """Presidio's ``PhoneRecognizer`` (same arguments, same results) that runs a region's matcher only on
    texts where :func:`phone_gate` for :func:`min_digits` of the region finds something. The class is made
    on first call so that importing this module does not import Presidio."""
    return _gated_phone_class()(**kwargs)


@functools.lru_cache(maxsize=1)
def _gated_ip_class():
    from presidio_analyzer.predefined_recognizers import IpRecognizer

    class _Gated(IpRecognizer):
        def analyze(self, text, entities, nlp_artifacts=None, regex_flags=None):
            if not IP_GATE.search(text):
                return []
            return super().analyze(text, entities, nlp_artifacts, regex_flags)

    _Gated.__name__ = _Gated.__qualname__ = "GatedIpRecognizer"
    return _Gated


def GatedIpRecognizer(**kwargs):  # noqa: N802 - builds a Presidio recognizer (a class made on first use)
    """Presidio's ``IpRecognizer`` (same arguments, same results) that returns no result at once for a text
    without :data:`IP_GATE` (about 9x faster on texts holding a digit or a colon)."""
    return _gated_ip_class()(**kwargs)


_ARROW_GATE = "[0-9@:]|[^\\x00-\\x7f]"


def arrow_candidates(texts: pa.Array) -> pa.Array:
    """Boolean mask over a string array: False where a text is pure ASCII without a digit, ``@`` or ``:``
    (no pattern recognizer can match it), True otherwise; False for nulls. Arrow's RE2 runs over the
    whole array (no Python per text); any non-ASCII text stays a candidate, so Unicode digits are never
    missed."""
    if not len(texts):
        return pa.array([], pa.bool_())
    return pc.fill_null(pc.match_substring_regex(texts, _ARROW_GATE), False)
