// Unit tests of webroot/html.js, the tag every page builds its markup with.
// Run by tests/tests/ui_markup.rs (node's own test runner, no browser).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { html, join, Markup } from '../../webroot/html.js';

const text = (m) => m.toString();

test('values are escaped, as text and in quoted attributes', () => {
  const name = `<img src=x onerror="alert('x')">&`;
  assert.equal(
    text(html`<td title="${name}">${name}</td>`),
    '<td title="&lt;img src=x onerror=&quot;alert(&#39;x&#39;)&quot;&gt;&amp;">&lt;img src=x onerror=&quot;alert(&#39;x&#39;)&quot;&gt;&amp;</td>',
  );
});

test('markup from the tag goes in as markup, once', () => {
  const inner = html`<b>${'a<b'}</b>`;
  assert.equal(text(html`<p>${inner}</p>`), '<p><b>a&lt;b</b></p>');
});

test('arrays are joined, each item escaped or kept as markup', () => {
  assert.equal(text(html`<ul>${['<x>', html`<li>y</li>`]}</ul>`), '<ul>&lt;x&gt;<li>y</li></ul>');
});

test('nothing to show reads as nothing; zero is a value', () => {
  assert.equal(text(html`[${null}${undefined}${false}]`), '[]');
  assert.equal(text(html`[${0}]`), '[0]');
});

test('a string that looks like markup is still text', () => {
  assert.equal(text(html`${'<span>not markup</span>'}`), '&lt;span&gt;not markup&lt;/span&gt;');
});

test('join escapes its separator and keeps markup items', () => {
  assert.equal(text(join([html`<i>a</i>`, 'b&c'], ' & ')), '<i>a</i> &amp; b&amp;c');
  assert.ok(join([], ', ') instanceof Markup);
});
