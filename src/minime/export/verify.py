"""Proof that the exported GGUFs behave like the trained student, and stop.

Four checks, each with its figures in `verify.json`:
- metadata: every file carries the student's chat template, and llama.cpp treats each
  end-of-turn id as end of generation;
- tokenizer: the F16 file, through its embedded template (the path `LlamaCppBackend` and
  the server use), turns every training prompt into the ids the student trained on, and
  tokenizes each whole rendered conversation as the Hugging Face tokenizer does;
- logits: on the validation answers, the next-token distribution of each file against the
  Hugging Face model (top-1 agreement, mean KL(HF || GGUF)); thresholds below;
- answers: every quantized file answers each validation prompt, sampled as the assistant is
  served (`chat.temperature`, `top_p`, `seed`), ends its turn with an end-of-turn token
  within the token limit, and writes no template token. Where an answer never ends, the F16
  file answers the same prompt too: if it does not end either, the fault is the student's
  own (a repetition loop, a stop never learned), which the failure message says. Either
  kind fails the file only beyond MAX_STUDENT_LOOP_SHARE of the prompts (and never for one).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from rich.progress import Progress

from minime.backends.base import SamplingParams
from minime.errors import BackendError

#: The F16 file is the trained weights converted, not approximated: it must agree with the
#: Hugging Face model almost everywhere (measured on SmolLM2-135M: top-1 0.995, KL 1e-5).
F16_MIN_TOP1 = 0.98
F16_MAX_KL = 0.01
#: Quantized files lose some agreement (measured on SmolLM2-135M: Q8_0 0.97 / KL 0.005,
#: Q4_K_M 0.91 / 0.08); these floors only catch a broken file, whose agreement is near 0.
QUANTIZED_MIN_TOP1 = 0.7
QUANTIZED_MAX_KL = 1.0
#: Below this mean probability of its end-of-turn token after the validation answers, a
#: student that does not end its answers is said not to have learned to stop (measured:
#: trained students 0.84-0.90, a Gemma 3 LoRA student whose stop token stayed untrained 0.0005).
STUDENT_MIN_STOP = 0.2
#: Up to this share of the validation prompts, answers that the F16 file does not end either
#: are the student's own loops (serve's max_tokens cuts them): a warning, not a failure. The
#: example's KD student loops on 2 of 50; a student whose stop token is broken, on nearly all.
MAX_STUDENT_LOOP_SHARE = 0.1
#: Failures listed per check in verify.json (the counts cover all of them).
SHOWN_FAILURES = 5


class MetadataFigures(BaseModel):
    """One file's metadata check."""

    template_matches: bool
    #: End-of-turn id -> whether llama.cpp ends generation at it.
    end_of_turn_ids: dict[str, bool]
    bytes: int

    def failures(self, quant: str) -> list[str]:
        """What is wrong with the file's metadata."""
        failures = []
        if not self.template_matches:
            failures.append(f"{quant}: the GGUF's chat template is not the one trained with")
        wrong = [i for i, eog in self.end_of_turn_ids.items() if not eog]
        if wrong:
            failures.append(f"{quant}: llama.cpp does not stop at end-of-turn ids {wrong}")
        return failures


class TokenizerFigures(BaseModel):
    """The F16 file's tokenizer against the trained one, on the training prompts."""

    rows: int
    prompt_mismatches: int
    text_mismatches: int
    examples: list[str]

    def failures(self) -> list[str]:
        """The mismatches, as one failure."""
        if not (self.prompt_mismatches or self.text_mismatches):
            return []
        return [
            f"f16: the GGUF tokenizes {self.prompt_mismatches} of {self.rows} training prompts "
            f"and {self.text_mismatches} whole conversations differently from the trained "
            "tokenizer"
        ]


