// Keys and teams, through the audited admin API (/admin/keys, /admin/teams). A viewer key
// sees the same tables with no way to change them (and the API refuses it anyway).

import { $, el, number, table } from './dom.js';
import { api, query } from './api.js';

const KEY_FIELDS = [
  ['key-team', 'team', 'text'],
  ['key-account', 'account', 'text'],
  ['key-models', 'models', 'list'],
  ['key-rpm', 'rpm', 'int'],
  ['key-tpm', 'tpm', 'int'],
  ['key-concurrent', 'max_concurrent', 'int'],
  ['key-daily', 'daily_tokens', 'int'],
  ['key-monthly', 'monthly_tokens', 'int'],
  ['key-expires', 'expires_at', 'time'],
];
const TEAM_FIELDS = [
  ['team-rpm', 'rpm', 'int'],
  ['team-tpm', 'tpm', 'int'],
  ['team-concurrent', 'max_concurrent', 'int'],
  ['team-daily', 'daily_tokens', 'int'],
  ['team-monthly', 'monthly_tokens', 'int'],
  ['team-models', 'models', 'list'],
  ['team-weight', 'weight', 'number'],
  ['team-priority', 'priority', 'int'],
];

/** The form's fields as an API body; on edit, cleared fields are sent as null. */
function readFields(fields, editing) {
  const body = {};
  for (const [id, name, kind] of fields) {
    const raw = $(id).value.trim();
    if (!raw) {
      if (editing) body[name] = null;
      continue;
    }
    if (kind === 'int' || kind === 'number') body[name] = Number(raw);
    else if (kind === 'list') body[name] = raw.split(',').map((s) => s.trim()).filter(Boolean);
    else if (kind === 'time') body[name] = new Date(raw).toISOString();
    else body[name] = raw;
  }
  return body;
}

function writeFields(fields, item) {
  for (const [id, name, kind] of fields) {
    const value = item ? item[name] : null;
    if (value === null || value === undefined) $(id).value = '';
    else if (kind === 'list') $(id).value = value.join(', ');
    else if (kind === 'time') $(id).value = String(value).slice(0, 16);
    else $(id).value = String(value);
  }
}

function limit(value) {
  return value === null || value === undefined ? '–' : number(value);
}

