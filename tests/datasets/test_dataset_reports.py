"""Report sections and whitespace: exactly the text a model will see."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_medrobust.datasets.reports import (
    free_text_section,
    labelled_section,
    normalise_whitespace,
    split_sections,
)
from pytest_medrobust.errors import ConfigError

MIMIC = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows.

 IMPRESSION:

 No acute cardiopulmonary process.

 NOTIFICATION:  The findings were discussed with Dr. ___ at 10:00.
"""


def test_split_sections_names_in_order():
    names = [name for name, _ in split_sections(MIMIC)]
    assert names == ["EXAMINATION", "INDICATION", "TECHNIQUE", "COMPARISON", "FINDINGS", "IMPRESSION", "NOTIFICATION"]


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            "findings",
            "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral nodular opacities "
            "that most likely represent nipple shadows.",
        ),
        ("impression", "No acute cardiopulmonary process."),
        (
            "both",
            "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral nodular opacities "
            "that most likely represent nipple shadows. No acute cardiopulmonary process.",
        ),
    ],
)
def test_mimic_sections(section, expected):
    assert free_text_section(MIMIC, section) == expected


def test_full_is_the_whole_report_normalised():
    full = free_text_section(MIMIC, "full")
    assert full.startswith("FINAL REPORT EXAMINATION: CHEST (PA AND LAT)") and "  " not in full and "\n" not in full


def test_missing_section_gives_empty_text_and_both_falls_back():
    no_findings = "FINAL REPORT\n INDICATION: cough\n IMPRESSION: Clear lungs.\n"
    assert free_text_section(no_findings, "findings") == ""
    assert free_text_section(no_findings, "both") == "Clear lungs."
    assert free_text_section("FINAL REPORT\n INDICATION: cough\n", "both") == ""


def test_combined_header_counts_as_both_and_is_used_once():
    text = "INDICATION: x\nFINDINGS AND IMPRESSION: Lungs clear.\nRECOMMENDATION(S): None."
    assert free_text_section(text, "findings") == "Lungs clear."
    assert free_text_section(text, "impression") == "Lungs clear."
    assert free_text_section(text, "both") == "Lungs clear."


def test_short_capitalised_words_are_not_headers():
    text = "FINDINGS:\nPA: the lungs are clear.\nIMPRESSION: normal."
    assert free_text_section(text, "findings") == "PA: the lungs are clear."


def test_openi_labelled_sections():
    pairs = [("COMPARISON", "None."), ("INDICATION", "pain"), ("FINDINGS", ""), ("IMPRESSION", " No  acute\nprocess. ")]
    assert labelled_section(pairs, "findings") == ""
    assert labelled_section(pairs, "impression") == "No acute process."
    assert labelled_section(pairs, "both") == "No acute process."
    assert labelled_section(pairs, "full") == "COMPARISON: None. INDICATION: pain IMPRESSION: No acute process."


def test_unknown_section_is_a_config_error():
    with pytest.raises(ConfigError, match="section must be one of findings, impression, both, full"):
        free_text_section(MIMIC, "summary")


@settings(deadline=None)
@given(st.text())
def test_normalise_whitespace_is_idempotent_and_has_no_runs(text):
    once = normalise_whitespace(text)
    assert normalise_whitespace(once) == once
    assert once == once.strip() and "  " not in once and "\n" not in once
    assert once.split() == text.split()