class LogitFigures(BaseModel):
    """One file's next-token distributions against the trained model's."""

    positions: int
    top1_agreement: float
    mean_kl: float
    max_kl: float
    end_of_turn_probability: float

    def failures(self, quant: str) -> list[str]:
        """Agreement or KL beyond the thresholds (the F16 file's, or a quantized file's)."""
        min_top1, max_kl = (
            (F16_MIN_TOP1, F16_MAX_KL) if quant == "f16" else (QUANTIZED_MIN_TOP1, QUANTIZED_MAX_KL)
        )
        if self.top1_agreement >= min_top1 and self.mean_kl <= max_kl:
            return []
        return [
            f"{quant}: next-token agreement with the trained model {self.top1_agreement:.3f} "
            f"(needs {min_top1}), mean KL {self.mean_kl:.4f} (needs at most {max_kl})"
        ]


class AnswerFigures(BaseModel):
    """One file's answers to the validation prompts."""

    prompts: int
    stopped: int = 0
    problems: list[str] = []
    samples: list[dict[str, str]] = []
    #: Indexes of the prompts whose answer did not end within the token limit.
    endless_rows: list[int] = []
    no_stop: int = 0
    empty: int = 0
    template_tokens: int = 0
    mean_tokens: float = 0.0
    max_tokens: int = 0


class EndlessFigures(AnswerFigures):
    """The F16 file's answers to the prompts a quantized file never ended."""

    rows_checked: list[int]


class VerifyReport(BaseModel):
    """Figures of `minime export --verify`; `failures` is empty when every check passed."""

    source: str
    passed: bool
    failures: list[str]
    #: What the student does wrong that no export would change (a few answers that loop).
    warnings: list[str] = []
    thresholds: dict[str, float | int]
    metadata: dict[str, MetadataFigures]
    tokenizer: TokenizerFigures
    #: Mean probability the trained model gives its end-of-turn token right after each
    #: validation answer: low means the student never learned to stop.
    student_end_of_turn_probability: float
    logits: dict[str, LogitFigures]
    answers: dict[str, AnswerFigures]
    f16_on_endless: EndlessFigures | None = None
    seconds: float


def verify_files(
    files: dict[str, Path],
    source: Path,
    train_rows: list[dict],
    val_rows: list[dict],
    *,
    params: SamplingParams,
    threads: int | None,
) -> VerifyReport:
    """Run every check on the exported `files` (quant -> path, "f16" among them).

    :param source: the trained Hugging Face folder the files were made from.
    :param val_rows: validation rows; their prompts are answered by each quantized file.
    :param params: how answers are sampled; `max_tokens` is the limit to end a turn within.
    """
    # minime.student loads torch and transformers: `import minime.export` stays light.
    from minime.student import end_of_turn_ids, load_student

    started = time.monotonic()
    with _torch_threads(threads):
        model, tokenizer = load_student(source)
        model.eval()
        meta = json.loads((source / "minime.json").read_text(encoding="utf-8"))
        template = meta["chat_template"]
        end_ids = meta.get("end_of_turn_ids") or end_of_turn_ids(tokenizer)
        markers = template_markers(tokenizer, end_ids)
        metadata = {quant: _metadata(path, template, end_ids) for quant, path in files.items()}
        failures = [f for quant, figures in metadata.items() for f in figures.failures(quant)]
        sequences = _answer_sequences(tokenizer, val_rows)
        with Progress(transient=True) as progress:
            tokens = _tokenizer_check(files["f16"], tokenizer, train_rows, threads, progress)
            failures += tokens.failures()
            logits, student_stop = _logits_check(files, model, sequences, threads, progress)
            failures += [f for quant, figures in logits.items() for f in figures.failures(quant)]
            answers = {}
            for quant, path in files.items():
                if quant == "f16":
                    continue
                answers[quant] = _answers_check(
                    path, val_rows, markers, tokenizer, params, threads, progress
                )
                failures += [f"{quant}: {problem}" for problem in answers[quant].problems]
            endless = sorted({i for a in answers.values() for i in a.endless_rows})
            f16_on_endless, student_loops = None, set()
            if endless:
                f16 = _answers_check(
                    files["f16"],
                    [val_rows[i] for i in endless],
                    markers,
                    tokenizer,
                    params,
                    threads,
                    progress,
                )
                f16_on_endless = EndlessFigures(**f16.model_dump(), rows_checked=endless)
                student_loops = {endless[i] for i in f16.endless_rows}
        unended, warnings = endless_verdicts(
            {quant: a.endless_rows for quant, a in answers.items()},
            student_loops,
            len(val_rows),
            params.max_tokens,
        )
        failures += unended
        if any(a.no_stop for a in answers.values()) and student_stop < STUDENT_MIN_STOP:
            failures.append(
                "the trained model itself gives its end-of-turn token only "
                f"{student_stop:.2f} probability after the validation answers, and the F16 file "
                "predicts like it: the student has not learned to stop; train it longer (with "
                "LoRA, a base whose end-of-turn embedding is untrained also needs it trained)"
            )
        return VerifyReport(
            source=str(source),
            passed=not failures,
            failures=failures,
            warnings=warnings,
            thresholds={
                "f16_min_top1": F16_MIN_TOP1,
                "f16_max_kl": F16_MAX_KL,
                "quantized_min_top1": QUANTIZED_MIN_TOP1,
                "quantized_max_kl": QUANTIZED_MAX_KL,
                "answer_max_tokens": params.max_tokens,
                "answer_temperature": params.temperature,
            },
            metadata=metadata,
            tokenizer=tokens,
            student_end_of_turn_probability=round(student_stop, 4),
            logits=logits,
            answers=answers,
            f16_on_endless=f16_on_endless,
            seconds=round(time.monotonic() - started, 1),
        )


