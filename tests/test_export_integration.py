"""Export with the real bundled students, untrained: the round trip reproduces the base GGUF,
a full export passes verification, and broken exports fail it."""

from __future__ import annotations

import json
import os
import shutil

import gguf
import numpy as np
import pytest

from minime.export import VerificationFailed, export, verify
from minime.export.convert import copy_gguf, write_f16_gguf
from minime.layout import exported_ggufs
from minime.project import Project

from conftest import EXAMPLE, bundled_model_path

pytestmark = pytest.mark.integration

VAL = [
    ("What is 2 + 2?", "2 + 2 = 4."),
    ("What is the capital of Sweden?", "The capital of Sweden is Stockholm."),
    ("Hej! Vem är du?", "Hej! Jag svarar på frågor om Mara Lindqvist."),
]
PROMPT = [{"role": "user", "content": "Where does Mara work, and what does she do there?"}]


def _untrained_student(spec: str, target):
    """A folder laid out like `minime distill`'s output, holding the untrained student."""
    from minime.student import student_folder

    bundled_model_path(spec)  # skips when the model is not installed
    folder = student_folder(spec)
    target.mkdir(parents=True)
    for path in folder.iterdir():
        if path.name == "model.safetensors":
            os.symlink(path, target / path.name)
        elif path.name != "minime.json":
            shutil.copy(path, target / path.name)
    base = json.loads((folder / "minime.json").read_text())
    meta = {
        "student": spec,
        "base": base,
        "method": "sft",
        "mode": "sft",
        "tuning": "full",
        "end_of_turn_ids": base["end_of_turn_ids"],
        "chat_template": base["chat_template"],
    }
    (target / "minime.json").write_text(json.dumps(meta))
    return target, base


