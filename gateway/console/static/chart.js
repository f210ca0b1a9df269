// A stacked bar chart drawn as SVG by the page: no chart library, no chart service.

import { el, number, svg } from './dom.js';

const WIDTH = 720;
const HEIGHT = 260;
const PAD = { top: 12, right: 12, bottom: 46, left: 64 };
export const SERIES_COLOURS = 8;

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

/**
 * bars: [{label, segments: [{series, value}]}]; series: names in legend order.
 * Each bar is a <g> with data-label and data-value (its total), each segment a <rect> with a
 * <title> saying what it counts, so the numbers can be read (and checked) from the page.
 */
export function barChart({ bars, series, unit, title }) {
  const inner = { w: WIDTH - PAD.left - PAD.right, h: HEIGHT - PAD.top - PAD.bottom };
  const totals = bars.map((bar) => bar.segments.reduce((sum, s) => sum + s.value, 0));
  const top = niceMax(Math.max(0, ...totals));
  const root = svg('svg', {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: 'img',
    'aria-label': title,
    class: 'barchart',
    'data-unit': unit,
  }, svg('title', { text: title }));
  for (let i = 0; i <= 4; i += 1) {
    const y = PAD.top + inner.h - (inner.h * i) / 4;
    root.append(
      svg('line', { x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y, class: 'grid' }),
      svg('text', { x: PAD.left - 6, y: y + 4, class: 'axis', 'text-anchor': 'end', text: number((top * i) / 4) }),
    );
  }
  const slot = inner.w / Math.max(1, bars.length);
  const width = Math.max(2, Math.min(48, slot * 0.7));
  bars.forEach((bar, index) => {
    const x = PAD.left + slot * index + (slot - width) / 2;
    const group = svg('g', { class: 'bar', 'data-label': bar.id ?? bar.label, 'data-value': totals[index] });
    let y = PAD.top + inner.h;
    for (const segment of bar.segments) {
      if (segment.value <= 0) continue;
      const h = (inner.h * segment.value) / top;
      y -= h;
      const colour = series.indexOf(segment.series) % SERIES_COLOURS;
      group.append(
        svg('rect', { x, y, width, height: Math.max(h, 0.5), class: `s${colour}` },
          svg('title', { text: `${bar.label} · ${segment.series}: ${number(segment.value)} ${unit}` })),
      );
    }
    const every = Math.ceil(bars.length / 10);
    if (index % every === 0) {
      group.append(svg('text', {
        x: x + width / 2, y: HEIGHT - PAD.bottom + 16, class: 'axis', 'text-anchor': 'middle', text: bar.label,
      }));
    }
    root.append(group);
  });
  return root;
}

export function legend(node, series) {
  node.replaceChildren(...series.map((name, i) => el('li', {},
    el('span', { class: `swatch s${i % SERIES_COLOURS}`, 'aria-hidden': 'true' }), name)));
}