def _answer_sequences(tokenizer, rows: list[dict]) -> list[tuple[list[int], list[int], int]]:
    """Per row: the prompt's ids, the answer's ids and the end of turn, and the index of the
    end-of-turn token in the latter."""
    from minime.student import chat_prompt_ids, end_of_turn_text

    suffix = tokenizer(end_of_turn_text(tokenizer), add_special_tokens=False)["input_ids"]
    sequences = []
    for row in rows:
        prompt = chat_prompt_ids(tokenizer, row["messages"][:-1])
        answer = tokenizer(row["messages"][-1]["content"], add_special_tokens=False)["input_ids"]
        sequences.append((prompt, answer + suffix, len(answer)))
    return sequences


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Torch's thread count set to `threads` (when given) inside the block, then restored."""
    import torch

    before = torch.get_num_threads()
    if threads:
        # More torch threads than free cores spin and slow the HF forward passes several-fold.
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def endless_verdicts(
    endless_rows: dict[str, list[int]], student_loops: set[int], rows: int, max_tokens: int
) -> tuple[list[str], list[str]]:
    """Failures and warnings for answers that never ended (`endless_rows`: per quantized
    file, the prompts it did not end): a quantized file's fault where the F16 file ends
    them; the student's own loops (`student_loops`) where it does not. Either fails only
    beyond MAX_STUDENT_LOOP_SHARE of the `rows` prompts, and never for a single prompt."""
    failures, warnings = [], []
    # Answers are sampled, so one draw that loops is no proof against a file or a student:
    # a broken export, or an untrained student, loops on most prompts. One such prompt, or
    # up to MAX_STUDENT_LOOP_SHARE of them, is a warning.
    tolerated = max(1.0, MAX_STUDENT_LOOP_SHARE * rows)
    for quant, endless in endless_rows.items():
        unended = [i for i in endless if i not in student_loops]
        if unended:
            message = (
                f"{quant}: {len(unended)} of {rows} validation prompts did not end its turn "
                f"within {max_tokens} tokens, although the F16 file ends them"
            )
            if len(unended) > tolerated:
                failures.append(message)
            else:
                warnings.append(message + " (sampled answers; too few to fail the file)")
    if student_loops:
        loops = (
            "f16 (the trained weights, unquantized) does not end its answer to "
            f"{len(student_loops)} of {rows} validation prompts within {max_tokens} tokens "
            "either: the student's own behaviour (e.g. a repetition loop), not the export's"
        )
        if len(student_loops) > tolerated:
            failures.append(loops + "; train it further")
        else:
            warnings.append(loops + "; serve's max_tokens cuts such answers")
    return failures, warnings


