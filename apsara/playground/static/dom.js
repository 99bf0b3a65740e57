// Building the page from nodes. Strings always become text nodes, so nothing a
// model or a user wrote is ever parsed as HTML (the page's Content-Security-Policy
// also requires Trusted Types, so an innerHTML assignment would throw).

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (typeof value === "function") node.addEventListener(name.replace(/^on/, ""), value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  node.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

export function clear(node) { node.replaceChildren(); }
