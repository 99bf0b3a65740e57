// A small, safe Markdown subset for model text, built as DOM nodes (never HTML
// strings): fenced code blocks, paragraphs, `inline code`, **bold**, and links
// to http(s) addresses, which open in a new tab with rel="noopener noreferrer".
// Anything else shows as the text it is.

import { el } from "./dom.js";

const FENCE = /^```\s*([\w+#.-]*)\s*$/;

export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  const lines = text.split("\n");
  let paragraph = [];
  const flush = () => {
    if (paragraph.some((line) => line.trim())) fragment.append(el("p", {}, ...inline(paragraph.join("\n").trim())));
    paragraph = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const fence = FENCE.exec(lines[i]);
    if (fence) {
      flush();
      const code = [];
      for (i++; i < lines.length && !/^```\s*$/.test(lines[i]); i++) code.push(lines[i]);
      fragment.append(codeBlock(code.join("\n"), fence[1]));
    } else if (!lines[i].trim()) {
      flush();
    } else {
      paragraph.push(lines[i]);
    }
  }
  flush();
  return fragment;
}

export function codeBlock(code, language = "") {
  const attrs = language ? { "data-language": language } : {};
  return el("pre", { class: "code", ...attrs }, el("code", {}, code));
}

const INLINE = /`([^`\n]+)`|\*\*([^*\n]+)\*\*|\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/g;

export function inline(text) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(INLINE)) {
    if (match.index > last) nodes.push(text.slice(last, match.index));
    const [, code, bold, label, href, bare] = match;
    if (code !== undefined) nodes.push(el("code", {}, code));
    else if (bold !== undefined) nodes.push(el("strong", {}, bold));
    else nodes.push(link(href ?? bare, label ?? bare));
    last = match.index + match[0].length;
  }
  if (last < text.length) nodes.push(text.slice(last));
  return nodes;
}

export function link(href, label) {
  return el("a", { href, target: "_blank", rel: "noopener noreferrer" }, label);
}
