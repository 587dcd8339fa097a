// Tether devices page. Plain JavaScript, no build step, no dependencies.
// It uses only the public JSON API, with relative URLs:
//   GET  /v1/devices:watch?include_snapshot=true | ?after_event_id=ID  (NDJSON)
//   GET  /v1/devices/{id}          re-fetch a device after an event
//   GET  /v1/devices?page_size=…    re-list everything after a large burst
//   POST /v1/devices/{id}:command  the command form
// docs/UI.md describes the page.
'use strict';

(function () {
  // ---- tunables --------------------------------------------------------
  const MAX_EVENTS = 50;            // recent events kept per device
  const REFETCH_DELAY_MS = 250;     // coalescing window for per-device re-fetches
  const REFETCH_RETRY_MS = 2000;    // after a failed re-fetch
  const BULK_THRESHOLD = 200;       // more devices pending than this: re-list all pages instead
  const FETCH_CONCURRENCY = 4;      // parallel GET /v1/devices/{id}
  const PAGE_SIZE = 1000;           // for the re-list
  const WATCH_IDLE_MS = 45000;      // no line (not even a heartbeat) for this long: reconnect
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const OVERSCAN = 8;               // rows rendered above and below the viewport
  const TICK_MS = 15000;            // refresh of the "… ago" texts
  const REFRESH_MS = 30000;         // re-fetch of the rendered online rows (RTT, last seen)
  const KEY_STORAGE = 'tether.apiKey';

  const $ = (id) => document.getElementById(id);
  const ui = {
    conn: $('conn'), connText: $('conn-text'),
    keyOpen: $('key-open'), keyForget: $('key-forget'),
    keyDialog: $('key-dialog'), keyForm: $('key-form'), keyInput: $('key-input'),
    keyCancel: $('key-cancel'), keyRejected: $('key-rejected'),
    filters: $('filters'), presence: $('f-presence'), labels: $('f-labels'), labelsHelp: $('f-labels-help'),
    idText: $('f-id'), summary: $('summary'),
    scroll: $('devices-scroll'), table: $('devices'), rows: $('rows'), empty: $('empty'),
    detail: $('detail'), detailTitle: $('detail-title'), detailClose: $('detail-close'),
    detailStatus: $('detail-status'), detailInfo: $('detail-info'), detailSession: $('detail-session'),
    detailDisconnect: $('detail-disconnect'), eventsRows: $('events-rows'), eventsEmpty: $('events-empty'),
    cmdForm: $('cmd-form'), cmdName: $('cmd-name'), cmdNameHelp: $('cmd-name-help'),
    cmdArgs: $('cmd-args'), cmdTimeout: $('cmd-timeout'), cmdTimeoutHelp: $('cmd-timeout-help'),
    cmdSend: $('cmd-send'), cmdResult: $('cmd-result'),
  };
  const thead = ui.table.tHead;

  // ---- state -----------------------------------------------------------
  const devices = new Map();        // id -> device (proto3 JSON; replaced, never mutated)
  const recent = new Map();        // id -> [event], oldest first, at most MAX_EVENTS
  let sortedIds = [];
  let idsDirty = false;
  let view = [];                    // sortedIds that pass the filter
  let viewDirty = true;
  let onlineCount = 0;
  const filter = { presence: 'all', labels: [], idText: '' };
  let listLoaded = false;           // a snapshot has completed at least once
  let rowH = 38;                    // measured after the first render
  let rowEls = new Map();           // id -> <tr> currently rendered
  const rowState = new WeakMap();   // <tr> -> {d, tick}
  let tick = 0;
  let detailId = null;
  let detailDirty = false;

  let apiKey = loadKey();
  let keyWanted = false;

  // ---- small helpers ---------------------------------------------------
  function loadKey() {
    try { return sessionStorage.getItem(KEY_STORAGE) || ''; } catch (e) { return ''; }
  }
  function storeKey(k) {
    try {
      if (k) sessionStorage.setItem(KEY_STORAGE, k); else sessionStorage.removeItem(KEY_STORAGE);
    } catch (e) { /* storage disabled: the key lives in memory only */ }
  }
  function h(tag, cls, text) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = text;
    return n;
  }
  function pad(n) { return String(n).padStart(2, '0'); }
  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    const now = new Date();
    const hms = pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
    if (d.toDateString() === now.toDateString()) return hms;
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + hms;
  }
  function ago(iso) {
    const t = Date.parse(iso);
    if (isNaN(t)) return '';
    const s = Math.max(0, (Date.now() - t) / 1000);
    if (s < 60) return '<1 min ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' d ago';
  }
  function fmtDuration(v) {
    if (!v) return '—';
    const s = parseFloat(v);
    if (isNaN(s)) return v;
    if (s < 0.001) return Math.round(s * 1e6) + ' µs';
    if (s < 1) return (s * 1000).toFixed(1) + ' ms';
    return s.toFixed(2) + ' s';
  }
  function leaseCmp(a, b) {
    try {
      const x = BigInt(a || '0'), y = BigInt(b || '0');
      return x < y ? -1 : x > y ? 1 : 0;
    } catch (e) { return 0; }
  }
  const REASONS = {
    DISCONNECT_REASON_CLIENT_CLOSED: 'closed by the agent',
    DISCONNECT_REASON_PING_TIMEOUT: 'ping timeout',
    DISCONNECT_REASON_KEEPALIVE_TIMEOUT: 'keepalive timeout',
    DISCONNECT_REASON_REPLACED: 'replaced',
    DISCONNECT_REASON_KICKED: 'disconnected by an operator',
    DISCONNECT_REASON_DRAINING: 'server draining',
    DISCONNECT_REASON_AUTH_FAILED: 'authentication failed',
    DISCONNECT_REASON_AUTH_REVOKED: 'credentials revoked',
    DISCONNECT_REASON_PROTOCOL_ERROR: 'protocol error',
    DISCONNECT_REASON_NODE_LOST: 'server node lost',
    DISCONNECT_REASON_FLAPPING: 'flapping',
    DISCONNECT_REASON_SERVER_ERROR: 'server error',
  };
  function enumText(v, prefix) {
    return v ? v.replace(prefix, '').toLowerCase().replace(/_/g, ' ') : '';
  }
  function reasonText(r) { return r ? (REASONS[r] || enumText(r, 'DISCONNECT_REASON_')) : ''; }
  function restartText(r) {
    if (r === 'DEVICE_RESTART_RESTARTED') return 'restarted';
    if (r === 'DEVICE_RESTART_SAME_BOOT') return 'same boot, connection lost';
    return '';
  }
  function livenessText(m) {
    if (m === 'LIVENESS_MODE_APP_PONG') return 'App ping/pong';
    if (m === 'LIVENESS_MODE_TRANSPORT_ONLY') return 'Transport only';
    return '—';
  }
  function eventText(t) { return enumText(t, 'EVENT_TYPE_'); }
  const GRPC_CODES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND',
    'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED',
    'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];
  const HTTP_TEXT = {
    400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed',
    409: 'Conflict', 413: 'Payload Too Large', 415: 'Unsupported Media Type', 429: 'Too Many Requests',
    499: 'Client Closed Request', 500: 'Internal Server Error', 501: 'Not Implemented', 502: 'Bad Gateway',
    503: 'Service Unavailable', 504: 'Gateway Timeout',
  };

  // ---- API -------------------------------------------------------------
  class APIError extends Error {
    constructor(status, statusText, code, message) {
      super(message);
      this.status = status;           // HTTP status; 0 for an error line inside the watch stream
      this.statusText = statusText;
      this.code = code;               // gRPC code, when the body said
    }
  }

  async function api(path, init) {
    const opts = Object.assign({ cache: 'no-store', credentials: 'same-origin' }, init || {});
    const headers = new Headers(opts.headers || {});
    if (apiKey) headers.set('Authorization', 'Bearer ' + apiKey);
    opts.headers = headers;
    const resp = await fetch(path, opts);
    if (resp.status === 401) needKey();
    return resp;
  }

  async function errorOf(resp) {
    let text = '';
    try { text = await resp.text(); } catch (e) { /* body lost */ }
    let code, message;
    try {
      const j = JSON.parse(text);
      const e = j && j.error ? j.error : j;
      if (e && typeof e === 'object') { code = e.code; message = e.message; }
    } catch (e) { /* not JSON */ }
    const st = resp.statusText || HTTP_TEXT[resp.status] || '';
    return new APIError(resp.status, st, code, message || text.trim() || st || 'request failed');
  }

  async function getJSON(path) {
    const resp = await api(path);
    if (!resp.ok) throw await errorOf(resp);
    return resp.json();
  }

  // ---- API key ---------------------------------------------------------
  function updateKeyButtons() {
    ui.keyForget.hidden = !apiKey;
    ui.keyOpen.hidden = !keyWanted;
  }
  function needKey() {
    if (keyWanted) return;
    keyWanted = true;
    setConn('auth', 'API key required: the API answered 401 Unauthorized');
    updateKeyButtons();
    scheduleRender();
    openKeyDialog();
  }
  function openKeyDialog() {
    if (ui.keyDialog.open) return;
    ui.keyRejected.hidden = !apiKey;
    ui.keyInput.value = '';
    ui.keyInput.removeAttribute('aria-invalid');
    ui.keyDialog.showModal();
    ui.keyInput.focus();
  }
  ui.keyForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const k = ui.keyInput.value.trim();
    if (!k) {
      ui.keyInput.setAttribute('aria-invalid', 'true');
      ui.keyInput.focus();
      return;
    }
    apiKey = k;
    storeKey(k);
    keyWanted = false;
    ui.keyInput.value = '';
    ui.keyDialog.close();
    updateKeyButtons();
    setConn('connecting', 'Connecting with the API key…');
    wakeWatch();
    if (detailId) queueRefetch(detailId);
    if (pending.size) scheduleFlush(0);
  });
  ui.keyCancel.addEventListener('click', () => ui.keyDialog.close());
  ui.keyOpen.addEventListener('click', openKeyDialog);
  ui.keyForget.addEventListener('click', () => {
    apiKey = '';
    storeKey('');
    updateKeyButtons();
    ui.keyOpen.focus();
  });

  // ---- connection state (announced by the live region) -----------------
  function setConn(state, text) {
    if (ui.conn.dataset.state !== state) ui.conn.dataset.state = state;
    if (ui.connText.textContent !== text) ui.connText.textContent = text;
  }

  // ---- device store ----------------------------------------------------
  function putDevice(d) {
    const id = d.deviceId;
    if (!id) return;
    if (!devices.has(id)) idsDirty = true;
    devices.set(id, d);
    viewDirty = true;
    if (id === detailId) detailDirty = true;
    scheduleRender();
  }
  function removeDevice(id) {
    if (!devices.delete(id)) return;
    recent.delete(id);
    idsDirty = true;
    viewDirty = true;
    if (id === detailId) detailDirty = true;
    scheduleRender();
  }
  function recordEvent(id, ev) {
    let list = recent.get(id);
    if (!list) recent.set(id, (list = []));
    list.push({ time: ev.time, type: ev.type, leaseId: ev.leaseId, reason: ev.reason, node: ev.node, eventId: ev.eventId });
    if (list.length > MAX_EVENTS) list.splice(0, list.length - MAX_EVENTS);
    if (id === detailId) { detailDirty = true; scheduleRender(); }
  }

  // applyEvent updates the device at once from the event alone, so the row
  // changes without waiting for the re-fetch, which then has the last word.
  // An event about an older lease than the one shown is not applied.
  function applyEvent(ev) {
    const cur = devices.get(ev.deviceId);
    const shown = cur && cur.session ? cur.session.leaseId : (cur && cur.lastDisconnect ? cur.lastDisconnect.leaseId : '0');
    if (ev.type === 'EVENT_TYPE_ONLINE') {
      if (!cur) {
        putDevice({ deviceId: ev.deviceId, online: true, session: { leaseId: ev.leaseId, node: ev.node, connectedAt: ev.time } });
      } else if (leaseCmp(ev.leaseId, shown) > 0) {
        putDevice(Object.assign({}, cur, { online: true, session: { leaseId: ev.leaseId, node: ev.node, connectedAt: ev.time } }));
      }
    } else if (ev.type === 'EVENT_TYPE_OFFLINE') {
      if (cur && cur.online && leaseCmp(ev.leaseId, shown) >= 0) {
        const d = Object.assign({}, cur, {
          online: false,
          lastDisconnect: { reason: ev.reason, time: ev.time, leaseId: ev.leaseId, node: ev.node },
        });
        delete d.session;
        putDevice(d);
      }
    }
  }

  // ---- re-fetches, coalesced -------------------------------------------
  const pending = new Set();
  let flushTimer = 0;
  let flushing = false;

  function queueRefetch(id) {
    pending.add(id);
    scheduleFlush(REFETCH_DELAY_MS);
  }
  function scheduleFlush(ms) {
    if (flushTimer || flushing) return;
    flushTimer = setTimeout(flush, ms);
  }
  async function flush() {
    flushTimer = 0;
    if (keyWanted || !pending.size) return;
    flushing = true;
    let failed = false;
    try {
      if (pending.size > BULK_THRESHOLD) {
        pending.clear();
        failed = !(await relistAll());
      } else {
        const ids = Array.from(pending);
        pending.clear();
        let next = 0;
        const worker = async () => {
          while (next < ids.length) {
            const id = ids[next++];
            if (!(await refetchOne(id))) { pending.add(id); failed = true; }
          }
        };
        const workers = [];
        for (let i = 0; i < Math.min(FETCH_CONCURRENCY, ids.length); i++) workers.push(worker());
        await Promise.all(workers);
      }
    } finally {
      flushing = false;
    }
    if (pending.size) scheduleFlush(failed ? REFETCH_RETRY_MS : REFETCH_DELAY_MS);
  }
  // refetchOne reports whether the device's state is now known (found or gone).
  async function refetchOne(id) {
    try {
      const r = await getJSON('/v1/devices/' + encodeURIComponent(id));
      if (r && r.device) putDevice(r.device);
      return true;
    } catch (e) {
      if (e instanceof APIError && e.status === 404) { removeDevice(id); return true; }
      return false;
    }
  }
  // relistAll reads every page of GET /v1/devices: after a burst it costs one
  // request per PAGE_SIZE devices instead of one per device.
  async function relistAll() {
    const seen = new Set();
    let token = '';
    try {
      do {
        const q = 'page_size=' + PAGE_SIZE + (token ? '&page_token=' + encodeURIComponent(token) : '');
        const r = await getJSON('/v1/devices?' + q);
        for (const d of r.devices || []) { seen.add(d.deviceId); putDevice(d); }
        token = r.nextPageToken || '';
      } while (token);
    } catch (e) {
      return false;
    }
    for (const id of Array.from(devices.keys())) if (!seen.has(id)) removeDevice(id);
    return true;
  }

  // ---- the watch stream --------------------------------------------------
  let lastEventId = '';
  let needSnapshot = true;
  let snapshotSeen = null;
  let wake = null;

  function sleep(ms) {
    return new Promise((resolve) => {
      const done = () => { clearTimeout(t); wake = null; resolve(); };
      const t = setTimeout(done, ms);
      wake = done;
    });
  }
  function wakeWatch() { if (wake) wake(); }
  function resync() { needSnapshot = true; lastEventId = ''; }
  function backoff(n) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, Math.max(0, n - 1)));
    return Math.round(base / 2 + Math.random() * base / 2);
  }

  async function watchLoop() {
    let failures = 0;
    for (;;) {
      while (keyWanted) await sleep(60000);
      const snapshot = needSnapshot || !lastEventId;
      const query = snapshot ? 'include_snapshot=true' : 'after_event_id=' + encodeURIComponent(lastEventId);
      if (failures === 0) setConn('connecting', snapshot ? 'Connecting to the live event stream…' : 'Resuming the live event stream…');
      const run = { healthy: false };
      let err = null;
      try {
        await watchOnce(query, snapshot, run);
      } catch (e) {
        err = e;
      }
      if (keyWanted) continue;
      failures = run.healthy ? 1 : failures + 1;
      const delay = backoff(failures);
      const why = err && err.message ? err.message : 'the stream ended';
      setConn('down', 'Disconnected (' + why + '); reconnecting in ' + Math.max(1, Math.round(delay / 1000)) + ' s');
      await sleep(delay);
    }
  }

  async function watchOnce(query, snapshot, run) {
    const ctrl = new AbortController();
    let idle = 0;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => ctrl.abort(new Error('no data for ' + WATCH_IDLE_MS / 1000 + ' s')), WATCH_IDLE_MS);
    };
    arm();
    try {
      const resp = await api('/v1/devices:watch?' + query, { signal: ctrl.signal });
      if (!resp.ok) {
        const e = await errorOf(resp);
        if (e.code === 11 || (!snapshot && e.status === 400)) resync();
        throw e;
      }
      if (snapshot) {
        snapshotSeen = new Set();
        setConn('connecting', 'Loading the device list…');
      } else {
        run.healthy = true;
        setConn('live', 'Live: receiving updates');
      }
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        arm();
        buf += value;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line) handleLine(line, run);
        }
      }
      throw new Error('the stream ended');
    } finally {
      clearTimeout(idle);
      ctrl.abort();
    }
  }

  function handleLine(line, run) {
    let msg;
    try { msg = JSON.parse(line); } catch (e) { throw new Error('malformed line in the watch stream'); }
    if (msg.error) {
      const e = msg.error;
      if (e.code === 11) resync();
      if (e.code === 16) needKey();
      throw new APIError(0, '', e.code, e.message || 'watch stream error');
    }
    const ev = msg.result && msg.result.event;
    if (!ev) return;
    switch (ev.type) {
      case 'EVENT_TYPE_HEARTBEAT':
        return;
      case 'EVENT_TYPE_SNAPSHOT': {
        const d = ev.device;
        const id = ev.deviceId || (d && d.deviceId);
        if (!d || !id) return;
        if (!d.deviceId) d.deviceId = id;
        putDevice(d);
        if (snapshotSeen) snapshotSeen.add(id);
        recordEvent(id, ev);
        return;
      }
      case 'EVENT_TYPE_SNAPSHOT_END':
        if (snapshotSeen) {
          for (const id of Array.from(devices.keys())) if (!snapshotSeen.has(id)) removeDevice(id);
        }
        snapshotSeen = null;
        needSnapshot = false;
        listLoaded = true;
        viewDirty = true;
        scheduleRender();
        run.healthy = true;
        setConn('live', 'Live: receiving updates');
        return;
      default:
        if (ev.eventId) lastEventId = ev.eventId;
        if (!ev.deviceId) return;
        recordEvent(ev.deviceId, ev);
        applyEvent(ev);
        queueRefetch(ev.deviceId);
    }
  }

  // ---- filters -----------------------------------------------------------
  function parseSelector(text) {
    const out = [];
    for (const part of text.split(',')) {
      const p = part.trim();
      if (!p) continue;
      const i = p.indexOf('=');
      if (i <= 0) return null;
      out.push([p.slice(0, i).trim(), p.slice(i + 1).trim()]);
    }
    return out;
  }
  function matches(d) {
    if (filter.presence === 'online' && !d.online) return false;
    if (filter.presence === 'offline' && d.online) return false;
    if (filter.idText && !d.deviceId.toLowerCase().includes(filter.idText)) return false;
    if (filter.labels.length) {
      const l = (d.info && d.info.labels) || {};
      for (const [k, v] of filter.labels) if (l[k] !== v) return false;
    }
    return true;
  }
  function filterChanged() {
    viewDirty = true;
    ui.scroll.scrollTop = 0;
    scheduleRender();
  }
  const LABEL_HELP = ui.labelsHelp.textContent;
  let labelTimer = 0;
  ui.filters.addEventListener('submit', (e) => e.preventDefault());
  ui.presence.addEventListener('change', () => { filter.presence = ui.presence.value; filterChanged(); });
  ui.labels.addEventListener('input', () => {
    clearTimeout(labelTimer);
    labelTimer = setTimeout(() => {
      const sel = parseSelector(ui.labels.value);
      if (sel === null) {
        ui.labels.setAttribute('aria-invalid', 'true');
        ui.labelsHelp.textContent = 'Not a selector: write key=value, comma-separated';
        ui.labelsHelp.classList.add('error-text');
        return;
      }
      ui.labels.removeAttribute('aria-invalid');
      ui.labelsHelp.textContent = LABEL_HELP;
      ui.labelsHelp.classList.remove('error-text');
      filter.labels = sel;
      filterChanged();
    }, 150);
  });
  ui.idText.addEventListener('input', () => { filter.idText = ui.idText.value.trim().toLowerCase(); filterChanged(); });

  // ---- rendering -----------------------------------------------------------
  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(render);
  }
  function render() {
    renderQueued = false;
    if (idsDirty) {
      sortedIds = Array.from(devices.keys()).sort();
      idsDirty = false;
      viewDirty = true;
    }
    if (viewDirty) {
      viewDirty = false;
      onlineCount = 0;
      view = [];
      for (const id of sortedIds) {
        const d = devices.get(id);
        if (d.online) onlineCount++;
        if (matches(d)) view.push(id);
      }
      renderSummary();
    }
    renderRows();
    if (detailDirty && detailId) renderDetail();
  }
  function renderSummary() {
    const total = devices.size;
    let s = total + (total === 1 ? ' device' : ' devices') + ' · ' + onlineCount + ' online · ' + (total - onlineCount) + ' offline';
    if (view.length !== total) s += ' · ' + view.length + ' shown';
    ui.summary.textContent = s;
  }

  const topSpacer = spacer();
  const bottomSpacer = spacer();
  function spacer() {
    const tr = h('tr', 'spacer');
    tr.setAttribute('aria-hidden', 'true');
    const td = h('td');
    td.colSpan = 8;
    tr.appendChild(td);
    return tr;
  }
  function setSpacer(tr, px) {
    tr.hidden = px <= 0;
    tr.style.height = Math.max(0, px) + 'px';
  }

  function renderRows() {
    const n = view.length;
    ui.table.setAttribute('aria-rowcount', String(n + 1));
    ui.empty.hidden = n > 0;
    if (!n) {
      ui.empty.textContent = devices.size ? 'No device matches the filter.'
        : listLoaded ? 'No devices yet.'
          : keyWanted ? 'Enter an API key to see the devices.' : 'Waiting for the device list…';
    }
    const headH = thead.offsetHeight;
    const vh = Math.max(ui.scroll.clientHeight - headH, rowH);
    const perView = Math.ceil(vh / rowH);
    let first = Math.max(0, Math.floor(ui.scroll.scrollTop / rowH) - OVERSCAN);
    if (first > Math.max(0, n - perView)) first = Math.max(0, n - perView - OVERSCAN);
    const last = Math.min(n, first + perView + 2 * OVERSCAN);

    const active = document.activeElement;
    const next = new Map();
    const trs = [];
    for (let i = first; i < last; i++) {
      const id = view[i];
      const tr = rowEls.get(id) || makeRow(id);
      fillRow(tr, devices.get(id), i);
      next.set(id, tr);
      trs.push(tr);
    }
    rowEls = next;
    setSpacer(topSpacer, first * rowH);
    setSpacer(bottomSpacer, (n - last) * rowH);

    const kids = ui.rows.children;
    let same = kids.length === trs.length + 2 && kids[0] === topSpacer && kids[kids.length - 1] === bottomSpacer;
    for (let i = 0; same && i < trs.length; i++) same = kids[i + 1] === trs[i];
    if (!same) {
      ui.rows.replaceChildren(topSpacer, ...trs, bottomSpacer);
      if (active && active !== document.activeElement && active.isConnected) active.focus({ preventScroll: true });
    }
    // Measure the real row pitch once there are two rows.
    if (trs.length >= 2) {
      const pitch = trs[1].getBoundingClientRect().top - trs[0].getBoundingClientRect().top;
      if (pitch > 0 && Math.abs(pitch - rowH) > 0.5) { rowH = pitch; scheduleRender(); }
    }
  }

  function makeRow(id) {
    const tr = h('tr', 'row');
    tr.tabIndex = 0;
    tr.dataset.id = id;
    const th = h('th', 'mono', id);
    th.scope = 'row';
    tr.appendChild(th);
    const st = h('td');
    st.append(h('span', 'dot'), h('span'));
    st.firstChild.setAttribute('aria-hidden', 'true');
    tr.appendChild(st);
    for (let i = 0; i < 6; i++) tr.appendChild(h('td'));
    tr.lastChild.className = 'num';
    return tr;
  }
  function setText(node, text, title) {
    if (node.textContent !== text) node.textContent = text;
    if (title !== undefined && node.title !== title) node.title = title;
  }
  function sinceText(d) {
    if (d.online) {
      const t = d.session && d.session.connectedAt;
      let s = t ? 'Connected since ' + fmtTime(t) + ' · ' + ago(t) : 'Connected';
      const ld = d.lastDisconnect;
      if (ld && ld.restart === 'DEVICE_RESTART_RESTARTED') s += ' (after a restart)';
      return s;
    }
    const ld = d.lastDisconnect;
    if (!ld) return 'Offline';
    const why = [reasonText(ld.reason), restartText(ld.restart)].filter(Boolean).join(', ');
    return 'Offline since ' + fmtTime(ld.time) + (why ? ' (' + why + ')' : '') + ' · ' + ago(ld.time);
  }
  function fillRow(tr, d, index) {
    const ri = String(index + 2);
    if (tr.getAttribute('aria-rowindex') !== ri) tr.setAttribute('aria-rowindex', ri);
    const prev = rowState.get(tr);
    if (prev && prev.d === d && prev.tick === tick) return;
    rowState.set(tr, { d, tick });
    const c = tr.children;
    const info = d.info || {};
    const sess = d.session || {};
    const st = c[1];
    st.firstChild.className = 'dot ' + (d.online ? 'on' : 'off');
    st.lastChild.className = d.online ? 'st-on' : 'st-off';
    setText(st.lastChild, d.online ? 'Online' : 'Offline');
    setText(c[2], info.hostname || '—', info.hostname || '');
    setText(c[3], (info.ipAddresses && info.ipAddresses[0]) || '—', (info.ipAddresses || []).join(', '));
    setText(c[4], info.agentVersion || '—', info.agentVersion || '');
    setText(c[5], d.online ? livenessText(sess.livenessMode) : '—');
    const since = sinceText(d);
    const iso = d.online ? sess.connectedAt : d.lastDisconnect && d.lastDisconnect.time;
    setText(c[6], since, iso ? since + ' — ' + iso : since);
    setText(c[7], d.online ? fmtDuration(sess.lastRtt) : '—');
  }

  // ---- row keyboard and mouse -----------------------------------------------
  function focusIndex(i) {
    if (!view.length) return;
    i = Math.max(0, Math.min(view.length - 1, i));
    const headH = thead.offsetHeight;
    const vh = ui.scroll.clientHeight;
    const top = i * rowH;
    if (top < ui.scroll.scrollTop) ui.scroll.scrollTop = top;
    else if (headH + top + rowH > ui.scroll.scrollTop + vh) ui.scroll.scrollTop = headH + top + rowH - vh;
    render();
    const tr = rowEls.get(view[i]);
    if (tr) tr.focus({ preventScroll: true });
  }
  ui.rows.addEventListener('click', (e) => {
    const tr = e.target.closest('tr.row');
    if (tr) openDetail(tr.dataset.id);
  });
  ui.rows.addEventListener('keydown', (e) => {
    const tr = e.target;
    if (!(tr instanceof HTMLTableRowElement) || !tr.classList.contains('row')) return;
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const i = view.indexOf(tr.dataset.id);
    const page = Math.max(1, Math.floor((ui.scroll.clientHeight - thead.offsetHeight) / rowH) - 1);
    switch (e.key) {
      case 'Enter':
      case ' ':
        openDetail(tr.dataset.id);
        break;
      case 'ArrowDown': focusIndex(i + 1); break;
      case 'ArrowUp': focusIndex(i - 1); break;
      case 'PageDown': focusIndex(i + page); break;
      case 'PageUp': focusIndex(i - page); break;
      case 'Home': focusIndex(0); break;
      case 'End': focusIndex(view.length - 1); break;
      default: return;
    }
    e.preventDefault();
  });
  ui.scroll.addEventListener('scroll', scheduleRender, { passive: true });
  window.addEventListener('resize', scheduleRender);

  // ---- detail view -------------------------------------------------------------
  function openDetail(id) {
    if (!devices.has(id)) return;
    if (detailId !== id) clearResult();
    detailId = id;
    detailDirty = true;
    renderDetail();
    if (!ui.detail.open) {
      ui.detail.showModal();
      // Focus the title, not the first button: the Enter (or Space) that
      // opened the view must not also press a button in it.
      ui.detailTitle.focus();
    }
    queueRefetch(id);
  }
  ui.detailClose.addEventListener('click', () => ui.detail.close());
  ui.detail.addEventListener('close', () => {
    const id = detailId;
    detailId = null;
    const tr = rowEls.get(id);
    if (tr && tr.isConnected) tr.focus();
    else ui.scroll.focus({ preventScroll: true });
  });

  function fillDl(dl, pairs) {
    const nodes = [];
    for (const [k, v] of pairs) {
      if (v === undefined || v === null || v === '') continue;
      nodes.push(h('dt', null, k));
      const dd = h('dd');
      if (v instanceof Node) dd.appendChild(v); else dd.textContent = String(v);
      nodes.push(dd);
    }
    if (!nodes.length) nodes.push(h('dt', null, 'None'), h('dd', 'muted', '—'));
    dl.replaceChildren(...nodes);
  }
  // timeEl is a <time> with the local time and how long ago; the exact
  // timestamp is its datetime and title.
  function timeEl(iso) {
    if (!iso) return '';
    const t = h('time', null, fmtTime(iso) + ' · ' + ago(iso));
    t.dateTime = iso;
    t.title = iso;
    return t;
  }
  function renderDetail() {
    detailDirty = false;
    const id = detailId;
    const d = devices.get(id);
    ui.detailTitle.textContent = 'Device ' + id;
    if (!d) {
      ui.detailStatus.replaceChildren(h('span', 'st-off', 'This device is no longer in the registry.'));
      return;
    }
    const info = d.info || {};
    const sess = d.session || null;
    const ld = d.lastDisconnect || null;
    const status = h('span', d.online ? 'st-on' : 'st-off', d.online ? 'Online' : 'Offline');
    const dot = h('span', 'dot ' + (d.online ? 'on' : 'off'));
    dot.setAttribute('aria-hidden', 'true');
    ui.detailStatus.replaceChildren(dot, status, document.createTextNode(' — ' + sinceText(d)));
    const labels = info.labels ? Object.keys(info.labels).sort().map((k) => k + '=' + info.labels[k]).join(', ') : '';
    fillDl(ui.detailInfo, [
      ['Device id', id],
      ['Hostname', info.hostname],
      ['IP addresses', (info.ipAddresses || []).join(', ')],
      ['MAC', info.mac],
      ['OS / arch', [info.os, info.arch].filter(Boolean).join(' / ')],
      ['Agent version', info.agentVersion],
      ['Labels', labels],
      ['Boot id', info.bootId],
      ['First seen', timeEl(d.firstSeen)],
    ]);
    fillDl(ui.detailSession, sess ? [
      ['Lease', sess.leaseId],
      ['Node', sess.node],
      ['Remote address', sess.remoteAddress],
      ['Connected at', timeEl(sess.connectedAt)],
      ['Last seen', timeEl(sess.lastSeen)],
      ['Last RTT', sess.lastRtt ? fmtDuration(sess.lastRtt) : ''],
      ['Liveness', livenessText(sess.livenessMode)],
    ] : [['Session', 'none (offline)']]);
    fillDl(ui.detailDisconnect, ld ? [
      ['Reason', reasonText(ld.reason) || 'unknown'],
      ['Time', timeEl(ld.time)],
      ['Lease', ld.leaseId],
      ['Node', ld.node],
      ['Message', ld.message],
      ['Restart', restartText(ld.restart)],
    ] : [['Last disconnect', 'none recorded']]);

    const list = recent.get(id) || [];
    const rows = [];
    for (let i = list.length - 1; i >= 0; i--) {
      const e = list[i];
      const tr = h('tr');
      const t = h('td', null, fmtTime(e.time));
      if (e.time) t.title = e.time;
      tr.append(t, h('td', null, eventText(e.type)), h('td', null, e.leaseId || ''),
        h('td', null, reasonText(e.reason)), h('td', null, e.node || ''));
      if (e.eventId) tr.title = 'event id ' + e.eventId;
      rows.push(tr);
    }
    ui.eventsRows.replaceChildren(...rows);
    ui.eventsEmpty.hidden = rows.length > 0;
  }

  // ---- command form --------------------------------------------------------------
  const NAME_HELP = ui.cmdNameHelp.textContent;
  const TIMEOUT_HELP = ui.cmdTimeoutHelp.textContent;
  let sending = false;

  function markInvalid(input, help, msg, normal) {
    if (msg) {
      input.setAttribute('aria-invalid', 'true');
      help.textContent = msg;
      help.classList.add('error-text');
    } else {
      input.removeAttribute('aria-invalid');
      help.textContent = normal;
      help.classList.remove('error-text');
    }
  }
  function clearResult() { ui.cmdResult.replaceChildren(); }

  ui.cmdForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (sending || !detailId) return;
    const id = detailId;
    const name = ui.cmdName.value.trim();
    const secs = Number(ui.cmdTimeout.value);
    const badName = !/^[A-Za-z0-9._-]{1,64}$/.test(name);
    const badTimeout = !Number.isInteger(secs) || secs < 1 || secs > 300;
    markInvalid(ui.cmdName, ui.cmdNameHelp, badName ? 'Enter a command name: letters, digits, “.”, “_” or “-”' : '', NAME_HELP);
    markInvalid(ui.cmdTimeout, ui.cmdTimeoutHelp, badTimeout ? 'Enter whole seconds from 1 to 300' : '', TIMEOUT_HELP);
    if (badName) { ui.cmdName.focus(); return; }
    if (badTimeout) { ui.cmdTimeout.focus(); return; }
    const raw = ui.cmdArgs.value.trim();
    const args = raw ? raw.split(/\s+/) : [];

    sending = true;
    ui.cmdSend.setAttribute('aria-disabled', 'true');
    ui.cmdSend.textContent = 'Sending…';
    ui.cmdResult.replaceChildren(h('p', 'muted', 'Running ' + name + ' on ' + id + '…'));
    try {
      const resp = await api('/v1/devices/' + encodeURIComponent(id) + ':command', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name, args, timeout: secs + 's' }),
      });
      if (detailId !== id) return;
      if (!resp.ok) showCommandError(await errorOf(resp));
      else showCommandResult(id, name, await resp.json());
    } catch (err) {
      if (detailId === id) showCommandError(err);
    } finally {
      sending = false;
      ui.cmdSend.removeAttribute('aria-disabled');
      ui.cmdSend.textContent = 'Send command';
    }
  });

  function showCommandResult(id, name, r) {
    const nodes = [];
    const head = h('p');
    head.append(h('strong', null, name + ' on ' + id + ': '), document.createTextNode('exit code ' + (r.exitCode || 0)));
    head.id = 'cmd-exit';
    nodes.push(head);
    if (r.error) nodes.push(h('p', 'error', 'Error: ' + r.error));
    nodes.push(h('p', null, 'Output' + (r.outputTruncated ? ' (truncated)' : '') + ':'));
    const pre = h('pre', null, r.output || '');
    pre.id = 'cmd-output';
    pre.tabIndex = 0;
    pre.setAttribute('aria-label', 'Command output');
    nodes.push(pre);
    const meta = [];
    if (r.leaseId) meta.push('lease ' + r.leaseId);
    if (r.node) meta.push('node ' + r.node);
    if (r.duration) meta.push('ran ' + fmtDuration(r.duration));
    if (r.completedAt) meta.push('completed ' + fmtTime(r.completedAt));
    if (r.commandId) meta.push('command id ' + r.commandId);
    nodes.push(h('p', 'muted', meta.join(' · ')));
    ui.cmdResult.replaceChildren(...nodes);
  }
  function showCommandError(err) {
    let text;
    if (err instanceof APIError) {
      text = 'HTTP ' + err.status + (err.statusText ? ' ' + err.statusText : '');
      if (typeof err.code === 'number') text += ' (code ' + err.code + (GRPC_CODES[err.code] ? ' ' + GRPC_CODES[err.code] : '') + ')';
      text += ': ' + err.message;
    } else {
      text = 'Request failed: ' + (err && err.message ? err.message : String(err));
    }
    const p = h('p', 'error', text);
    p.id = 'cmd-error';
    ui.cmdResult.replaceChildren(p);
  }

  // ---- start ------------------------------------------------------------------------
  setInterval(() => {
    tick++;
    if (detailId) detailDirty = true;
    scheduleRender();
  }, TICK_MS);
  // RTT and last-seen change without an event: re-read the rows on screen
  // (a few dozen at most) and the open detail now and then.
  setInterval(() => {
    if (document.hidden || keyWanted) return;
    for (const [id, tr] of rowEls) {
      const d = devices.get(id);
      if (d && d.online && tr.isConnected) pending.add(id);
    }
    if (detailId) pending.add(detailId);
    if (pending.size) scheduleFlush(0);
  }, REFRESH_MS);
  updateKeyButtons();
  scheduleRender();
  watchLoop().catch((e) => setConn('down', 'Stopped: ' + (e && e.message ? e.message : e)));
})();
