// The playground: conversations on the left, the open one on the right, a
// composer below. Every request is one of the public API's (see api.js); the
// open conversation is in the address (#/c/<id>), so a reload comes back to it
// and follows a reply that is still being written.

import * as api from "./api.js";
import { $, clear, el } from "./dom.js";
import { applyEvent, editorNode, emptyReply, messageNode } from "./messages.js";

const state = {
  models: [], defaultModel: null, tools: [],
  conversation: null,          // the open conversation, null for a new one
  attachments: [],             // uploaded files for the next message
  live: null,                  // {reply, node, controller, conversationId} while a reply is written
  list: { q: "", view: "", cursor: null, generation: 0 },
};

// -- the key prompt -------------------------------------------------------------------------------
let keyPrompt = null;
api.onKeyNeeded((note) => {
  // Requests that fail together share one prompt.
  keyPrompt ??= new Promise((resolve) => {
    const dialog = $("#key-dialog");
    const error = $("#key-error");
    error.hidden = !note;
    error.textContent = note;
    $("#key-input").value = "";
    dialog.addEventListener("close", () => { keyPrompt = null; resolve($("#key-input").value.trim() || null); },
      { once: true });
    dialog.showModal();
  });
  return keyPrompt;
});
// Escape dismisses the prompt without using what was typed.
$("#key-dialog").addEventListener("cancel", () => { $("#key-input").value = ""; });
$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  $("#key-dialog").close();
});

// -- models, tools and the new conversation's settings ------------------------------------------------
function modelById(id) { return state.models.find((model) => model.id === id); }

async function loadCatalog() {
  const [models, tools] = await Promise.all([api.get("/models"), api.get("/tools")]);
  state.models = models.models;
  state.defaultModel = models.default;
  state.tools = tools.tools;
  const select = $("#setting-model");
  select.replaceChildren(...state.models.map((model) => el("option", { value: model.id },
    model.id === models.default ? `${model.display_name || model.id} (default)` : model.display_name || model.id)));
  select.value = models.default;
  $("#setting-tools").replaceChildren(...state.tools.map((tool) => el("label", { class: "check", title: tool.description },
    el("input", { type: "checkbox", value: tool.id, name: "tool" }), ` ${tool.id.replaceAll("_", " ")}`)));
  showModelSettings();
}

function showModelSettings() {
  const model = modelById($("#setting-model").value);
  if (!model) return;
  $("#model-description").textContent = model.description || "";
  for (const box of document.querySelectorAll("#setting-tools input")) {
    const usable = (model.tools || []).includes(box.value);
    box.disabled = !usable;
    if (!usable) box.checked = false;
  }
  const thinking = model.thinking;
  const levels = $("#setting-thinking");
  const budget = $("#setting-budget");
  $("#thinking-field").hidden = !thinking;
  levels.hidden = !thinking?.levels;
  budget.hidden = !thinking?.budget;
  if (thinking?.levels) {
    levels.replaceChildren(el("option", { value: "" }, `Default${thinking.default ? ` (${thinking.default})` : ""}`),
      ...thinking.levels.map((level) => el("option", { value: level }, level)));
  }
  if (thinking?.budget) {
    // Models that can turn thinking off take 0 below their smallest budget.
    budget.min = thinking.can_disable ? 0 : thinking.budget[0];
    budget.max = thinking.budget[1];
    budget.value = "";
    budget.placeholder = `Budget ${thinking.budget[0]}–${thinking.budget[1]} tokens (empty: default)`;
  }
}

function newConversationBody() {
  const model = modelById($("#setting-model").value);
  const body = { model: model.id, tools: [...document.querySelectorAll("#setting-tools input:checked")].map((box) => box.value) };
  const system = $("#setting-system").value.trim();
  if (system) body.system_instruction = system;
  const settings = {};
  if (model.thinking?.levels && $("#setting-thinking").value) settings.thinking_level = $("#setting-thinking").value;
  if (model.thinking?.budget && $("#setting-budget").value !== "") settings.thinking_budget = Number($("#setting-budget").value);
  if (model.thinking && $("#setting-thoughts").checked) settings.include_thoughts = true;
  if (Object.keys(settings).length) body.settings = settings;
  return body;
}

