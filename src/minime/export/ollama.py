"""An Ollama `Modelfile` whose TEMPLATE writes exactly the prompts the student trained on.

Ollama templates are Go templates, not Jinja, and no library translates one into the other.
minime's students use turn-based formats (ChatML, Gemma), so the Jinja template is rendered
with marker messages and cut into its pieces: the text before the first turn, each role's
prefix and suffix, the generation prompt, and how a system message is written (its own
turn, or folded into the first user turn as Gemma does). The pieces are checked by
rebuilding conversations from them and comparing with the Jinja rendering; the Go template
is then written from the same pieces. A template that does not decompose this way is an
error rather than a Modelfile that prompts the model differently from training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from minime.config import ChatConfig
from minime.export.convert import ExportError

_S, _U1, _A1, _U2 = "MINIMESYSTEMTEXT", "MINIMEUSERONE", "MINIMEANSWERONE", "MINIMEUSERTWO"


@dataclass(frozen=True)
class TurnFormat:
    """A chat template as text pieces around each message."""

    #: Written before the first turn when there is no system message (BOS, or SmolLM2's
    #: default system turn).
    preamble: str
    user_prefix: str
    user_suffix: str
    assistant_prefix: str
    assistant_suffix: str
    #: Written after the last turn to start the assistant's answer.
    generation: str
    #: "turn": the system message is its own turn (`system_prefix` replaces the preamble);
    #: "fold": it opens the first user turn, followed by `system_separator`; None: dropped.
    system_style: str | None
    system_prefix: str = ""
    system_suffix: str = ""
    system_separator: str = ""

    @classmethod
    def from_tokenizer(cls, tokenizer) -> TurnFormat:
        """Cut the tokenizer's chat template into pieces; check them on sample conversations.

        :raises ExportError: if the template is not a plain turn-by-turn format.
        """

        def render(messages: list[tuple[str, str]], generation: bool) -> str:
            return tokenizer.apply_chat_template(
                [{"role": role, "content": content} for role, content in messages],
                tokenize=False,
                add_generation_prompt=generation,
            )

        try:
            one = render([("user", _U1)], False)
            prompt = render([("user", _U1)], True)
            pair = render([("user", _U1), ("assistant", _A1)], False)
            three = render([("user", _U1), ("assistant", _A1), ("user", _U2)], False)
            head, user_suffix = one.split(_U1)
            assistant_prefix, assistant_suffix = pair[len(one) :].split(_A1)
            user_prefix, tail = three[len(pair) :].split(_U2)
        except ValueError as exc:
            raise ExportError(f"the chat template is not turn by turn: {exc}") from exc
        if not (prompt.startswith(one) and pair.startswith(one) and three.startswith(pair)):
            raise ExportError("the chat template rewrites earlier turns as the chat grows")
        if tail != user_suffix or not head.endswith(user_prefix):
            raise ExportError("the chat template writes the first user turn unlike the others")
        fmt = cls(
            preamble=head[: len(head) - len(user_prefix)],
            user_prefix=user_prefix,
            user_suffix=user_suffix,
            assistant_prefix=assistant_prefix,
            assistant_suffix=assistant_suffix,
            generation=prompt[len(one) :],
            system_style=None,
        )
        fmt = fmt._with_system(render)
        samples = [
            [("user", _U1)],
            [("user", _U1), ("assistant", _A1), ("user", _U2)],
        ]
        if fmt.system_style:
            samples += [[("system", _S), ("user", _U1)], [("system", _S), *samples[1]]]
        for sample in samples:
            messages = [{"role": role, "content": content} for role, content in sample]
            if fmt.render(messages) != render(sample, True):
                raise ExportError("the chat template's pieces do not rebuild its prompts")
        return fmt

    def _with_system(self, render) -> TurnFormat:
        try:
            text = render([("system", _S), ("user", _U1)], True)
        except Exception:  # a template may raise on a system message: none is supported
            return self
        if _S not in text or _U1 not in text:
            return self
        before, rest = text.split(_S)
        between = rest.split(_U1)[0]
        if self.user_prefix and between.endswith(self.user_prefix):
            return replace(
                self,
                system_style="turn",
                system_prefix=before,
                system_suffix=between[: len(between) - len(self.user_prefix)],
            )
        if before == self.preamble + self.user_prefix:
            return replace(self, system_style="fold", system_separator=between)
        return self

    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt for `messages`, ending where the assistant's answer starts (what the Go
        template writes, mirrored in Python to check the pieces)."""
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
        if system is not None and self.system_style is None:
            messages, system = messages[1:], None
        if system is not None and self.system_style == "turn":
            parts = [self.system_prefix + system + self.system_suffix]
        else:
            parts = [self.preamble]
        turns = messages[1:] if system is not None else messages
        for i, message in enumerate(turns):
            last = i == len(turns) - 1
            content = message["content"]
            if message["role"] == "user":
                if i == 0 and system is not None and self.system_style == "fold":
                    content = system + self.system_separator + content
                parts.append(self.user_prefix + content + self.user_suffix)
            elif message["role"] == "assistant":
                parts.append(self.assistant_prefix + content)
                if not last:
                    parts.append(self.assistant_suffix)
            if last and message["role"] != "assistant":
                parts.append(self.generation)
        return "".join(parts)

    def go_template(self, bos: str | None = None) -> str:
        """The same format as an Ollama (Go) template.

        :param bos: the BOS text, dropped from the front of the template because Ollama's
            tokenizer adds BOS itself when the GGUF asks for it (tokenizer.ggml.add_bos_token).
        """

        def text(value: str) -> str:
            if bos and value.startswith(bos):
                value = value[len(bos) :]
            # A JSON string is a valid Go string literal; every literal goes through one so
            # that the {{- trim markers never eat a newline of the format.
            return "{{ " + json.dumps(value, ensure_ascii=False) + " }}" if value else ""

        starts_with_system = '(and .Messages (eq (index .Messages 0).Role "system"))'
        preamble = text(self.preamble)
        if preamble and self.system_style == "turn":
            preamble = f"{{{{- if not {starts_with_system} }}}}{preamble}{{{{ end }}}}"
        user = text(self.user_prefix)
        if self.system_style == "fold":
            user += (
                '{{ if and (eq $i 1) (eq (index $.Messages 0).Role "system") }}'
                "{{ (index $.Messages 0).Content }}"
                f"{text(self.system_separator)}{{{{ end }}}}"
            )
        user += f"{{{{ .Content }}}}{text(self.user_suffix)}"
        system = ""
        if self.system_style == "turn":
            system = (
                '{{- if eq .Role "system" }}'
                f"{text(self.system_prefix)}{{{{ .Content }}}}{text(self.system_suffix)}\n"
                "{{- else "
            )
        lines = [
            preamble,
            "{{- range $i, $_ := .Messages }}",
            "{{- $last := eq (len (slice $.Messages $i)) 1 }}",
            (system or "{{- ") + f'if eq .Role "user" }}}}{user}',
            '{{- else if eq .Role "assistant" }}'
            f"{text(self.assistant_prefix)}{{{{ .Content }}}}"
            f"{{{{ if not $last }}}}{text(self.assistant_suffix)}{{{{ end }}}}",
            "{{- end }}",
            f'{{{{- if and $last (ne .Role "assistant") }}}}{text(self.generation)}{{{{ end }}}}',
            "{{- end }}",
        ]
        return "\n".join(line for line in lines if line)


def modelfile(
    gguf_name: str,
    fmt: TurnFormat,
    stops: list[str],
    bos: str | None,
    sampling: ChatConfig | None = None,
) -> str:
    """An Ollama Modelfile: FROM the GGUF beside it, the student's TEMPLATE, a stop PARAMETER
    for each end-of-turn token, the sampling that verification used, and no SYSTEM (the
    student learned without one).

    :param sampling: `chat:` settings (temperature, top_p, n_ctx); default: their defaults.
        Without them `ollama run` samples with Ollama's own (temperature 0.8, a 2048-token
        context), not as the export was verified.
    """
    sampling = sampling or ChatConfig()
    lines = [
        "# Written by `minime export`. Create the model with:",
        f"#   ollama create {gguf_name.split('.')[0]} -f Modelfile",
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{fmt.go_template(bos)}"""',
    ]
    lines += [f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in stops]
    lines += [
        "# Sampled as `minime serve` answers and `minime export` verified (chat: settings).",
        f"PARAMETER temperature {sampling.temperature}",
        f"PARAMETER top_p {sampling.top_p}",
        f"PARAMETER num_ctx {sampling.n_ctx}",
    ]
    return "\n".join(lines) + "\n"
