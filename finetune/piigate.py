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

The matcher also remembers, per region and candidate string, whether the candidate alone parses to a
valid number (:func:`_verdict_matcher_class`; the same years and counts recur across texts): a candidate
that cannot be valid alone cannot be valid inside a text, so its parse is skipped there. The region enters
the matcher only through that parse, so one *dry run* of the matcher on a piece (every parse answered
"nothing", :func:`_dry_matcher_class`) lists the candidates any region's matcher asks about there for as long
as it finds nothing: a region whose verdict is False for all of them finds nothing in the piece and its
matcher is not run there (the 8 regions' scans of a piece without a number become one).

A region whose gate fails yields no match and is skipped; results of the others come in the same order,
so :meth:`GatedPhoneRecognizer.analyze` returns what ``PhoneRecognizer.analyze`` returns. Within a text,
the matcher runs only on the pieces where the gate is found, a piece running from one :data:`_HARD`
character (newline, or an ASCII letter no candidate can hold) to the next, both kept: no candidate holds
such a character, so the whole text's scan finds exactly the pieces' candidates in the same order; the
matcher's neighbour checks (no Latin letter right before or after a candidate) see the same characters,
or a text end where the piece has none, as the whole text's start and end; and for texts shorter than
:func:`_line_limit` the matcher's budget of tries cannot run out, so the pieces give the matches the whole
text gives.

**IP addresses** (:data:`IP_GATE`). Every IPv4 pattern of ``IpRecognizer`` contains a dotted quad, so a
digit, a dot, 1-3 digits, a dot and a digit; every IPv6 pattern contains ``::`` or a hex digit, a colon
and a hex digit.

**Credit cards** (:data:`CARD_GATE`): the card pattern starts with 4 digits, an optional separator and 3
digits. **E-mail addresses**: an ``@``.

**Texts with none of these** (:func:`arrow_candidates`): a text where none of the requested entities'
gates is found (each in an RE2 form that finds at least what the Python gate finds) is skipped without
reaching Python (Arrow's RE2 over the whole batch).
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["GatedPhoneRecognizer", "GatedIpRecognizer", "GatedCreditCardRecognizer", "CARD_GATE", "IP_GATE", "gated", "min_digits", "phone_gate", "arrow_candidates",
           "PATTERN_ENTITIES"]

IP_GATE = re.compile(r"[0-9]\.[0-9]{1,3}\.[0-9]|::|[0-9a-f]:[0-9a-f]", re.IGNORECASE)
"""Found in every text ``IpRecognizer`` has a match in (see the module doc)."""

_NUMBER_TYPES = ("fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "personal_number", "voip",
                 "pager", "uan", "voicemail")


@functools.lru_cache(maxsize=1)
def _national_mins() -> dict[str | int, int]:
    """Shortest possible NSN length of any number type, per region code and per country code of a
    non-geographic entity such as 800 (python-phonenumbers' metadata); entities without one are left out."""
    from phonenumbers import PhoneMetadata
    from phonenumbers.phonenumberutil import COUNTRY_CODES_FOR_NON_GEO_REGIONS, SUPPORTED_REGIONS

    mins: dict[str | int, int] = {}
    for region in [*SUPPORTED_REGIONS, *COUNTRY_CODES_FOR_NON_GEO_REGIONS]:
        meta = (PhoneMetadata.metadata_for_nongeo_region(region) if isinstance(region, int)
                else PhoneMetadata.metadata_for_region(region))
        if meta is None:
            continue
        lengths = [n for t in _NUMBER_TYPES if getattr(meta, t) is not None
                   for n in (getattr(meta, t).possible_length or ()) if n > 0]
        lengths += [n for n in (meta.general_desc.possible_length or ()) if n > 0]
        if lengths:
            mins[region] = min(lengths)
    return mins


@functools.lru_cache(maxsize=1)
def _international_min() -> int:
    """Fewest digits of a number written internationally: country code + shortest national length, over
    every region and non-geographic entity."""
    from phonenumbers.phonenumberutil import country_code_for_region

    return min(len(str(region if isinstance(region, int) else country_code_for_region(region))) + n
               for region, n in _national_mins().items())


@functools.lru_cache(maxsize=None)
def min_digits(region: str) -> int:
    """Fewest digits a valid number found with ``region`` as the preferred region can have: the region's
    shortest national length, or, written internationally, the shortest country code + national length
    of any region (python-phonenumbers' metadata). Raises ``ValueError`` for an unknown region."""
    national = _national_mins().get(region) if isinstance(region, str) else None
    if national is None:
        raise ValueError(f"unknown phone region {region!r}")
    return min(national, _international_min())


def fewest_digits() -> int:
    """:func:`min_digits` of the region that needs fewest (4 with python-phonenumbers 9.x: DE and others)."""
    return min(min(_national_mins().values()), _international_min())


def _phone_gate_source(k: int, atom) -> str:
    """:func:`phone_gate`'s pattern with each character or class ``c`` of it written as ``atom(c)`` (the
    identity for Python; :func:`_exact_class` for RE2)."""
    from phonenumbers.phonenumberutil import _VALID_PUNCTUATION

    punct, digit, blank = atom(f"[{_VALID_PUNCTUATION}]"), atom(r"\d"), atom(r"[ \u00a0\t,\-]")

    def word(w: str) -> str:
        return "".join(atom(re.escape(c)) for c in w)

    run = rf"(?:{punct}{{0,4}}{digit}){{{k - 1},}}"
    alpha = (rf"{punct}{{0,4}}{atom('x')}|{blank}*(?:{word(';ext=')}|{atom('e')}?{word('xt')}|{atom('x')}|"
             rf"{atom('ｅ')}?{word('ｘｔ')}|{word('int')}|{word('ｉｎｔ')}|{word('anexo')}|{word('доб')})")
    # the alternatives' common first digit taken out: the same matches, found ~1.5x faster (re scans for a digit)
    return rf"{digit}(?:{run}|{alpha})"


_FLAGS = re.IGNORECASE | re.UNICODE


@functools.lru_cache(maxsize=None)
def phone_gate(k: int) -> re.Pattern:
    """A run of at least ``k`` digits joined by at most 4 of python-phonenumbers' punctuation characters,
    or a digit followed by an ``x`` or an extension word (see the module doc). Case-insensitive, Unicode
    digits, like the matcher."""
    return re.compile(_phone_gate_source(k, lambda c: c), _FLAGS)


@functools.lru_cache(maxsize=None)
def _exact_class(atom: str) -> str:
    """An RE2 character class of exactly the code points that Python's ``re`` matches with the one-character
    pattern ``atom`` (a character or a class) case-insensitively (:data:`_FLAGS`): found by matching it
    against every code point (~30 ms an atom)."""
    points = sorted({ord(c) for c in re.findall(atom, _every_code_point(), _FLAGS)})
    ranges: list[list[int]] = []
    for c in points:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return "[" + "".join(rf"\x{{{a:x}}}" + (rf"-\x{{{b:x}}}" if b > a else "") for a, b in ranges) + "]"


@functools.lru_cache(maxsize=1)
def _every_code_point() -> str:
    """Every Unicode code point but the surrogates, in order (4.4 MB, built once per process)."""
    return "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x110000)))


@functools.lru_cache(maxsize=None)
def _re2_phone_gate(k: int) -> str:
    """:func:`phone_gate` for RE2 (Arrow): the same pattern, each character and class spelled out as the exact
    code points Python matches there (:func:`_exact_class`). RE2's leftmost-first matching picks the match a
    backtracking engine picks, so the matches are the same (tested on real texts and generated strings)."""
    return _phone_gate_source(k, _exact_class)


_MARK = "\x00"


def arrow_phone_hits(texts: pa.Array, k: int) -> list[list[tuple[int, int]]]:
    """Per text of ``texts`` (an Arrow string array without nulls), the ``(start, end)`` of each match of
    :func:`phone_gate` ``(k)`` in Python's ``finditer`` order and code-point offsets, found by RE2 over the
    whole array (Arrow: each match wrapped in NUL marks, the marked texts split at them, the pieces' lengths
    summed), ~3x faster than Python's ``re`` text by text. Texts that hold a NUL themselves are scanned by
    Python's ``re``."""
    n = len(texts)
    if not n:
        return []
    marked = pc.replace_substring_regex(texts, _re2_phone_gate(k), _MARK + r"\0" + _MARK)
    pieces = pc.split_pattern(marked, _MARK)  # per text: gap, match, gap, ..., match, gap
    ends = np.cumsum(pc.utf8_length(pieces.flatten()).to_numpy(zero_copy_only=False))
    bounds = pieces.offsets.to_numpy()
    first = np.concatenate(([0], ends))[bounds[:-1]]  # where each text's pieces begin, in `ends`' count
    at = (ends - np.repeat(first, np.diff(bounds))).tolist()  # each piece's end within its text
    own_marks = np.flatnonzero(pc.match_substring(texts, _MARK).to_numpy(zero_copy_only=False)).tolist()
    bounds = bounds.tolist()
    hits = [list(zip(at[bounds[i]:bounds[i + 1] - 1:2], at[bounds[i] + 1:bounds[i + 1]:2])) for i in range(n)]
    for i in own_marks:
        hits[i] = [m.span() for m in phone_gate(k).finditer(texts[i].as_py())]
    return hits


_HARD = re.compile(r"[\nbcdfghjklmpqruvwyzBCDFGHJKLMPQRUVWYZ]")
"""Characters no candidate of python-phonenumbers' matcher contains: newline and the ASCII letters outside
its punctuation (``x``) and extension words (``ext``, ``extension``, ``int``, ``anexo``), either case."""


def _line_limit() -> int:
    """Longest text whose lines may be matched one by one (see :class:`GatedPhoneRecognizer`): below it the
    matcher's budget of 65,535 tries cannot run out. A failed candidate costs 1 try plus, for each of the
    matcher's inner patterns, at most 1 + its length; candidates are disjoint, so a text of n characters costs
    at most (1 + 2 * inner patterns) * n tries. 0 (whole texts only) if the module differs from the one read."""
    import phonenumbers.phonenumbermatcher as matcher

    inner = getattr(matcher, "_INNER_MATCHES", None)
    return 65_535 // (1 + 2 * len(inner)) if inner else 0


_VERDICTS_MAX = 1 << 16
"""Candidates whose verdict a gated phone recognizer remembers (all regions together); beyond, it forgets them all."""


def _alone_verdict(verdicts: dict, region: str, leniency, candidate: str) -> bool:
    """Whether ``candidate`` alone (``text == candidate``, offset 0) parses to a number of ``leniency`` with
    ``region`` preferred, as python-phonenumbers' ``PhoneNumberMatcher._parse_and_verify`` decides; remembered
    in ``verdicts`` (``{(region, leniency, candidate): bool}``)."""
    key = (region, leniency, candidate)
    verdict = verdicts.get(key)
    if verdict is None:  # rare (most candidates recur): only then is the matcher module looked up
        from phonenumbers import PhoneNumberMatcher

        alone = PhoneNumberMatcher(candidate, region, leniency=leniency)
        verdict = verdicts[key] = alone._parse_and_verify(candidate, 0) is not None
    return verdict


@functools.lru_cache(maxsize=1)
def _verdict_matcher_class():
    """python-phonenumbers' ``PhoneNumberMatcher`` remembering, per region and candidate string, whether the
    candidate can parse to a number of the matcher's leniency: ``_parse_and_verify(candidate, offset)`` does
    what upstream does, after :func:`_alone_verdict` (``verdicts`` shared by the caller between matchers).
    Alone the candidate has no neighbours, and the neighbour checks (no Latin letter or currency symbol
    right before or after) are the only part of the method that reads the text around it: so the call on
    the text can find a number only where the call alone does, and a False verdict skips it exactly. The
    plain class when the module lacks the method (another version)."""
    from phonenumbers import PhoneNumberMatcher

    if not callable(getattr(PhoneNumberMatcher, "_parse_and_verify", None)):
        return lambda text, region, leniency, verdicts: PhoneNumberMatcher(text, region, leniency=leniency)

    class VerdictMatcher(PhoneNumberMatcher):
        def __init__(self, text, region, leniency, verdicts: dict):
            super().__init__(text, region, leniency=leniency)
            self._verdicts = verdicts

        def _parse_and_verify(self, candidate, offset):
            if _alone_verdict(self._verdicts, self.preferred_region, self.leniency, candidate):
                return super()._parse_and_verify(candidate, offset)
            return None

    return VerdictMatcher


@functools.lru_cache(maxsize=1)
def _dry_matcher_class():
    """python-phonenumbers' ``PhoneNumberMatcher`` whose ``_parse_and_verify`` finds nothing and records each
    candidate it is asked about (``tried``), or None when the module lacks the method (another version).

    The preferred region is read only in ``_parse_and_verify``; the rest of the scan (candidates, trimming,
    date and time-stamp checks, inner matches, the budget of tries) is the same for every region. So a
    region's matcher takes the dry run's path, asking about the same candidates, for as long as each answer
    is None; if the region's :func:`_alone_verdict` is False for every candidate in ``tried``, every answer is
    None (a False verdict skips the candidate exactly, see :func:`_verdict_matcher_class`) and the region
    finds nothing in the text. One dry run then stands for the scans of all regions that find nothing."""
    from phonenumbers import Leniency, PhoneNumberMatcher

    if not callable(getattr(PhoneNumberMatcher, "_parse_and_verify", None)):
        return None

    class DryMatcher(PhoneNumberMatcher):
        def __init__(self, text):
            super().__init__(text, None, leniency=Leniency.VALID)
            self.tried: list[str] = []

        def _parse_and_verify(self, candidate, offset):
            self.tried.append(candidate)
            return None

    return DryMatcher


@functools.lru_cache(maxsize=1)
def _gated_phone_class():
    import phonenumbers
    from phonenumbers.phonenumberutil import NumberParseException
    from presidio_analyzer import EntityRecognizer
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    limit = _line_limit()
    matcher_class = _verdict_matcher_class()
    dry = _dry_matcher_class()

    class _Gated(PhoneRecognizer):
        def _pieces(self, text: str) -> dict[str, list[tuple[int, str]]]:
            """Per region, the ``(offset, piece)`` of ``text`` its matcher must see: the pieces (or the whole
            text) where the region's gate is found. A piece runs from one :data:`_HARD` character to the next,
            both included (the text's ends where there is none)."""
            ks = self._ks
            hits = self.__dict__.get("_scanned", {}).get(text)
            if hits is None:
                hits = {k: [(m.start(), m.end()) for m in phone_gate(k).finditer(text)] for k in ks}
            if not hits[ks[0]]:
                return {}
            if len(text) >= limit:
                return {r: [(0, text)] for r in self.supported_regions if hits[min_digits(r)]}
            reverse = text[::-1]
            passing: dict[int, list[tuple[int, str]]] = {}
            for k in ks:
                pieces: dict[int, tuple[int, str]] = {}
                for start, end in hits[k]:
                    before = _HARD.search(reverse, len(text) - start)
                    first = len(text) - 1 - before.start() if before else 0
                    if first in pieces:
                        continue
                    after = _HARD.search(text, end)
                    last = after.start() if after else len(text) - 1
                    pieces[first] = (first, text[first:last + 1])
                passing[k] = list(pieces.values())
            return {r: passing[min_digits(r)] for r in self.supported_regions if passing[min_digits(r)]}

        @functools.cached_property
        def _ks(self) -> list[int]:
            """The gate's digit counts of the supported regions (:func:`min_digits`), ascending."""
            return sorted({min_digits(r) for r in self.supported_regions})

        def scan(self, texts) -> None:
            """Find the gate's hits (:func:`phone_gate` for each region's :func:`min_digits`) in every text of
            ``texts`` (an Arrow string array without nulls) at once, with RE2 (:func:`arrow_phone_hits`: the
            same hits), for the ``analyze`` calls on those texts until the next ``scan`` (None: forget them)."""
            if texts is None:
                self._scanned = {}
                return
            ks = self._ks
            per_k = {k: arrow_phone_hits(texts, k) for k in ks}
            self._scanned = {text: {k: per_k[k][i] for k in ks} for i, text in enumerate(texts.to_pylist())}

        def _memo(self) -> dict:
            verdicts = self.__dict__.setdefault("_verdicts", {})
            if len(verdicts) > _VERDICTS_MAX:
                verdicts.clear()
            return verdicts

        def _live(self, pieces: list[tuple[int, str]], region: str, tried: dict[str, list[str]]):
            """The pieces in which the region's matcher may find something: those where the dry run
            (:func:`_dry_matcher_class`, run once per piece for all regions and kept in ``tried``) asked about
            a candidate whose verdict for ``region`` is True."""
            if dry is None:
                return pieces
            verdicts = self._memo()
            live = []
            for start, piece in pieces:
                if piece not in tried:
                    matcher = dry(piece)
                    for _ in matcher:
                        pass
                    tried[piece] = matcher.tried
                if any(_alone_verdict(verdicts, region, self.leniency, c) for c in tried[piece]):
                    live.append((start, piece))
            return live

        def _matches(self, pieces: list[tuple[int, str]], region: str):
            verdicts = self._memo()
            for start, piece in pieces:
                for match in matcher_class(piece, region, leniency=self.leniency, verdicts=verdicts):
                    yield phonenumbers.PhoneNumberMatch(start + match.start, match.raw_string, match.number)

        def analyze(self, text, entities, nlp_artifacts=None):
            pieces = self._pieces(text)
            if not pieces:
                return []
            # PhoneRecognizer.analyze's own loop, over the matches of the gated pieces
            results = []
            tried: dict[str, list[str]] = {}  # piece -> candidates of its dry run
            for region in self.supported_regions:
                if region not in pieces:
                    continue
                for match in self._matches(self._live(pieces[region], region, tried), region):
                    try:
                        parsed_number = phonenumbers.parse(text[match.start : match.end])
                        region = phonenumbers.region_code_for_number(parsed_number)
                        results += [self._get_recognizer_result(match, text, region, nlp_artifacts)]
                    except NumberParseException:
                        results += [self._get_recognizer_result(match, text, region, nlp_artifacts)]
            return EntityRecognizer.remove_duplicates(results)

    _Gated.__name__ = _Gated.__qualname__ = "GatedPhoneRecognizer"
    return _Gated


def GatedPhoneRecognizer(**kwargs):  # noqa: N802 - builds a Presidio recognizer (a class made on first use)
    """Presidio's ``PhoneRecognizer`` (same arguments, same results) that runs a region's matcher only on
    texts where :func:`phone_gate` for :func:`min_digits` of the region finds something. The class is made
    on first call so that importing this module does not import Presidio."""
    return _gated_phone_class()(**kwargs)


CARD_GATE = re.compile(r"\d{4}[- ]?\d{3}")
"""Found in every text ``CreditCardRecognizer`` has a match in: its pattern starts with a 4-digit group,
an optional ``-`` or space, and a group of 3 or 4 digits."""


def gated(recognizer: type, gate: re.Pattern | str) -> type:
    """A subclass of the Presidio pattern recognizer class ``recognizer`` whose ``analyze`` returns ``[]`` at
    once for a text ``gate`` (a compiled pattern, or a substring) is not found in, and otherwise what the
    recognizer returns. Only sound where every match of the recognizer contains the gate."""
    found = gate.search if isinstance(gate, re.Pattern) else (lambda text: gate in text)

    class Gated(recognizer):
        def analyze(self, text, entities, nlp_artifacts=None, regex_flags=None):
            if not found(text):
                return []
            return super().analyze(text, entities, nlp_artifacts, regex_flags)

    Gated.__name__ = Gated.__qualname__ = f"Gated{recognizer.__name__}"
    return Gated


@functools.lru_cache(maxsize=None)
def _gated_class(name: str) -> type:
    """:func:`gated` Presidio's predefined recognizer class ``name`` behind its gate (made once)."""
    from presidio_analyzer import predefined_recognizers

    gate = {"IpRecognizer": IP_GATE, "CreditCardRecognizer": CARD_GATE, "EmailRecognizer": "@"}[name]
    return gated(getattr(predefined_recognizers, name), gate)


def GatedIpRecognizer(**kwargs):  # noqa: N802 - builds a Presidio recognizer (a class made on first use)
    """Presidio's ``IpRecognizer`` (same arguments, same results) that returns no result at once for a text
    without :data:`IP_GATE` (about 9x faster on texts holding a digit or a colon)."""
    return _gated_class("IpRecognizer")(**kwargs)


def GatedCreditCardRecognizer(**kwargs):  # noqa: N802 - builds a Presidio recognizer (a class made on first use)
    """Presidio's ``CreditCardRecognizer`` (same arguments, same results) behind :data:`CARD_GATE`."""
    return _gated_class("CreditCardRecognizer")(**kwargs)


def gated_email_class() -> type:
    """Presidio's ``EmailRecognizer`` behind an ``@`` gate (its pattern has a literal ``@``), to subclass."""
    return _gated_class("EmailRecognizer")


PATTERN_ENTITIES: tuple[str, ...] = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IP_ADDRESS")
"""The Presidio entities whose recognizers have a gate here (and an RE2 form in :func:`arrow_candidates`)."""

# RE2 forms of the gates, for Arrow. Each finds at least what its Python gate finds ({d}: a digit as Python's
# Unicode \d; {p}: python-phonenumbers' punctuation, case-insensitive, widened to every non-ASCII character).
_ARROW_GATES = {
    "EMAIL_ADDRESS": "@",
    # IP_GATE as is: no non-ASCII character matches [0-9a-f] case-insensitively in Python (tests check it)
    "IP_ADDRESS": r"[0-9]\.[0-9]{{1,3}}\.[0-9]|::|[0-9a-fA-F]:[0-9a-fA-F]",
    "CREDIT_CARD": r"{d}{{4}}[- ]?{d}{{3}}",
    # phone_gate(k): the digit run, an x after punctuation, and an extension word widened to its first
    # character (";", e, x, i, a, either case, or any non-ASCII one such as the full-width and Cyrillic words)
    "PHONE_NUMBER": r"{d}(?:{p}{{0,4}}{d}){{{k1},}}|{d}{p}{{0,4}}[xX]|{d}[ \x{{a0}}\t,\-]*(?:[;eExXiIaA]|[^\x00-\x7f])",
}
_ARROW_PUNCTUATION = r"(?:[-xX ().\[\]\\/~]|[^\x00-\x7f])"


@functools.lru_cache(maxsize=1)
def _arrow_digit() -> str:
    """RE2's ``\p{Nd}`` for Python's Unicode ``\d`` (what Presidio's and python-phonenumbers' patterns use)
    when RE2 finds every character Python's ``\d`` matches (checked once per process over all code points,
    ~0.1 s); otherwise an ASCII digit or any non-ASCII character."""
    python_digits = re.findall(r"\d", _every_code_point())
    found = pc.match_substring_regex(pa.array(python_digits, pa.string()), r"\p{Nd}")
    return r"\p{Nd}" if pc.all(found).as_py() else r"[0-9\x{80}-\x{10FFFF}]"


@functools.lru_cache(maxsize=None)
def _arrow_gate(entities: tuple[str, ...]) -> str:
    """One RE2 pattern: any of the gates of ``entities`` (see :func:`arrow_candidates`)."""
    k = fewest_digits()  # any region's, so it holds for any recognizer's regions
    parts = [_ARROW_GATES[e].format(d=_arrow_digit(), p=_ARROW_PUNCTUATION, k1=k - 1) for e in entities]
    return "|".join(f"(?:{part})" for part in parts)


def arrow_candidates(texts: pa.Array, entities: tuple[str, ...] | list[str] = PATTERN_ENTITIES) -> pa.Array:
    """Boolean mask over a string array: False where no gate of ``entities`` (a subset of
    :data:`PATTERN_ENTITIES`; phone numbers of any region) is found, so none of their recognizers can
    match the text; True otherwise; False for nulls. The gates' RE2 forms find at least what the Python gates
    find (``@``; :data:`IP_GATE`; :data:`CARD_GATE`; :func:`phone_gate` for the fewest digits of any region, 4).
    Arrow's RE2 runs over the whole array (no Python per text). Raises ``ValueError`` for another entity."""
    unknown = sorted(set(entities) - set(PATTERN_ENTITIES))
    if unknown or not entities:
        raise ValueError(f"no gate for entities {unknown or '(none given)'}; choose from {PATTERN_ENTITIES}")
    if not len(texts):
        return pa.array([], pa.bool_())
    pattern = _arrow_gate(tuple(e for e in PATTERN_ENTITIES if e in entities))
    return pc.fill_null(pc.match_substring_regex(texts, pattern), False)