// -- the conversation list ------------------------------------------------------------------------
async function loadList({ more = false } = {}) {
  const generation = more ? state.list.generation : ++state.list.generation;
  const params = new URLSearchParams({ limit: "20" });
  if (state.list.q) params.set("q", state.list.q);
  if (state.list.view) params.set(state.list.view, "true");  // pinned=true or archived=true
  if (more && state.list.cursor) params.set("cursor", state.list.cursor);
  let page;
  try {
    page = await api.get(`/conversations?${params}`);
  } catch (error) {
    $("#list-status").textContent = error.message;
    return;
  }
  if (generation !== state.list.generation) return;  // a newer search has started
  const list = $("#conversations");
  if (!more) clear(list);
  list.append(...page.conversations.map(listItem));
  state.list.cursor = page.next_cursor;
  $("#more-conversations").hidden = !page.next_cursor;
  $("#list-status").textContent = list.children.length ? "" : state.list.q ? "Nothing found." : "No conversations yet.";
}

function listItem(summary) {
  const current = state.conversation?.id === summary.id;
  return el("li", {},
    el("a", { href: `#/c/${encodeURIComponent(summary.id)}`, "aria-current": current ? "page" : null, "data-id": summary.id },
      el("span", { class: "title" }, summary.pinned ? el("span", { class: "pin", "aria-label": "pinned" }, "● ") : null,
        summary.title || "Untitled"),
      summary.snippet ? el("span", { class: "snippet" }, summary.snippet) : null,
      el("span", { class: "when" }, new Date(summary.updated_at).toLocaleString())));
}

let searchTimer = null;
$("#search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => { state.list.q = $("#search").value.trim(); loadList(); }, 250);
});
$("#more-conversations").addEventListener("click", () => loadList({ more: true }));
$("#list-view").addEventListener("change", () => { state.list.view = $("#list-view").value; loadList(); });

// -- opening a conversation -----------------------------------------------------------------------------
function route() {
  const match = /^#\/c\/(.+)$/.exec(location.hash);
  closeSidebar();
  if (match) return openConversation(decodeURIComponent(match[1]));
  showNew();
  return Promise.resolve();
}

// Leaving a conversation stops following its reply here; the server goes on writing it.
function leave(id = null) {
  if (!state.live || state.live.conversationId === id) return;
  state.live.controller.abort();
  state.live = null;
  composerBusy(false);
}

function showNew() {
  leave();
  state.conversation = null;
  $("#conversation-title").textContent = "New conversation";
  $("#conversation-model").hidden = true;
  $("#conversation-actions").hidden = true;
  $("#new-settings").hidden = false;
  clear($("#messages"));
  markCurrent();
  $("#composer-text").focus();
}

async function openConversation(id) {
  leave(id);
  let conversation;
  try {
    conversation = await api.get(`/conversations/${encodeURIComponent(id)}`);
  } catch (error) {
    showError(error.status === 404 ? "That conversation does not exist (any more)." : error.message);
    return;
  }
  show(conversation);
  const writing = conversation.messages.find((message) => message.status === "streaming");
  if (writing && state.live?.conversationId !== id) follow(writing);
}

function show(conversation) {
  state.conversation = conversation;
  $("#conversation-title").textContent = conversation.title || "Untitled";
  $("#conversation-model").textContent = conversation.model;
  $("#conversation-model").hidden = false;
  $("#conversation-actions").hidden = false;
  $("#toggle-pin").textContent = conversation.pinned ? "Unpin" : "Pin";
  $("#toggle-archive").textContent = conversation.archived ? "Unarchive" : "Archive";
  $("#new-settings").hidden = true;
  renderMessages();
  markCurrent();
}

