// Usage: a key's own (/v1/usage), or every key's for an admin (/admin/usage), as a chart
// drawn here, a table, the key's limits, and (admin) a CSV export of the table.

import { $, el, number, table } from './dom.js';
import { api, query } from './api.js';
import { barChart, legend } from './chart.js';

const FIELDS = ['requests', 'errors', 'prompt_tokens', 'completion_tokens', 'total_tokens', 'cached', 'tokens_saved'];
const GROUP_FIELD = { key: ['key_name', 'key'], team: ['team', 'team_name'], model: ['model'] };

function utcDay(offset) {
  const day = new Date();
  day.setUTCDate(day.getUTCDate() - offset);
  return day.toISOString().slice(0, 10);
}

/** The last ``count`` UTC days, oldest first. */
export function lastDays(count) {
  return Array.from({ length: count }, (_, i) => utcDay(count - 1 - i));
}

function add(into, row) {
  for (const field of FIELDS) into[field] = (into[field] || 0) + (row[field] || 0);
  return into;
}

function label(row, group) {
  for (const field of GROUP_FIELD[group] || []) {
    if (row[field] !== undefined && row[field] !== null && row[field] !== '') return String(row[field]);
  }
  return row.group !== undefined ? String(row.group) : `(no ${group})`;
}

function csvCell(value) {
  const text = value === null || value === undefined ? '' : String(value);
  // Quote always; a leading =, +, - or @ would run as a formula in a spreadsheet.
  const safe = /^[=+\-@]/.test(text) ? `'${text}` : text;
  return `"${safe.replace(/"/g, '""')}"`;
}

