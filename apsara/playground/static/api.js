// The public API as a browser calls it: JSON requests with the Bearer key, the
// error envelope turned into an ApiError, and replies streamed over server-sent
// events from a POST (EventSource can only GET, and cannot send a header).
//
// The key lives in sessionStorage: it survives a reload, not the tab. A 401
// asks `askForKey` (set by the page) for a key and tries once more with it.

const KEY = "apsara.key";
export const BASE = "/api/v1";

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = error?.status || "";
    this.details = error?.details || {};
  }
}

let askForKey = async () => null;
export function onKeyNeeded(ask) { askForKey = ask; }

function headers(extra = {}) {
  const key = sessionStorage.getItem(KEY);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function errorOf(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not our envelope (a proxy's page) */ }
  return new ApiError(response.status, body?.error || { message: response.statusText });
}

// fetch() under /api/v1 with the key; a 401 asks for a key and repeats the request once.
async function send(path, init = {}, retried = false) {
  const response = await fetch(BASE + path, { ...init, headers: headers(init.headers) });
  if (response.status === 401 && !retried) {
    const previous = sessionStorage.getItem(KEY);
    const key = await askForKey(previous ? "That key was refused." : "");
    if (key) {
      sessionStorage.setItem(KEY, key);
      return send(path, init, true);
    }
  }
  if (response.status === 401 && retried) return send(path, init, false);
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function request(method, path, body) {
  const init = { method };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { "Content-Type": "application/json" };
  }
  const response = await send(path, init);
  return response.status === 204 ? null : response.json();
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);

export async function upload(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  return (await send("/files", { method: "POST", body: form })).json();
}

// A download (export): the bytes and the file name the server suggests.
export async function download(path) {
  const response = await send(path);
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = /filename="?([^";]+)"?/.exec(disposition)?.[1];
  return { blob: await response.blob(), name };
}

// Opens a stream and calls onEvent(name, data, id) for each event until it ends.
// `body` undefined means GET (following a reply's events); `lastEventId` resumes.
export async function stream(method, path, { body, lastEventId, signal, onEvent }) {
  const extra = { Accept: "text/event-stream" };
  if (body !== undefined) extra["Content-Type"] = "application/json";
  if (lastEventId) extra["Last-Event-ID"] = String(lastEventId);
  const response = await send(path, {
    method, signal, headers: extra, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new EventParser(onEvent);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    parser.push(value);
  }
  parser.end();
}

// Server-sent events framing: fields up to a blank line; `: ...` lines are comments (pings).
export class EventParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.reset();
  }

  reset() { this.event = "message"; this.id = null; this.data = []; }

  push(text) {
    this.buffer += text;
    let end;
    while ((end = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buffer.slice(0, end);
      const newline = this.buffer[end] === "\r" && this.buffer[end + 1] === "\n" ? 2 : 1;
      // A lone \r at the very end may be the first half of \r\n: wait for more.
      if (this.buffer[end] === "\r" && end + 1 === this.buffer.length) break;
      this.buffer = this.buffer.slice(end + newline);
      this.line(line);
    }
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id") this.id = value;
  }

  dispatch() {
    if (this.data.length) {
      this.onEvent(this.event, JSON.parse(this.data.join("\n")), this.id === null ? null : Number(this.id));
    }
    this.reset();
  }

  end() { if (this.buffer) this.line(this.buffer); this.buffer = ""; this.dispatch(); }
}
