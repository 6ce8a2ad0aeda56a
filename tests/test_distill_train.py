"""`minime distill` on a tiny random model: rows, alignment, training, outputs, resume."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerControl

from minime.distill import distill
from minime.distill import train as train_module
from minime.distill import trainer as trainer_module
from minime.distill.data import (
    VisitorTurns,
    chain_fact_rows,
    collate,
    encode_row,
    repeat_fact_rows,
)
from minime.distill.losses import IGNORE_INDEX as IGNORE
from minime.distill.trainer import PACE_STEPS, TimeBudget, cosine_factor
from minime.errors import InputError
from minime.jsonl import write_jsonl
from minime.language import proper_names
from minime.project import Project
from minime.recall import key_terms, recalls
from minime.rows import read_rows
from minime.student import end_of_turn_text

from conftest import ROOT

#: A template that ends every turn with <eos>, as real chat templates end theirs.
EOS_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)
QA = [
    ("where works mara", "mara works at verdant loop", "Mara works at Verdant Loop."),
    ("mara cat", "yes mara cat", "Mara has a cat."),
    ("hello mara", "hello world", "Mara says hello world."),
]


@pytest.fixture
def tiny_student(tiny_model_dir, tmp_path):
    folder = tmp_path / "student"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = EOS_TEMPLATE
    tokenizer.save_pretrained(folder)
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


def teacher_logprobs(tokenizer, answer, k=3, seed=0):
    """Stored top-k log-probs as `minime data` writes them, in the student's vocabulary."""
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    generator = torch.Generator().manual_seed(seed)
    top_ids, top_logprobs = [], []
    for token in ids:
        others = torch.randperm(len(tokenizer), generator=generator).tolist()
        chosen = [token, *[t for t in others if t != token][: k - 1]]
        top_ids.append(chosen)
        top_logprobs.append([math.log(p) for p in (0.7, 0.2, 0.05)[:k]])
    return {
        "ids": ids,
        "tokens": [(" " if i else "") + tokenizer.decode([t]) for i, t in enumerate(ids)],
        "logprobs": [v[0] for v in top_logprobs],
        "top_ids": top_ids,
        "top_tokens": [[tokenizer.decode([t]) for t in row] for row in top_ids],
        "top_logprobs": top_logprobs,
    }


def make_rows(tokenizer, copies):
    rows = []
    for n in range(copies):
        for question, answer, fact in QA:
            rows.append(
                {
                    "id": f"{n}-{question}",
                    "messages": [
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": answer},
                    ],
                    "category": "question",
                    "fact": fact,
                    "teacher": "fake",
                    "teacher_logprobs": teacher_logprobs(tokenizer, answer, seed=n),
                }
            )
    return rows


def make_project(tmp_path, student, settings=""):
    root = tmp_path / "persona"
    (root / "out" / "data").mkdir(parents=True)
    (root / "profile.md").write_text("# Mara\n\n" + "\n".join(f"- {f}" for _, _, f in QA))
    (root / "minime.yaml").write_text(
        f"name: Mara\nmodels:\n  student: '{student}'\ndistill:\n  batch_size: 3\n"
        f"  threads: 1\n  max_epochs: 4\n  patience: 10\n  learning_rate: 0.01\n"
        f"  fact_rows: 5\n  chained_rows: 3\n{settings}"
    )
    tokenizer = AutoTokenizer.from_pretrained(student)
    write_jsonl(root / "out" / "data" / "train.jsonl", make_rows(tokenizer, 4))
    write_jsonl(root / "out" / "data" / "val.jsonl", make_rows(tokenizer, 1))
    return root


def test_rows_label_only_the_answer_and_the_end_of_turn(tiny_student):
    tokenizer = AutoTokenizer.from_pretrained(tiny_student)
    row = make_rows(tokenizer, 1)[0]
    suffix = end_of_turn_text(tokenizer)
    assert suffix.strip() == "<eos>"
    example = encode_row(tokenizer, row, suffix, same_vocab=True, max_length=64)
    answer_ids = row["teacher_logprobs"]["ids"]
    trained = [t for t in example.labels if t != IGNORE]
    assert trained == [*answer_ids, tokenizer.convert_tokens_to_ids("<eos>")]
    # labels are shifted: the position before the answer predicts its first token.
    first = example.labels.index(answer_ids[0])
    assert example.input_ids[first + 1] == answer_ids[0]
    assert sorted(example.teacher_top) == list(range(first, first + len(answer_ids)))
    assert example.teacher_top[first][0] == row["teacher_logprobs"]["top_ids"][0]
    assert encode_row(tokenizer, row, suffix, same_vocab=True, max_length=5) is None


