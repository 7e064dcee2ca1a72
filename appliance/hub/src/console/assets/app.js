// Gatehouse web console: a single page in plain JavaScript, served by the hub.
//
// - It talks only to the JSON API under /api/v1; the API validates and checks roles, and
//   its {"error": "..."} text is what the page shows (#flash).
// - The session is the API's HttpOnly cookie; the CSRF value from login / GET
//   /api/v1/auth/me is kept in memory only and sent as x-csrf-token on every change.
// - The DOM is built with createElement and text nodes (h() below), never from HTML
//   strings. The one piece of markup parsed is the VPN peer's QR code, parsed as SVG and
//   checked (svgFromText).
// - Hash routes (#/people, #/events/<id>, ...); the UI contract (selectors, form and field
//   names) is in .design/issue5.md.
'use strict';

(() => {
  // ---- state ---------------------------------------------------------------------------

  const S = {
    csrf: null, // the session's CSRF value (memory only)
    me: null, // {id, name, role} once logged in
    may: new Set(), // the role's actions (GET /api/v1/auth/me "may")
    enrolNeeded: false,
    wanted: null, // the route to return to after login
    keepFlash: false, // the next render keeps the message shown
    renderSeq: 0, // the latest render; older ones drop their results
    afterRender: null, // a node to show at the top of the next render (one-time secrets)
    feed: null, // the live feed's EventSource
    lastEventId: null, // the last live message seen (resume)
    feedRetry: null,
    audio: null,
    eventFilter: { q: '', severity: '', since: '', kind: '', acked: '' },
    logFilter: null,
  };

  // Pages, their nav labels, and the action that lets a role see them.
  const PAGES = [
    ['dashboard', 'Dashboard', 'read_status'],
    ['events', 'Events', 'read_events'],
    ['people', 'People', 'read_people'],
    ['cards', 'Cards', 'read_cards'],
    ['levels', 'Levels', 'read_levels'],
    ['gates', 'Gates', 'read_gates'],
    ['sensors', 'Sensors', 'read_sensors'],
    ['log', 'Access log', 'read_log'],
    ['vpn', 'VPN', 'read_peers'],
    ['alerts', 'Alerts', 'read_alerts'],
    ['admins', 'Admins', 'read_admins'],
  ];

  const SOUND_KEY = 'gatehouse.sound';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const LOG_PAGE = 1000;
  const LOG_MAX_PAGES = 5;

  const $ = (sel, root = document) => root.querySelector(sel);
  const may = (action) => S.may.has(action);

  // ---- DOM helper ------------------------------------------------------------------------

  // Properties set as properties (not attributes); `value` is set after the children so a
  // <select> can pick one of its options.
  const PROPS = new Set(['checked', 'disabled', 'selected', 'multiple', 'required', 'hidden', 'open', 'readOnly']);

  /**
   * h('tag', {attr: value, onclick: fn, class: 'x', 'data-id': 1}, child, [children], 'text')
   * Text children become text nodes; null, undefined and false are skipped.
   */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    let value;
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else if (k === 'value') value = v;
      else if (PROPS.has(k)) el[k] = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    add(el, children);
    if (value !== undefined) el.value = value;
    return el;
  }

  function add(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  // ---- API -------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
      this.handled = false; // already shown (a 401 sends the page to the login)
    }
  }

  /**
   * Calls the JSON API. Non-GET requests carry the CSRF value. Rejects with an ApiError
   * holding the API's error text; a 401 (unless opts.session === false, for login and
   * enrolment) ends the session and shows the login page with that text.
   */
  async function api(method, path, body, opts = {}) {
    const headers = { Accept: 'application/json' };
    const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
    if (body !== undefined && body !== null) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    if (method !== 'GET' && S.csrf) headers['x-csrf-token'] = S.csrf;
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, `the hub cannot be reached (${e.message}); check the connection and try again`);
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (!res.ok) {
      const message = data && typeof data.error === 'string'
        ? data.error
        : `the hub answered ${res.status} ${res.statusText || ''}`.trim();
      const err = new ApiError(res.status, message);
      if (res.status === 401 && opts.session !== false) {
        // Logged out meanwhile (another tab, a request still in flight): already shown.
        if (S.me) sessionEnded(`Your session ended; log in again. (${message})`);
        err.handled = true;
      }
      throw err;
    }
    return data;
  }

  /** GET that answers `fallback` when the route does not exist (yet) or is refused. */
  async function apiOptional(path, fallback) {
    try {
      return await api('GET', path);
    } catch (e) {
      if (e.status === 404 || e.status === 405 || e.status === 403) return fallback;
      throw e;
    }
  }

  /** A query string of the non-empty values. */
  function qs(params) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== null && v !== undefined && String(v).trim() !== '') p.set(k, String(v).trim());
    }
    const s = p.toString();
    return s ? `?${s}` : '';
  }

  const enc = encodeURIComponent;

  // ---- messages --------------------------------------------------------------------------

  function flash(text, kind = 'error') {
    const f = $('#flash');
    f.textContent = text;
    f.className = kind;
    f.hidden = false;
    if (kind === 'error') f.scrollIntoView({ block: 'nearest' });
  }

  function clearFlash() {
    const f = $('#flash');
    f.textContent = '';
    f.className = '';
    f.hidden = true;
  }

  function showError(e) {
    if (e && e.handled) return;
    flash(e && e.message ? e.message : String(e), 'error');
  }

  // ---- formatting ------------------------------------------------------------------------

  /** An RFC 3339 time (already in the site's offset) as "YYYY-MM-DD HH:MM:SS". */
  function fmtTime(s) {
    if (!s) return '—';
    return String(s).replace('T', ' ').replace(/(\.\d+)?(Z|[+-]\d\d:\d\d)$/, '');
  }

  /** "5 min ago" for a time, from the browser's clock. */
  function ago(s) {
    if (!s) return 'never';
    const t = Date.parse(s);
    if (Number.isNaN(t)) return fmtTime(s);
    const secs = Math.round((Date.now() - t) / 1000);
    if (secs < 0) return fmtTime(s);
    if (secs < 60) return `${secs} s ago`;
    if (secs < 3600) return `${Math.floor(secs / 60)} min ago`;
    if (secs < 86400) return `${Math.floor(secs / 3600)} h ago`;
    return `${Math.floor(secs / 86400)} d ago`;
  }

  function bytes(n) {
    if (n === null || n === undefined) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let v = Number(n);
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
  }

  function badge(text, cls) {
    return h('span', { class: `badge ${cls || ''}` }, text);
  }

  const enabledBadge = (on) => (on ? badge('enabled', 'ok') : badge('disabled', 'bad'));
  const words = (s) => String(s || '').replace(/_/g, ' ');
  const list = (s) => String(s || '').split(',').map((x) => x.trim()).filter(Boolean);

  /** Only http(s) links leave the console (snapshot and clip URLs come from NVRs). */
  function safeUrl(u) {
    return typeof u === 'string' && /^https?:\/\//i.test(u) ? u : null;
  }

  function externalLink(url, label) {
    const u = safeUrl(url);
    return u ? h('a', { href: u, target: '_blank', rel: 'noopener noreferrer' }, label) : null;
  }

  // ---- building blocks -------------------------------------------------------------------

  /**
   * A table per the contract: table[data-table=name], one tr[data-id] per item.
   * rowFn(item) -> {id, cells: [...]} where a cell is content or a <td>.
   */
  function table(name, columns, items, rowFn) {
    const tbody = h('tbody');
    for (const item of items) tbody.append(tableRow(rowFn(item)));
    if (!items.length) {
      tbody.append(h('tr', { class: 'empty-row' }, h('td', { colspan: columns.length, class: 'empty' }, 'None.')));
    }
    return h('div', { class: 'table-wrap' },
      h('table', { 'data-table': name },
        h('thead', null, h('tr', null, columns.map((c) => h('th', { scope: 'col' }, c)))),
        tbody));
  }

  function tableRow({ id, cells, cls }) {
    return h('tr', { 'data-id': id, class: cls },
      cells.map((c) => (c instanceof HTMLTableCellElement ? c : h('td', null, c))));
  }

  /** Appends rows to a table made by table() (dropping its "None." row). */
  function appendRows(wrap, items, rowFn) {
    const tbody = $('tbody', wrap);
    const empty = $('tr.empty-row', tbody);
    if (empty && items.length) empty.remove();
    for (const item of items) tbody.append(tableRow(rowFn(item)));
  }

  const actions = (...buttons) => h('td', { class: 'actions' }, buttons);

  /**
   * A button that runs `fn`, disabled while it runs; errors go to #flash. With
   * opts.confirm the user confirms first.
   */
  function button(label, fn, opts = {}) {
    const b = h('button', { type: 'button', class: opts.cls, 'data-action': opts.action, title: opts.title });
    b.textContent = label;
    b.addEventListener('click', async () => {
      if (opts.confirm && !window.confirm(opts.confirm)) return;
      b.disabled = true;
      try {
        await fn(b);
      } catch (e) {
        showError(e);
      } finally {
        b.disabled = false;
      }
    });
    return b;
  }

  function field(label, control, cls) {
    return h('label', { class: `field ${cls || ''}` }, h('span', null, label), control);
  }

  function input(name, attrs = {}) {
    return h('input', { name, type: 'text', autocomplete: 'off', ...attrs });
  }

  /** options: [[value, label], ...] or [value, ...]. */
  function select(name, options, attrs = {}) {
    return h('select', { name, ...attrs },
      options.map((o) => (Array.isArray(o) ? h('option', { value: o[0] }, o[1]) : h('option', { value: o }, o))));
  }

  /** The form's values: text trimmed, multi-selects and named checkbox groups as lists. */
  function values(form) {
    const out = {};
    for (const el of form.elements) {
      if (!el.name || el.disabled) continue;
      if (el.closest('[hidden]')) continue;
      if (el.type === 'checkbox') {
        if (el.dataset.group !== undefined) {
          out[el.name] = out[el.name] || [];
          if (el.checked) out[el.name].push(el.value);
        } else {
          out[el.name] = el.checked;
        }
      } else if (el.tagName === 'SELECT' && el.multiple) {
        out[el.name] = [...el.selectedOptions].map((o) => o.value);
      } else if (el.type === 'password') {
        out[el.name] = el.value;
      } else {
        out[el.name] = el.value.trim();
      }
    }
    return out;
  }

  /** Only the keys whose values are non-empty. */
  function compact(obj) {
    const out = {};
    for (const [k, v] of Object.entries(obj)) {
      if (v === '' || v === null || v === undefined) continue;
      if (Array.isArray(v) && !v.length) continue;
      out[k] = v;
    }
    return out;
  }

  /**
   * form[data-form=name] with a submit button. onSubmit(values, form) runs with the
   * buttons disabled; on error the message goes to #flash and the inputs stay as typed.
   */
  function form(name, title, controls, submitLabel, onSubmit, opts = {}) {
    const submit = h('button', { type: 'submit' }, submitLabel);
    // novalidate: the API is the one place that checks input, and its text is shown.
    const f = h('form', { class: opts.cls || 'card', 'data-form': name, novalidate: true },
      title ? h('h3', null, title) : null,
      opts.hint ? h('p', { class: 'hint' }, opts.hint) : null,
      controls,
      submit);
    f.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      if (f.dataset.busy) return;
      f.dataset.busy = '1';
      const buttons = [...f.querySelectorAll('button')];
      buttons.forEach((b) => { b.disabled = true; });
      try {
        await onSubmit(values(f), f);
      } catch (e) {
        showError(e);
      } finally {
        delete f.dataset.busy;
        buttons.forEach((b) => { b.disabled = false; });
      }
    });
    return f;
  }

  /** A download link for text made in the page (a Blob URL; nothing is fetched). */
  function downloadLink(text, filename, type, label) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    return h('a', { href: url, download: filename, class: 'download' }, label);
  }

  /**
   * The QR code from POST /api/v1/peers, parsed as SVG (never as HTML), accepted only if
   * its root is <svg>, stripped of anything active, and imported into the page.
   */
  function svgFromText(text) {
    const doc = new DOMParser().parseFromString(String(text || ''), 'image/svg+xml');
    const root = doc.documentElement;
    if (!root || root.localName !== 'svg' || root.namespaceURI !== SVG_NS) return null;
    if (doc.getElementsByTagName('parsererror').length) return null;
    for (const el of [...root.querySelectorAll('script, foreignObject, iframe, a, style, use, image')]) el.remove();
    for (const el of [root, ...root.querySelectorAll('*')]) {
      for (const a of [...el.attributes]) {
        if (/^on/i.test(a.name) || /href$/i.test(a.name) || a.name === 'style') el.removeAttribute(a.name);
      }
    }
    return document.importNode(root, true);
  }

  // ---- routing ---------------------------------------------------------------------------

  function parseRoute() {
    const m = /^#\/([a-z]+)(?:\/(.+))?$/.exec(location.hash);
    return m ? { name: m[1], arg: m[2] ? decodeURIComponent(m[2]) : null } : { name: '', arg: null };
  }

  function go(name) {
    const hash = `#/${name}`;
    if (location.hash === hash) render();
    else location.hash = hash;
  }

  /** Re-renders the current page, keeping the message; `top` is shown above it once. */
  function refresh(top) {
    S.keepFlash = true;
    if (top) S.afterRender = top;
    return render();
  }

  function defaultPage() {
    const first = PAGES.find(([, , action]) => may(action));
    return first ? first[0] : 'dashboard';
  }

  const PAGE_FNS = {
    dashboard: pageDashboard,
    events: pageEvents,
    people: pagePeople,
    cards: pageCards,
    levels: pageLevels,
    gates: pageGates,
    sensors: pageSensors,
    log: pageLog,
    vpn: pageVpn,
    alerts: pageAlerts,
    admins: pageAdmins,
  };

  async function render() {
    const seq = ++S.renderSeq;
    const { name, arg } = parseRoute();
    const main = $('#page');
    if (!S.me) {
      if (name !== 'login' && name !== 'enrol') {
        if (name && PAGE_FNS[name]) S.wanted = location.hash;
        go(S.enrolNeeded ? 'enrol' : 'login');
        return;
      }
    } else if (!PAGE_FNS[name]) {
      go(defaultPage());
      return;
    }
    if (S.keepFlash) S.keepFlash = false;
    else clearFlash();
    markNav(name);
    const top = S.afterRender;
    S.afterRender = null;
    main.removeAttribute('data-page');
    main.replaceChildren(h('p', { class: 'loading' }, 'Loading…'));
    let nodes;
    try {
      if (name === 'login') nodes = pageLogin();
      else if (name === 'enrol') nodes = pageEnrol();
      else nodes = await PAGE_FNS[name](arg);
    } catch (e) {
      if (seq !== S.renderSeq || e.handled) return;
      if (e.status === 403) {
        nodes = h('section', { id: 'page-denied', class: 'panel' },
          h('h1', null, 'Not allowed'), h('p', null, e.message));
      } else {
        showError(e);
        nodes = h('section', { class: 'panel' },
          h('p', null, 'This page could not be loaded.'),
          button('Try again', () => refresh()));
      }
    }
    if (seq !== S.renderSeq) return; // the user went elsewhere meanwhile
    // A one-time panel (new credentials) goes right under the page's title.
    const parts = [nodes].flat(Infinity).filter(Boolean);
    if (top) parts.splice(parts[0] && parts[0].tagName === 'H1' ? 1 : 0, 0, top);
    main.replaceChildren(...parts);
    main.dataset.page = name;
    document.title = `${(PAGES.find((p) => p[0] === name) || [null, name === 'enrol' ? 'Set up' : 'Log in'])[1]} · Gatehouse`;
  }

  // ---- session ---------------------------------------------------------------------------

  async function loadMe() {
    const r = await api('GET', '/api/v1/auth/me', null, { session: false });
    S.me = r.admin;
    S.csrf = r.csrf;
    S.may = new Set(r.may || []);
    showSession();
  }

  function showSession() {
    $('#whoami').textContent = `${S.me.name} (${S.me.role})`;
    $('#session').hidden = false;
    $('#nav-toggle').hidden = false;
    const nav = $('#nav');
    nav.replaceChildren(...PAGES.filter(([, , action]) => may(action))
      .map(([name, label]) => h('a', { href: `#/${name}`, 'data-nav': name }, label)));
    startFeed();
  }

  function markNav(name) {
    for (const a of document.querySelectorAll('#nav a')) {
      a.classList.toggle('current', a.dataset.nav === name);
      if (a.dataset.nav === name) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    $('#nav').classList.remove('open');
    $('#nav-toggle').setAttribute('aria-expanded', 'false');
  }

  function endSession() {
    S.me = null;
    S.csrf = null;
    S.may = new Set();
    stopFeed();
    $('#popups').replaceChildren();
    $('#session').hidden = true;
    $('#nav-toggle').hidden = true;
    $('#nav').replaceChildren();
    $('#whoami').textContent = '';
  }

  /** A 401: back to the login with the API's message. */
  function sessionEnded(message) {
    if (!S.me) return;
    const here = parseRoute();
    if (here.name && PAGE_FNS[here.name]) S.wanted = location.hash;
    endSession();
    flash(message, 'error');
    S.keepFlash = true;
    go('login');
  }

  /** After login or enrolment: the session's details, then where the user wanted to go. */
  async function loggedIn() {
    await loadMe();
    const target = S.wanted;
    S.wanted = null;
    if (target && target !== location.hash) location.hash = target;
    else go(defaultPage());
  }

  async function logout() {
    try {
      await api('POST', '/api/v1/auth/logout', null, { session: false });
    } catch (e) {
      if (e.status !== 401) {
        showError(e);
        return;
      }
    }
    endSession();
    flash('Logged out.', 'ok');
    S.keepFlash = true;
    go('login');
  }

  // ---- login and enrolment ---------------------------------------------------------------

  function pageLogin() {
    return h('section', { class: 'auth-box' },
      h('h1', null, 'Log in'),
      form('login', null, [
        field('Name', input('name', { autocomplete: 'username', required: true, autofocus: true })),
        field('Password', input('password', { type: 'password', autocomplete: 'current-password', required: true })),
      ], 'Log in', async (v) => {
        const r = await api('POST', '/api/v1/auth/login', { name: v.name, password: v.password }, { session: false });
        S.csrf = r.csrf;
        await loggedIn();
      }),
      S.enrolNeeded ? h('p', null, 'No admin account exists yet: ', h('a', { href: '#/enrol' }, 'set up the first one'), '.') : null);
  }

  function pageEnrol() {
    return h('section', { class: 'auth-box' },
      h('h1', null, 'Set up Gatehouse'),
      h('p', null, 'Create the first admin account with the one-time token the box printed ',
        '(or make a new one on the box with ', h('code', null, 'gatehouse admin enrol-token'), ').'),
      form('enrol', null, [
        field('Enrolment token', input('token', { required: true, placeholder: 'XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX', spellcheck: 'false' })),
        field('Your admin name', input('name', { autocomplete: 'username', required: true })),
        field('Password', input('password', { type: 'password', autocomplete: 'new-password', required: true })),
      ], 'Create admin and log in', async (v) => {
        const r = await api('POST', '/api/v1/auth/enrol', { token: v.token, name: v.name, password: v.password }, { session: false });
        S.csrf = r.csrf;
        S.enrolNeeded = false;
        flash(`Welcome, ${r.admin ? r.admin.name : v.name}: your admin account is ready.`, 'ok');
        S.keepFlash = true;
        await loggedIn();
      }),
      h('p', null, 'Already set up? ', h('a', { href: '#/login' }, 'Log in'), '.'));
  }

  // ---- dashboard -------------------------------------------------------------------------

  async function pageDashboard() {
    const [st, recent] = await Promise.all([
      api('GET', '/api/v1/status'),
      may('read_events') ? api('GET', `/api/v1/events${qs({ acked: 'false', limit: 10 })}`) : null,
    ]);
    const gates = st.gates || [];
    const online = gates.filter((g) => g.online).length;
    const peers = st.peers || { available: false, items: [] };
    const services = st.services || [];
    const ev = st.events || {};
    const sensors = st.sensors || {};
    const servicesOk = services.every((s) => s.ok);

    const summary = h('div', { class: 'grid' },
      h('div', { class: 'panel', id: 'summary-gates' }, h('h3', null, 'Gates online'),
        h('div', { class: 'stat' }, `${online} / ${gates.length}`)),
      h('div', { class: 'panel', id: 'summary-events' }, h('h3', null, 'Unacknowledged events'),
        h('div', { class: 'stat' }, String(ev.unacknowledged ?? '—')),
        h('div', { class: 'muted' }, `${ev.pending_deliveries ?? 0} alert deliveries pending`),
        may('read_events') ? h('a', { href: '#/events' }, 'Open events') : null),
      h('div', { class: 'panel', id: 'summary-services' }, h('h3', null, 'Services'),
        h('div', { class: 'stat' }, servicesOk ? badge('all ok', 'ok') : badge('attention', 'bad'))),
      h('div', { class: 'panel', id: 'summary-sensors' }, h('h3', null, 'Sensors'),
        sensors.available
          ? h('div', { class: 'stat' }, `${(sensors.enabled ?? 0) - (sensors.missing ?? 0)} / ${sensors.enabled ?? 0}`)
          : h('div', null, badge('not available', '')),
        sensors.available && sensors.missing ? h('div', null, badge(`${sensors.missing} missing`, 'bad')) : null,
        sensors.available && sensors.low_battery ? h('div', null, badge(`${sensors.low_battery} low battery`, 'warn')) : null,
        sensors.detail ? h('div', { class: 'muted' }, sensors.detail) : null,
        sensors.available && may('read_sensors') ? h('a', { href: '#/sensors' }, 'Open sensors') : null));

    const out = [h('h1', null, 'Dashboard'), summary];

    out.push(h('h2', null, 'Gates'), table('status-gates', ['Gate', 'Zone', 'State', 'Last seen'], gates, (g) => ({
      id: g.id,
      cells: [g.name, g.zone ?? '—', gateState(g), h('span', { title: fmtTime(g.last_seen) }, ago(g.last_seen))],
    })));

    out.push(h('h2', null, 'VPN peers'));
    if (peers.available) {
      out.push(table('status-peers', ['Peer', 'Role', 'State', 'Last handshake'], peers.items || [], (p) => ({
        id: p.name,
        cells: [p.name, p.role, peerState(p.state), ago(p.last_handshake)],
      })));
    } else {
      out.push(h('p', { class: 'muted' }, `Peers are not available${peers.error ? `: ${peers.error}` : '.'}`));
    }

    out.push(h('h2', null, 'Services'), table('services', ['Service', 'State', 'Detail'], services, (s) => ({
      id: s.name,
      cells: [s.name, s.ok ? badge('ok', 'ok') : badge('failing', 'bad'), h('td', { class: 'wrap' }, s.detail || '')],
    })));

    if (recent) {
      out.push(h('h2', null, 'Recent unacknowledged events'),
        table('recent-events', ['Time', 'Severity', 'Kind', 'Where', 'Message', ''], recent.events || [], eventRow));
    }
    return out;
  }

  function gateState(g) {
    if (g.enabled === false) return badge('disabled', '');
    return g.online ? badge('online', 'ok') : badge('offline', 'bad');
  }

  function peerState(state) {
    const cls = { active: 'ok', disabled: '', expired: 'warn' }[state];
    return badge(state || '—', cls === undefined ? '' : cls);
  }

  // ---- events ----------------------------------------------------------------------------

  const SEVERITIES = [['', 'any'], ['info', 'info and above'], ['warning', 'warning and above'], ['critical', 'critical']];

  function place(e) {
    return [e.source, e.camera, e.zone, e.device].filter(Boolean).join(' · ');
  }

  /** A row of an events table, with acknowledge where the role may. */
  function eventRow(e) {
    const ackCell = e.ack
      ? h('span', { title: `by ${e.ack.by} at ${fmtTime(e.ack.at)}` }, badge('acknowledged', 'ok'))
      : may('ack_events') ? button('Acknowledge', () => ackEvent(e.id), { action: 'ack' }) : badge('open', 'warn');
    return {
      id: e.id,
      cls: e.ack ? 'acked' : 'open',
      cells: [
        fmtTime(e.time),
        badge(e.severity, e.severity),
        h('a', { href: `#/events/${enc(e.id)}` }, e.kind),
        place(e),
        h('td', { class: 'wrap' }, e.message || ''),
        actions(ackCell),
      ],
    };
  }

  async function ackEvent(id) {
    await api('POST', `/api/v1/events/${enc(id)}/ack`, {});
    removePopup(id);
    flash('Event acknowledged.', 'ok');
    await refresh();
  }

  function eventFilterQuery(extra = {}) {
    const f = S.eventFilter;
    return qs({ q: f.q, severity: f.severity, since: f.since, kind: f.kind, acked: f.acked, ...extra });
  }

  async function pageEvents(id) {
    if (id) return pageEventDetail(id);
    const data = await api('GET', `/api/v1/events${eventFilterQuery({ limit: 100 })}`);
    const f = S.eventFilter;
    const filter = form('event-filter', null, [
      field('Search', input('q', { value: f.q, type: 'search', placeholder: 'text in message, camera, zone…' }), 'wide'),
      field('Severity', select('severity', SEVERITIES, { value: f.severity })),
      field('Since', input('since', { value: f.since, placeholder: 'YYYY-MM-DD or RFC 3339' })),
      field('Kind', input('kind', { value: f.kind, placeholder: 'e.g. intrusion' })),
      field('Acknowledged', select('acked', [['', 'any'], ['false', 'open only'], ['true', 'acknowledged only']], { value: f.acked })),
    ], 'Filter', async (v) => {
      S.eventFilter = { q: v.q, severity: v.severity, since: v.since, kind: v.kind, acked: v.acked };
      await refresh();
    });
    const events = data.events || [];
    const wrap = table('events', ['Time', 'Severity', 'Kind', 'Where', 'Message', ''], events, eventRow);
    let before = data.next_before;
    const more = data.more ? button('Older events', async (b) => {
      const page = await api('GET', `/api/v1/events${eventFilterQuery({ limit: 100, before })}`);
      appendRows(wrap, page.events || [], eventRow);
      before = page.next_before;
      if (!page.more) b.remove();
    }) : null;
    return [
      h('h1', null, 'Events'),
      filter,
      h('div', { class: 'toolbar' },
        h('span', { class: 'muted' }, `${events.length}${data.more ? '+' : ''} events`),
        h('a', { href: `/api/v1/events.csv${eventFilterQuery()}`, download: 'events.csv', id: 'events-csv' }, 'Export CSV')),
      wrap,
      h('div', { class: 'toolbar' }, more),
    ];
  }

  async function pageEventDetail(id) {
    const [e, log] = await Promise.all([
      api('GET', `/api/v1/events/${enc(id)}`),
      api('GET', `/api/v1/events/${enc(id)}/deliveries`).catch(() => null),
    ]);
    const kv = (label, value) => (value === null || value === undefined || value === '' ? null : [h('dt', null, label), h('dd', null, value)]);
    const buttons = [];
    if (may('ack_events') && !e.ack) {
      buttons.push(button('Acknowledge', () => ackEvent(e.id), { action: 'ack', cls: 'primary' }));
    }
    if (may('ack_events') && !e.ended_at) {
      buttons.push(button('Resolve', async () => {
        await api('POST', `/api/v1/events/${enc(e.id)}/resolve`, {});
        removePopup(e.id);
        flash('Event resolved.', 'ok');
        await refresh();
      }, { action: 'resolve' }));
    }
    const out = [
      h('p', null, h('a', { href: '#/events' }, '← All events')),
      h('h1', null, `${e.kind} `, badge(e.severity, e.severity)),
      h('section', { class: 'panel', id: 'event-detail', 'data-id': e.id },
        h('dl', { class: 'kv' },
          kv('Event id', h('code', null, e.id)),
          kv('Time', fmtTime(e.time)),
          kv('Received', fmtTime(e.received_at)),
          kv('Source', `${e.source} (${e.source_kind})`),
          kv('Camera', e.camera),
          kv('Zone', e.zone),
          kv('Device', e.device),
          kv('Message', e.message),
          kv('Lifecycle', e.lifecycle),
          kv('Ended', e.ended_at ? fmtTime(e.ended_at) : null),
          kv('Grouped into', e.grouped_into ? h('a', { href: `#/events/${enc(e.grouped_into)}` }, e.grouped_into) : null),
          kv('Snapshot', externalLink(e.snapshot_url, 'open snapshot')),
          kv('Clip', externalLink(e.clip_url, 'open clip')),
          kv('Silenced by', e.silenced_by ? `silence ${e.silenced_by}` : null),
          kv('Acknowledged', e.ack ? `by ${e.ack.by} at ${fmtTime(e.ack.at)}${e.ack.comment ? ` (${e.ack.comment})` : ''}` : 'no')),
        h('div', { class: 'toolbar' }, buttons)),
      h('h2', null, 'Deliveries'),
      table('deliveries', ['Receiver', 'Notification', 'Status', 'Attempts', 'Created', 'Delivered', 'Last error'], e.deliveries || [], (d) => ({
        id: d.id,
        cells: [d.receiver_name || d.receiver, d.repeat_n ? `${d.kind} ${d.repeat_n}` : d.kind,
          badge(d.status, { delivered: 'ok', pending: 'warn', dead: 'bad' }[d.status] || ''),
          String(d.attempts), fmtTime(d.created_at), fmtTime(d.delivered_at), h('td', { class: 'wrap' }, d.last_error || '')],
      })),
    ];
    if (log) {
      out.push(h('h2', null, 'Delivery attempts'),
        table('attempts', ['Started', 'Receiver', 'Attempt', 'Outcome', 'HTTP', 'Latency', 'Error'], log.attempts || [], (a) => ({
          id: a.id,
          cells: [fmtTime(a.started_at), a.receiver_name || a.receiver, String(a.attempt),
            badge(a.outcome, { delivered: 'ok', failed: 'warn', dead: 'bad' }[a.outcome] || ''),
            a.http_status ?? '—', `${a.latency_ms} ms`, h('td', { class: 'wrap' }, a.error || '')],
        })));
    }
    return out;
  }

  // ---- people ----------------------------------------------------------------------------

  async function pagePeople() {
    const [people, levels] = await Promise.all([
      api('GET', '/api/v1/people'),
      may('read_levels') ? api('GET', '/api/v1/levels') : [],
    ]);
    const levelName = new Map(levels.map((l) => [l.id, l.name]));
    const canChange = may('change_people');
    const canGrant = may('change_levels') && levels.length > 0;
    const out = [h('h1', null, 'People')];
    if (canChange) {
      out.push(form('person-add', 'Add a person', [
        field('Name', input('name', { required: true })),
        field('Valid from (optional)', input('valid_from', { placeholder: 'YYYY-MM-DD' })),
        field('Valid until (optional)', input('valid_until', { placeholder: 'YYYY-MM-DD' })),
      ], 'Add person', async (v) => {
        const p = await api('POST', '/api/v1/people', compact(v));
        flash(`${p.name} added.`, 'ok');
        await refresh();
      }));
    }
    out.push(table('people', ['Name', 'State', 'Valid from', 'Valid until', 'Levels', ''], people, (p) => {
      const buttons = [];
      if (canChange) {
        buttons.push(button(p.enabled ? 'Disable' : 'Enable', async () => {
          await api('PATCH', `/api/v1/people/${p.id}`, { enabled: !p.enabled });
          flash(`${p.name} ${p.enabled ? 'disabled' : 'enabled'}.`, 'ok');
          await refresh();
        }, { action: p.enabled ? 'disable' : 'enable' }));
      }
      if (canGrant) {
        const pick = select('level', [['', 'level…'], ...levels.filter((l) => !(p.levels || []).includes(l.id)).map((l) => [l.id, l.name])],
          { 'aria-label': `Level to grant to ${p.name}` });
        buttons.push(pick, button('Grant', async () => {
          if (!pick.value) throw new Error('choose a level to grant first');
          await api('POST', `/api/v1/levels/${enc(pick.value)}/grant`, { person: p.id });
          flash(`${p.name} granted ${levelName.get(Number(pick.value)) || 'the level'}.`, 'ok');
          await refresh();
        }, { action: 'grant' }));
      }
      if (canChange) {
        buttons.push(button('Remove', async () => {
          await api('DELETE', `/api/v1/people/${p.id}`);
          flash(`${p.name} removed, with their cards and grants.`, 'ok');
          await refresh();
        }, { action: 'remove', cls: 'danger', confirm: `Remove ${p.name} with their cards and grants? The access log keeps their entries.` }));
      }
      return {
        id: p.id,
        cells: [p.name, enabledBadge(p.enabled), fmtTime(p.valid_from), fmtTime(p.valid_until),
          (p.levels || []).map((id) => levelName.get(id) || `#${id}`).join(', ') || '—', actions(buttons)],
      };
    }));
    return out;
  }

  // ---- cards -----------------------------------------------------------------------------

  async function pageCards() {
    const [cards, people, gates] = await Promise.all([
      api('GET', '/api/v1/cards'),
      apiOptional('/api/v1/people', []),
      apiOptional('/api/v1/gates', []),
    ]);
    const canChange = may('change_cards');
    const personOptions = () => [['', 'choose…'], ...people.map((p) => [p.id, p.name])];
    const out = [h('h1', null, 'Cards')];
    if (canChange) {
      out.push(form('card-add', 'Add a card by its number', [
        field('Person', select('person', personOptions(), { required: true })),
        field('Card id', input('card_id', { required: true, placeholder: '0004123456 or 04:a1:b2:c3', spellcheck: 'false' })),
        field('Label (optional)', input('label')),
        field('Valid until (optional)', input('valid_until', { placeholder: 'YYYY-MM-DD' })),
      ], 'Add card', async (v, f) => {
        // The contract names the field card_id; the API calls it acc_id.
        const body = compact({ acc_id: v.card_id, person: v.person ? Number(v.person) : null, label: v.label, valid_until: v.valid_until });
        const c = await api('POST', '/api/v1/cards', body);
        f.elements.namedItem('card_id').value = ''; // the raw id is not kept on the page
        flash(`Card #${c.id} added for ${c.person_name || 'the person'}.`, 'ok');
        await refresh();
      }, { hint: 'The number is hashed on the box and never stored or shown again.' }));

      const waiting = h('p', { class: 'waiting', id: 'learn-waiting', role: 'status', hidden: true });
      out.push(form('card-learn', 'Learn a card at a gate', [
        field('Gate', select('gate', [['', 'choose…'], ...gates.map((g) => [g.id, g.name])], { required: true })),
        field('Person', select('person', personOptions(), { required: true })),
        field('Label (optional)', input('label')),
        waiting,
      ], 'Start learning', async (v) => {
        const gate = gates.find((g) => String(g.id) === v.gate);
        if (gate) {
          waiting.textContent = `Present the card at gate ${gate.name} now…`;
          waiting.hidden = false;
        }
        try {
          const body = compact({ gate: v.gate ? Number(v.gate) : null, person: v.person ? Number(v.person) : null, label: v.label });
          const c = await api('POST', '/api/v1/cards/learn', body);
          flash(`Card #${c.id} learned for ${c.person_name || 'the person'}.`, 'ok');
          waiting.hidden = true;
          await refresh();
        } finally {
          waiting.hidden = true;
        }
      }, { hint: 'Waits up to a minute for the first unknown card presented at the gate and enrols it.' }));
    }
    out.push(table('cards', ['#', 'Person', 'Label', 'State', 'Master', 'Valid until', ''], cards, (c) => {
      const buttons = canChange ? [
        button(c.enabled ? 'Disable' : 'Enable', async () => {
          await api('PATCH', `/api/v1/cards/${c.id}`, { enabled: !c.enabled });
          flash(`Card #${c.id} ${c.enabled ? 'disabled' : 'enabled'}.`, 'ok');
          await refresh();
        }, { action: c.enabled ? 'disable' : 'enable' }),
        button('Remove', async () => {
          await api('DELETE', `/api/v1/cards/${c.id}`);
          flash(`Card #${c.id} removed.`, 'ok');
          await refresh();
        }, { action: 'remove', cls: 'danger', confirm: `Remove card #${c.id}${c.person_name ? ` of ${c.person_name}` : ''}?` }),
      ] : [];
      return {
        id: c.id,
        cells: [String(c.id), c.person_name || `#${c.person}`, c.label || '', enabledBadge(c.enabled),
          c.master ? badge('master', 'warn') : '', fmtTime(c.valid_until), actions(buttons)],
      };
    }));
    return out;
  }

  // ---- levels and holidays ---------------------------------------------------------------

  async function pageLevels() {
    const [levels, gates, people, holidays] = await Promise.all([
      api('GET', '/api/v1/levels'),
      apiOptional('/api/v1/gates', []),
      apiOptional('/api/v1/people', []),
      apiOptional('/api/v1/holidays', null),
    ]);
    const gateName = new Map(gates.map((g) => [g.id, g.name]));
    const canChange = may('change_levels');
    const out = [h('h1', null, 'Access levels')];
    if (canChange) {
      out.push(form('level-add', 'Add a level', [
        field('Name', input('name', { required: true })),
        h('fieldset', null, h('legend', null, 'Gates'),
          gates.length ? gates.map((g) => h('label', { class: 'check' },
            h('input', { type: 'checkbox', name: 'gates', value: g.id, 'data-group': '' }), g.name))
            : h('span', { class: 'muted' }, 'Add a gate first.')),
        field('Schedule', input('schedule', { required: true, placeholder: 'mon-fri 08:00-18:00; sat 09:00-12:00 (or always)' }), 'wide'),
        field('On holidays', select('holidays', [['closed', 'closed'], ['ignore', 'as a normal day']])),
      ], 'Add level', async (v) => {
        const body = { name: v.name, gates: (v.gates || []).map(Number), schedule: v.schedule, holidays: v.holidays };
        const l = await api('POST', '/api/v1/levels', compact(body));
        flash(`Level ${l.name} added.`, 'ok');
        await refresh();
      }));
    }
    out.push(table('levels', ['Level', 'Gates', 'Schedule', 'Holidays', ''], levels, (l) => {
      const buttons = [];
      if (canChange && people.length) {
        const pick = select('person', [['', 'person…'], ...people.map((p) => [p.id, p.name])], { 'aria-label': `Person to grant ${l.name} to` });
        buttons.push(pick, button('Grant', async () => {
          if (!pick.value) throw new Error('choose a person to grant the level to');
          const r = await api('POST', `/api/v1/levels/${l.id}/grant`, { person: Number(pick.value) });
          const who = people.find((p) => String(p.id) === pick.value);
          flash(r.already_had ? `${who ? who.name : 'The person'} already had ${l.name}.` : `${l.name} granted to ${who ? who.name : 'the person'}.`, 'ok');
          await refresh();
        }, { action: 'grant' }));
      }
      return {
        id: l.id,
        cells: [l.name, (l.gates || []).map((id) => gateName.get(id) || `#${id}`).join(', '),
          h('td', { class: 'wrap' }, l.schedule), l.holidays, actions(buttons)],
      };
    }));

    out.push(h('h2', null, 'Holidays'));
    if (holidays === null) {
      out.push(h('p', { class: 'muted' }, 'Holidays cannot be listed by this hub.'));
    } else {
      if (canChange) {
        out.push(form('holiday-add', null, [
          field('Date', input('date', { required: true, placeholder: 'YYYY-MM-DD' })),
          field('Name', input('name', { required: true, placeholder: 'e.g. New Year' })),
        ], 'Add holiday', async (v) => {
          await api('POST', '/api/v1/holidays', { date: v.date, name: v.name });
          flash(`Holiday ${v.date} added.`, 'ok');
          await refresh();
        }));
      }
      const items = Array.isArray(holidays) ? holidays : holidays.holidays || [];
      out.push(table('holidays', ['Date', 'Name', ''], items, (d) => ({
        id: d.date,
        cells: [d.date, d.name, actions(canChange ? button('Remove', async () => {
          await api('DELETE', `/api/v1/holidays/${enc(d.date)}`);
          flash(`Holiday ${d.date} removed.`, 'ok');
          await refresh();
        }, { action: 'remove', cls: 'danger', confirm: `Remove the holiday on ${d.date}?` }) : null)],
      })));
    }
    return out;
  }

  // ---- gates -----------------------------------------------------------------------------

  async function pageGates() {
    const [gates, status] = await Promise.all([
      api('GET', '/api/v1/gates'),
      apiOptional('/api/v1/status', null),
    ]);
    const online = new Map(((status && status.gates) || []).map((g) => [g.id, g.online]));
    const out = [h('h1', null, 'Gates')];
    if (may('change_gates')) {
      out.push(form('gate-add', 'Add a gate', [
        field('Name', input('name', { required: true, placeholder: 'e.g. front-door' })),
        field('Zone', input('zone', { placeholder: 'main' })),
        field('Direction', select('direction', [['in', 'in'], ['out', 'out']])),
      ], 'Add gate', async (v) => {
        const g = await api('POST', '/api/v1/gates', compact(v));
        const text = JSON.stringify(g.provisioning ?? {}, null, 2);
        const creds = h('section', { id: 'gate-credentials', class: 'panel secret' },
          h('h2', null, `Gate ${g.name} added: its credentials`),
          h('p', null, 'Set the gate up with this now. Its keys are shown only this once; ',
            'if they are lost, remove the gate and add it again.'),
          h('pre', { class: 'mono' }, text),
          h('p', null, downloadLink(text, `${g.name}-provisioning.json`, 'application/json', `Download ${g.name}-provisioning.json`)));
        flash(`Gate ${g.name} added${g.zone_created ? ` (with the new zone ${g.zone_name})` : ''}.`, 'ok');
        await refresh(creds);
      }));
    }
    if (may('open_doors') && gates.length) {
      out.push(form('door-open', 'Open a door remotely', [
        field('Gate', select('gate', [['', 'choose…'], ...gates.filter((g) => g.enabled).map((g) => [g.id, g.name])], { required: true })),
        field('Reason', input('reason', { required: true, placeholder: 'why (kept in the access log)' }), 'wide'),
      ], 'Open', async (v, f) => {
        if (!v.gate) throw new Error('choose the gate to open');
        const gate = gates.find((g) => String(g.id) === v.gate);
        const name = gate ? gate.name : v.gate;
        const r = await api('POST', `/api/v1/gates/${enc(v.gate)}/open`, { reason: v.reason });
        f.elements.namedItem('reason').value = '';
        flash(r.delivered
          ? `Open command delivered to ${name}.`
          : `Open command for ${name} is waiting: the gate is not connected right now and gets it with its next message (if that comes soon).`, 'ok');
      }));
    }
    out.push(table('gates', ['Gate', 'Zone', 'Direction', 'State', 'Last seen', 'Relay', 'Allowed addresses'], gates, (g) => ({
      id: g.id,
      cells: [g.name, g.zone_name || `#${g.zone}`, g.direction,
        gateState({ enabled: g.enabled, online: online.has(g.id) ? online.get(g.id) : recent(g.last_seen) }),
        h('span', { title: fmtTime(g.last_seen) }, ago(g.last_seen)), `${g.relay_ms} ms`,
        h('td', { class: 'wrap' }, (g.allowed_ips || []).join(', ') || 'any')],
    })));
    return out;
  }

  // ---- sensors ---------------------------------------------------------------------------

  function sensorState(s) {
    if (!s.enabled) return badge('disabled', '');
    if (s.missing) return badge('missing', 'bad');
    return s.last_seen ? badge('ok', 'ok') : badge('never heard', '');
  }

  function every(seconds) {
    if (seconds % 3600 === 0) return `${seconds / 3600} h`;
    if (seconds % 60 === 0) return `${seconds / 60} min`;
    return `${seconds} s`;
  }

  async function pageSensors() {
    const sensors = await api('GET', '/api/v1/sensors');
    const canChange = may('change_sensors');
    const out = [h('h1', null, 'Sensors')];
    if (canChange) {
      out.push(form('sensor-add', 'Add a sensor', [
        field('Name', input('name', { required: true, placeholder: 'e.g. front-door' })),
        field('Kind', select('kind', [['door', 'door contact'], ['pir', 'motion (PIR)'], ['smoke', 'smoke'], ['temp', 'temperature']])),
        field('Heartbeat', input('heartbeat', { placeholder: '5m' })),
      ], 'Add sensor', async (v) => {
        const s = await api('POST', '/api/v1/sensors', compact(v));
        const p = s.provisioning || {};
        const text = p.toml || '';
        const created = h('section', { id: 'sensor-provisioning', class: 'panel secret' },
          h('h2', null, `Sensor ${s.name} added: its provisioning`),
          h('p', null, 'Load this into the node (board config or simulator) now. Its key is shown only this once; ',
            'if it is lost, remove the sensor and add it again.'),
          h('pre', { class: 'mono' }, text),
          h('p', null, downloadLink(text, `${s.name}.toml`, 'application/toml', `Download ${s.name}.toml`)));
        flash(`Sensor ${s.name} added.`, 'ok');
        await refresh(created);
      }));
    }
    out.push(table('sensors', ['Sensor', 'Kind', 'Address', 'State', 'Last seen', 'Battery', 'Signal', 'Heartbeat', ''], sensors, (s) => {
      const buttons = [];
      if (canChange) {
        buttons.push(button(s.enabled ? 'Disable' : 'Enable', async () => {
          await api('POST', `/api/v1/sensors/${enc(s.id)}/${s.enabled ? 'disable' : 'enable'}`, {});
          flash(`Sensor ${s.name} ${s.enabled ? 'disabled' : 'enabled'}.`, 'ok');
          await refresh();
        }, { action: s.enabled ? 'disable' : 'enable', confirm: s.enabled ? `Disable ${s.name}? Its frames are refused until enabled again.` : null }));
        buttons.push(button('Remove', async () => {
          await api('DELETE', `/api/v1/sensors/${enc(s.id)}`);
          flash(`Sensor ${s.name} removed.`, 'ok');
          await refresh();
        }, { action: 'remove', cls: 'danger', confirm: `Remove ${s.name}? Its key stops working for good.` }));
      }
      const signal = s.rssi === null || s.rssi === undefined ? '—' : `${s.rssi} dBm${s.snr === null || s.snr === undefined ? '' : `, ${s.snr} dB`}`;
      return {
        id: s.id,
        cls: s.missing ? 'missing' : null,
        cells: [s.name, s.kind, h('span', { class: 'mono' }, s.dev_addr), sensorState(s),
          h('span', { title: fmtTime(s.last_seen) }, ago(s.last_seen)),
          s.battery_mv === null || s.battery_mv === undefined ? '—' : `${s.battery_mv} mV`,
          signal, every(s.heartbeat_s), actions(buttons)],
      };
    }));
    return out;
  }

  /** Seen within 5 minutes (when the status endpoint does not say). */
  function recent(s) {
    const t = Date.parse(s || '');
    return !Number.isNaN(t) && Date.now() - t < 300000;
  }

  // ---- access log ------------------------------------------------------------------------

  function daysAgo(n) {
    const d = new Date(Date.now() - n * 86400000);
    const pad = (x) => String(x).padStart(2, '0');
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  }

  async function pageLog() {
    if (!S.logFilter) S.logFilter = { gate: '', person: '', since: daysAgo(7), until: '', decision: '' };
    const f = S.logFilter;
    const query = (extra = {}) => qs({ gate: f.gate, person: f.person, since: f.since, until: f.until, ...extra });
    // The API pages oldest first; read the window's pages, then show the newest first.
    let rows = [];
    let after = null;
    let more = true;
    let pages = 0;
    while (more && pages < LOG_MAX_PAGES) {
      const page = await api('GET', `/api/v1/access/log${query({ limit: LOG_PAGE, after })}`);
      rows = rows.concat(page.rows || []);
      after = page.next_after;
      more = page.more;
      pages += 1;
    }
    const [gates, opens] = await Promise.all([
      apiOptional('/api/v1/gates', []),
      apiOptional(`/api/v1/access/opens${qs({ gate: f.gate, limit: 100 })}`, null),
    ]);
    const shown = rows.filter((r) => (f.decision === 'allowed' ? r.allowed === true : f.decision === 'denied' ? r.allowed !== true : true)).reverse();
    const filter = form('log-filter', null, [
      field('Gate', gates.length
        ? select('gate', [['', 'any'], ...gates.map((g) => [g.id, g.name])], { value: f.gate })
        : input('gate', { value: f.gate, placeholder: 'name or id' })),
      field('Person', input('person', { value: f.person, placeholder: 'name or id' })),
      field('Since', input('since', { value: f.since, placeholder: 'YYYY-MM-DD or RFC 3339' })),
      field('Until', input('until', { value: f.until, placeholder: 'YYYY-MM-DD or RFC 3339' })),
      field('Decision', select('decision', [['', 'any'], ['allowed', 'allowed'], ['denied', 'denied']], { value: f.decision })),
    ], 'Filter', async (v) => {
      S.logFilter = { gate: v.gate, person: v.person, since: v.since, until: v.until, decision: v.decision };
      await refresh();
    });
    return [
      h('h1', null, 'Access log'),
      filter,
      h('div', { class: 'toolbar' },
        h('span', { class: 'muted' }, more
          ? `Showing the first ${rows.length} entries of the period (newest first); narrow the filters to see the rest.`
          : `${shown.length} entries, newest first.`),
        h('a', { href: `/api/v1/access/log.csv${query()}`, download: 'access-log.csv', id: 'log-csv' }, 'Export CSV')),
      table('log', ['Time', 'Gate', 'Person', 'Decision', 'Reason', 'Via'], shown, (r) => ({
        id: r.id,
        cls: r.allowed ? 'allowed' : 'denied',
        cells: [fmtTime(r.at), r.gate_name || `#${r.gate}`, r.person_name || (r.person ? `#${r.person}` : '—'),
          r.allowed ? badge('allowed', 'ok') : badge('denied', 'bad'),
          h('td', { class: 'wrap' }, [words(r.reason), r.by ? ` by ${r.by}` : '', r.note ? `: ${r.note}` : ''].join('')),
          r.source],
      })),
      opens ? [
        h('h2', null, 'Remote opens'),
        table('opens', ['Time', 'Gate', 'By', 'Reason', 'State', 'Delivered'], opens.rows || [], (o) => ({
          id: o.id,
          cells: [fmtTime(o.at), o.gate_name || `#${o.gate}`, o.admin, h('td', { class: 'wrap' }, o.reason),
            badge(o.state, { delivered: 'ok', requested: 'warn', expired: 'bad' }[o.state] || ''), fmtTime(o.delivered_at)],
        })),
      ] : null,
    ];
  }

  // ---- VPN peers -------------------------------------------------------------------------

  async function pageVpn() {
    const data = await api('GET', '/api/v1/peers');
    const peers = Array.isArray(data) ? data : data.items || data.peers || [];
    const canChange = may('change_peers');
    const out = [h('h1', null, 'VPN peers')];
    if (data && data.available === false) {
      out.push(h('p', { class: 'muted' }, `Live figures are not available${data.error ? `: ${data.error}` : '.'}`));
    }
    if (canChange) {
      out.push(form('peer-add', 'Add a peer', [
        field('Name', input('name', { required: true, placeholder: 'e.g. alice-laptop' })),
        field('Role', select('role', [['admin', 'admin'], ['installer', 'installer']])),
        field('Expires (optional)', input('expires', { placeholder: 'YYYY-MM-DD' })),
        field('Public key (optional)', input('public_key', { placeholder: 'leave empty to make a key pair', spellcheck: 'false' }), 'wide'),
      ], 'Add peer', async (v) => {
        const r = await api('POST', '/api/v1/peers', compact(v));
        const name = (r.peer && r.peer.name) || v.name;
        const filename = r.filename || `${name}.conf`;
        const qr = r.qr_svg ? svgFromText(r.qr_svg) : null;
        const created = h('section', { id: 'peer-created', class: 'panel secret' },
          h('h2', null, `Peer ${name} added`),
          h('p', null, 'Scan the code with the WireGuard app, or download the configuration. ',
            'It holds the peer\'s private key, which the box does not keep: this is the only time it is shown.'),
          qr ? h('div', { class: 'qr' }, qr) : (r.qr_svg ? h('p', { class: 'muted' }, 'The QR code could not be shown.') : null),
          r.config ? h('p', null, downloadLink(r.config, filename, 'text/plain', `Download ${filename}`)) : null,
          r.config ? h('details', null, h('summary', null, 'Show the configuration'), h('pre', { class: 'mono' }, r.config)) : null);
        flash(`Peer ${name} added.`, 'ok');
        await refresh(created);
      }));
    }
    out.push(table('peers', ['Peer', 'Role', 'State', 'Addresses', 'Endpoint', 'Last handshake', 'Received', 'Sent', 'Expires', ''], peers, (p) => {
      const buttons = [];
      if (canChange) {
        const disabled = p.state === 'disabled';
        buttons.push(button(disabled ? 'Enable' : 'Disable', async () => {
          await api('POST', `/api/v1/peers/${enc(p.name)}/${disabled ? 'enable' : 'disable'}`, {});
          flash(`Peer ${p.name} ${disabled ? 'enabled' : 'disabled'}.`, 'ok');
          await refresh();
        }, { action: disabled ? 'enable' : 'disable', confirm: disabled ? null : `Disable ${p.name}? It can no longer connect until enabled again.` }));
        buttons.push(button('Remove', async () => {
          await api('DELETE', `/api/v1/peers/${enc(p.name)}`);
          flash(`Peer ${p.name} removed.`, 'ok');
          await refresh();
        }, { action: 'remove', cls: 'danger', confirm: `Remove ${p.name}? Its key stops working for good.` }));
      }
      const addresses = Array.isArray(p.addresses) ? p.addresses.join(', ') : p.addresses || '';
      return {
        id: p.name,
        cells: [p.name, p.role, peerState(p.state), addresses, p.endpoint || '—',
          h('span', { title: fmtTime(p.last_handshake) }, ago(p.last_handshake)),
          bytes(p.rx_bytes), bytes(p.tx_bytes), p.expires ? fmtTime(p.expires) : 'never', actions(buttons)],
      };
    }));
    return out;
  }

  // ---- alerts: receivers, rules, silences ------------------------------------------------

  const RECEIVER_FIELDS = {
    webhook: ['url', 'format'],
    email: ['host', 'port', 'security', 'from', 'to', 'username', 'password'],
    ntfy: ['url', 'token'],
  };

  /** A matcher object from comma-separated kinds/sources/zones and a minimum severity. */
  function matcherFrom(v) {
    const m = compact({ kinds: list(v.kinds), sources: list(v.sources), zones: list(v.zones) });
    if (v.min_severity) m.min_severity = v.min_severity;
    return m;
  }

  function matcherText(m) {
    if (!m) return 'everything';
    const parts = [];
    if (m.kinds && m.kinds.length) parts.push(`kinds ${m.kinds.join(', ')}`);
    if (m.sources && m.sources.length) parts.push(`sources ${m.sources.join(', ')}`);
    if (m.zones && m.zones.length) parts.push(`zones ${m.zones.join(', ')}`);
    if (m.min_severity && m.min_severity !== 'info') parts.push(`${m.min_severity} and above`);
    return parts.join('; ') || 'everything';
  }

  function matcherFields() {
    return [
      field('Kinds', input('kinds', { placeholder: 'e.g. intrusion, review.*' })),
      field('Sources', input('sources', { placeholder: 'any' })),
      field('Zones', input('zones', { placeholder: 'any' })),
      field('Min. severity', select('min_severity', [['info', 'info'], ['warning', 'warning'], ['critical', 'critical']])),
    ];
  }

  function receiverTarget(r) {
    if (r.type === 'email') return `${(r.to || []).join(', ')} via ${r.host}:${r.port}`;
    if (r.type === 'console') return 'this console';
    return r.url || '';
  }

  async function pageAlerts() {
    const [receivers, rules, silences] = await Promise.all([
      api('GET', '/api/v1/receivers'),
      api('GET', '/api/v1/rules'),
      api('GET', '/api/v1/silences'),
    ]);
    const canChange = may('change_alerts');
    const out = [h('h1', null, 'Alerts')];

    // Receivers.
    out.push(h('h2', null, 'Receivers'));
    if (canChange) {
      const typed = (types, label, control) => {
        const l = field(label, control);
        l.dataset.types = types;
        return l;
      };
      const typeSelect = select('type', [['webhook', 'webhook (Slack or JSON)'], ['email', 'e-mail'], ['ntfy', 'ntfy']]);
      const f = form('receiver-add', 'Add a receiver', [
        field('Name', input('name', { required: true })),
        field('Type', typeSelect),
        typed('webhook ntfy', 'URL', input('url', { placeholder: 'https://…', spellcheck: 'false' })),
        typed('webhook', 'Format', select('format', [['slack', 'Slack-compatible'], ['json', 'JSON']])),
        typed('email', 'SMTP host', input('host')),
        typed('email', 'Port', input('port', { inputmode: 'numeric', placeholder: '587' })),
        typed('email', 'Security', select('security', [['starttls', 'STARTTLS'], ['tls', 'TLS'], ['none', 'none']])),
        typed('email', 'From', input('from', { placeholder: 'gatehouse@example.org' })),
        typed('email', 'To', input('to', { placeholder: 'a@example.org, b@example.org' })),
        typed('email', 'User name (optional)', input('username')),
        typed('email', 'Password (optional)', input('password', { type: 'password', autocomplete: 'new-password' })),
        typed('ntfy', 'Access token (optional)', input('token', { type: 'password', autocomplete: 'off' })),
      ], 'Add receiver', async (v) => {
        const body = { name: v.name, type: v.type };
        for (const k of RECEIVER_FIELDS[v.type] || []) if (v[k] !== undefined && v[k] !== '') body[k] = v[k];
        if (body.port !== undefined) {
          body.port = Number(body.port);
          if (!Number.isInteger(body.port)) throw new Error('the port must be a number, like 587');
        }
        const r = await api('POST', '/api/v1/receivers', body);
        flash(`Receiver ${r.name} added.`, 'ok');
        await refresh();
      });
      const showTypeFields = () => {
        for (const l of f.querySelectorAll('[data-types]')) l.hidden = !l.dataset.types.split(' ').includes(typeSelect.value);
      };
      typeSelect.addEventListener('change', showTypeFields);
      showTypeFields();
      out.push(f);
    }
    out.push(table('receivers', ['Receiver', 'Type', 'Sends to', 'State', ''], receivers, (r) => {
      const buttons = [];
      if (canChange && r.type !== 'console') {
        buttons.push(button('Send test', async () => {
          const t = await api('POST', `/api/v1/receivers/${r.id}/test`, {});
          if (t.delivered) {
            flash(`Test sent to ${r.name}: delivered${t.http_status ? ` (HTTP ${t.http_status})` : ''} in ${t.latency_ms} ms.`, 'ok');
          } else {
            flash(`Test to ${r.name} failed: ${t.failure || 'not delivered'}`, 'error');
          }
        }, { action: 'test' }));
      }
      if (canChange) {
        buttons.push(button(r.enabled ? 'Disable' : 'Enable', async () => {
          await api('PATCH', `/api/v1/receivers/${r.id}`, { enabled: !r.enabled });
          flash(`Receiver ${r.name} ${r.enabled ? 'disabled' : 'enabled'}.`, 'ok');
          await refresh();
        }, { action: r.enabled ? 'disable' : 'enable' }));
      }
      if (canChange && r.type !== 'console') {
        buttons.push(button('Remove', async () => {
          await api('DELETE', `/api/v1/receivers/${r.id}`);
          flash(`Receiver ${r.name} removed.`, 'ok');
          await refresh();
        }, { action: 'remove', cls: 'danger', confirm: `Remove the receiver ${r.name}?` }));
      }
      return { id: r.id, cells: [r.name, r.type, h('td', { class: 'wrap' }, receiverTarget(r)), enabledBadge(r.enabled), actions(buttons)] };
    }));

    // Rules.
    out.push(h('h2', null, 'Rules'));
    if (canChange) {
      out.push(form('rule-add', 'Add a rule', [
        field('Name', input('name', { required: true })),
        field('Receivers', select('receivers', receivers.map((r) => [r.id, r.name]), { multiple: true, size: Math.min(4, Math.max(2, receivers.length)) })),
        ...matcherFields(),
        field('Active (optional)', input('active', { placeholder: 'always, or mon-fri 18:00-24:00' }), 'wide'),
        field('Group window', input('group_window', { placeholder: '0, 30s, 5m' })),
        field('Repeat every (optional)', input('repeat_every', { placeholder: 'e.g. 10m (critical only)' })),
      ], 'Add rule', async (v) => {
        const body = compact({
          name: v.name,
          receivers: (v.receivers || []).map(Number),
          active: v.active,
          group_window: v.group_window,
          repeat_every: v.repeat_every,
        });
        body.matcher = matcherFrom(v);
        const r = await api('POST', '/api/v1/rules', body);
        flash(`Rule ${r.name} added.`, 'ok');
        await refresh();
      }, { hint: 'Lists are comma-separated; a pattern ending in * matches by prefix.' }));
    }
    out.push(table('rules', ['Rule', 'Matches', 'Receivers', 'Active', 'Group window', 'Repeat', 'State', ''], rules, (r) => {
      const buttons = canChange ? [
        button(r.enabled ? 'Disable' : 'Enable', async () => {
          await api('PATCH', `/api/v1/rules/${r.id}`, { enabled: !r.enabled });
          flash(`Rule ${r.name} ${r.enabled ? 'disabled' : 'enabled'}.`, 'ok');
          await refresh();
        }, { action: r.enabled ? 'disable' : 'enable' }),
        button('Remove', async () => {
          await api('DELETE', `/api/v1/rules/${r.id}`);
          flash(`Rule ${r.name} removed.`, 'ok');
          await refresh();
        }, { action: 'remove', cls: 'danger', confirm: `Remove the rule ${r.name}?` }),
      ] : [];
      return {
        id: r.id,
        cells: [r.name, h('td', { class: 'wrap' }, matcherText(r.matcher)),
          (r.receivers || []).map((x) => x.name || `#${x.id}`).join(', '),
          r.active || 'always', r.group_window || '0', r.repeat_every || '—', enabledBadge(r.enabled), actions(buttons)],
      };
    }));

    // Silences.
    out.push(h('h2', null, 'Silences'));
    if (canChange) {
      out.push(form('silence-add', 'Add a silence', [
        field('Comment', input('comment', { required: true, placeholder: 'why (e.g. camera maintenance)' }), 'wide'),
        ...matcherFields(),
        field('Duration', input('duration', { value: '1h', placeholder: '1h, 30m, 2d' })),
        field('Or until', input('ends_at', { placeholder: 'YYYY-MM-DD or RFC 3339' })),
      ], 'Add silence', async (v) => {
        const body = { comment: v.comment, matcher: matcherFrom(v) };
        if (v.ends_at) body.ends_at = v.ends_at;
        else if (v.duration) body.duration = v.duration;
        const s = await api('POST', '/api/v1/silences', body);
        flash(`Silence added until ${fmtTime(s.ends_at)}.`, 'ok');
        await refresh();
      }));
    }
    out.push(table('silences', ['Matches', 'Starts', 'Ends', 'By', 'Comment', 'State', ''], silences, (s) => ({
      id: s.id,
      cells: [h('td', { class: 'wrap' }, matcherText(s.matcher)), fmtTime(s.starts_at), fmtTime(s.ends_at), s.author,
        h('td', { class: 'wrap' }, s.comment),
        badge(s.state, { active: 'ok', pending: 'info', expired: '' }[s.state] || ''),
        actions(canChange && s.state !== 'expired' ? button('Expire', async () => {
          await api('POST', `/api/v1/silences/${s.id}/expire`, {});
          flash('Silence expired.', 'ok');
          await refresh();
        }, { action: 'expire' }) : null)],
    })));
    return out;
  }

  // ---- admins ----------------------------------------------------------------------------

  async function pageAdmins() {
    const admins = await api('GET', '/api/v1/admins');
    const out = [h('h1', null, 'Admins')];
    if (may('change_admins')) {
      out.push(form('admin-add', 'Add an admin', [
        field('Name', input('name', { required: true, autocomplete: 'off' })),
        field('Role', select('role', [['operator', 'operator (watch and acknowledge)'], ['installer', 'installer (gates and sources)'], ['admin', 'admin (everything)']])),
        field('Password', input('password', { type: 'password', required: true, autocomplete: 'new-password' })),
      ], 'Add admin', async (v, f) => {
        const a = await api('POST', '/api/v1/admins', { name: v.name, role: v.role, password: v.password });
        f.elements.namedItem('password').value = '';
        flash(`Admin ${a.name} (${a.role}) added.`, 'ok');
        await refresh();
      }));
    }
    out.push(table('admins', ['Name', 'Role', 'State', 'Created', 'Locked until'], admins, (a) => ({
      id: a.id,
      cells: [a.name, a.role, enabledBadge(a.enabled), fmtTime(a.created), a.locked_until ? fmtTime(a.locked_until) : '—'],
    })));
    return out;
  }

  // ---- live pop-ups ----------------------------------------------------------------------

  /**
   * The live feed: GET /api/v1/events/stream as Server-Sent Events. Same origin, so the
   * browser sends the session cookie; it resumes with Last-Event-ID by itself after a
   * dropped connection. When the server refuses (401/403: the EventSource closes), the
   * session is checked: a 401 goes to the login, otherwise a new feed resumes with
   * ?after= the last id seen.
   */
  function startFeed() {
    if (S.feed || !S.me || !may('read_events') || typeof EventSource !== 'function') return;
    const url = `/api/v1/events/stream${S.lastEventId ? qs({ after: S.lastEventId }) : ''}`;
    const es = new EventSource(url, { withCredentials: true });
    S.feed = es;
    const onMessage = (m) => {
      if (m.lastEventId) S.lastEventId = m.lastEventId;
      let n;
      try {
        n = JSON.parse(m.data);
      } catch (_) {
        return;
      }
      showNotification(m.type, n);
    };
    for (const type of ['firing', 'repeat', 'resolved']) es.addEventListener(type, onMessage);
    es.addEventListener('error', () => {
      if (es.readyState !== EventSource.CLOSED || S.feed !== es) return;
      S.feed = null;
      clearTimeout(S.feedRetry);
      S.feedRetry = setTimeout(async () => {
        if (!S.me) return;
        try {
          await api('GET', '/api/v1/auth/me'); // a 401 here ends the session
          startFeed();
        } catch (e) {
          if (!e.handled && S.me) startFeed();
        }
      }, 5000);
    });
  }

  function stopFeed() {
    clearTimeout(S.feedRetry);
    if (S.feed) S.feed.close();
    S.feed = null;
  }

  function popupFor(id) {
    return $(`#popups .popup[data-event-id="${CSS.escape(String(id))}"]`);
  }

  function removePopup(id) {
    const p = popupFor(id);
    if (p) p.remove();
  }

  /** One notification from the feed: a pop-up for firing/repeat, an update for resolved. */
  function showNotification(type, n) {
    const e = n.event || {};
    const id = n.event_id || e.id;
    if (!id) return;
    const existing = popupFor(id);
    if (type === 'resolved') {
      if (existing && !$('.ended', existing)) {
        $('.summary', existing).after(h('div', { class: 'meta ended' }, 'The event has ended.'));
      }
      return;
    }
    if (e.ack) {
      if (existing) existing.remove();
      return;
    }
    const sev = e.severity || 'info';
    const repeatN = n.kind && n.kind.n;
    const popup = h('div', { class: `popup ${sev}`, 'data-event-id': id, role: 'status', 'data-severity': sev },
      h('div', { class: 'head' },
        h('span', { class: 'kind' }, e.kind || 'event'),
        badge(sev, sev)),
      h('div', { class: 'meta time' }, fmtTime(e.time)),
      h('div', { class: 'meta place' }, place(e) || '—'),
      h('div', { class: 'summary' }, e.message || n.title || ''),
      type === 'repeat' ? h('div', { class: 'meta' }, `Reminder${repeatN ? ` ${repeatN}` : ''}: not acknowledged yet.`) : null,
      h('div', { class: 'buttons' },
        may('ack_events') ? button('Acknowledge', async () => {
          await api('POST', `/api/v1/events/${enc(id)}/ack`, {});
          removePopup(id);
        }, { action: 'ack', cls: 'primary' }) : null,
        externalLink(e.snapshot_url, 'Snapshot'),
        may('read_events') ? h('a', { href: `#/events/${enc(id)}`, class: 'details' }, 'Details') : null,
        button('Dismiss', async () => removePopup(id), { action: 'dismiss' })));
    if (existing) existing.replaceWith(popup);
    else $('#popups').append(popup);
    beep(sev);
  }

  // ---- sound -----------------------------------------------------------------------------

  function soundOn() {
    try {
      return localStorage.getItem(SOUND_KEY) === 'on';
    } catch (_) {
      return false;
    }
  }

  function setSound(on) {
    try {
      localStorage.setItem(SOUND_KEY, on ? 'on' : 'off');
    } catch (_) {
      // Storage may be off (private mode): the toggle then lasts for this page only.
    }
    if (on) {
      // Created in the click, so the browser lets it play later.
      try {
        S.audio = S.audio || new AudioContext();
        S.audio.resume();
      } catch (_) {
        S.audio = null;
      }
    }
  }

  /** A short beep (Web Audio; no sound file), higher for critical events. */
  function beep(severity) {
    if (!$('#sound').checked) return;
    try {
      S.audio = S.audio || new AudioContext();
      const ctx = S.audio;
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.frequency.value = severity === 'critical' ? 1175 : 880;
      gain.gain.setValueAtTime(0.12, ctx.currentTime);
      gain.gain.exponentialRampToValueAtTime(0.001, ctx.currentTime + 0.35);
      osc.connect(gain).connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + 0.35);
    } catch (_) {
      // No audio available: the pop-up is enough.
    }
  }

  // ---- start -----------------------------------------------------------------------------

  async function boot() {
    const sound = $('#sound');
    sound.checked = soundOn();
    sound.addEventListener('change', () => setSound(sound.checked));
    $('#logout').addEventListener('click', async (ev) => {
      ev.currentTarget.disabled = true;
      try {
        await logout();
      } finally {
        $('#logout').disabled = false;
      }
    });
    $('#nav-toggle').addEventListener('click', () => {
      const open = $('#nav').classList.toggle('open');
      $('#nav-toggle').setAttribute('aria-expanded', String(open));
    });
    window.addEventListener('hashchange', render);

    try {
      const e = await api('GET', '/api/v1/auth/enrol', null, { session: false });
      S.enrolNeeded = Boolean(e && e.needed);
    } catch (e) {
      // An older hub without enrolment: go on to the login.
      S.enrolNeeded = false;
    }
    if (!S.enrolNeeded) {
      try {
        await loadMe();
      } catch (e) {
        if (e.status !== 401) showError(e);
        if (e.status !== 401) S.keepFlash = true;
      }
    }
    render();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
