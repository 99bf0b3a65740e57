// Messages as the API returns them, drawn as DOM nodes, and the stream events
// that build a reply while it is written (the same for a live stream and for a
// reply followed again after a reload).

import { el } from "./dom.js";
import { codeBlock, link, renderMarkdown } from "./markdown.js";

// Apply one stream event to `reply` (a message object being built); returns the
// stored reply when the event carries it (done, error).
export function applyEvent(reply, name, data) {
  switch (name) {
    case "reply_start":
      Object.assign(reply, { id: data.id, model: data.model, routing: data.routing ?? reply.routing });
      return null;
    case "delta":
    case "thought": {
      const type = name === "delta" ? "text" : "thought";
      const last = reply.parts[reply.parts.length - 1];
      if (last && last.type === type) last.text += data.text;
      else reply.parts.push({ type, text: data.text });
      if (type === "text") reply.text = (reply.text || "") + data.text;
      return null;
    }
    case "part":
      reply.parts.push(data);
      return null;
    case "grounding":
      reply.grounding = data;
      return null;
    case "done":
      return data;
    case "error":
      return { ...(data.reply || reply), error: data.error, status: data.reply?.status || "error" };
    default:
      return null;
  }
}

export function emptyReply(model) {
  return { id: null, role: "model", parts: [], text: "", siblings: [], model, status: "streaming" };
}

const STATUS_NOTES = {
  streaming: "writing…", stopped: "stopped", interrupted: "interrupted", error: "failed", blocked: "blocked",
};

// One message. `actions` holds the callbacks for its buttons (absent while streaming).
export function messageNode(message, actions = null, { thoughtsOpen = false } = {}) {
  const isModel = message.role === "model";
  const meta = el("div", { class: "meta" },
    el("span", { class: "who" }, isModel ? "Apsara" : "You"),
    isModel && message.model ? el("span", { class: "badge", title: "model" }, message.model) : null,
    STATUS_NOTES[message.status] ? el("span", { class: `status status-${message.status}` }, STATUS_NOTES[message.status]) : null);
  const body = el("div", { class: "body" }, ...partNodes(message.parts || [], thoughtsOpen));
  if (message.routing) body.prepend(routingNode(message.routing));
  if (message.grounding?.sources?.length) body.append(sourcesNode(message.grounding));
  if (message.status === "blocked") body.append(el("p", { class: "error" }, `Blocked: ${message.finish_reason || "by the model's safety rules"}`));
  if (message.error) body.append(el("p", { class: "error", role: "alert" }, message.error.message || "The reply failed."));
  if (message.status === "streaming" && !(message.parts || []).length) body.append(el("p", { class: "muted typing" }, "…"));
  const node = el("article", {
    class: `message ${isModel ? "model" : "user"}`, "data-id": message.id || "", "data-status": message.status || "",
    "aria-label": isModel ? "Reply" : "Your message",
  }, meta, body);
  if (actions && message.id) node.append(actionsNode(message, actions));
  return node;
}

function partNodes(parts, thoughtsOpen) {
  const nodes = [];
  const thoughts = parts.filter((part) => part.type === "thought").map((part) => part.text).join("");
  if (thoughts) {
    nodes.push(el("details", { class: "thoughts", open: thoughtsOpen },
      el("summary", {}, "Thoughts"), renderMarkdown(thoughts)));
  }
  for (const part of parts) {
    if (part.type === "text") nodes.push(el("div", { class: "text" }, renderMarkdown(part.text)));
    else if (part.type === "code") nodes.push(el("figure", { class: "code-part" }, el("figcaption", {}, `Code (${part.language || "code"})`), codeBlock(part.code, part.language)));
    else if (part.type === "code_result") nodes.push(el("figure", { class: `code-result outcome-${(part.outcome || "").toLowerCase()}` }, el("figcaption", {}, `Result: ${part.outcome || ""}`), el("pre", {}, el("code", {}, part.output || ""))));
    else if (part.type === "file") nodes.push(fileNode(part));
    else if (part.type === "function_call") nodes.push(el("p", { class: "tool-call" }, `Called ${part.name}(${JSON.stringify(part.args ?? {})})`));
    else if (part.type === "function_response") nodes.push(el("details", { class: "tool-call" }, el("summary", {}, `${part.name} answered`), el("pre", {}, el("code", {}, JSON.stringify(part.response, null, 2)))));
  }
  return nodes;
}

function fileNode(part) {
  const name = part.filename || part.file_id;
  if ((part.mime_type || "").startsWith("image/") && part.url) {
    return el("a", { class: "picture", href: part.url, target: "_blank", rel: "noopener noreferrer" },
      el("img", { src: part.url, alt: `Picture ${name}`, loading: "lazy" }));
  }
  return el("p", { class: "file" }, part.url ? link(part.url, `${name} (${part.mime_type})`) : `${name} (${part.mime_type})`);
}

function routingNode(routing) {
  return el("p", { class: "routing", title: `classifier ${routing.classifier || ""}, ${routing.latency_ms ?? "?"} ms` },
    `auto chose ${routing.model} (${routing.tier})`, routing.reason ? `: ${routing.reason}` : "");
}

function sourcesNode(grounding) {
  return el("nav", { class: "sources", "aria-label": "Sources" },
    el("span", {}, "Sources:"),
    el("ol", {}, ...grounding.sources.map((source) => el("li", {}, link(source.uri, source.title || source.uri)))));
}

function actionsNode(message, actions) {
  const bar = el("div", { class: "actions" });
  const siblings = message.siblings || [];
  if (siblings.length > 1) {
    const at = siblings.indexOf(message.id);
    bar.append(el("span", { class: "versions", role: "group", "aria-label": "Versions" },
      el("button", { type: "button", class: "icon", "aria-label": "Previous version", disabled: at <= 0,
                     onclick: () => actions.select(siblings[at - 1]) }, "‹"),
      el("span", { class: "version-count" }, `${at + 1}/${siblings.length}`),
      el("button", { type: "button", class: "icon", "aria-label": "Next version", disabled: at >= siblings.length - 1,
                     onclick: () => actions.select(siblings[at + 1]) }, "›")));
  }
  if (message.role === "user") {
    bar.append(el("button", { type: "button", onclick: () => actions.edit(message) }, "Edit"));
  } else {
    const menu = el("details", { class: "menu" }, el("summary", {}, "Regenerate"));
    const list = el("div", { class: "menu-items" },
      el("button", { type: "button", onclick: () => { menu.open = false; actions.regenerate(message, null); } },
        `Same model (${message.model || "default"})`),
      ...actions.models().map((model) => el("button", {
        type: "button", onclick: () => { menu.open = false; actions.regenerate(message, model.id); },
      }, model.id)));
    menu.append(list);
    bar.append(menu);
  }
  return bar;
}

// The editor that replaces a user message's text while it is edited.
export function editorNode(message, { save, cancel }) {
  const text = el("textarea", { rows: 3, "aria-label": "Edit message" });
  text.value = message.text || "";
  const submit = () => { if (text.value.trim()) save(text.value); };
  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); submit(); }
    if (event.key === "Escape") { event.preventDefault(); event.stopPropagation(); cancel(); }
  });
  const node = el("div", { class: "editor" }, text,
    el("div", { class: "actions" },
      el("button", { type: "button", class: "primary", onclick: submit }, "Save and send"),
      el("button", { type: "button", onclick: cancel }, "Cancel")));
  queueMicrotask(() => text.focus());
  return node;
}
