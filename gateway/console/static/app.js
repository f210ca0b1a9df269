// The console's entry: sign-in, which pages a key may see, and hash navigation between them.

import { $ } from './dom.js';
import { api, session } from './api.js';
import { Playground } from './playground.js';
import { Usage } from './usage.js';
import { Keys } from './keys.js';
import { Live } from './live.js';
import { Batches } from './batches.js';

const PAGES = ['signin', 'playground', 'usage', 'keys', 'live', 'batches'];

class Console {
  constructor() {
    this.user = false;
    this.admin = null; // {name, role} for an admin key
    this.playground = new Playground();
    this.usage = new Usage();
    this.keys = new Keys();
    this.live = new Live();
    this.batches = new Batches();
    $('signin-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.signIn($('apikey').value.trim());
    });
    $('signout').addEventListener('click', () => this.signOut());
    window.addEventListener('hashchange', () => this.route());
  }

  /** Which doors this key opens: the API (a gateway key) and/or the admin API. One answer
   *  that is 200 for any key (``/console/session``), so a sign-in logs no 401 or 404 in the
   *  browser's console; then the models, only for a gateway key. */
  async identify() {
    const who = await api('/console/session');
    const models = who.user ? (await api('/v1/models')).data : null;
    return { models, admin: who.admin };
  }

  async signIn(key) {
    const problem = $('signin-error');
    problem.textContent = '';
    if (!key) {
      problem.textContent = 'Enter a key.';
      return;
    }
    session.set(key);
    let who;
    try {
      who = await this.identify();
    } catch (error) {
      session.clear();
      problem.textContent = `The gateway could not be reached: ${error.message}`;
      return;
    }
    if (!who.models && !who.admin) {
      session.clear();
      problem.textContent = 'This key is not accepted by the gateway.';
      return;
    }
    $('apikey').value = '';
    this.enter(who);
  }

  enter({ models, admin }) {
    this.user = Boolean(models);
    this.admin = admin;
    if (models) this.playground.setModels(models);
    this.usage.admin = Boolean(admin) && !models;
    this.batches.admin = Boolean(admin) && !models;
    this.batches.role = admin ? admin.role : null;
    this.keys.setRole(admin ? admin.role : null);
    for (const node of document.querySelectorAll('[data-for]')) {
      node.hidden = node.dataset.for === 'admin' ? !admin : !this.user;
    }
    $('nav').hidden = false;
    $('who').hidden = false;
    $('whoami').textContent = admin ? `${admin.name} (${admin.role})` : 'signed in';
    const wanted = window.location.hash.slice(1);
    if (!this.allowed(wanted)) window.location.hash = this.user ? '#playground' : '#usage';
    this.route();
  }

  allowed(page) {
    if (page === 'playground') return this.user;
    if (page === 'usage' || page === 'batches') return this.user || Boolean(this.admin);
    if (page === 'keys' || page === 'live') return Boolean(this.admin);
    return false;
  }

  signOut() {
    this.playground.clear();
    this.live.leave();
    session.clear();
    this.user = false;
    this.admin = null;
    $('nav').hidden = true;
    $('who').hidden = true;
    window.location.hash = '';
    this.show('signin');
  }

  show(page) {
    for (const name of PAGES) $(`page-${name}`).hidden = name !== page;
    for (const link of document.querySelectorAll('#nav a')) {
      if (link.dataset.page === page) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    document.title = `${page === 'signin' ? 'Sign in' : page.charAt(0).toUpperCase() + page.slice(1)} · Gateway console`;
  }

  route() {
    if (!session.key || (!this.user && !this.admin)) {
      this.show('signin');
      return;
    }
    const page = window.location.hash.slice(1);
    if (!this.allowed(page)) return;
    this.show(page);
    if (page === 'live') this.live.start();
    else this.live.leave();
    if (page === 'usage') this.usage.load();
    if (page === 'keys') this.keys.load();
    if (page === 'batches') this.batches.load();
  }

  async restore() {
    if (!session.key) {
      this.show('signin');
      return;
    }
    try {
      const who = await this.identify();
      if (who.models || who.admin) {
        this.enter(who);
        return;
      }
    } catch {
      // fall through to the sign-in page
    }
    session.clear();
    this.show('signin');
  }
}

new Console().restore();
