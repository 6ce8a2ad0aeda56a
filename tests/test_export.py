"""Export stage, fast parts: tensor layouts, GGUF writing, chat-template pieces, Modelfile,
manifest and model card. The real models are in test_export_integration.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import gguf
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from minime.cli import app
from minime.config import load_config
from minime.errors import ConfigError, InputError
from minime.export.card import model_card
from minime.export.convert import ExportError, _to_gguf_layout, write_f16_gguf
from minime.export.ollama import TurnFormat, modelfile
from minime.export.stage import _base_gguf, export_folder
from minime.layout import exported_ggufs
from minime.project import Project, init_project
from minime.registry import GEMMA3_CHAT_TEMPLATE

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CONVERSATIONS = [
    [{"role": "user", "content": "Where does Mara work?"}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Who are you?\nTell me."},
    ],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
]


def _tiny_llama(path, tie=True):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=16,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    return model


def _base_for(model, path, extra_tensor=None):
    """A GGUF with llama metadata and zero tensors of the model's shapes (a stand-in base)."""
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        get_gguf_hf_weights_map,
    )

    names = get_gguf_hf_weights_map(model, TENSOR_PROCESSORS["llama"](model.config.to_dict()))
    state = model.state_dict()
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(16)
    writer.add_feed_forward_length(32)
    writer.add_block_count(2)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(16)
    writer.add_string("general.name", "Tiny Base")
    writer.add_string("general.license", "apache-2.0")
    writer.add_uint32("tokenizer.ggml.eos_token_id", 0)
    for gguf_name, hf_name in names.items():
        if hf_name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        writer.add_tensor(gguf_name, np.zeros(state[hf_name].shape, np.float32))
    if extra_tensor:
        writer.add_tensor(extra_tensor, np.arange(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_written_gguf_reads_back_as_the_trained_model(tmp_path):
    from transformers import AutoModelForCausalLM

    model = _tiny_llama(tmp_path)
    base = _base_for(model, tmp_path / "base.gguf", extra_tensor="rope_freqs.weight")
    info = write_f16_gguf(
        tmp_path,
        base,
        tmp_path / "out.gguf",
        chat_template="{{ messages }}",
        end_of_turn_id=3,
        name="ada",
        description="Answers questions about Ada",
    )
    assert info == {
        "name": "Tiny Base",
        "architecture": "llama",
        "license": "apache-2.0",
        "add_bos_token": False,
    }
    # transformers' own GGUF reader (reverse Q/K permutation included) gives the weights back.
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="out.gguf", dtype=torch.float32)
    for name, weights in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], weights, atol=2e-3, rtol=2e-3)
    reader = gguf.GGUFReader(tmp_path / "out.gguf")
    fields = {key: field.contents() for key, field in reader.fields.items()}
    assert fields["tokenizer.chat_template"] == "{{ messages }}"
    assert fields["tokenizer.ggml.eot_token_id"] == 3
    assert fields["tokenizer.ggml.eos_token_id"] == 0  # kept from the base
    assert fields["general.file_type"] == 1
    assert fields["general.base_model.0.name"] == "Tiny Base"
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.F16
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    # A tensor only the GGUF has is copied unchanged.
    rope = next(t for t in reader.tensors if t.name == "rope_freqs.weight")
    np.testing.assert_array_equal(rope.data, np.arange(8, dtype=np.float32))


def test_llama_q_and_k_are_permuted_as_llama_cpp_expects(tmp_path):
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    model = _tiny_llama(tmp_path)
    config = model.config
    q = model.model.layers[0].self_attn.q_proj.weight.detach().numpy()
    k = model.model.layers[0].self_attn.k_proj.weight.detach().numpy()
    gguf_q = _to_gguf_layout("llama", "blk.0.attn_q.weight", q, config)
    gguf_k = _to_gguf_layout("llama", "blk.0.attn_k.weight", k, config)
    assert not np.array_equal(gguf_q, q)
    processor = LlamaTensorProcessor(config.to_dict())
    np.testing.assert_array_equal(processor.process(gguf_q, "blk.0.attn_q.weight").weights, q)
    np.testing.assert_array_equal(processor.process(gguf_k, "blk.0.attn_k.weight").weights, k)


