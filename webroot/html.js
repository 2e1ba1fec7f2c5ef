// Markup that escapes by default. Every page builds its HTML with the `html`
// tag: each ${value} in it is escaped, unless the value is itself markup (an
// `html` result, or an array of them). Pages put markup in the document only
// through `render` and `fragment`, which refuse plain strings, so safety does
// not rest on remembering to escape. No DOM here: node runs the unit test
// (tests/browser/html.test.mjs).

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Text made safe as element content and inside a quoted attribute. */
const escapeText = (v) => String(v).replace(/[&<>"']/g, (c) => ESCAPES[c]);

/** Markup: what `html` returns. Only this module makes one. */
export class Markup {
  #text;
  constructor(text) { this.#text = text; }
  toString() { return this.#text; }
}

function part(value) {
  if (value instanceof Markup) return value.toString();
  if (Array.isArray(value)) return value.map(part).join('');
  // Nothing to show: `${cond && html`...`}` and a missing value read as nothing.
  if (value === null || value === undefined || value === false) return '';
  return escapeText(value);
}

/** The tag: html`<td>${name}</td>` escapes `name`. */
export function html(strings, ...values) {
  let text = strings[0];
  values.forEach((value, i) => { text += part(value) + strings[i + 1]; });
  return new Markup(text);
}

/** Items joined by `separator` (text, escaped like any value). */
export function join(items, separator) {
  return html`${items.map((item, i) => (i ? [separator, item] : [item]))}`;
}

function checked(markup) {
  if (!(markup instanceof Markup)) {
    throw new TypeError('markup must come from the html tag, not a string');
  }
  return markup.toString();
}

/** Replaces `el`'s content with `markup`. */
export function render(el, markup) {
  el.innerHTML = checked(markup);
  return el;
}

/** The first element `markup` builds (not yet in the document). */
export function fragment(markup) {
  const tpl = document.createElement('template');
  tpl.innerHTML = checked(markup).trim();
  return tpl.content.firstElementChild;
}