export class Keys {
  constructor() {
    this.canWrite = false;
    this.after = null;
    this.keys = [];
    this.editingKey = null;
    this.editingTeam = null;
    $('key-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.saveKey();
    });
    $('team-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.saveTeam();
    });
    $('key-cancel').addEventListener('click', () => this.editKey(null));
    $('team-cancel').addEventListener('click', () => this.editTeam(null));
    $('keys-more').addEventListener('click', () => this.loadKeys(true));
    $('keys-revoked').addEventListener('change', () => this.loadKeys());
    let timer = null;
    $('keys-search').addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(() => this.loadKeys(), 250);
    });
  }

  setRole(role) {
    this.canWrite = role === 'admin';
    $('keys-readonly').hidden = this.canWrite;
    for (const form of document.querySelectorAll('#page-keys [data-write]')) form.hidden = !this.canWrite;
  }

  async load() {
    $('keys-error').textContent = '';
    await Promise.all([this.loadKeys(), this.loadTeams()]);
  }

  /** Show one more problem under the page (keys and teams load side by side). */
  problem(message) {
    const node = $('keys-error');
    node.textContent = node.textContent ? `${node.textContent} ${message}` : message;
  }

  async loadKeys(more = false) {
    try {
      const answer = await api(`/admin/keys${query({
        limit: 50,
        after: more ? this.after : null,
        q: $('keys-search').value.trim(),
        include_revoked: $('keys-revoked').checked ? 'true' : null,
      })}`);
      this.keys = more ? [...this.keys, ...answer.data] : answer.data;
      this.after = answer.next_after;
      $('keys-more').hidden = !answer.has_more;
      this.drawKeys();
    } catch (error) {
      this.problem(`Keys: ${error.message}`);
    }
  }

  drawKeys() {
    const headings = ['Name', 'Team', 'Account', 'Models', 'RPM', 'TPM', 'Concurrent', 'Daily', 'Monthly', 'Expires', 'Source', 'Status'];
    if (this.canWrite) headings.push('Actions');
    const rows = this.keys.map((key) => {
      const status = key.revoked_at ? 'revoked' : key.disabled ? 'disabled' : 'active';
      const cells = [
        key.name, key.team || '–', key.account || '–', key.models ? key.models.join(', ') : 'all',
        limit(key.rpm), limit(key.tpm), limit(key.max_concurrent), limit(key.daily_tokens),
        limit(key.monthly_tokens), key.expires_at || '–', key.source || '–', status,
      ];
      if (this.canWrite) {
        const buttons = el('div', { class: 'buttons' });
        const actions = el('td', { class: 'actions' }, buttons);
        if (key.source !== 'config' && !key.revoked_at) {
          buttons.append(
            el('button', { type: 'button', class: 'quiet', 'aria-label': `Edit ${key.name}`, onclick: () => this.editKey(key) }, 'Edit'),
            el('button', { type: 'button', class: 'quiet', 'aria-label': `Rotate ${key.name}`, onclick: () => this.rotate(key) }, 'Rotate'),
            el('button', { type: 'button', class: 'danger', 'aria-label': `Revoke ${key.name}`, onclick: () => this.revoke(key) }, 'Revoke'),
          );
        }
        cells.push(actions);
      }
      return cells;
    });
    table($('keys-table'), headings, rows);
  }

  editKey(key) {
    this.editingKey = key ? key.name : null;
    writeFields(KEY_FIELDS, key);
    $('key-name').value = key ? key.name : '';
    $('key-name').readOnly = Boolean(key);
    $('key-form-title').textContent = key ? `Edit key ${key.name}` : 'New key';
    $('key-submit').textContent = key ? 'Save key' : 'Create key';
    $('key-cancel').hidden = !key;
    $('key-secret-box').hidden = true;
    if (key) $('key-rpm').focus();
  }

  showSecret(secret) {
    $('key-secret').textContent = secret;
    $('key-secret-box').hidden = false;
  }

  async saveKey() {
    $('key-error').textContent = '';
    try {
      const body = readFields(KEY_FIELDS, Boolean(this.editingKey));
      if (this.editingKey) {
        await api(`/admin/keys/${encodeURIComponent(this.editingKey)}`, { method: 'PATCH', body });
        this.editKey(null);
      } else {
        body.name = $('key-name').value.trim();
        const answer = await api('/admin/keys', { method: 'POST', body });
        this.editKey(null);
        this.showSecret(answer.secret);
      }
      await this.loadKeys();
    } catch (error) {
      $('key-error').textContent = error.message;
    }
  }

  async rotate(key) {
    const grace = window.prompt(`Rotate ${key.name}: seconds the old secret stays valid`, '0');
    if (grace === null) return;
    try {
      const answer = await api(`/admin/keys/${encodeURIComponent(key.name)}/rotate`, {
        method: 'POST',
        body: { grace_seconds: Math.max(0, Math.floor(Number(grace) || 0)) },
      });
      this.editKey(null);
      this.showSecret(answer.secret);
    } catch (error) {
      $('keys-error').textContent = error.message;
    }
  }

  async revoke(key) {
    if (!window.confirm(`Revoke ${key.name}? Requests with it are refused from now on.`)) return;
    try {
      await api(`/admin/keys/${encodeURIComponent(key.name)}`, { method: 'DELETE' });
      await this.loadKeys();
    } catch (error) {
      $('keys-error').textContent = error.message;
    }
  }

  async loadTeams() {
    try {
      const answer = await api('/admin/teams');
      const headings = ['Team', 'RPM', 'TPM', 'Concurrent', 'Daily', 'Monthly', 'Models', 'Weight', 'Priority'];
      if (this.canWrite) headings.push('Actions');
      table($('teams-table'), headings, answer.data.map((team) => {
        const cells = [
          team.name, limit(team.rpm), limit(team.tpm), limit(team.max_concurrent), limit(team.daily_tokens),
          limit(team.monthly_tokens), team.models ? team.models.join(', ') : 'all', team.weight ?? '–', team.priority ?? '–',
        ];
        if (this.canWrite) {
          cells.push(el('td', { class: 'actions' }, el('div', { class: 'buttons' },
            el('button', { type: 'button', class: 'quiet', 'aria-label': `Edit team ${team.name}`, onclick: () => this.editTeam(team) }, 'Edit'),
            el('button', { type: 'button', class: 'danger', 'aria-label': `Delete team ${team.name}`, onclick: () => this.deleteTeam(team) }, 'Delete'))));
        }
        return cells;
      }));
    } catch (error) {
      this.problem(`Teams: ${error.message}`);
    }
  }

  editTeam(team) {
    this.editingTeam = team ? team.name : null;
    writeFields(TEAM_FIELDS, team);
    $('team-name').value = team ? team.name : '';
    $('team-name').readOnly = Boolean(team);
    $('team-form-title').textContent = team ? `Edit team ${team.name}` : 'New team';
    $('team-submit').textContent = team ? 'Save team' : 'Create team';
    $('team-cancel').hidden = !team;
  }

  async saveTeam() {
    $('team-error').textContent = '';
    try {
      const body = readFields(TEAM_FIELDS, Boolean(this.editingTeam));
      if (this.editingTeam) {
        await api(`/admin/teams/${encodeURIComponent(this.editingTeam)}`, { method: 'PATCH', body });
      } else {
        body.name = $('team-name').value.trim();
        await api('/admin/teams', { method: 'POST', body });
      }
      this.editTeam(null);
      await this.loadTeams();
    } catch (error) {
      $('team-error').textContent = error.message;
    }
  }

  async deleteTeam(team) {
    if (!window.confirm(`Delete team ${team.name}?`)) return;
    try {
      await api(`/admin/teams/${encodeURIComponent(team.name)}`, { method: 'DELETE' });
      await this.loadTeams();
    } catch (error) {
      $('keys-error').textContent = error.message;
    }
  }
}