def test_gemma_norms_get_their_one_back():
    from transformers.modeling_gguf_pytorch_utils import Gemma2TensorProcessor

    norm = np.array([0.0, -0.5, 2.0], dtype=np.float32)
    stored = _to_gguf_layout("gemma3", "blk.0.attn_q_norm.weight", norm, None)
    np.testing.assert_array_equal(stored, [1.0, 0.5, 3.0])
    back = Gemma2TensorProcessor().process(stored, "blk.0.attn_q_norm.weight").weights
    np.testing.assert_array_equal(back, norm)
    weight = np.ones((2, 2), dtype=np.float32)
    assert _to_gguf_layout("gemma3", "blk.0.ffn_up.weight", weight, None) is weight


def test_a_trained_tensor_without_a_place_is_an_error(tmp_path):
    base_model = _tiny_llama(tmp_path / "base")
    base = _base_for(base_model, tmp_path / "base.gguf")
    _tiny_llama(tmp_path / "untied", tie=False)  # has lm_head, the base has no output.weight
    with pytest.raises(ExportError, match=r"no place in the base GGUF.*lm_head"):
        write_f16_gguf(
            tmp_path / "untied",
            base,
            tmp_path / "out.gguf",
            chat_template="t",
            end_of_turn_id=None,
            name="n",
            description="d",
        )
    assert not (tmp_path / "out.gguf").exists()


@pytest.fixture
def chat_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("template", [SMOLLM2_TEMPLATE, GEMMA3_CHAT_TEMPLATE])
def test_turn_format_rebuilds_the_jinja_prompts(chat_tokenizer, template):
    chat_tokenizer.chat_template = template
    fmt = TurnFormat.from_tokenizer(chat_tokenizer)
    for messages in CONVERSATIONS:
        expected = chat_tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        assert fmt.render(messages) == expected


def test_turn_format_pieces(chat_tokenizer):
    chat_tokenizer.chat_template = SMOLLM2_TEMPLATE
    smol = TurnFormat.from_tokenizer(chat_tokenizer)
    assert smol.preamble.startswith("<|im_start|>system\nYou are a helpful AI assistant")
    assert (smol.user_prefix, smol.user_suffix) == ("<|im_start|>user\n", "<|im_end|>\n")
    assert smol.generation == "<|im_start|>assistant\n"
    assert smol.system_style == "turn"
    chat_tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
    gemma = TurnFormat.from_tokenizer(chat_tokenizer)
    assert gemma.assistant_prefix == "<start_of_turn>model\n"
    assert (gemma.system_style, gemma.system_separator) == ("fold", "\n\n")


def test_a_template_that_is_not_turn_by_turn_is_refused(chat_tokenizer):
    chat_tokenizer.chat_template = "{{ messages[-1]['content'] }}"
    with pytest.raises(ExportError, match="chat template"):
        TurnFormat.from_tokenizer(chat_tokenizer)


def test_modelfile_has_template_stops_and_no_system(chat_tokenizer):
    chat_tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
    text = modelfile(
        "ada.q8_0.gguf",
        TurnFormat.from_tokenizer(chat_tokenizer),
        ["<eos>", "<end_of_turn>"],
        bos=None,
    )
    assert "FROM ./ada.q8_0.gguf\n" in text
    assert 'PARAMETER stop "<end_of_turn>"\n' in text
    assert 'PARAMETER stop "<eos>"\n' in text
    # Ollama samples as the export was verified, not with its own defaults.
    assert "PARAMETER temperature 0.2\n" in text and "PARAMETER top_p 0.95\n" in text
    assert "PARAMETER num_ctx 4096\n" in text
    assert "SYSTEM" not in text
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    assert '{{ "<start_of_turn>model\\n" }}' in template
    # Every newline of the template text is eaten by a {{- marker: literal text lives in
    # Go string literals only.
    assert all(line.startswith("{{") for line in template.splitlines())


