// Building the page without HTML strings: every text goes in through textContent or a Text
// node, so nothing a model, a user or the API returns is ever parsed as markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function fill(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'text') node.textContent = String(value);
    else if (name.startsWith('on') && typeof value === 'function') {
      node.addEventListener(name.slice(2), value);
    } else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An HTML element: el('td', {class: 'n'}, 'text', otherNode). */
export function el(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element, the same way. */
export function svg(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function $(id) {
  return document.getElementById(id);
}

/** Replace a table's contents: a header row and one row per item. */
export function table(node, headings, rows) {
  const head = el('thead', {}, el('tr', {}, ...headings.map((h) => el('th', { scope: 'col' }, h))));
  const body = el('tbody', {});
  for (const cells of rows) {
    body.append(el('tr', {}, ...cells.map((c) => (c instanceof Node && c.tagName === 'TD' ? c : el('td', {}, c)))));
  }
  if (!rows.length) {
    body.append(el('tr', {}, el('td', { colspan: headings.length, class: 'empty' }, 'Nothing to show.')));
  }
  node.replaceChildren(head, body);
}

export function number(value) {
  if (value === null || value === undefined) return '–';
  return Number(value).toLocaleString('en-US');
}

/** ``12:34:56 UTC``: the console shows every time in UTC, as the usage page's days are. */
export function utcTime(value) {
  return `${new Date(value).toISOString().slice(11, 19)} UTC`;
}
