"""The persona project's configuration: `minime.yaml`, validated by pydantic.

Each stage reads its own sub-model; a missing file gives the defaults, and an unknown key
is an error so that a typo never vanishes silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from minime.errors import ConfigError

CONFIG_FILE = "minime.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelsConfig(_Section):
    """Which model plays each role. A value is a model spec (see `minime models`)."""

    chat: str = Field(
        "qwen2.5-coder-1.5b-instruct",
        description="Model that answers with the profile in its prompt (`minime chat`).",
    )
    teacher: str = Field(
        "qwen2.5-coder-1.5b-instruct",
        description="Model that writes the training answers, with the profile in its prompt.",
    )
    student: str = Field(
        "smollm2-135m-instruct", description="Small model distilled without the profile."
    )
    embedder: str = Field("all-minilm-l6-v2", description="Sentence encoder for dedup.")
    generators: list[str] = Field(
        default_factory=lambda: ["qwen2.5-coder-1.5b-instruct"],
        min_length=1,
        description="Models that write augmented and edge-case prompts.",
    )


class ChatConfig(_Section):
    """How `minime chat` (and the profile-prompted baseline) generates."""

    temperature: float = Field(0.2, ge=0, le=2, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(320, ge=1, le=8192, description="Longest answer, in tokens.")
    n_ctx: int = Field(4096, ge=256, description="Context window for llama.cpp models.")
    n_threads: int | None = Field(
        None, ge=1, description="CPU threads for llama.cpp; default: all cores."
    )
    seed: int = Field(0, description="Sampling seed, for repeatable answers.")


class DataConfig(_Section):
    """How `minime data` builds the training set."""

    paraphrases: int = Field(3, ge=0, le=20, description="LLM paraphrases per real prompt.")
    chains: int = Field(10, ge=0, description="Chained multi-part prompts to write.")
    questions_per_fact: int = Field(
        12, ge=0, le=40, description="Questions asked about each profile statement."
    )
    questions_per_answer: int = Field(
        3,
        ge=0,
        le=10,
        description="Questions asked about each name and number of a profile statement, "
        'each answered by it ("Which orchestra does she play in?"); 0: none.',
    )
    translated_per_fact: int = Field(
        2,
        ge=0,
        le=10,
        description="Questions about each profile statement in other languages, each in the "
        "next of `languages` (in turn across statements), answered in that language.",
    )
    min_questions_per_fact: int = Field(
        10,
        ge=0,
        le=40,
        description="Answered questions each profile statement needs in the training set; "
        "`cover` asks more until it has them (or gives up after its rounds).",
    )
    rephrase_to: int = Field(
        0,
        ge=0,
        le=40,
        description="English questions each profile statement should have in the training "
        "set: the answered questions of a statement with fewer are reworded by the "
        "generators, each rewording answered by its question's checked answer (those in "
        "other languages get a few rewordings each); 0: none. Off by default: on the "
        "example persona, 16 added half as many questions again and 22 minutes, and "
        "facts stayed within the spread between two seeds (docs/results.md).",
    )
    edge_per_category: int = Field(
        20,
        ge=0,
        description="Persona-specific edge cases (private, out-of-scope, vague) per category and "
        "generator, besides minime's bank.",
    )
    followups: float = Field(
        0.15,
        ge=0,
        le=1,
        description="Share of training rows that also get a version as the second question of "
        "a short conversation (the widget sends earlier turns).",
    )
    languages: list[Annotated[str, Field(pattern=r"^[a-z]{2}$")]] = Field(
        default_factory=lambda: ["sv", "de", "es", "fr"],
        description="ISO 639-1 codes (two lower-case letters) of the languages, besides "
        "English, that visitors are expected to write in.",
    )
    dedup_threshold: float = Field(
        0.15, ge=0, le=1, description="Cosine distance under which prompts are duplicates."
    )
    logprobs: int = Field(20, ge=0, le=100, description="Teacher top-k log-probs kept per token.")
    answer_max_tokens: int = Field(200, ge=16, description="Longest teacher answer, in tokens.")
    judge: bool = Field(
        False,
        description="Also ask the teacher, as a judge, whether each answer is grounded (after "
        "the deterministic checks; about a third more teacher time).",
    )
    concurrency: int = Field(
        4, ge=1, le=64, description="Requests at once to OpenAI-compatible servers."
    )
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Share of rows for validation.")
    seed: int = Field(0, description="Seed for sampling and splitting.")


class DistillConfig(_Section):
    """How `minime distill` trains the student on the teacher's answers."""

    method: Literal["sft", "kd", "context"] = Field(
        "kd",
        description="sft: cross-entropy on the teacher's text (baseline); kd: also match the "
        "teacher's stored top-k distribution (exact ids for a shared tokenizer, ULD for "
        "different ones); context: match the student's own base model shown the profile.",
    )
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = Field(
        "forward_kl", description="Divergence for kd/context with a shared vocabulary."
    )
    beta: float = Field(0.5, gt=0, lt=1, description="Teacher weight of the jsd mixture.")
    temperature: float = Field(1.0, gt=0, le=10, description="Distillation temperature.")
    ce_weight: float = Field(
        1.0, ge=0, description="Weight of cross-entropy on the teacher's text (keeps the stop)."
    )
    kd_weight: float = Field(0.5, ge=0, description="Weight of the distillation term.")
    tuning: Literal["lora", "full"] = Field("full", description="LoRA adapter or all weights.")
    lora_r: int = Field(32, ge=1, le=512, description="LoRA rank.")
    lora_alpha: int = Field(64, ge=1, description="LoRA scaling numerator.")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    lora_embeddings: bool = Field(
        False, description="Also train the embedding and output layers fully (with LoRA)."
    )
    learning_rate: float = Field(3e-4, gt=0, le=1, description="Peak learning rate.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps warming up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(8, ge=1, description="Rows per device per step.")
    gradient_accumulation: int = Field(1, ge=1, description="Steps accumulated per update.")
    max_epochs: int = Field(12, ge=1, description="Upper bound; training stops earlier.")
    max_minutes: float | None = Field(
        25.0,
        gt=0,
        description="Wall-clock budget of the training loop: the learning-rate schedule is "
        "fitted to the steps that fit and training stops when it is spent; none: no budget.",
    )
    patience: int = Field(
        2,
        ge=1,
        description="Evaluations without a better validation score (fact questions answered "
        "and must-decline prompts declined; validation loss when there are none) before "
        "stopping. The last checkpoint is kept unless the best-scoring one leads it by more "
        "than one standard error of its score.",
    )
    eval_per_epoch: int = Field(1, ge=1, le=20, description="Evaluations per epoch.")
    fact_rows: int = Field(
        16,
        ge=0,
        description="Rows each profile fact is trained on per epoch at least: a fact with "
        "fewer answered questions has them repeated (0: no repeats).",
    )
    chained_rows: int = Field(
        48,
        ge=0,
        description="Rows that ask two English fact questions of different facts in one "
        "message, answered by both checked answers, trained on beside the dataset.",
    )
    vary_questions: bool = Field(
        True,
        description="Name the person in each training question by a form drawn at random "
        "(full name or first name), and type each repeated fact question as a visitor "
        "would (an opening, no question mark, a typo), so that neither says what to answer.",
    )
    max_length: int = Field(512, ge=32, description="Longest training row, in tokens.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: bfloat16 on a GPU that has it, else float32."
    )
    threads: int | None = Field(None, ge=1, description="CPU threads; default: all cores.")
    seed: int = Field(0, description="Seed for initialisation, shuffling and dropout.")


Quantization = Literal["q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0"]


class ExportConfig(_Section):
    """How `minime export` writes the GGUF files and checks them."""

    quantizations: list[Quantization] = Field(
        default_factory=lambda: ["q8_0", "q4_k_m"],
        min_length=1,
        description="llama.cpp quantizations written beside the F16 file.",
    )
    default: Quantization = Field(
        "q8_0", description="The file the Modelfile and the server use; one of quantizations."
    )
    verify_max_tokens: int = Field(
        256, ge=16, le=4096, description="Tokens within which every answer must end its turn."
    )
    verify_prompts: int | None = Field(
        None, ge=1, description="Validation prompts each file answers; default: all of them."
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads for quantizing and verifying; default: all cores."
    )

    @model_validator(mode="after")
    def _default_is_written(self) -> ExportConfig:
        if self.default not in self.quantizations:
            raise ValueError(
                f"default: {self.default!r} is not among quantizations {self.quantizations}"
            )
        return self


class EvalConfig(_Section):
    """How `minime eval` tests the assistant and compares it with the alternatives."""

    questions: str = Field(
        "questions.jsonl",
        description="The persona's own questions with expected answers (JSONL, see "
        "docs/formats.md).",
    )
    generated_facts: int = Field(
        20,
        ge=0,
        le=200,
        description="Profile facts to write a new question about (one each, never one in the "
        "training set).",
    )
    generated_per_category: int = Field(
        8,
        ge=0,
        le=20,
        description="New questions for each other category: chained and multilingual written "
        "from the generated fact questions; private, out_of_scope, injection, unanswerable "
        "and greeting from minime's evaluation bank.",
    )
    generator: str | None = Field(
        None, description="Model that writes the new questions; default: models.generators[0]."
    )
    judge: str | None = Field(
        None,
        description="Model spec of an optional LLM judge, reported beside the pattern checks.",
    )
    max_tokens: int = Field(200, ge=16, le=4096, description="Longest answer, in tokens.")
    candidates: list[str] = Field(
        default_factory=lambda: ["smollm2-135m-instruct", "gemma3-270m"],
        min_length=1,
        description="Students that `minime eval --candidates default` trains and compares.",
    )
    seed: int = Field(0, description="Seed for writing the new questions.")


class CloudRunConfig(_Section):
    """The Cloud Run service that `minime deploy` writes (scale to zero by default)."""

    service: str | None = Field(
        None,
        pattern=r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$",
        description="Service name; default: the project folder's name plus `-assistant`.",
    )
    region: str = Field("europe-north1", description="Cloud Run region.")
    min_instances: int = Field(0, ge=0, description="Instances kept warm; 0 scales to zero.")
    max_instances: int = Field(3, ge=1, description="Most instances at once.")
    cpu: int = Field(2, ge=1, le=8, description="vCPUs per instance (also llama.cpp threads).")
    memory: str | None = Field(
        None,
        pattern=r"^[0-9]+(Mi|Gi)$",
        description="Memory per instance, e.g. 1Gi; default: from the GGUF size.",
    )
    timeout: int = Field(300, ge=1, le=3600, description="Cloud Run request timeout, seconds.")


class ServeConfig(_Section):
    """How `minime serve` runs the assistant for a website, and its limits."""

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 in containers).")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    threads: int | None = Field(
        None, ge=1, description="CPU threads for llama.cpp; default: all cores."
    )
    n_ctx: int = Field(4096, ge=256, description="Context window for llama.cpp models.")
    max_tokens: int = Field(
        256, ge=1, le=8192, description="Longest answer; a request asking more gets this many."
    )
    queue_size: int = Field(
        8,
        ge=0,
        le=1000,
        description="Requests that may wait while one is answered; past it, 429 with Retry-After.",
    )
    request_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a request may take, waiting included; an answer still going "
        "then ends with finish_reason length.",
    )
    max_body_bytes: int = Field(65536, ge=1024, description="Largest request body (413 past it).")
    guard: bool = Field(
        True,
        description="Answer a distilled model's first message that is clearly about nothing "
        "of the person's (English; no part of the name, no she/he/they, no word of the "
        "profile, no greeting) with the fixed out-of-scope decline, without the model.",
    )
    max_messages: int = Field(32, ge=1, description="Most messages in one conversation.")
    max_message_chars: int = Field(2000, ge=1, description="Longest message, in characters.")
    rate_limit: float = Field(
        30.0, ge=0, description="Requests per minute per visitor IP address; 0: no limit."
    )
    rate_burst: int = Field(10, ge=1, description="Requests a visitor may send at once.")
    forwarded_proxies: int = Field(
        0,
        ge=0,
        le=10,
        description="Trusted proxies in front that append to X-Forwarded-For (Cloud Run: 1); "
        "0: the header is ignored, so a visitor cannot pick the address it is limited by.",
    )
    cors_origins: list[Annotated[str, Field(pattern=r"^(\*|https?://[^/\s]+)$")]] = Field(
        default_factory=list,
        description="Origins of other sites whose pages may call the server, e.g. "
        "https://example.com; the demo page on the server itself needs none.",
    )
    request_log: bool = Field(
        False,
        description="Append each request to out/serve/requests.jsonl (question, answer length, "
        "latency, hashed visitor address); `minime data collect` reads it.",
    )
    shutdown_timeout: float = Field(
        10.0, ge=0, description="Seconds to finish answers in flight on SIGTERM."
    )
    cloud_run: CloudRunConfig = Field(default_factory=CloudRunConfig)