def template_markers(tokenizer, end_ids: list[int]) -> list[str]:
    """The special tokens the chat template writes, and the end-of-turn tokens: text an
    answer must never contain."""
    fmt_text = tokenizer.apply_chat_template(
        [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "q"},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    special = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    markers = {token for token in special if token in fmt_text}
    markers |= {tokenizer.convert_ids_to_tokens(i) for i in end_ids}
    return sorted(markers)


def _tokenizer_of(path: Path):
    """The GGUF loaded by llama.cpp for its tokenizer and metadata (a vocab-only load would
    warn about its zero training context on every call)."""
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=64, n_batch=64, verbose=False)


def _metadata(path: Path, template: str, end_ids: list[int]) -> MetadataFigures:
    import llama_cpp

    llm = _tokenizer_of(path)
    try:
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        return MetadataFigures(
            template_matches=llm.metadata.get("tokenizer.chat_template") == template,
            end_of_turn_ids={str(i): bool(llama_cpp.llama_vocab_is_eog(vocab, i)) for i in end_ids},
            bytes=path.stat().st_size,
        )
    finally:
        llm.close()


def _tokenizer_check(path: Path, tokenizer, rows, threads, progress) -> TokenizerFigures:
    """Training prompts through the GGUF's own template and tokenizer vs the trained ids."""
    from minime.backends.llamacpp import LlamaCppBackend
    from minime.student import chat_prompt_ids

    llm = _tokenizer_of(path)
    prompt_mismatches, text_mismatches, examples = 0, 0, []
    task = progress.add_task("verify: tokenizer", total=len(rows))
    try:
        backend = LlamaCppBackend(path, n_ctx=512, n_threads=threads)
    except BackendError as exc:
        llm.close()
        return TokenizerFigures(
            rows=len(rows), prompt_mismatches=len(rows), text_mismatches=0, examples=[str(exc)]
        )
    try:
        for row in rows:
            messages = row["messages"]
            if backend.prompt_tokens(messages[:-1]) != chat_prompt_ids(tokenizer, messages[:-1]):
                prompt_mismatches += 1
                if len(examples) < SHOWN_FAILURES:
                    examples.append(messages[-2]["content"])
            text = tokenizer.apply_chat_template(messages, tokenize=False)
            ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            if ids != tokenizer(text, add_special_tokens=False)["input_ids"]:
                text_mismatches += 1
                if len(examples) < SHOWN_FAILURES:
                    examples.append(text)
            progress.advance(task)
    finally:
        backend.close()
        llm.close()
        progress.remove_task(task)
    return TokenizerFigures(
        rows=len(rows),
        prompt_mismatches=prompt_mismatches,
        text_mismatches=text_mismatches,
        examples=examples,
    )