def test_different_tokenizers_align_by_character_offsets(tiny_student):
    tokenizer = AutoTokenizer.from_pretrained(tiny_student)
    answer = "mara works at verdant loop"
    # A teacher that split the text differently: "mara", " wor", "ks", " at", " verdant loop".
    pieces = ["mara", " wor", "ks", " at", " verdant loop"]
    logprobs = {
        "ids": list(range(5)),
        "tokens": pieces,
        "top_ids": [[100 + j] for j in range(5)],
        "top_logprobs": [[-0.1 * (j + 1)] for j in range(5)],
    }
    row = {
        "messages": [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": answer},
        ],
        "teacher_logprobs": logprobs,
    }
    example = encode_row(
        tokenizer, row, end_of_turn_text(tokenizer), same_vocab=False, max_length=64
    )
    first = next(i for i, t in enumerate(example.labels) if t != IGNORE)
    # Student tokens: mara(0) works(5) at(11) verdant(14) loop(22); teacher starts: 0, 5
    # (" wor"), 7 ("ks"), 11, 14. Pairs: mara-mara, works-" wor", at-" at", verdant-" verdant".
    assert {p - first: ids for p, (ids, _) in example.teacher_top.items()} == {
        0: [100],
        1: [101],
        2: [103],
        3: [104],
    }


def test_collate_pads_labels_and_teacher_slots(tiny_student):
    tokenizer = AutoTokenizer.from_pretrained(tiny_student)
    rows = make_rows(tokenizer, 1)
    suffix = end_of_turn_text(tokenizer)
    examples = [encode_row(tokenizer, r, suffix, same_vocab=True, max_length=64) for r in rows]
    batch = collate(examples, tokenizer.pad_token_id, 3)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["kd_mask"].shape
    assert batch["top_ids"].shape[-1] == 3
    padded = batch["attention_mask"] == 0
    assert (batch["labels"][padded] == IGNORE).all()
    assert not batch["kd_mask"][padded].any()
    assert torch.isinf(batch["top_logprobs"][~batch["kd_mask"]]).all()


def test_the_loss_skips_logits_of_prompt_positions_without_changing_its_value(
    tiny_student, tmp_path
):
    from transformers import TrainingArguments

    from minime.config import DistillConfig
    from minime.distill.losses import cross_entropy, sparse_kd_loss

    tokenizer = AutoTokenizer.from_pretrained(tiny_student)
    model = AutoModelForCausalLM.from_pretrained(tiny_student)
    suffix = end_of_turn_text(tokenizer)
    rows = make_rows(tokenizer, 1)
    examples = [encode_row(tokenizer, r, suffix, same_vocab=True, max_length=64) for r in rows]
    batch = collate(examples, tokenizer.pad_token_id, 3)
    first = trainer_module.first_scored_position(batch)
    assert first > 0 and (batch["labels"][:, :first] == IGNORE).all()
    config = DistillConfig()
    trainer = trainer_module.DistillTrainer(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[]),
        distill=config,
        mode="sparse",
        generate_answers=None,
        recall_probe=[],
    )
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = config.ce_weight * cross_entropy(logits, batch["labels"]) + config.kd_weight * (
        sparse_kd_loss(logits, batch["top_ids"], batch["top_logprobs"], batch["kd_mask"])
    )
    assert torch.allclose(trainer.compute_loss(model, batch), expected, atol=1e-6)


def test_malformed_rows_name_file_line_and_field(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"},
                ]
            }
        )
        + "\n"
        + json.dumps(
            {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "x"}]}
        )
        + "\n"
    )
    with pytest.raises(InputError, match=r"train.jsonl:2: field \"messages.1.role\""):
        read_rows(path)


def test_recall_needs_the_numbers_and_most_terms():
    keys = key_terms(
        "I joined Verdant Loop in March 2022. I lead a team of four engineers.",
        "Mara leads a team of four engineers.",
        "Mara Lindqvist",
    )
    assert keys == {"lead", "team", "four", "engineers"}
    assert recalls("She leads a team of four engineers.", keys)
    assert not recalls("She works alone.", keys)
    dates = key_terms("I joined Verdant Loop in March 2022.", "She joined in March 2022.", "Mara")
    assert not recalls("She joined in March 2021.", dates)
    assert recalls("Mara joined Verdant Loop in March 2022.", dates)


