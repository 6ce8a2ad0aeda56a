/* minime chat widget: <script src="https://HOST/widget.js" data-endpoint="https://HOST"></script>
 * adds a chat bubble that streams the assistant's answers. Options (data-*): endpoint (the
 * server; default: where this script came from), title, greeting, placeholder. The accent
 * colour follows the page's CSS variable --minime-accent. Model output is only ever set
 * as text (textContent), never parsed as HTML. No framework, no dependencies. */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.__minimeWidget) return;
  window.__minimeWidget = true;
  var options = script.dataset;
  var endpoint = (options.endpoint || new URL(".", script.src).href).replace(/\/+$/, "");
  var title = options.title || "Chat";
  var MAX_HISTORY = 8; // messages sent back with each question (4 turns)
  var history = [];

  var STYLE =
    ":host{all:initial}" +
    ".bubble{position:fixed;right:20px;bottom:20px;width:56px;height:56px;border-radius:50%;" +
    "border:0;background:var(--minime-accent,#2457c5);color:#fff;" +
    "cursor:pointer;box-shadow:0 2px 10px rgba(0,0,0,.3);z-index:2147483646;padding:14px}" +
    ".panel{position:fixed;right:20px;bottom:88px;width:min(360px,calc(100vw - 40px));" +
    "height:min(480px,calc(100vh - 120px));display:flex;flex-direction:column;background:#fff;" +
    "color:#111;border-radius:12px;box-shadow:0 4px 24px rgba(0,0,0,.3);" +
    "font:15px/1.45 system-ui,sans-serif;z-index:2147483647;overflow:hidden}" +
    ".panel[hidden]{display:none}" +
    "header{display:flex;align-items:center;justify-content:space-between;padding:8px 12px;" +
    "background:var(--minime-accent,#2457c5);color:#fff}" +
    "h2{font-size:16px;margin:0}" +
    ".close{background:none;border:0;color:#fff;font-size:22px;cursor:pointer;padding:0 6px}" +
    ".log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px}" +
    ".msg{margin:0;padding:8px 10px;border-radius:10px;max-width:85%;white-space:pre-wrap;" +
    "overflow-wrap:anywhere}" +
    ".user{align-self:flex-end;background:#e8eefc}.assistant{align-self:flex-start;" +
    "background:#f1f1f1}.error{align-self:flex-start;background:#fde8e8;color:#8a1111}" +
    "form{display:flex;gap:6px;padding:8px;border-top:1px solid #ddd}" +
    "input{flex:1;font:inherit;padding:6px 8px;border:1px solid #999;border-radius:6px}" +
    "form button{font:inherit;padding:6px 12px;border:0;border-radius:6px;cursor:pointer;" +
    "background:var(--minime-accent,#2457c5);color:#fff}" +
    "button:disabled{opacity:.6;cursor:default}" +
    ".label{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}" +
    ":focus-visible{outline:3px solid #f5a623;outline-offset:2px}";

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      node.setAttribute(name, attrs[name]);
    });
    if (text) node.textContent = text;
    return node;
  }

  var host = el("div", { "data-minime-widget": "" });
  var root = host.attachShadow({ mode: "open" });
  var style = el("style");
  style.textContent = STYLE;
  var bubble = el("button", {
    class: "bubble", type: "button", "aria-haspopup": "dialog", "aria-expanded": "false",
    "aria-controls": "panel", "aria-label": "Open chat: " + title,
  });
  var SVG = "http://www.w3.org/2000/svg";
  var icon = document.createElementNS(SVG, "svg");
  var shape = document.createElementNS(SVG, "path");
  icon.setAttribute("viewBox", "0 0 24 24");
  icon.setAttribute("aria-hidden", "true");
  shape.setAttribute("d", "M4 4h16v11H9l-5 4z"); // a speech bubble
  shape.setAttribute("fill", "currentColor");
  icon.appendChild(shape);
  bubble.appendChild(icon);
  var panel = el("section", {
    class: "panel", id: "panel", role: "dialog", "aria-labelledby": "title", hidden: "",
  });
  var header = el("header");
  var close = el("button", { class: "close", type: "button", "aria-label": "Close chat" }, "\u00D7");
  header.append(el("h2", { id: "title" }, title), close);
  var log = el("div", { class: "log", role: "log", "aria-live": "polite" });
  var form = el("form");
  var input = el("input", {
    id: "question", type: "text", autocomplete: "off", maxlength: "2000",
    placeholder: options.placeholder || "Ask a question",
  });
  var send = el("button", { type: "submit" }, "Send");
  form.append(el("label", { for: "question", class: "label" }, "Your question"), input, send);
  panel.append(header, log, form);
  root.append(style, bubble, panel);
  document.body.appendChild(host);
  if (options.greeting) say("assistant", options.greeting);

  function say(role, text) {
    var node = el("p", { class: "msg " + role }, text);
    log.appendChild(node);
    log.scrollTop = log.scrollHeight;
    return node;
  }

  function setOpen(open) {
    panel.hidden = !open;
    bubble.setAttribute("aria-expanded", String(open));
    (open ? input : bubble).focus();
  }

  bubble.addEventListener("click", function () { setOpen(panel.hidden); });
  close.addEventListener("click", function () { setOpen(false); });
  panel.addEventListener("keydown", function (event) {
    if (event.key === "Escape") { event.preventDefault(); setOpen(false); }
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var question = input.value.trim();
    if (!question || send.disabled) return;
    input.value = "";
    ask(question);
  });

  async function errorText(response) {
    try {
      return (await response.json()).error.message;
    } catch (e) {
      return "the server answered " + response.status;
    }
  }

  // Reads server-sent events from the response body as they arrive, calling onDelta with
  // each piece of text; resolves at [DONE].
  async function readEvents(response, onDelta) {
    var reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    var buffer = "";
    for (;;) {
      var result = await reader.read();
      if (result.done) return;
      buffer += result.value.replace(/\r/g, "");
      var end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        var lines = buffer.slice(0, end).split("\n");
        buffer = buffer.slice(end + 2);
        for (var i = 0; i < lines.length; i++) {
          if (lines[i].indexOf("data:") !== 0) continue; // comments and other fields
          var data = lines[i].slice(5).trim();
          if (data === "[DONE]") return;
          var payload = JSON.parse(data);
          if (payload.error) throw new Error(payload.error.message);
          var choice = payload.choices && payload.choices[0];
          if (choice && choice.delta && choice.delta.content) onDelta(choice.delta.content);
        }
      }
    }
  }

  async function ask(question) {
    say("user", question);
    history.push({ role: "user", content: question });
    var node = say("assistant", "");
    var answer = "";
    send.disabled = true;
    log.setAttribute("aria-busy", "true");
    try {
      var response = await fetch(endpoint + "/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ messages: history.slice(-MAX_HISTORY), stream: true }),
      });
      if (!response.ok) throw new Error(await errorText(response));
      await readEvents(response, function (piece) {
        answer += piece;
        node.textContent = answer;
        log.scrollTop = log.scrollHeight;
      });
      history.push({ role: "assistant", content: answer });
    } catch (error) {
      history.pop();
      node.className = "msg error";
      node.textContent = "Sorry, no answer: " + error.message;
    } finally {
      send.disabled = false;
      log.setAttribute("aria-busy", "false");
    }
  }
})();
