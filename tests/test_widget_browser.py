"""The chat widget in a real browser: headless Chromium (Debian's package, driven by
Playwright; no browser download) opens the demo page, asks with the keyboard, watches the
answer stream in, and checks that markup in an answer shows as text."""

from __future__ import annotations

import shutil
import time

import pytest
from test_serve_fakes import ANSWER, ScriptedBackend, fake_server

from minime.config import ServeConfig

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOSTILE = "Sure: <img src=x onerror=alert(1)> <b>bold</b> & done."

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not shutil.which(CHROMIUM):
    pytest.skip(
        "Chromium is not installed (apt-get install chromium; scripts/setup.sh --dev does it)",
        allow_module_level=True,
    )


def answer(messages: list[dict]) -> str:
    return HOSTILE if "html" in messages[-1]["content"] else ANSWER


@pytest.fixture
def browser_page():
    """The demo page in Chromium, and the JavaScript dialogs (alerts) it opened."""
    backend = ScriptedBackend(answer, delay=0.08)  # about 0.8 s per answer: visibly streamed
    with fake_server(backend, ServeConfig(rate_limit=0)) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        dialogs = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(url)
        yield page, dialogs
        browser.close()


def shadow(page, expression: str):
    """Evaluate `expression` with `root` bound to the widget's shadow root."""
    script = "() => { const root = document.querySelector('[data-minime-widget]').shadowRoot; "
    return page.evaluate(script + f"return {expression}; }}")


def last_answer(page) -> str:
    return shadow(page, "[...root.querySelectorAll('.msg.assistant')].at(-1).textContent")


def ask_and_watch(page, question: str, expected: str) -> list[str]:
    """Type a question, press Enter, and sample the answer until it is complete."""
    page.keyboard.type(question)
    page.keyboard.press("Enter")
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        seen.append(last_answer(page))
        if seen[-1] == expected and shadow(page, "root.querySelector('.log').ariaBusy") == "false":
            break
        time.sleep(0.03)
    return seen


def test_widget_streams_answers_as_text_with_the_keyboard(browser_page):
    page, dialogs = browser_page
    bubble = page.get_by_role("button", name="Open chat: Mara Lind")
    assert bubble.get_attribute("aria-expanded") == "false"
    bubble.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Mara Lind")
    assert dialog.is_visible()
    assert bubble.get_attribute("aria-expanded") == "true"
    assert shadow(page, "root.activeElement.id") == "question"
    assert page.get_by_role("textbox", name="Your question").is_visible()
    assert shadow(page, "root.querySelector('.log').getAttribute('aria-live')") == "polite"

    seen = ask_and_watch(page, "Where does Mara work?", ANSWER)
    assert seen[-1] == ANSWER
    partial = {text for text in seen if text and text != ANSWER}
    assert len(partial) >= 2, f"the answer did not stream in: {seen}"
    assert all(ANSWER.startswith(text) for text in partial)

    seen = ask_and_watch(page, "Show me some html", HOSTILE)
    assert seen[-1] == HOSTILE  # the markup is shown as the characters it is made of
    assert shadow(page, "root.querySelectorAll('img, b').length") == 0
    assert page.evaluate("document.querySelectorAll('img, b').length") == 0
    assert dialogs == []

    texts = shadow(page, "[...root.querySelectorAll('.msg')].map(m => m.textContent)")
    assert texts == [
        "Hi! Ask me about Mara Lind.",
        "Where does Mara work?",
        ANSWER,
        "Show me some html",
        HOSTILE,
    ]
    page.keyboard.press("Escape")
    assert not dialog.is_visible()
    assert bubble.get_attribute("aria-expanded") == "false"
    assert page.evaluate("document.activeElement.dataset.minimeWidget") == ""
    assert shadow(page, "root.activeElement.className") == "bubble"