def test_facts_with_few_rows_have_them_repeated_in_turn():
    rows = [{"id": f"a{i}", "fact": "A"} for i in range(3)] + [{"id": "b0", "fact": "B"}]
    rows += [{"id": "decline", "fact": None}]
    trained = repeat_fact_rows(rows, 5, seed=0)
    assert trained[: len(rows)] == rows
    counts = Counter(row["id"] for row in trained)
    assert counts["b0"] == 5 and counts["decline"] == 1
    assert sorted(counts[f"a{i}"] for i in range(3)) == [1, 2, 2]
    assert repeat_fact_rows(rows, 0, seed=0) == rows
    assert repeat_fact_rows(rows, 5, seed=0) == trained


def _question_row(question: str, language: str | None = None) -> dict:
    return {
        "id": question,
        "fact": "I have a greyhound called Chispa.",
        "language": language,
        "messages": [
            {"role": "user", "content": "Who is Javier Morales Ibáñez?"},
            {"role": "assistant", "content": "Hello! Ask me about Javier Morales Ibáñez."},
            {"role": "user", "content": question},
            {"role": "assistant", "content": "Javier Morales Ibáñez has a greyhound, Chispa."},
        ],
    }


def test_questions_name_the_person_either_way_and_repeats_are_typed_differently():
    turns = VisitorTurns("Javier Morales Ibáñez", seed=0)
    row = _question_row("What is Javier Morales Ibáñez's dog called?")
    renamed = [turns.renamed(row) for _ in range(40)]
    questions = Counter(r["messages"][2]["content"] for r in renamed)
    assert set(questions) == {
        "What is Javier Morales Ibáñez's dog called?",
        "What is Javier's dog called?",
    }
    for r in renamed:
        # Only the visitor's turns change, each naming the person the same way.
        assert r["messages"][1::2] == row["messages"][1::2]
        assert ("Ibáñez" in r["messages"][0]["content"]) is (
            "Ibáñez" in r["messages"][2]["content"]
        )
    partial = turns.renamed(_question_row("Where does Javier Morales work?"))
    assert partial["messages"][2]["content"] in {
        "Where does Javier Morales Ibáñez work?",
        "Where does Javier work?",
    }
    typed = {turns.typed(row)["messages"][2]["content"] for _ in range(60)}
    assert len(typed) > 6
    for text in typed:
        assert "Javier" in text and "dog" in text
        assert text[0] != "j"  # the name keeps its capital
    german = _question_row("Wie heißt der Hund von Javier Morales Ibáñez?", language="de")
    assert {turns.typed(german)["messages"][2]["content"] for _ in range(20)} == {
        "Wie heißt der Hund von Javier Morales Ibáñez?",
        "Wie heißt der Hund von Javier?",
    }


def test_repeats_are_varied_and_the_rows_themselves_are_kept():
    turns = VisitorTurns("Javier Morales Ibáñez", seed=0)
    rows = [_question_row("How old is Javier's greyhound Chispa?")]
    trained = repeat_fact_rows(rows, 8, seed=0, vary=turns.typed)
    assert trained[0] == rows[0] and len(trained) == 8
    assert len({r["messages"][2]["content"] for r in trained}) > 3
    assert {r["messages"][3]["content"] for r in trained} == {rows[0]["messages"][3]["content"]}


def _fact_row(fact: str, question: str, answer: str) -> dict:
    return {
        "id": question,
        "fact": fact,
        "language": None,
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
    }


def test_half_the_repeats_ask_about_a_name_only_their_fact_mentions():
    guitar = "I play flamenco guitar in a group called Los Madrugadores in Seville."
    bakery = "I own Obrador Triana, a bakery in Seville."
    turns = VisitorTurns("Javier Morales Ibáñez", seed=0, facts=[guitar, bakery])
    # Seville is in both facts: a question about it would not say which one it answers.
    assert turns.names_by_fact == {guitar: ["Los Madrugadores"], bakery: ["Obrador Triana"]}
    answer = "Javier plays flamenco guitar in Los Madrugadores."
    row = _fact_row(guitar, "Does Javier play music?", answer)
    repeats = [turns.repeated(row) for _ in range(60)]
    about = [r for r in repeats if "Los Madrugadores" in r["messages"][0]["content"]]
    assert 15 < len(about) < 45
    assert len({r["messages"][0]["content"] for r in about}) > 4
    assert {r["messages"][1]["content"] for r in repeats} == {answer}
    # An answer that leaves the name out answers another question: typed, never asked about.
    unnamed = _fact_row(guitar, "Does Javier play music?", "Yes, flamenco guitar.")
    assert all(
        "Madrugadores" not in turns.repeated(unnamed)["messages"][0]["content"] for _ in range(20)
    )