def _logits_check(
    files, model, sequences, threads, progress
) -> tuple[dict[str, LogitFigures], float]:
    """Top-1 agreement and KL(HF || GGUF) over the answer positions of `sequences`, and the
    probability of the end-of-turn token after each answer (per file, and the HF model's)."""
    import torch
    from llama_cpp import Llama

    from minime.backends.llamacpp import all_cores

    if not sequences:
        return {}, 0.0
    n_ctx = max(len(p) + len(c) for p, c, _ in sequences) + 8
    llms = {
        quant: Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            logits_all=True,
            n_threads=all_cores(threads),
            n_threads_batch=all_cores(threads),
            verbose=False,
        )
        for quant, path in files.items()
    }
    agree = dict.fromkeys(llms, 0)
    kls: dict[str, list[float]] = {quant: [] for quant in llms}
    stops: dict[str, list[float]] = {quant: [] for quant in [*llms, "hf"]}
    positions = 0
    task = progress.add_task("verify: logits", total=len(sequences))
    try:
        for prompt, completion, end in sequences:
            ids = prompt + completion
            first, last = len(prompt) - 1, len(ids) - 1
            with torch.no_grad():
                hf = model(torch.tensor([ids])).logits[0, first:last].double()
            hf_logprobs = torch.log_softmax(hf, dim=-1).numpy()
            hf_top = hf_logprobs.argmax(-1)
            stops["hf"].append(float(np.exp(hf_logprobs[end, completion[end]])))
            positions += last - first
            for quant, llm in llms.items():
                llm.reset()
                llm.eval(ids)
                gguf = np.asarray(llm.scores[first:last], dtype=np.float64)
                gguf -= gguf.max(-1, keepdims=True)
                gguf -= np.log(np.exp(gguf).sum(-1, keepdims=True))
                kl = (np.exp(hf_logprobs) * (hf_logprobs - gguf)).sum(-1)
                kls[quant] += kl.tolist()
                agree[quant] += int((gguf.argmax(-1) == hf_top).sum())
                stops[quant].append(float(np.exp(gguf[end, completion[end]])))
            progress.advance(task)
    finally:
        for llm in llms.values():
            llm.close()
        progress.remove_task(task)
    figures = {
        quant: LogitFigures(
            positions=positions,
            top1_agreement=round(agree[quant] / positions, 4),
            mean_kl=round(float(np.mean(kls[quant])), 6),
            max_kl=round(float(np.max(kls[quant])), 6),
            end_of_turn_probability=round(float(np.mean(stops[quant])), 4),
        )
        for quant in llms
    }
    return figures, float(np.mean(stops["hf"]))


def _answers_check(path, rows, markers, tokenizer, params, threads, progress) -> AnswerFigures:
    """Answers to the validation prompts under the GGUF's own template."""
    from minime.backends.llamacpp import LlamaCppBackend

    special_ids = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    max_tokens = params.max_tokens
    figures = AnswerFigures(prompts=len(rows))
    try:
        backend = LlamaCppBackend(path, n_ctx=2048, n_threads=threads)
    except BackendError as exc:
        figures.problems.append(str(exc))
        return figures
    counts = {"no_stop": 0, "empty": 0, "template_tokens": 0}
    lengths = []
    task = progress.add_task(f"verify: answers of {path.name}", total=len(rows))
    try:
        for number, row in enumerate(rows):
            messages = row["messages"][:-1]
            completion = backend.complete(messages, params)
            text = completion.text
            leaked = [m for m in markers if m in text]
            leaked += [
                tokenizer.convert_ids_to_tokens(t.id)
                for t in completion.tokens
                if t.id in special_ids
            ]
            problem = None
            if completion.finish_reason != "stop":
                counts["no_stop"] += 1
                figures.endless_rows.append(number)
                problem = f"no end of turn within {max_tokens} tokens"
            elif not text.strip():
                counts["empty"] += 1
                problem = "empty answer"
            elif leaked:
                counts["template_tokens"] += 1
                problem = f"template tokens {sorted(set(leaked))} in the answer"
            else:
                figures.stopped += 1
            lengths.append(completion.usage.completion_tokens)
            if problem and len(figures.samples) < SHOWN_FAILURES:
                figures.samples.append(
                    {"prompt": messages[-1]["content"], "answer": text[:300], "problem": problem}
                )
            progress.advance(task)
    finally:
        backend.close()
        progress.remove_task(task)
    figures.no_stop, figures.empty = counts["no_stop"], counts["empty"]
    figures.template_tokens = counts["template_tokens"]
    figures.mean_tokens = round(float(np.mean(lengths)), 1) if lengths else 0.0
    figures.max_tokens = max(lengths, default=0)
    for key, what in (
        ("empty", "gave an empty answer"),
        ("template_tokens", "wrote template tokens"),
    ):
        if counts[key]:
            figures.problems.append(f"{counts[key]} of {len(rows)} validation prompts {what}")
    return figures
