// The live view: /admin/live read once a second while the page is shown.

import { $, el, number, table, utcTime } from './dom.js';
import { api } from './api.js';

const INTERVAL_MS = 1000;

function age(since) {
  const seconds = Math.max(0, (Date.now() - Date.parse(since)) / 1000);
  return seconds < 60 ? `${seconds.toFixed(1)} s` : `${Math.floor(seconds / 60)} min`;
}

export class Live {
  constructor() {
    this.timer = null;
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) this.stop();
      else if (this.active) this.start();
    });
  }

  start() {
    this.active = true;
    this.stop();
    const tick = async () => {
      await this.refresh();
      if (this.active && !document.hidden) this.timer = setTimeout(tick, INTERVAL_MS);
    };
    tick();
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  leave() {
    this.active = false;
    this.stop();
  }

  async refresh() {
    let live;
    try {
      live = await api('/admin/live');
      $('live-error').textContent = '';
    } catch (error) {
      $('live-error').textContent = error.message;
      return;
    }
    $('live-updated').textContent = `Updated ${utcTime(live.at)}`;
    const up = live.upstream;
    const fact = (name, value) => el('div', {}, el('dt', {}, name), el('dd', {}, value));
    const ms = (value) => (value === null || value === undefined ? '–' : `${number(value)} ms`);
    $('live-upstream').replaceChildren(
      fact('Upstream latency p50', ms(up.latency_ms_p50)),
      fact('Upstream latency p99', ms(up.latency_ms_p99)),
      fact('Upstream calls (recent)', number(up.calls_recent)),
      fact('Upstream errors (recent)', number(up.errors_recent)),
    );
    table($('live-accounts'), ['Account', 'Jobs in flight', 'Queued', 'Max jobs', 'Status requests per tick', 'Circuit'],
      live.accounts.map((a) => [a.account, number(a.jobs_in_flight), number(a.queued),
        a.max_jobs === null ? 'no cap' : number(a.max_jobs), number(a.status_requests_per_tick),
        el('td', { class: `circuit ${a.circuit}` }, a.circuit.replace('_', '-'))]));
    table($('live-jobs'), ['Job id', 'Key', 'Model', 'State', 'For'],
      live.jobs.map((j) => [el('td', { class: 'mono' }, j.job_id), j.key || '–', j.model || '–', j.state, age(j.since)]));
    table($('live-failures'), ['At (UTC)', 'Route', 'Status', 'Outcome', 'Key'],
      live.recent_failures.map((f) => [utcTime(f.at), f.route, String(f.status), f.outcome, f.key || '–']));
  }
}
