"""`minime distill` on the real bundled SmolLM2 student, with real teacher log-probs.

Two teachers: SmolLM2 itself (same tokenizer: exact sparse KD on its top-k ids) and
Qwen2.5-Coder-0.5B (another tokenizer: ULD on character-aligned positions).
"""

import json

import pytest
from transformers import AutoModelForCausalLM

from minime.backends import SamplingParams
from minime.backends.llamacpp import LlamaCppBackend
from minime.chat import system_prompt
from minime.data.records import PromptRecord
from minime.data.respond import _answer, _row
from minime.distill import distill
from minime.jsonl import write_jsonl
from minime.project import Project

from conftest import EXAMPLE, bundled_model_path

pytestmark = pytest.mark.integration

QUESTIONS = [
    "Where does Mara work?",
    "What is Mara's cat called?",
    "Which instrument does Mara play?",
    "What is tinyshade?",
    "Where did Mara study?",
    "What does Canopy run on?",
]


def teacher_rows(teacher_name: str) -> list[dict]:
    """Rows as `minime data respond` writes them, from a real llama.cpp teacher."""
    profile = (EXAMPLE / "profile.md").read_text()
    teacher = LlamaCppBackend(bundled_model_path(teacher_name), n_ctx=4096, n_threads=2)
    params = SamplingParams(temperature=0, max_tokens=40, logprobs=8)
    rows = []
    try:
        for question in QUESTIONS:
            messages = [
                {"role": "system", "content": system_prompt("Mara Lindqvist", profile)},
                {"role": "user", "content": question},
            ]
            record = PromptRecord.create(question, "real", fact="Mara works at Verdant Loop.")
            rows.append(_row(record, _answer(teacher, messages, params), teacher_name))
    finally:
        teacher.close()
    return rows


@pytest.mark.parametrize(
    ("teacher", "mode"),
    [("smollm2-135m-instruct", "sparse"), ("qwen2.5-coder-0.5b-instruct", "uld")],
)
def test_distill_real_student_from_real_teacher(tmp_path, teacher, mode):
    bundled_model_path("smollm2-135m-instruct")
    rows = teacher_rows(teacher)
    assert all(r["teacher_logprobs"] for r in rows)
    root = tmp_path / "mara"
    (root / "out" / "data").mkdir(parents=True)
    (root / "profile.md").write_text((EXAMPLE / "profile.md").read_text())
    (root / "minime.yaml").write_text(
        "name: Mara Lindqvist\ndistill:\n  tuning: lora\n  batch_size: 3\n  max_epochs: 2\n"
        # No repeats of the facts' rows and no chained rows: six rows, two steps an epoch,
        # keep the test short.
        "  threads: 2\n  learning_rate: 0.0005\n  fact_rows: 0\n  chained_rows: 0\n"
    )
    write_jsonl(root / "out" / "data" / "train.jsonl", rows)
    write_jsonl(root / "out" / "data" / "val.jsonl", rows[:2])
    report = distill(Project.open(root))
    assert report.mode == mode
    assert report.steps == 4
    kd = [h["kd_loss"] for h in report.history if "kd_loss" in h]
    assert kd and all(v > 0 for v in kd)
    out = root / "out" / "distill"
    merged = AutoModelForCausalLM.from_pretrained(out / "model")
    assert merged.config.vocab_size == 49152
    meta = json.loads((out / "model" / "minime.json").read_text())
    assert meta["mode"] == mode and meta["end_of_turn_ids"]
    assert (out / "loss_curve.png").exists() and (out / "adapter").is_dir()
