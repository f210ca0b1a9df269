// The Batches page: each batch's progress and counts, its result files to download, and a
// Cancel button while it runs. A gateway key sees (and cancels) its own batches, OpenAI's and
// Anthropic's; an admin key sees every key's, and one of the admin role cancels any.
// While a batch shown is not final, the page reads them again every two seconds.

import { $, el, number, table } from './dom.js';
import { api, authHeaders } from './api.js';

const ENDED = new Set(['completed', 'failed', 'expired', 'cancelled', 'ended']);
const CANCELLABLE = new Set(['validating', 'in_progress']);
const REFRESH_MS = 2000;

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : '–';
}

function progress(done, total) {
  const share = total ? Math.round((100 * done) / total) : 0;
  return el('td', {}, el('progress', { max: String(total || 1), value: String(done) }), ` ${share}%`);
}

/** A user's OpenAI batch and Anthropic message batch, in the admin view's row shape. */
function fromOpenAI(b) {
  const c = b.request_counts || { total: 0, completed: 0, failed: 0 };
  return {
    id: b.id, door: 'openai', key: null, status: b.status, endpoint: b.endpoint,
    created_at: b.created_at, output_file_id: b.output_file_id, error_file_id: b.error_file_id,
    counts: { total: c.total, done: c.completed, failed: c.failed, pending: c.total - c.completed - c.failed },
  };
}

function fromAnthropic(b) {
  const c = b.request_counts;
  const total = c.processing + c.succeeded + c.errored + c.canceled + c.expired;
  return {
    id: b.id, door: 'anthropic', key: null, status: b.processing_status, endpoint: '/v1/messages',
    created_at: Date.parse(b.created_at) / 1000, results: b.results_url ? `/v1/messages/batches/${b.id}/results` : null,
    counts: { total, done: c.succeeded, failed: c.errored + c.canceled + c.expired, pending: c.processing },
  };
}

export class Batches {
  constructor() {
    this.admin = false;
    this.role = null; // an admin key's role: only 'admin' may cancel another key's batch
    this.timer = null;
    $('batches-refresh').addEventListener('click', () => this.load());
  }

  async rows() {
    if (this.admin) {
      return (await api('/admin/batches?limit=200')).data;
    }
    const [openai, anthropic] = await Promise.all([
      api('/v1/batches?limit=100'),
      api('/v1/messages/batches?limit=100'),
    ]);
    return [...openai.data.map(fromOpenAI), ...anthropic.data.map(fromAnthropic)]
      .sort((a, b) => b.created_at - a.created_at);
  }

  async load() {
    clearTimeout(this.timer);
    this.timer = null;
    let rows;
    try {
      rows = await this.rows();
      $('batches-error').textContent = '';
    } catch (error) {
      $('batches-error').textContent = error.message;
      return;
    }
    const running = rows.filter((r) => !ENDED.has(r.status)).length;
    if (running) this.timer = setTimeout(() => this.refresh(), REFRESH_MS);
    $('batches-summary').textContent = `${number(rows.length)} batches, ${number(running)} running`;
    const headings = ['Batch', ...(this.admin ? ['Key'] : []), 'API', 'Status', 'Progress', 'Done', 'Failed', 'Pending', 'Created', 'Results', ''];
    table($('batches-table'), headings, rows.map((r) => [
      el('td', { class: 'mono' }, r.id),
      ...(this.admin ? [r.key] : []),
      r.door === 'anthropic' ? 'Anthropic' : `OpenAI ${r.endpoint || ''}`,
      r.status,
      progress(r.counts.done + r.counts.failed, r.counts.total),
      number(r.counts.done), number(r.counts.failed), number(r.counts.pending),
      when(r.created_at),
      el('td', {}, ...this.downloads(r)),
      el('td', {}, this.cancelButton(r)),
    ]));
  }

  /** Read again while the page is shown (a page left, or a tab signed out, stops it). */
  refresh() {
    this.timer = null;
    if ($('page-batches').hidden) return;
    this.load();
  }

  cancelButton(row) {
    if (!CANCELLABLE.has(row.status) || (this.admin && this.role !== 'admin')) return '';
    return el('button', {
      type: 'button',
      class: 'quiet',
      'aria-label': `Cancel ${row.id}`,
      onclick: (event) => this.cancel(row, event.currentTarget),
    }, 'Cancel');
  }

  /** The batch's own cancel (its door's, or the admin's for any key's), then the list again. */
  async cancel(row, button) {
    button.disabled = true;
    const path = this.admin ? `/admin/batches/${row.id}/cancel`
      : row.door === 'anthropic' ? `/v1/messages/batches/${row.id}/cancel`
        : `/v1/batches/${row.id}/cancel`;
    try {
      await api(path, { method: 'POST' });
    } catch (error) {
      button.disabled = false;
      $('batches-error').textContent = `Cancel failed: ${error.message}`;
      return;
    }
    await this.load();
  }

  downloads(row) {
    const files = this.admin ? '/admin/files' : '/v1/files';
    const links = [];
    if (row.output_file_id) links.push(this.link('output', `${files}/${row.output_file_id}/content`, `${row.id}_output.jsonl`));
    if (row.error_file_id) links.push(this.link('errors', `${files}/${row.error_file_id}/content`, `${row.id}_errors.jsonl`));
    if (row.results) links.push(this.link('results', row.results, `${row.id}_results.jsonl`));
    return links.length ? links : ['–'];
  }

  link(label, path, filename) {
    return el('button', {
      type: 'button',
      class: 'quiet',
      onclick: () => this.download(path, filename),
    }, label);
  }

  /** The file through the API (the key goes in a header, never in a URL), saved as a blob. */
  async download(path, filename) {
    try {
      const response = await fetch(path, { headers: authHeaders(), cache: 'no-store', credentials: 'omit' });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const url = URL.createObjectURL(await response.blob());
      const anchor = el('a', { href: url, download: filename });
      document.body.append(anchor);
      anchor.click();
      anchor.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (error) {
      $('batches-error').textContent = `Download failed: ${error.message}`;
    }
  }
}
