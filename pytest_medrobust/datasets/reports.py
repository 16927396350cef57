"""Report text: which part of a radiology report the model sees, and how it is normalised.

The text a model is given is exactly a record's ``report``; this module decides what that is.

Sections
--------
``section`` is one of:

* ``"findings"``: the FINDINGS section only;
* ``"impression"``: the IMPRESSION section only;
* ``"both"`` (the default of the MIMIC-CXR and OpenI loaders): FINDINGS, then IMPRESSION,
  joined by one space. Either may be missing (many MIMIC-CXR reports have no FINDINGS, some
  have no IMPRESSION); the record is bad only when both are missing or empty. This keeps the
  most studies while staying close to what the contrastive models were trained on;
* ``"full"``: the whole report (MIMIC-CXR: the whole ``.txt`` file; OpenI: every labelled
  ``AbstractText`` as ``"LABEL: text"``, in file order).

A section that is missing or empty for the chosen ``section`` gives an empty report, which the
loaders treat as a bad row (an error, or a dropped and recorded row with ``on_bad_rows="drop"``).

Free-text reports (MIMIC-CXR)
-----------------------------
A section header is a line that starts (after spaces) with an upper-case name of at least four
characters (letters, digits, spaces and ``/&(),-``) followed by a colon, e.g. ``FINDINGS:``,
``IMPRESSION:``, ``WET READ:``, ``RECOMMENDATION(S):``. A section runs from its header to the
next header. ``FINDING``/``FINDINGS`` count as findings; ``IMPRESSION``/``IMPRESSIONS``/
``CONCLUSION``/``CONCLUSIONS`` as impression; a combined header (``FINDINGS AND IMPRESSION``,
``IMPRESSION/FINDINGS``, ...) counts as both, and is used once under ``"both"``. When a name
occurs more than once its sections are joined in order. Text before the first header (``FINAL
REPORT`` banners) belongs to no section.

Whitespace
----------
Every report is normalised the same way: runs of whitespace (spaces, tabs, newlines) become one
space and the ends are stripped. Nothing else is changed: case, punctuation and de-identification
placeholders (MIMIC-CXR ``___``, OpenI ``XXXX``) are kept as the publisher wrote them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

SECTIONS = ("findings", "impression", "both", "full")

FINDINGS_NAMES = frozenset({"FINDING", "FINDINGS"})
IMPRESSION_NAMES = frozenset({"IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS"})

_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z0-9 /&(),\-]{3,}?)[ \t]*:", re.MULTILINE)
_COMBINED_SPLIT = re.compile(r"\s*(?:/|&|\bAND\b|,)\s*")


def normalise_whitespace(text: str) -> str:
    """Runs of whitespace become one space; ends stripped."""
    return " ".join(str(text).split())


def check_section(section: str) -> str:
    from ..errors import ConfigError

    if section not in SECTIONS:
        raise ConfigError(f"section must be one of {', '.join(SECTIONS)}; got {section!r}")
    return section


def split_sections(text: str) -> list[tuple[str, str]]:
    """``[(HEADER, body), ...]`` of a free-text report, in order; bodies are raw text."""
    matches = list(_HEADER.finditer(text))
    sections = []
    for match, following in zip(matches, matches[1:] + [None], strict=True):
        end = following.start() if following is not None else len(text)
        name = " ".join(match.group(1).split())
        sections.append((name, text[match.end() : end]))
    return sections


def _kinds(name: str) -> set[str]:
    """Which of findings/impression a header name stands for (a combined header is both)."""
    parts = {p for p in _COMBINED_SPLIT.split(name) if p}
    kinds = set()
    if parts & FINDINGS_NAMES:
        kinds.add("findings")
    if parts & IMPRESSION_NAMES:
        kinds.add("impression")
    return kinds


def combine(findings: str, impression: str, section: str, full: str = "") -> str:
    """The normalised text for ``section`` from already-extracted parts."""
    check_section(section)
    if section == "findings":
        text = findings
    elif section == "impression":
        text = impression
    elif section == "both":
        text = f"{findings} {impression}"
    else:
        text = full
    return normalise_whitespace(text)


def free_text_section(text: str, section: str) -> str:
    """The normalised ``section`` of a free-text report with ``NAME:`` headers (MIMIC-CXR)."""
    check_section(section)
    if section == "full":
        return normalise_whitespace(text)
    findings: list[str] = []
    impression: list[str] = []
    both: list[str] = []
    for name, body in split_sections(text):
        kinds = _kinds(name)
        if kinds == {"findings", "impression"}:
            both.append(body)
        elif kinds == {"findings"}:
            findings.append(body)
        elif kinds == {"impression"}:
            impression.append(body)
    if section == "findings":
        return normalise_whitespace(" ".join(findings + both))
    if section == "impression":
        return normalise_whitespace(" ".join(both + impression))
    return normalise_whitespace(" ".join(findings + both + impression))


def labelled_section(labelled: Iterable[tuple[str, str]], section: str) -> str:
    """The normalised ``section`` from ``(LABEL, text)`` pairs (OpenI ``AbstractText``)."""
    check_section(section)
    pairs = [(str(label or "").strip().upper(), text or "") for label, text in labelled]
    if section == "full":
        return normalise_whitespace(" ".join(f"{label}: {text}" for label, text in pairs if text.strip()))
    findings = " ".join(text for label, text in pairs if _kinds(label) == {"findings"})
    impression = " ".join(text for label, text in pairs if _kinds(label) == {"impression"})
    return combine(findings, impression, section)
