"""String search: case/accent-insensitive word-start matching, :exact, :contains."""

from __future__ import annotations

import random
from typing import Any

import pytest
from search_helpers import HmacTokens, candidate, stored_tokens

from hdsvault.records.search.errors import SearchError
from hdsvault.records.search.query import parse_search
from hdsvault.records.search.text import normalise


def patient(family: str, *given: str, text: str | None = None) -> dict[str, Any]:
    name: dict[str, Any] = {"family": family, "given": list(given)}
    if text is not None:
        name["text"] = text
    return {"resourceType": "Patient", "id": "p", "name": [name]}


def found(param: str, value: str, res: dict[str, Any], fn: HmacTokens) -> bool:
    """Exact answer, after checking the tokens would have made it a candidate."""
    plan = parse_search(res["resourceType"], [(param, value)]).params[0]
    exact = plan.matches(res)
    if exact:
        assert candidate(plan, stored_tokens(res, fn), fn), ("false negative", param, value)
    return exact


MULLER = patient("Müller", "Jürgen")


@pytest.mark.parametrize("term", ["mul", "MÜL", "Mül", "muller", "MULLER", "müller", "m"])
def test_prefix_is_case_and_accent_insensitive(term: str, tokens: HmacTokens) -> None:
    assert found("family", term, MULLER, tokens)
    assert found("name", term, MULLER, tokens)


@pytest.mark.parametrize("term", ["ull", "mullerx", "jm", "x"])
def test_prefix_does_not_match_inside_a_word(term: str, tokens: HmacTokens) -> None:
    assert not found("family", term, MULLER, tokens)


def test_name_matches_any_part_and_word_starts(tokens: HmacTokens) -> None:
    res = patient("Martin-Dupont", "Jean", "Émile", text="Dr Jean Martin-Dupont")
    for term in ["jean", "emile", "dupont", "martin-dup", "jean emi", "dr jean m", "ÉMILE MAR"]:
        assert found("name", term, res, tokens), term
    for term in ["emile jean", "upont", "jean-emile"]:
        assert not found("name", term, res, tokens), term
    assert found("family", "dupont", res, tokens)  # word start inside a compound name
    van = patient("van der Berg", "Anna")
    assert found("family", "berg", van, tokens)
    assert found("family", "der b", van, tokens)


def test_exact_is_case_and_accent_sensitive(tokens: HmacTokens) -> None:
    assert found("family:exact", "Müller", MULLER, tokens)
    for term in ["muller", "Muller", "MÜLLER", "Müll", "Müller "]:
        assert not found("family:exact", term, MULLER, tokens), term
    assert found("name:exact", "Jürgen", MULLER, tokens)


def test_contains(tokens: HmacTokens) -> None:
    assert found("family:contains", "ULL", MULLER, tokens)
    assert found("family:contains", "üLLe", MULLER, tokens)
    assert not found("family:contains", "llm", MULLER, tokens)
    with pytest.raises(SearchError, match=r"^family:contains: .*3 characters"):
        parse_search("Patient", [("family:contains", "ul")])


def test_address_parts(tokens: HmacTokens) -> None:
    res = {
        "resourceType": "Patient",
        "address": [
            {
                "line": ["12 rue de l'Église"],
                "city": "Saint-Étienne",
                "postalCode": "42000",
                "country": "FR",
            }
        ],
    }
    for term in ["saint", "etienne", "42", "12 rue", "eglise", "fr"]:
        assert found("address", term, res, tokens), term
    assert found("address-city", "st", res, tokens) is False
    assert found("address-city", "saint-e", res, tokens)
    assert found("address-postalcode", "420", res, tokens)


def test_long_values_and_terms(tokens: HmacTokens) -> None:
    word = "pneumonoultramicroscopicsilicovolcanoconiosis"
    res = {"resourceType": "Organization", "name": f"Clinique {word} du Centre"}
    assert found("name", word, res, tokens)
    assert found("name", word[:30], res, tokens)
    assert not found("name", word + "x", res, tokens)
    long_text = " ".join(f"w{i}" for i in range(40))
    res2 = {"resourceType": "Organization", "name": long_text}
    assert found("name", "w31", res2, tokens)
    assert not found("name", "w35", res2, tokens)  # beyond MAX_WORDS: not searchable


def test_random_strings_have_no_false_negative(tokens: HmacTokens) -> None:
    rnd = random.Random(7)
    alphabet = "aeiouéèàüçßœ-' BCDfgh"
    for _ in range(300):
        value = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 30)))
        res = {"resourceType": "Organization", "name": value}
        norm = normalise(value)
        if not norm:
            continue
        start = rnd.randrange(len(norm))
        term = norm[start : start + rnd.randint(1, 8)]
        for modifier in ("", ":contains"):
            try:
                plan = parse_search("Organization", [("name" + modifier, term)]).params[0]
            except SearchError:
                continue  # no letter in the term, or too short for :contains
            if plan.matches(res):
                assert candidate(plan, stored_tokens(res, tokens), tokens), (value, term)


@pytest.mark.parametrize("value", ["---", "  ", "''"])
def test_terms_without_letters_are_errors(value: str) -> None:
    with pytest.raises(SearchError) as e:
        parse_search("Patient", [("name", value)])
    assert e.value.param == "name"


def test_empty_value_is_ignored() -> None:
    plan = parse_search("Patient", [("name", "")])
    assert plan.params == ()
    assert plan.ignored == (("name", "empty value"),)


def test_or_values(tokens: HmacTokens) -> None:
    assert found("family", "dupont,mül", MULLER, tokens)
    assert not found("family", "dupont,martin", MULLER, tokens)
    comma = patient("A,B")
    assert found("family:exact", r"A\,B", comma, tokens)
