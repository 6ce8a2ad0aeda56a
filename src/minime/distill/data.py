"""Training rows as token ids, label masks and aligned teacher distributions.

Each row of `train.jsonl` is a user question and the teacher's answer. The student sees the
question through its own chat template, with no profile, and learns the answer tokens plus
the end-of-turn token, so it learns to stop. TRL's `assistant_only_loss` needs
`{% generation %}` markers that SmolLM2's template lacks, so the prompt and completion
are tokenized separately here and only the completion is labelled.

The teacher's stored top-k log-probs are attached to the student positions they belong to:
- same tokenizer: the teacher's own answer ids are the student's, position for position;
- different tokenizers: a teacher token and a student token are paired when they start at
  the same character of the answer, i.e. when both predict from the same text prefix
  (for the Universal Logit Distillation loss, which compares sorted probabilities).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from minime.distill.losses import IGNORE_INDEX
from minime.language import is_english, proper_names
from minime.student import chat_prompt_ids


@dataclass
class Example:
    """One tokenized row: student input, labels, and teacher data per predicting position."""

    input_ids: list[int]
    labels: list[int]
    #: position -> (teacher top ids, teacher top log-probs), for positions with teacher data.
    teacher_top: dict[int, tuple[list[int], list[float]]] = field(default_factory=dict)
    #: Context distillation: the teacher's input (profile in the prompt) and, per student
    #: position, the teacher position that predicts the same token.
    teacher_input_ids: list[int] | None = None
    teacher_positions: dict[int, int] = field(default_factory=dict)
    row: dict = field(default_factory=dict)


def repeat_fact_rows(
    rows: list[dict], minimum: int, seed: int, vary: Callable[[dict], dict] | None = None
) -> list[dict]:
    """`rows`, plus repeats of the rows of each profile fact (the `fact` field) that has
    fewer than `minimum`, taken in turn in a seeded order, so that every fact is trained on
    at least `minimum` times an epoch; each repeat passed through `vary` if given.

    A small student learns a fact only from many exposures, spread evenly over the facts
    (Allen-Zhu & Li 2023), while the data stage leaves some facts with one or two questions
    beside hundreds of declines. Sampler weights would do the same but cannot be combined
    with the length-grouped batches, so the rows are repeated here.
    """
    by_fact: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("fact"):
            by_fact.setdefault(row["fact"], []).append(row)
    rng = random.Random(seed)
    repeats = []
    for fact in sorted(by_fact):
        own = sorted(by_fact[fact], key=lambda r: str(r.get("id")))
        rng.shuffle(own)
        repeats += [own[i % len(own)] for i in range(max(0, minimum - len(own)))]
    if vary is not None:
        repeats = [vary(row) for row in repeats]
    return rows + repeats


#: Openings a visitor puts before a question; the question itself follows in lower case.
_OPENINGS = ("Hi! ", "Hey, ", "Quick question: ", "Hello, ", "Sorry, ")
#: Questions a visitor asks about something the profile names, answered by its fact.
_ABOUT_NAME = (
    "What's {person}'s connection to {thing}?",
    "How is {person} connected to {thing}?",
    "What does {thing} have to do with {person}?",
    "What can you tell me about {thing}?",
    "Tell me about {person} and {thing}.",
)
#: What a visitor puts between two questions asked at once.
_THEN = ("And", "Also,", "One more thing:", "And also,")


class VisitorTurns:
    """Rewrites of a row's visitor turns that keep its answer right: the person named one
    way or another, and, for an English question, how a visitor types it.

    The data stage's fact questions mostly name the person in full ("Javier Morales
    Ibáñez's"), its bank's private and unanswerable prompts by first name ("Javier's"): a
    student trained on that declines "What is Javier's dog called?". Every row naming the
    person gets a name form drawn at random, so the form says nothing about the answer; a
    repeated fact row is also typed as a visitor would (an opening, no capital or question
    mark, a swapped pair of letters), so its repeats are not copies.

    Half the repeats of an English fact row whose answer holds a name that only its fact
    mentions ask about that name instead ("What can you tell me about Los Madrugadores?"):
    the data stage's questions go from the person to the fact, visitors also go from a
    name on the page to the person, and a student that learnt only one direction does not
    answer the other (the reversal curse, Berglund et al. 2023).
    """

    def __init__(self, name: str, seed: int, facts: Iterable[str] = ()) -> None:
        parts = name.split()
        facts = sorted(set(facts))
        self.names_by_fact = {
            fact: [
                thing
                for thing in proper_names(fact, person=name)
                if sum(thing in other for other in facts) == 1
            ]
            for fact in facts
        }
        self.forms = list(dict.fromkeys([" ".join(parts), *parts[:1]]))
        # Every start of the name ("Javier", "Javier Morales", ...), longest first, so that
        # the full name is not read as its first part.
        starts = [" ".join(parts[:n]) for n in range(len(parts), 0, -1)]
        alternatives = "|".join(re.escape(start) for start in starts)
        self.pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)") if parts else None
        self.rng = random.Random(seed)

    def renamed(self, row: dict) -> dict:
        """`row` with the person named by one form, drawn at random, in its visitor turns."""
        return self._rewrite(row, typed=False)

    def typed(self, row: dict) -> dict:
        """`renamed`, and an English last visitor turn typed as a visitor would."""
        return self._rewrite(row, typed=is_english(row.get("language")))

    def repeated(self, row: dict) -> dict:
        """A repeat of a fact row: half the time, when its answer holds a name only its fact
        mentions, a question about that name; otherwise `typed`."""
        answer = row["messages"][-1]["content"]
        things = [t for t in self.names_by_fact.get(row.get("fact"), ()) if t in answer]
        single = len(row["messages"]) == 2 and is_english(row.get("language"))
        if not (single and things and self.rng.random() < 0.5):
            return self.typed(row)
        question = self.rng.choice(_ABOUT_NAME).format(
            person=self.rng.choice(self.forms), thing=self.rng.choice(things)
        )
        return {**row, "messages": [{"role": "user", "content": question}, row["messages"][-1]]}

    def chained(self, first: dict, second: dict) -> dict:
        """One row asking `first`'s and `second`'s questions together, answered by both."""
        asked = [row["messages"][0]["content"].strip() for row in (first, second)]
        if self.rng.random() < 0.5 and asked[0].endswith("?"):
            question = f"{asked[0][:-1]}, and {self._lower_start(asked[1])}"
        else:
            question = f"{asked[0]} {self.rng.choice(_THEN)} {self._lower_start(asked[1])}"
        answer = " ".join(row["messages"][1]["content"].strip() for row in (first, second))
        return {
            "id": f"chained:{first.get('id')}+{second.get('id')}",
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ],
            "category": "chained",
            "source": "distill",
            "language": None,
            "fact": None,
            "teacher": None,
            "teacher_logprobs": None,
        }

    def _rewrite(self, row: dict, typed: bool) -> dict:
        messages = [dict(m) for m in row["messages"]]
        form = self.rng.choice(self.forms)
        for message in messages:
            if message["role"] == "user" and self.pattern is not None:
                message["content"] = self.pattern.sub(form, message["content"])
        last = next(m for m in reversed(messages) if m["role"] == "user")
        if typed:
            last["content"] = self._typed(last["content"])
        return {**row, "messages": messages}

    def _typed(self, text: str) -> str:
        way = self.rng.randrange(4)
        if way == 0:
            return self.rng.choice(_OPENINGS) + self._lower_start(text)
        if way == 1:
            return self._lower_start(text).rstrip("?").rstrip()
        if way == 2:
            return self._swap_letters(text)
        return text

    def _lower_start(self, text: str) -> str:
        """`text` with its first letter in lower case, unless it starts with the name."""
        if self.pattern is not None and self.pattern.match(text):
            return text
        return text[:1].lower() + text[1:]

    def _swap_letters(self, text: str) -> str:
        """`text` with two inner letters of one long lower-case word swapped (a typo);
        names, which are capitalised, and numbers are left as they are."""
        words = [
            m
            for m in re.finditer(r"[a-z]{6,}", text)
            if (m.start() == 0 or not text[m.start() - 1].isalnum())
            and (m.end() == len(text) or not text[m.end()].isalnum())
        ]
        if not words:
            return text
        word = self.rng.choice(words)
        i = word.start() + self.rng.randrange(1, len(word.group()) - 2)
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]


#: The longest answer a chained row joins, in characters: two such answers fit a row.
CHAINED_ANSWER_CHARS = 240


def chain_fact_rows(rows: list[dict], count: int, turns: VisitorTurns) -> list[dict]:
    """`count` rows that ask two English fact questions of different facts in one message,
    answered by both their answers, the facts taken in turn in a seeded order.

    Visitors ask two things at once ("What is his dog called, and where does he grow
    wheat?"), and a student trained on single questions answers only the first. The data
    stage's teacher answers such questions badly (it drops or invents a part), while each
    part's answer is already checked. The joined answers have no teacher distribution:
    they are learned by cross-entropy.
    """
    by_fact: dict[str, list[dict]] = {}
    for row in rows:
        single = len(row["messages"]) == 2 and is_english(row.get("language"))
        answer = row["messages"][-1]["content"]
        if row.get("fact") and single and len(answer) <= CHAINED_ANSWER_CHARS:
            by_fact.setdefault(row["fact"], []).append(row)
    facts = sorted(by_fact)
    if len(facts) < 2 or count == 0:
        return []
    rng, order, chained = turns.rng, [], []
    while len(chained) < count:
        if len(order) < 2:
            order += rng.sample(facts, len(facts))
        first_fact, second_fact = order.pop(), order.pop()
        if first_fact != second_fact:
            first, second = rng.choice(by_fact[first_fact]), rng.choice(by_fact[second_fact])
            chained.append(turns.chained(first, second))
    return chained


def same_vocabulary(tokenizer, rows: list[dict], sample: int = 50) -> bool:
    """Whether the teacher's token ids mean the same strings in the student's vocabulary.

    Compares the teacher's stored (id, text) pairs of up to `sample` rows with the student
    tokenizer's decoding of the same ids; vocabularies that differ only by padding ids at
    the end (Gemma 3 12B vs 270M) still count as the same.
    """
    checked = agreed = 0
    for row in rows:
        logprobs = row.get("teacher_logprobs")
        if not logprobs:
            continue
        for token_id, text in zip(logprobs["ids"], logprobs["tokens"], strict=True):
            if not text.strip():
                continue
            # Stripped: decoders differ on a lone token's leading space ("▁works", "Ġworks").
            checked += 1
            agreed += token_id < len(tokenizer) and tokenizer.decode([token_id]).strip() == (
                text.strip()
            )
        sample -= 1
        if sample == 0:
            break
    return checked > 0 and agreed >= 0.98 * checked


def encode_row(
    tokenizer,
    row: dict,
    end_of_turn: str,
    *,
    same_vocab: bool,
    max_length: int,
    context_system: str | None = None,
) -> Example | None:
    """Tokenize one row; None when it does not fit in `max_length`.

    :param end_of_turn: the text the chat template puts after an answer (e.g. "<|im_end|>\\n").
    :param context_system: for context distillation, the system prompt (with the profile)
        that the teacher copy of the student sees.
    """
    messages, answer = row["messages"][:-1], row["messages"][-1]["content"]
    prompt_ids = chat_prompt_ids(tokenizer, messages)
    logprobs = row.get("teacher_logprobs")
    if same_vocab and logprobs:
        # The teacher's own ids: the text is the same, and the ids stay aligned with the
        # stored distributions even where retokenizing would split differently.
        answer_ids, offsets = list(logprobs["ids"]), None
    else:
        encoded = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
        answer_ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    suffix_ids = tokenizer(end_of_turn, add_special_tokens=False)["input_ids"]
    completion = answer_ids + suffix_ids
    input_ids = prompt_ids + completion
    if len(input_ids) > max_length:
        return None
    start = len(prompt_ids)
    # labels[i] is the token that logits at position i predict (already shifted).
    labels = [IGNORE_INDEX] * len(input_ids)
    for i, token in enumerate(completion):
        labels[start - 1 + i] = token
    example = Example(input_ids=input_ids, labels=labels, row=row)
    if logprobs:
        example.teacher_top = _teacher_top(logprobs, answer, start, offsets)
    if context_system is not None:
        teacher_prompt = chat_prompt_ids(
            tokenizer, [{"role": "system", "content": context_system}, *messages]
        )
        example.teacher_input_ids = teacher_prompt + completion
        shift = len(teacher_prompt) - start
        example.teacher_positions = {
            start - 1 + i: start - 1 + i + shift for i in range(len(completion))
        }
    return example


def _teacher_top(logprobs: dict, answer: str, start: int, offsets) -> dict:
    """Student position -> teacher (top ids, top log-probs) for the answer tokens."""
    tops = list(zip(logprobs["top_ids"], logprobs["top_logprobs"], strict=True))
    if offsets is None:
        return {start - 1 + i: top for i, top in enumerate(tops)}
    teacher_starts, position = {}, 0
    for j, piece in enumerate(logprobs["tokens"]):
        # Token texts that do not spell the answer (split UTF-8 characters) end alignment.
        if not answer.startswith(piece, position):
            break
        begin = _content_start(answer, position, position + len(piece))
        if begin is not None:
            teacher_starts.setdefault(begin, j)
        position += len(piece)
    aligned = {}
    for i, (char_start, char_end) in enumerate(offsets):
        begin = _content_start(answer, char_start, char_end)
        j = teacher_starts.get(begin) if begin is not None else None
        if j is not None:
            aligned[start - 1 + i] = tops[j]
    return aligned


def _content_start(text: str, start: int, end: int) -> int | None:
    """The first non-space character of a token's span (None for an all-space token).

    Tokenizers disagree on whether a word's leading space belongs to its offsets; both
    sides are compared from the first visible character.
    """
    while start < end and text[start].isspace():
        start += 1
    return start if start < end else None


def collate(examples: list[Example], pad_id: int, top_k: int) -> dict[str, torch.Tensor]:
    """Right-padded batch tensors; teacher slots without data are padded with -inf."""
    length = max(len(e.input_ids) for e in examples)
    batch = len(examples)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    attention = torch.zeros((batch, length), dtype=torch.long)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    top_ids = torch.zeros((batch, length, top_k), dtype=torch.long)
    top_logprobs = torch.full((batch, length, top_k), float("-inf"))
    kd_mask = torch.zeros((batch, length), dtype=torch.bool)
    for b, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[b, :n] = torch.tensor(example.input_ids)
        attention[b, :n] = 1
        labels[b, :n] = torch.tensor(example.labels)
        for position, (ids, values) in example.teacher_top.items():
            k = min(top_k, len(ids))
            top_ids[b, position, :k] = torch.tensor(ids[:k])
            top_logprobs[b, position, :k] = torch.tensor(values[:k])
            kd_mask[b, position] = True
    out = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "labels": labels,
        "top_ids": top_ids,
        "top_logprobs": top_logprobs,
        "kd_mask": kd_mask,
    }
    if examples[0].teacher_input_ids is not None:
        t_length = max(len(e.teacher_input_ids) for e in examples)
        t_ids = torch.full((batch, t_length), pad_id, dtype=torch.long)
        t_attention = torch.zeros((batch, t_length), dtype=torch.long)
        positions = torch.zeros((batch, length), dtype=torch.long)
        context_mask = torch.zeros((batch, length), dtype=torch.bool)
        for b, example in enumerate(examples):
            n = len(example.teacher_input_ids)
            t_ids[b, :n] = torch.tensor(example.teacher_input_ids)
            t_attention[b, :n] = 1
            for position, teacher_position in example.teacher_positions.items():
                positions[b, position] = teacher_position
                context_mask[b, position] = True
        out |= {
            "teacher_input_ids": t_ids,
            "teacher_attention_mask": t_attention,
            "teacher_positions": positions,
            "context_mask": context_mask,
        }
    return out
