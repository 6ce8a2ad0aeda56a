"""The serving guard: a visitor's first message that is about nothing of the person's gets
the fixed out-of-scope decline without asking the model.

A 135M student declines most general questions but answers some ("What year did the
Berlin Wall fall?" -> "The Berlin Wall was built in 2016."). A message is routed to the
decline only when that is clear: it is the first of its conversation (a follow-up's "it"
may mean the person's project), it is English, and it names neither the person (any part
of the name, or she/he/they) nor any word the profile writes with a capital (its places,
employers, projects, tools), and it neither speaks to the assistant ("you") nor greets or
thanks. Everything else goes to the model, which decides as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from minime.backends import ChatBackend, Delta, Message, SamplingParams
from minime.bank import fixed_answer
from minime.generation import names_the_person, public_profile
from minime.language import LANGUAGE_NAMES, identify
from minime.project import Project
from minime.recall import terms

#: Messages to the assistant, greetings and thanks: answered by the model, never routed.
_TO_THE_ASSISTANT = re.compile(
    r"\b(?:you|your|yours|yourself|u|anyone|anybody|somebody|someone|hi|hello|hey|hiya|"
    r"howdy|yo|greetings|morning|afternoon|evening|thanks|thank|thx|ty|cheers|bye|goodbye|"
    r"appreciate)\b",
    re.IGNORECASE,
)


class OffTopicGuard:
    """Decides which visitor messages get the out-of-scope decline without the model."""

    def __init__(self, name: str, profile: str) -> None:
        self.name = name
        self.decline = fixed_answer("out_of_scope", "en", name)
        public = public_profile(profile)
        self._profile_words = frozenset(word for word in terms(public) if len(word) > 2)

    @classmethod
    def for_project(cls, project: Project) -> OffTopicGuard:
        """The guard for a project's person and profile."""
        return cls(project.name, project.profile)

    def routes(self, visitor: list[Message]) -> bool:
        """Whether the conversation's last message gets the decline without the model."""
        if len(visitor) != 1 or visitor[0]["role"] != "user":
            return False
        text = visitor[0]["content"]
        if _TO_THE_ASSISTANT.search(text) or names_the_person(text, self.name):
            return False
        if {word.removesuffix("'s") for word in terms(text)} & self._profile_words:
            return False
        return identify(text, {"en", *LANGUAGE_NAMES}) == "en"


class GuardedBackend(ChatBackend):
    """A model behind an `OffTopicGuard`: routed messages get the guard's decline as one
    piece (no usage, so a server does not learn a speed from it); the rest go to the model.
    Other attributes (`prompt_tokens`, `n_ctx`) are the model's."""

    def __init__(self, backend: ChatBackend, guard: OffTopicGuard) -> None:
        self.backend, self.guard = backend, guard
        self.name = backend.name

    def stream(self, messages: list[Message], params: SamplingParams) -> Iterator[Delta]:
        """See ChatBackend.stream."""
        if self.guard.routes(messages):
            yield Delta(text=self.guard.decline, finish_reason="stop")
            return
        yield from self.backend.stream(messages, params)

    def close(self) -> None:
        """Close the model."""
        self.backend.close()

    def __getattr__(self, attribute: str):
        return getattr(self.backend, attribute)