function markCurrent() {
  for (const link of document.querySelectorAll("#conversations a")) {
    if (link.dataset.id === state.conversation?.id) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

const messageActions = {
  select: (id) => run(async () => show(await api.post(`${conversationPath()}/messages/${id}/select`))),
  edit: (message) => {
    const node = document.querySelector(`.message[data-id="${CSS.escape(message.id)}"] .body`);
    node.replaceChildren(editorNode(message, {
      save: (text) => editMessage(message, text),
      cancel: () => renderMessages(),
    }));
  },
  regenerate: (message, model) => regenerate(message, model),
  models: () => state.models,
};

function renderMessages() {
  const list = $("#messages");
  list.replaceChildren(...state.conversation.messages.map((message) =>
    state.live && message === state.live.reply ? state.live.node : messageNode(message, state.live ? null : messageActions)));
  list.lastElementChild?.scrollIntoView({ block: "end" });
}

function conversationPath(id = state.conversation.id) { return `/conversations/${encodeURIComponent(id)}`; }

// -- writing a reply ---------------------------------------------------------------------------
function composerBusy(busy) {
  $("#send").hidden = busy;
  $("#stop").hidden = !busy;
  $("#composer-text").setAttribute("aria-busy", busy ? "true" : "false");
}

// Streams a reply: `messages` is where its user message (if any) and reply go in the open conversation.
async function write(method, path, body, { keep }) {
  const conversationId = state.conversation.id;
  const reply = emptyReply(body.model || state.conversation.model);
  const controller = new AbortController();
  const live = { reply, node: messageNode(reply), controller, conversationId, thoughtsOpen: true };
  state.live = live;
  composerBusy(true);
  const messages = state.conversation.messages.slice(0, keep);
  state.conversation.messages = messages;
  renderMessages();
  try {
    await api.stream(method, path, {
      body, signal: controller.signal,
      onEvent: (name, data) => {
        if (name === "user_message") {
          messages.splice(messages.length, 0, data);
          renderMessages();
        } else if (name === "reply_start") {
          applyEvent(reply, name, data);
          messages.push(reply);
          renderMessages();
          if (live.stopAsked) stop();  // Stop was pressed before the reply had an id
        } else if (name === "title") {
          $("#conversation-title").textContent = data.title;
        } else {
          const stored = applyEvent(reply, name, data);
          if (stored) Object.assign(reply, stored);
          redrawLive();
        }
      },
    });
  } catch (error) {
    if (error.name !== "AbortError") showError(error.message);
  } finally {
    await finish(live);
  }
}

// Follows a reply that was being written when the page loaded, from the last event its text includes.
async function follow(message) {
  const conversationId = state.conversation.id;
  const controller = new AbortController();
  if (!message.last_event_id) { message.parts = []; message.text = ""; }  // all its events come again
  const live = { reply: message, node: messageNode(message), controller, conversationId, thoughtsOpen: true };
  state.live = live;
  composerBusy(true);
  renderMessages();
  try {
    await api.stream("GET", `${conversationPath()}/messages/${message.id}/events`, {
      lastEventId: message.last_event_id, signal: controller.signal,
      onEvent: (name, data) => {
        const stored = applyEvent(message, name, data);
        if (stored) Object.assign(message, stored);
        redrawLive();
      },
    });
  } catch (error) {
    if (error.name !== "AbortError") showError(error.message);
  } finally {
    await finish(live);
  }
}

let redrawPending = false;
function redrawLive() {
  if (redrawPending) return;
  redrawPending = true;
  requestAnimationFrame(() => {
    redrawPending = false;
    const live = state.live;
    if (!live) return;
    live.thoughtsOpen = live.node.querySelector("details.thoughts")?.open ?? live.thoughtsOpen;
    const node = messageNode(live.reply, null, { thoughtsOpen: live.thoughtsOpen });
    live.node.replaceWith(node);
    live.node = node;
    node.scrollIntoView({ block: "end" });
  });
}

// After a reply: the stored conversation (versions, statuses) replaces what the stream built.
async function finish(live) {
  const { reply, conversationId } = live;
  if (state.live !== live) return;  // the page has moved on to another conversation
  state.live = null;
  composerBusy(false);
  // One short announcement for screen readers, instead of every word as it streams.
  $("#announce").textContent = {
    complete: "Reply written.", stopped: "Reply stopped.", error: "The reply failed.", blocked: "The reply was blocked.",
  }[reply.status] || "";
  if (state.conversation?.id === conversationId) {
    try { show(await api.get(conversationPath(conversationId))); } catch (error) { showError(error.message); }
  }
  loadList();
}

async function stop() {
  const live = state.live;
  if (!live) return;
  if (!live.reply.id) {
    live.stopAsked = true;
    return;
  }
  try {
    await api.post(`${conversationPath(live.conversationId)}/messages/${live.reply.id}/stop`);
  } catch (error) {
    // The reply could not be stopped on the server: at least stop waiting for it here.
    showError(error.message);
    live.controller.abort();
  }
}

async function send() {
  const text = $("#composer-text").value;
  if (!text.trim() && !state.attachments.length) return;
  if (state.live) return;
  hideError();
  if (!state.conversation) {
    let conversation;
    try {
      conversation = await api.post("/conversations", newConversationBody());
    } catch (error) {
      showError(error.message, error.details);
      return;
    }
    show(conversation);
    history.pushState(null, "", `#/c/${encodeURIComponent(conversation.id)}`);
  }
  const body = { text, stream: true };
  if (state.attachments.length) body.files = state.attachments.map((file) => file.id);
  $("#composer-text").value = "";
  state.attachments = [];
  renderAttachments();
  await write("POST", `${conversationPath()}/messages`, body, { keep: state.conversation.messages.length });
}

function editMessage(message, text) {
  const at = state.conversation.messages.indexOf(message);
  return write("PUT", `${conversationPath()}/messages/${message.id}`, { text, stream: true }, { keep: at });
}

function regenerate(message, model) {
  const at = state.conversation.messages.indexOf(message);
  const body = { stream: true };
  if (model) body.model = model;
  return write("POST", `${conversationPath()}/messages/${message.id}/regenerate`, body, { keep: at });
}

// -- attachments ---------------------------------------------------------------------------------
$("#attach").addEventListener("change", async (event) => {
  const files = [...event.target.files];
  event.target.value = "";
  for (const file of files) {
    try {
      state.attachments.push(await api.upload(file));
    } catch (error) {
      showError(`${file.name}: ${error.message}`);
    }
    renderAttachments();
  }
});

function renderAttachments() {
  $("#attachments").replaceChildren(...state.attachments.map((file) => el("li", { class: "attachment" },
    file.mime_type.startsWith("image/") ? el("img", { src: file.url, alt: "" }) : null,
    el("span", {}, file.filename),
    el("button", { type: "button", class: "icon", "aria-label": `Remove ${file.filename}`, onclick: () => {
      state.attachments = state.attachments.filter((other) => other !== file);
      renderAttachments();
      $("#composer-text").focus();
    } }, "×"))));
}

// -- export ------------------------------------------------------------------------------------------
async function exportAs(format) {
  const { blob, name } = await api.download(`${conversationPath()}/export?format=${format}`);
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: name || `${state.conversation.id}.${format === "markdown" ? "md" : "json"}` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
// -- the open conversation's menu ------------------------------------------------------------------------
function fromMenu(action) {
  return () => {
    $("#conversation-actions").open = false;
    return run(action);
  };
}
async function change(fields) {
  show(await api.request("PATCH", conversationPath(), fields));
  loadList();
}
$("#export-markdown").addEventListener("click", fromMenu(() => exportAs("markdown")));
$("#export-json").addEventListener("click", fromMenu(() => exportAs("json")));
$("#toggle-pin").addEventListener("click", fromMenu(() => change({ pinned: !state.conversation.pinned })));
$("#toggle-archive").addEventListener("click", fromMenu(() => change({ archived: !state.conversation.archived })));
$("#delete-conversation").addEventListener("click", fromMenu(async () => {
  const { id, title } = state.conversation;
  if (!confirm(`Delete "${title || "Untitled"}"? Its messages cannot be brought back.`)) return;
  if (state.live) state.live.controller.abort();
  await api.request("DELETE", conversationPath(id));
  location.hash = "";
  loadList();
}));

// -- errors ---------------------------------------------------------------------------------------------
function showError(message, details = {}) {
  const box = $("#composer-error");
  const fields = Object.entries(details || {}).map(([field, notes]) => `${field}: ${[].concat(notes).join(" ")}`);
  box.textContent = [message, ...fields].join(" — ");
  box.hidden = false;
}
function hideError() { $("#composer-error").hidden = true; }
async function run(action) {
  hideError();
  try { await action(); } catch (error) { showError(error.message, error.details); }
}

// -- keyboard, layout -------------------------------------------------------------------------------------
$("#composer").addEventListener("submit", (event) => { event.preventDefault(); send(); });
$("#composer-text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
$("#stop").addEventListener("click", stop);
// A menu closes when something else is clicked, as menus do.
document.addEventListener("click", (event) => {
  for (const menu of document.querySelectorAll("details.menu[open]")) {
    if (!menu.contains(event.target)) menu.open = false;
  }
});
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || event.defaultPrevented || $("#key-dialog").open) return;
  const menu = document.querySelector("details.menu[open]");
  if (menu) {
    menu.open = false;
    menu.querySelector("summary").focus();
  } else if (document.body.classList.contains("sidebar-open")) {
    closeSidebar();
    $("#toggle-sidebar").focus();
  } else if (state.live) {
    stop();
  }
});
$("#new-settings").addEventListener("submit", (event) => event.preventDefault());
$("#setting-model").addEventListener("change", showModelSettings);
$("#new-conversation").addEventListener("click", () => {
  if (location.hash) location.hash = "";
  else showNew();
  closeSidebar();
});

function closeSidebar() {
  document.body.classList.remove("sidebar-open");
  $("#toggle-sidebar").setAttribute("aria-expanded", "false");
}
// Choosing a conversation (even the open one) puts the list away on a phone.
$("#conversations").addEventListener("click", (event) => { if (event.target.closest("a")) closeSidebar(); });
$("#toggle-sidebar").addEventListener("click", () => {
  const open = document.body.classList.toggle("sidebar-open");
  $("#toggle-sidebar").setAttribute("aria-expanded", String(open));
  if (open) $("#search").focus();
});

window.addEventListener("hashchange", route);

async function start() {
  try {
    await loadCatalog();
  } catch (error) {
    showError(error.message);
  }
  await Promise.all([loadList(), route()]);
  document.body.dataset.ready = "true";  // the page is usable (tests wait for this)
}
start();