def _next_token_logprobs(path, ids):
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=256, logits_all=True, n_threads=1, verbose=False)
    try:
        llm.eval(ids)
        logits = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
    finally:
        llm.close()
    logits -= logits.max(-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


@pytest.mark.parametrize("spec", ["smollm2-135m-instruct", "gemma3-270m"])
def test_round_trip_without_training_reproduces_the_base_model(spec, tmp_path):
    from transformers import AutoTokenizer

    source, base = _untrained_student(spec, tmp_path / "model")
    out = tmp_path / "student.f16.gguf"
    write_f16_gguf(
        source,
        base_path := bundled_model_path(spec),
        out,
        chat_template=base["chat_template"],
        end_of_turn_id=None,
        name="round-trip",
        description="untrained",
    )
    # Every tensor is the base's own, in the base's layout, to F16 precision.
    written = {t.name: t for t in gguf.GGUFReader(out).tensors}
    base_tensors = gguf.GGUFReader(base_path).tensors
    assert [t.name for t in base_tensors] == list(written)
    for tensor in base_tensors:
        expected = gguf.dequantize(tensor.data, tensor.tensor_type)
        got = np.asarray(written[tensor.name].data, dtype=np.float32)
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-6, err_msg=tensor.name)
    # And llama.cpp predicts as with the base file; not exactly, since the base's quantized
    # matrix products also round the activations to 8 bits.
    tokenizer = AutoTokenizer.from_pretrained(source)
    text = tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text + "Mara works at Verdant Loop as a firmware engineer.")["input_ids"]
    expected = _next_token_logprobs(base_path, ids)
    got = _next_token_logprobs(out, ids)
    kl = (np.exp(expected) * (expected - got)).sum(-1)
    assert (expected.argmax(-1) == got.argmax(-1)).mean() >= 0.9
    assert kl.mean() < 0.02, kl
    reader = gguf.GGUFReader(out)
    assert reader.fields["tokenizer.chat_template"].contents() == base["chat_template"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The untrained SmolLM2 student of a small copy of the example persona, exported."""
    root = tmp_path_factory.mktemp("persona")
    shutil.copy(EXAMPLE / "profile.md", root / "profile.md")
    (root / "minime.yaml").write_text(
        # Greedy: the untrained model ends these three answers (sampled, it may not).
        "name: Mara Lindqvist\nchat:\n  temperature: 0\n"
        "export:\n  verify_prompts: 3\n  verify_max_tokens: 200\n  threads: 1\n"
    )
    data = root / "out" / "data"
    data.mkdir(parents=True)
    rows = (EXAMPLE / "out" / "data" / "train.jsonl").read_text().splitlines()
    (data / "train.jsonl").write_text("\n".join(rows[:12]) + "\n")
    # Questions the untrained model answers briefly: the trained ones would make it ramble.
    (data / "val.jsonl").write_text(
        "".join(
            json.dumps(
                {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            )
            + "\n"
            for q, a in VAL
        )
    )
    _untrained_student("smollm2-135m-instruct", root / "out" / "distill" / "model")
    project = Project.open(root)
    return project, export(project)


def test_export_writes_verified_files(exported):
    project, result = exported
    folder = project.root / "out" / "export"
    assert result.folder == folder
    assert set(result.files) == {"f16", "q8_0", "q4_k_m"}
    assert exported_ggufs(folder)["q8_0"] == folder / "mara-lindqvist.q8_0.gguf"
    manifest = json.loads((folder / "export.json").read_text())
    assert manifest["verified"] is True
    assert manifest["default"] == "q8_0"
    assert manifest["end_of_turn_ids"] == [0, 2]
    sizes = {f["quant"]: f["bytes"] for f in manifest["files"]}
    assert sizes["f16"] > sizes["q8_0"] > sizes["q4_k_m"]
    report = json.loads((folder / "verify.json").read_text())
    assert report["passed"] and not report["failures"]
    assert report["tokenizer"]["rows"] == 12
    assert report["tokenizer"]["prompt_mismatches"] == 0
    assert report["logits"]["f16"]["top1_agreement"] >= 0.98
    assert report["answers"]["q8_0"]["stopped"] == 3
    assert report["metadata"]["q4_k_m"]["end_of_turn_ids"] == {"0": True, "2": True}
    modelfile = (folder / "Modelfile").read_text()
    assert "FROM ./mara-lindqvist.q8_0.gguf" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    card = (folder / "README.md").read_text()
    assert "Apache-2.0" in card and "passed" in card


def test_a_rerun_keeps_the_files(exported):
    project, result = exported
    before = {q: p.stat().st_mtime_ns for q, p in result.files.items()}
    again = export(project, verify=False)
    assert again.reused
    assert {q: p.stat().st_mtime_ns for q, p in again.files.items()} == before


def _break(path, overrides=None, drop=()):
    """Rewrite a GGUF in place with some metadata dropped or changed."""
    reader = gguf.GGUFReader(path)
    if callable(overrides):
        overrides = overrides(reader)
    broken = path.with_name("broken.gguf")
    copy_gguf(reader, broken, overrides=overrides, drop=drop)
    del reader
    os.replace(broken, path)


def _rename_end_tokens(reader):
    """End-of-turn tokens renamed and EOS moved: llama.cpp no longer knows where turns end."""
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    tokens[0], tokens[2] = "<|fin_a|>", "<|fin_b|>"
    return {
        "tokenizer.ggml.tokens": (tokens, gguf.GGUFValueType.ARRAY),
        "tokenizer.ggml.eos_token_id": (1, gguf.GGUFValueType.UINT32),
        "tokenizer.ggml.eot_token_id": (1, gguf.GGUFValueType.UINT32),
    }


@pytest.mark.parametrize(
    ("damage", "failure"),
    [
        ({"drop": ("tokenizer.chat_template",)}, "q8_0: the GGUF's chat template is not"),
        ({"overrides": _rename_end_tokens}, "q8_0: llama.cpp does not stop at end-of-turn ids"),
    ],
    ids=["template-removed", "stop-ids-wrong"],
)
def test_verify_fails_a_broken_export(exported, damage, failure, tmp_path):
    project, result = exported
    folder = project.root / "out" / "export"
    target = result.files["q8_0"]
    saved = tmp_path / "saved.gguf"
    shutil.copy(target, saved)
    try:
        _break(target, **damage)
        with pytest.raises(VerificationFailed, match="verification failed"):
            verify(project)
        report = json.loads((folder / "verify.json").read_text())
        assert not report["passed"]
        assert any(f.startswith(failure) for f in report["failures"]), report["failures"]
        # The answers of the broken file fail too, not only its metadata.
        assert report["answers"]["q8_0"]["stopped"] < 3, report["answers"]["q8_0"]
        assert report["answers"]["q4_k_m"]["stopped"] == 3
        assert json.loads((folder / "export.json").read_text())["verified"] is False
    finally:
        shutil.copy(saved, target)