export class Usage {
  constructor() {
    this.admin = false;
    this.rows = [];
    this.headings = [];
    $('usage-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.load();
    });
    for (const id of ['usage-range', 'usage-group', 'usage-metric']) {
      $(id).addEventListener('change', () => this.load());
    }
    $('usage-csv').addEventListener('click', () => this.exportCsv());
  }

  async load() {
    $('usage-error').textContent = '';
    try {
      if (this.admin) await this.loadAdmin();
      else await this.loadOwn();
    } catch (error) {
      $('usage-error').textContent = error.message;
    }
  }

  metric() {
    return $('usage-metric').value;
  }

  draw(bars, series, title) {
    const unit = this.metric() === 'requests' ? 'requests' : 'tokens';
    $('usage-chart').replaceChildren(barChart({ bars, series, unit, title }));
    $('usage-caption').textContent = title;
    legend($('usage-legend'), series);
  }

  /** A bar per day, one segment per series, from per-day answers {day: rows}. */
  dayBars(days, answers, seriesOf) {
    const metric = this.metric();
    const series = new Set();
    const bars = days.map((day) => {
      const bySeries = new Map();
      for (const row of answers[day]) {
        const name = seriesOf(row);
        series.add(name);
        bySeries.set(name, (bySeries.get(name) || 0) + (row[metric] || 0));
      }
      return { id: day, label: day.slice(5), segments: [...bySeries].map(([s, value]) => ({ series: s, value })) };
    });
    return { bars, series: [...series].sort() };
  }

  async perDay(path, days, extra) {
    const answers = await Promise.all(days.map((day) => api(path + query({ since: day, until: day, ...extra }))));
    const byDay = {};
    days.forEach((day, i) => {
      byDay[day] = answers[i].data;
    });
    return { byDay, first: answers[answers.length - 1] };
  }

  async loadOwn() {
    const days = lastDays(Number($('usage-range').value));
    const { byDay, first } = await this.perDay('/v1/usage', days, {});
    const { bars, series } = this.dayBars(days, byDay, (row) => row.model);
    this.draw(bars, series, `${this.metric() === 'requests' ? 'Requests' : 'Tokens'} by day and model, ${days[0]} to ${days[days.length - 1]} (UTC)`);
    const byModel = new Map();
    for (const day of days) {
      for (const row of byDay[day]) byModel.set(row.model, add(byModel.get(row.model) || {}, row));
    }
    this.show('Model', [...byModel].map(([model, sums]) => ({ label: model, ...sums })));
    const today = byDay[days[days.length - 1]].reduce((sum, row) => sum + row.total_tokens, 0);
    const month = await api(`/v1/usage${query({ since: days[days.length - 1].slice(0, 7) })}`);
    const monthTokens = month.data.reduce((sum, row) => sum + row.total_tokens, 0);
    this.showLimits(first.limits || {}, today, monthTokens);
  }

  async loadAdmin() {
    const days = lastDays(Number($('usage-range').value));
    const group = $('usage-group').value;
    const metric = this.metric();
    const noun = metric === 'requests' ? 'Requests' : 'Tokens';
    if (group === 'day') {
      const { byDay } = await this.perDay('/admin/usage', days, {});
      const { bars, series } = this.dayBars(days, byDay, (row) => label(row, 'key'));
      this.draw(bars, series, `${noun} by day and key, ${days[0]} to ${days[days.length - 1]} (UTC)`);
      this.show('Day', days.map((day) => ({ label: day, ...byDay[day].reduce(add, {}) })));
      return;
    }
    const answer = await api(`/admin/usage${query({ since: days[0], group_by: group })}`);
    const groups = new Map();
    const series = new Set();
    for (const row of answer.data) {
      const name = label(row, group);
      const model = row.model && group !== 'model' ? row.model : name;
      series.add(model);
      const entry = groups.get(name) || { sums: {}, segments: new Map() };
      add(entry.sums, row);
      entry.segments.set(model, (entry.segments.get(model) || 0) + (row[metric] || 0));
      groups.set(name, entry);
    }
    const names = [...groups.keys()].sort();
    const bars = names.map((name) => ({
      id: name,
      label: name,
      segments: [...groups.get(name).segments].map(([s, value]) => ({ series: s, value })),
    }));
    this.draw(bars, [...series].sort(), `${noun} by ${group}, ${days[0]} to now (UTC)`);
    const heading = group.charAt(0).toUpperCase() + group.slice(1);
    this.show(heading, names.map((name) => ({ label: name, ...groups.get(name).sums })));
  }

  show(heading, rows) {
    this.headings = [heading, 'Requests', 'Errors', 'Prompt tokens', 'Completion tokens', 'Total tokens', 'Cache hits', 'Tokens saved'];
    this.rows = rows.map((r) => [r.label, ...FIELDS.map((f) => r[f] || 0)]);
    table($('usage-table'), this.headings, this.rows.map(([name, ...values]) => [name, ...values.map(number)]));
    const requests = rows.reduce((sum, r) => sum + (r.requests || 0), 0);
    const tokens = rows.reduce((sum, r) => sum + (r.total_tokens || 0), 0);
    const saved = rows.reduce((sum, r) => sum + (r.tokens_saved || 0), 0);
    const summary = $('usage-summary');
    summary.dataset.requests = requests;
    summary.dataset.tokens = tokens;
    summary.dataset.saved = saved;
    summary.textContent = `${number(requests)} requests, ${number(tokens)} tokens in this range; ${number(saved)} tokens saved by the cache.`;
  }

  showLimits(limits, today, month) {
    const items = [];
    const item = (name, value) => items.push(el('div', {}, el('dt', {}, name), el('dd', {}, value)));
    const budget = (limit, used) => (limit ? `${number(used)} of ${number(limit)} used, ${number(Math.max(0, limit - used))} left` : `no limit (${number(used)} used)`);
    item('Requests per minute', limits.rpm ? number(limits.rpm) : 'no limit');
    item('Tokens per minute', limits.tpm ? number(limits.tpm) : 'no limit');
    item('Requests at once', limits.max_concurrent ? number(limits.max_concurrent) : 'no limit');
    item('Today (UTC)', budget(limits.daily_tokens, today));
    item('This month (UTC)', budget(limits.monthly_tokens, month));
    item('Models', limits.models ? limits.models.join(', ') : 'all');
    item('Expires', limits.expires_at || 'never');
    $('limits-list').replaceChildren(...items);
  }

  exportCsv() {
    const lines = [this.headings, ...this.rows].map((cells) => cells.map(csvCell).join(','));
    const blob = new Blob([`${lines.join('\r\n')}\r\n`], { type: 'text/csv' });
    const link = el('a', { href: URL.createObjectURL(blob), download: `usage-${$('usage-group').value}-${utcDay(0)}.csv` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  }
}
