"""minime's bank: well-formed, filtered by the profile, and apart from every test question."""

import json
import re
from collections import Counter

import pytest
import yaml

from minime.bank import (
    DECLINE_CATEGORIES,
    TEMPLATE_CATEGORIES,
    answer_languages,
    bank_prompts,
    fixed_answer,
    mentions_any,
)
from minime.policy import is_refusal

from conftest import EXAMPLE

PERSONAS = {"mara": "Mara Lindqvist", "javier": "Javier Morales Ibáñez"}
BANK = EXAMPLE.parent.parent / "src" / "minime" / "bank"


class _UniqueKeys(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice (PyYAML keeps the last silently)."""


def _mapping(loader, node, deep=False):
    keys = [loader.construct_object(key) for key, _ in node.value]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    assert not repeated, f"{node.start_mark}: repeated keys {repeated}"
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


@pytest.mark.parametrize("file", ["prompts.yaml", "eval.yaml", "answers.yaml"])
def test_bank_files_have_no_repeated_keys(file):
    assert yaml.load((BANK / file).read_text(encoding="utf-8"), _UniqueKeys)


def test_every_fixed_answer_exists_in_every_language_and_declines_what_it_must():
    for category in TEMPLATE_CATEGORIES:
        for language in answer_languages():
            answer = fixed_answer(category, language, "Ada Example")
            assert "Ada" in answer and "{" not in answer
            assert is_refusal(answer) == (category in DECLINE_CATEGORIES), (category, language)


def test_a_topic_the_profile_talks_about_is_left_out_unless_only_its_private_part_does():
    everything = [p.text for p in bank_prompts("Ada Example", "")]
    with_a_cat = [p.text for p in bank_prompts("Ada Example", "I have two cats, Bo and Li.")]
    assert "Is Ada allergic to animals?" in everything
    assert "Is Ada allergic to animals?" not in with_a_cat
    assert len(with_a_cat) < len(everything)
    assert mentions_any("She drives vintage cars.", ["car"])
    assert not mentions_any("She cares a lot.", ["car"])


def test_every_category_has_prompts_in_english_and_each_fixed_answer_language():
    found = Counter((p.category, p.language) for p in bank_prompts("Ada Example", ""))
    for category in TEMPLATE_CATEGORIES:
        for language in answer_languages():
            assert found[(category, language)] >= 1, (category, language)
    for category in DECLINE_CATEGORIES:
        assert found[(category, "en")] >= 20, category


@pytest.mark.parametrize("persona", PERSONAS)
def test_no_expected_pattern_matches_a_canned_decline(persona):
    """A right answer to a question must not be one that a canned decline also gives."""
    name = PERSONAS[persona]
    declines = [
        fixed_answer(c, lang, name) for c in TEMPLATE_CATEGORIES for lang in answer_languages()
    ]
    path = EXAMPLE.parent / persona / "questions.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        question = json.loads(line)
        if question["category"] in ("greeting",):
            continue
        for pattern in question["must_contain"]:
            for answer in declines:
                assert not re.search(pattern, answer, re.IGNORECASE), (question, answer)


@pytest.mark.integration
def test_no_training_prompt_is_near_an_evaluation_question():
    """No prompt of the training bank lies within the dedup distance of a question of
    either example's file or of the evaluation bank (the real sentence encoder), compared
    as dedup and eval's novelty filter compare them: with the person's name taken out."""
    from minime.config import DataConfig
    from minime.data.dedup import encode
    from minime.generation import without_name
    from minime.neardup import min_similarity

    threshold = DataConfig().dedup_threshold
    training, tests = [], []
    for persona, name in PERSONAS.items():
        training += [(p.text, name) for p in bank_prompts(name, "")]
        tests += [(p.text, name) for p in bank_prompts(name, "", "eval.yaml", "CANARY-X")]
        path = EXAMPLE.parent / persona / "questions.jsonl"
        tests += [(json.loads(line)["question"], name) for line in path.read_text().splitlines()]

    def embed(texts):
        return encode([without_name(text, name) for text, name in texts], "all-minilm-l6-v2")

    similarity = embed(tests) @ embed(training).T
    near = [
        (tests[i], training[j], round(float(similarity[i, j]), 3))
        for i, j in zip(*(similarity >= min_similarity(threshold)).nonzero(), strict=True)
    ]
    assert not near