def test_proper_names_are_the_profiles_names_not_its_capitalised_words():
    assert proper_names(
        'I trained at the Escuela de Hostelería de Sevilla. My favourite film is "Ratatouille".'
    ) == ["Ratatouille", "Escuela de Hostelería de Sevilla"]
    assert proper_names("In 2014 I joined Verdant Loop in March. On Tuesdays I teach.") == [
        "Verdant Loop"
    ]
    assert proper_names("Bakeries can hire me. Tools: Zephyr RTOS, KiCad.") == [
        "Zephyr RTOS",
        "KiCad",
    ]


def test_chained_rows_ask_two_facts_and_answer_both():
    turns = VisitorTurns("Mara Lindqvist", seed=0)
    facts = ["A", "B", "C"]
    rows = [
        {
            "id": f"{fact}{n}",
            "fact": fact,
            "language": None,
            "messages": [
                {"role": "user", "content": f"What is Mara's {fact}{n}?"},
                {"role": "assistant", "content": f"Her {fact}{n} is {n}."},
            ],
        }
        for fact in facts
        for n in range(2)
    ]
    rows.append({**rows[0], "id": "de", "language": "de"})
    rows.append({**rows[0], "id": "decline", "fact": None})
    chained = chain_fact_rows(rows, 7, turns)
    assert len(chained) == 7
    firsts = Counter()
    for row in chained:
        first, second = row["id"].removeprefix("chained:").split("+")
        assert first[0] != second[0] and "de" not in (first, second)
        firsts.update([first[0], second[0]])
        question, answer = (m["content"] for m in row["messages"])
        assert question.startswith(f"What is Mara's {first}")
        assert f"what is Mara's {second}?" in question
        assert answer == f"Her {first} is {first[1]}. Her {second} is {second[1]}."
        assert row["category"] == "chained" and row["fact"] is None
        assert row["teacher_logprobs"] is None
    # The facts are taken in turn: none is left out, none is asked three times as often.
    assert set(firsts) == set(facts) and max(firsts.values()) <= 2 * min(firsts.values())
    assert chain_fact_rows(rows, 0, turns) == []
    assert chain_fact_rows(rows[:2], 5, turns) == []  # one fact: nothing to chain


@pytest.mark.parametrize("settings", ["  method: sft\n", "  method: kd\n  tuning: lora\n"])
def test_distill_trains_saves_and_reports(tmp_path, tiny_student, settings):
    project = Project.open(make_project(tmp_path, tiny_student, settings))
    report = distill(project)
    out = project.out_dir("distill")
    assert report.mode == ("sft" if "sft" in settings else "sparse")
    # 12 rows, 4 per fact, one repeat of each fact's (fact_rows 5) and 3 chained rows / batch
    # 3 x 4 epochs
    assert report.repeated_fact_rows == 3 and report.chained_rows == 3
    assert report.steps == 6 * 4
    losses = [h["loss"] for h in report.history if "loss" in h]
    assert losses[-1] < losses[0]
    assert report.best_fact_recall is not None and report.fact_recall_val is not None
    merged = AutoModelForCausalLM.from_pretrained(out / "model")
    if "kd" in settings:
        assert all("kd_loss" in h for h in report.history if "loss" in h)
        assert (out / "adapter" / "adapter_config.json").exists()
        # LoRA trains the end-of-turn embedding row too, and only that row of the table.
        base = AutoModelForCausalLM.from_pretrained(tiny_student).get_input_embeddings().weight
        rows = merged.get_input_embeddings().weight.float()
        changed = (rows - base).abs().amax(dim=1) > 1e-2
        assert changed.nonzero().flatten().tolist() == [0]  # <eos>
    assert merged.dtype == torch.bfloat16
    assert json.loads((out / "model" / "minime.json").read_text())["end_of_turn_ids"]
    assert AutoTokenizer.from_pretrained(out / "model").chat_template == EOS_TEMPLATE
    saved = json.loads((out / "report.json").read_text())
    assert saved["steps"] == report.steps
    assert (out / "loss_curve.png").stat().st_size > 0
    assert "Recall per fact" in (out / "report.md").read_text()
    assert not (out / "checkpoints").exists()