class MinimeConfig(_Section):
    """The whole of `minime.yaml`."""

    name: str | None = Field(
        None, description="The person's name; default: the profile's first heading."
    )
    profile: str = Field("profile.md", description="Markdown file about the person.")
    prompts: list[str] = Field(
        default_factory=list,
        description="Files of real visitor prompts (.txt, .jsonl, .csv); default: any "
        "prompts.txt, prompts.jsonl or prompts.csv in the project.",
    )
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    chat: ChatConfig = Field(default_factory=ChatConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)


def load_config(path: Path) -> MinimeConfig:
    """Read and validate a `minime.yaml`; a missing file gives the defaults.

    :param path: the YAML file.
    :raises ConfigError: on a YAML syntax error or an invalid field, naming file, line and field,
        or if the file is not UTF-8 text.
    """
    if not path.exists():
        return MinimeConfig()
    from minime.fileio import read_text

    text = read_text(path, ConfigError)
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from exc
    if data is None:
        return MinimeConfig()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping of settings, got {type(data).__name__}")
    try:
        return MinimeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(path, root, exc)) from exc


def _describe_validation_error(path: Path, root: yaml.Node | None, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = ".".join(map(str, error["loc"])) or "(top level)"
        line = _line_of(root, error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown setting (check its spelling and indentation)"
        lines.append(f"{path}:{line}: {field}: {message}")
    return "\n".join(lines)


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """The 1-based line of the deepest YAML node found on the path `loc`."""
    line = node.start_mark.line + 1 if node is not None else 1
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == key), None)
            if pair is None:
                break
            line = pair[0].start_mark.line + 1
            node = pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line