@pytest.mark.skipif(shutil.which("go") is None, reason="needs the Go toolchain")
@pytest.mark.parametrize("template", [SMOLLM2_TEMPLATE, GEMMA3_CHAT_TEMPLATE])
def test_go_template_renders_like_jinja(chat_tokenizer, template, tmp_path):
    """Run the Modelfile's TEMPLATE through Go's text/template, as Ollama does."""
    chat_tokenizer.chat_template = template
    fmt = TurnFormat.from_tokenizer(chat_tokenizer)
    (tmp_path / "go.mod").write_text("module render\n\ngo 1.19\n")
    (tmp_path / "main.go").write_text(GO_RENDERER)
    (tmp_path / "template.txt").write_text(fmt.go_template())
    (tmp_path / "messages.json").write_text(json.dumps(CONVERSATIONS))
    env = {**os.environ, "GOCACHE": str(tmp_path / "cache"), "GOPATH": str(tmp_path / "go")}
    done = subprocess.run(
        ["go", "run", ".", "template.txt", "messages.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rendered = json.loads(done.stdout)
    for messages, go in zip(CONVERSATIONS, rendered, strict=True):
        assert go == chat_tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )


GO_RENDERER = """package main

import (
\t"encoding/json"
\t"os"
\t"strings"
\t"text/template"
)

type Message struct {
\tRole    string `json:"role"`
\tContent string `json:"content"`
}

func main() {
\ttext, _ := os.ReadFile(os.Args[1])
\tdata, _ := os.ReadFile(os.Args[2])
\tvar conversations [][]Message
\tif err := json.Unmarshal(data, &conversations); err != nil {
\t\tpanic(err)
\t}
\ttmpl := template.Must(template.New("t").Parse(string(text)))
\tvar out []string
\tfor _, messages := range conversations {
\t\tvar b strings.Builder
\t\tif err := tmpl.Execute(&b, map[string]any{"Messages": messages}); err != nil {
\t\t\tpanic(err)
\t\t}
\t\tout = append(out, b.String())
\t}
\tjson.NewEncoder(os.Stdout).Encode(out)
}
"""


def _project(tmp_path) -> Project:
    init_project(tmp_path, "Åsa Example")
    return Project.open(tmp_path)


def test_export_folder_follows_the_source(tmp_path):
    project = _project(tmp_path)
    assert export_folder(project, tmp_path / "out/distill/model") == tmp_path / "out/export"
    assert export_folder(project, tmp_path / "out/distill-sft/model") == (
        tmp_path / "out/export-sft"
    )
    assert export_folder(project, tmp_path / "elsewhere/My Run/model") == (
        tmp_path / "out/export-my-run"
    )


def test_exported_ggufs_reads_the_manifest(tmp_path):
    (tmp_path / "a.q8_0.gguf").write_bytes(b"x")
    manifest = {"files": [{"quant": "q8_0", "path": "a.q8_0.gguf", "bytes": 1, "sha256": ""}]}
    (tmp_path / "export.json").write_text(json.dumps(manifest))
    assert exported_ggufs(tmp_path) == {"q8_0": tmp_path / "a.q8_0.gguf"}
    manifest["files"].append({"quant": "q4_k_m", "path": "gone.gguf", "bytes": 1, "sha256": ""})
    (tmp_path / "export.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r'field "files.1.path".*gone.gguf is missing'):
        exported_ggufs(tmp_path)
    with pytest.raises(InputError, match="run `minime export` first"):
        exported_ggufs(tmp_path / "nothing")


def test_a_student_from_a_hugging_face_folder_is_explained(tmp_path):
    meta = {"student": str(tmp_path / "hf"), "base": {"source": str(tmp_path / "hf")}}
    with pytest.raises(ExportError, match=r"trained from a Hugging Face folder.*from a GGUF"):
        _base_gguf(meta, tmp_path / "model")


def test_default_quant_must_be_written(tmp_path):
    (tmp_path / "minime.yaml").write_text("export:\n  quantizations: [q4_k_m]\n")
    with pytest.raises(ConfigError, match=r"minime.yaml:1: export: .*'q8_0' is not among"):
        load_config(tmp_path / "minime.yaml")


def test_cli_export_without_a_trained_model_says_what_to_run(tmp_path):
    init_project(tmp_path, "Ada")
    result = CliRunner().invoke(app, ["export", str(tmp_path)])
    assert result.exit_code == 1
    assert "run `minime distill` first" in result.output.replace("\n", "")


def test_model_card_names_licence_data_training_and_figures(tmp_path):
    project = _project(tmp_path)
    data = tmp_path / "out" / "data"
    data.mkdir(parents=True)
    rows = [{"messages": [], "category": "question"}] * 3
    rows.append({"messages": [], "category": "private"})
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "out" / "eval").mkdir()
    (tmp_path / "out" / "eval" / "report.json").write_text(json.dumps({"accuracy": 0.61}))
    manifest = {
        "student": "gemma3-270m",
        "method": "kd",
        "default": "q8_0",
        "end_of_turn_ids": [1, 106],
        "files": [{"quant": "q8_0", "path": "asa-example.q8_0.gguf", "bytes": 291_000_000}],
        "base": {"name": "Gemma 3 270m", "license": "gemma", "architecture": "gemma3"},
    }
    verify = {
        "passed": True,
        "failures": [],
        "tokenizer": {"rows": 4, "prompt_mismatches": 0},
        "logits": {"q8_0": {"top1_agreement": 0.97, "mean_kl": 0.004}},
        "answers": {"q8_0": {"stopped": 5, "prompts": 5, "mean_tokens": 31.0}},
    }
    distill = {"method": "kd", "mode": "sparse", "tuning": "lora", "final_train_loss": 1.25}
    card = model_card(project, manifest=manifest, verify=verify, distill=distill)
    assert card.startswith("# Åsa Example: a minime assistant")
    assert "Gemma Terms of Use" in card
    assert "| `asa-example.q8_0.gguf` | Q8_0 | 291.0 MB |" in card
    assert "- train: 4 rows (question 3, private 1)" in card
    assert "final train loss 1.250" in card
    assert "| Q8_0 | 0.970 | 0.0040 | 5 / 5 | 31.0 |" in card
    assert "| accuracy | 0.61 |" in card
    assert "ollama create asa-example -f Modelfile" in card


def test_answers_that_never_end_fail_only_beyond_a_few():
    from minime.export.verify import endless_verdicts

    answers = {"q8_0": [3, 7], "q4_k_m": [3]}
    failures, warnings = endless_verdicts(answers, {3, 7}, rows=50, max_tokens=256)
    assert failures == [] and len(warnings) == 1 and "2 of 50" in warnings[0]
    failures, warnings = endless_verdicts(answers, {3}, rows=50, max_tokens=256)
    assert failures == [] and "q8_0: 1 of 50" in warnings[0] and "1 of 50" in warnings[1]
    quantized = {"q8_0": list(range(6)), "q4_k_m": [0]}
    failures, warnings = endless_verdicts(quantized, set(), rows=50, max_tokens=256)
    assert failures == [
        "q8_0: 6 of 50 validation prompts did not end its turn within 256 tokens, although "
        "the F16 file ends them"
    ]
    assert warnings[0].startswith("q4_k_m: 1 of 50") and "too few to fail" in warnings[0]
    failures, _ = endless_verdicts({"q8_0": [1]}, set(), rows=4, max_tokens=256)
    assert failures == []
    failures, warnings = endless_verdicts({"q8_0": [1]}, {1}, rows=4, max_tokens=256)
    assert failures == [] and "1 of 4" in warnings[0]
    failures, _ = endless_verdicts({"q8_0": [1, 2]}, {1, 2}, rows=4, max_tokens=256)
    assert failures[0].endswith("train it further")
    many = {"q8_0": list(range(20))}
    failures, warnings = endless_verdicts(many, set(range(20)), rows=50, max_tokens=256)
    assert warnings == [] and failures[0].endswith("train it further")


def test_answer_figures_count_each_kind_of_answer(monkeypatch, tmp_path):
    import types

    from rich.progress import Progress

    import minime.backends.llamacpp
    from minime.backends.base import SamplingParams
    from minime.export.verify import _answers_check

    class Backend:
        def __init__(self, path, n_ctx, n_threads):
            pass

        def complete(self, messages, params):
            text = messages[-1]["content"]
            return types.SimpleNamespace(
                text="" if text == "empty" else "fine",
                finish_reason="length" if text == "loop" else "stop",
                tokens=[],
                usage=types.SimpleNamespace(completion_tokens=4),
            )

        def close(self):
            pass

    monkeypatch.setattr(minime.backends.llamacpp, "LlamaCppBackend", Backend)
    tokenizer = types.SimpleNamespace(added_tokens_decoder={})
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "a"}]}
        for q in ("hello", "loop", "empty")
    ]
    with Progress(disable=True) as progress:
        figures = _answers_check(
            tmp_path / "s.gguf", rows, [], tokenizer, SamplingParams(max_tokens=8), 1, progress
        )
    assert (figures.prompts, figures.stopped, figures.no_stop, figures.empty) == (3, 1, 1, 1)
    assert figures.endless_rows == [1] and figures.mean_tokens == 4.0
    assert figures.problems == ["1 of 3 validation prompts gave an empty answer"]