def test_sigkill_during_training_then_resume(tmp_path, tiny_student):
    root = make_project(tmp_path, tiny_student, "  eval_per_epoch: 2\n")
    config = (root / "minime.yaml").read_text()
    config = config.replace("max_epochs: 4", "max_epochs: 30").replace(
        "patience: 10", "patience: 99"
    )
    (root / "minime.yaml").write_text(config)
    command = [sys.executable, "-m", "minime", "distill", str(root)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = root / "out" / "distill" / "checkpoints"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(checkpoints.glob("checkpoint-*/minime-*")):
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    _, stderr = child.communicate()
    assert child.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    marked = sorted(checkpoints.glob("checkpoint-*/minime-complete"))
    assert marked
    # A checkpoint cut short while saving (no marker) is never resumed from.
    (checkpoints / "checkpoint-9999").mkdir()
    rerun = subprocess.run(
        [*command, "--resume"], env=env, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    report = json.loads((root / "out" / "distill" / "report.json").read_text())
    steps = [h["step"] for h in report["history"] if "loss" in h]
    # The history continues from the checkpoint instead of starting at step 1 again (18 rows
    # with the facts' repeats and the chained rows: 6 steps an epoch).
    assert steps and steps == sorted(steps) and report["steps"] == 30 * 6


def test_cosine_schedule_warms_up_then_decays_to_zero_at_the_horizon():
    assert cosine_factor(0, 4, 20) == 0.0
    assert cosine_factor(2, 4, 20) == 0.5
    assert cosine_factor(4, 4, 20) == 1.0
    assert cosine_factor(12, 4, 20) == pytest.approx(0.5)
    assert cosine_factor(20, 4, 20) == pytest.approx(0.0)
    assert cosine_factor(25, 4, 20) == pytest.approx(0.0)


def test_time_budget_shortens_the_schedule_then_stops(monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(trainer_module.time, "monotonic", lambda: clock["now"])
    trainer = SimpleNamespace(horizon=1000)
    budget = TimeBudget(trainer, minutes=1)  # 60 s
    state = SimpleNamespace(global_step=0, max_steps=1000)
    args = SimpleNamespace(eval_strategy="steps")
    budget.on_train_begin(args, state, TrainerControl())
    for step in range(1, PACE_STEPS + 1):  # 2 s per step: 30 steps fit in the budget
        clock["now"], state.global_step = 2.0 * step, step
        control = budget.on_step_end(args, state, TrainerControl())
        assert not control.should_training_stop
    assert trainer.horizon == 30
    clock["now"], state.global_step = 60.0, 30
    control = budget.on_step_end(args, state, TrainerControl())
    assert control.should_training_stop and control.should_save and control.should_evaluate


def test_patience_stops_after_evaluations_without_a_better_score():
    patience = trainer_module.RecallPatience(2)
    stopped = []
    for score in (0.4, 0.6, 0.5, 0.6, 0.55):
        control = patience.on_evaluate(None, None, TrainerControl(), {"eval_ranking": score})
        stopped.append(control.should_training_stop)
    assert stopped == [False, False, False, True, True]
    control = patience.on_evaluate(None, None, TrainerControl(), {"eval_loss": 1.0})
    assert not control.should_training_stop


def test_a_tied_score_ranks_the_lower_validation_loss_first():
    ranking = trainer_module.ranking
    assert ranking(0.56, 0.49) > ranking(0.56, 0.62) > ranking(0.55, 0.01)
    assert ranking(0.01, 0.0) > ranking(0.0, 0.0) > ranking(0.0, float("inf"))


def test_the_last_checkpoint_is_kept_unless_the_best_leads_by_a_standard_error():
    keeps_last = trainer_module.keeps_last
    # 43 probe questions: one question of lead is noise, seven (0.16 > 0.075) is not.
    assert keeps_last(26 / 43, 25 / 43, 43)
    assert not keeps_last(26 / 43, 19 / 43, 43)
    assert keeps_last(0.5, 0.5, 43) and keeps_last(1.0, 1.0, 4)
    assert not keeps_last(1.0, 0.75, 4)  # a perfect score's error is zero


def test_distill_keeps_the_best_checkpoint_on_a_clear_lead(tmp_path, tiny_student, monkeypatch):
    root = make_project(tmp_path, tiny_student, "  eval_per_epoch: 2\n")
    config = (root / "minime.yaml").read_text().replace("patience: 10", "patience: 3")
    (root / "minime.yaml").write_text(config)
    ranks = iter(range(0, -100, -1))  # every evaluation ranks below the first
    monkeypatch.setattr(trainer_module, "ranking", lambda score, loss: next(ranks))
    monkeypatch.setattr(trainer_module, "keeps_last", lambda best, last, size: False)
    report = distill(Project.open(root))
    evaluated = [h["step"] for h in report.history if "eval_score" in h]
    assert report.kept_step == evaluated[0] < report.steps

    monkeypatch.setattr(trainer_module, "keeps_last", lambda best, last, size: True)
    ranks = iter(range(0, -100, -1))
    report = distill(Project.open(root))
    assert report.kept_step == report.steps


def test_time_budget_never_outgrows_the_epoch_limit(monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(trainer_module.time, "monotonic", lambda: clock["now"])
    trainer = SimpleNamespace(horizon=12)
    budget = TimeBudget(trainer, minutes=60)
    state = SimpleNamespace(global_step=0, max_steps=12)
    budget.on_train_begin(None, state, TrainerControl())
    clock["now"], state.global_step = 1.0, PACE_STEPS
    budget.on_step_end(SimpleNamespace(eval_strategy="no"), state, TrainerControl())
    assert trainer.horizon == 12


def test_a_second_method_trains_into_its_own_folder(tmp_path, tiny_student):
    project = Project.open(make_project(tmp_path, tiny_student))
    report = distill(project, method="sft")
    assert report.method == "sft" and report.mode == "sft"
    assert (project.root / "out" / "distill-sft" / "model" / "minime.json").exists()
    assert not (project.root / "out" / "distill" / "model").exists()


def test_the_persona_figure_reads_the_configured_questions_file(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere" / "persona-questions.jsonl"
    elsewhere.parent.mkdir()
    write_jsonl(
        elsewhere,
        [
            {"id": "job", "category": "fact", "question": "Where?", "must_contain": ["verdant"]},
            {"id": "cat", "category": "fact", "question": "Pets?", "must_contain": ["cat"]},
        ],
    )
    root = tmp_path / "persona"
    root.mkdir()
    (root / "profile.md").write_text("# Mara\n\n- Mara works at Verdant Loop.\n")
    (root / "minime.yaml").write_text(f"name: Mara\neval:\n  questions: '{elsewhere}'\n")
    answers = ["Mara works at Verdant Loop.", "No pets."]
    monkeypatch.setattr(train_module, "generate_answers", lambda *args: answers)
    accuracy, failures = train_module._persona_accuracy(Project.open(root), None, None, [])
    assert accuracy == 0.5
    assert failures == [{"question": "Pets?", "answer": "No pets."}]


def test_training_arguments_map_the_distill_settings(tmp_path):
    root = tmp_path / "persona"
    root.mkdir()
    (root / "profile.md").write_text("# Mara\n\n- Mara has a cat.\n")
    (root / "minime.yaml").write_text(
        "distill:\n  batch_size: 3\n  max_epochs: 4\n  learning_rate: 0.01\n"
    )
    config = Project.open(root).config.distill
    args = train_module.training_arguments(
        config, tmp_path / "checkpoints", train_examples=12, validates=True, by_score=True
    )
    assert args.per_device_train_batch_size == 3 and args.num_train_epochs == 4
    assert args.learning_rate == 0.01 and args.lr_scheduler_type == "cosine"
    assert args.eval_steps == args.save_steps == max(1, 4 // config.eval_per_epoch)
    assert args.metric_for_best_model == "ranking" and args.greater_is_better
    # Ranked by the probe's score, the kept checkpoint is chosen after training (keeps_last).
    assert not args.load_best_model_at_end and args.eval_strategy == "steps"
    plain = train_module.training_arguments(
        config, tmp_path / "checkpoints", train_examples=12, validates=False, by_score=False
    )
    assert plain.metric_for_best_model == "loss" and not plain.greater_is_better
    assert plain.eval_strategy == "no" and not plain.load_best_model_at_end
