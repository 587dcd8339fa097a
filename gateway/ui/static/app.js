// Tether devices page. Plain JavaScript, no build step, no dependencies.
// It uses only the public JSON API, with relative URLs:
//   GET  /v1/devices:watch?include_snapshot=true | ?after_event_id=ID  (NDJSON)
//   GET  /v1/devices/{id}          re-fetch a device after an event
//   GET  /v1/devices?page_size=…    re-list everything after a large burst
//   POST /v1/devices/{id}:command  the command form
//   GET  /v1/devices/{id}/history  the session history in the detail view
//   GET  /v1/inventory?label_key=K, GET /v1/nodes   the inventory summary
// Filters, sorting, the inventory's label key and the open device live in
// the URL's query, so a reload (or a shared link) shows the same view.
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
  const INVENTORY_MS = 60000;       // re-read of the inventory summary

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
    cmdSend: $('cmd-send'), cmdResult: $('cmd-result'), cmdFields: $('cmd-fields'), cmdOffline: $('cmd-offline'),
    cmdArgsHelp: $('cmd-args-help'),
    historyRows: $('history-rows'), historyEmpty: $('history-empty'),
    inventory: $('inventory'), invCounts: $('inv-counts'), invKey: $('inv-key'),
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
  let neverCount = 0;
  const filter = { presence: 'all', labels: [], idText: '' };
  let listLoaded = false;           // a snapshot has completed at least once
  let rowH = 38;                    // measured after the first render
  let rowEls = new Map();           // id -> <tr> currently rendered
  const rowState = new WeakMap();   // <tr> -> {d, tick}
  let tick = 0;
  let detailId = null;
  let detailDirty = false;
  const sort = { col: 'id', desc: false };
  let wantDetail = '';              // ?device= from the URL, opened once the device is known

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
  function stateOf(d) {
    if (d.online) return 'online';
    if (d.state === 'DEVICE_STATE_NEVER_CONNECTED') return 'never';
    return 'offline';
  }
  const STATE_TEXT = { online: 'Online', offline: 'Offline', never: 'Never connected' };
  function labelsText(info) {
    const l = (info && info.labels) || {};
    return Object.keys(l).sort().map((k) => k + '=' + l[k]).join(', ');
  }
  function lastSeenOf(d) {
    if (d.online) return (d.session && (d.session.lastSeen || d.session.connectedAt)) || '';
    return (d.lastDisconnect && d.lastDisconnect.time) || '';
  }
  function nodeOf(d) { return d.online && d.session ? d.session.node || '' : ''; }
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
    loadInventory();
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
        if (wantDetail) {
          const id = wantDetail;
          if (devices.has(id) && !detailId) openDetail(id); else if (!devices.has(id)) { wantDetail = ''; writeURL(); }
        }
        return;
      default:
        if (ev.eventId) lastEventId = ev.eventId;
        if (!ev.deviceId) return;
        recordEvent(ev.deviceId, ev);
        applyEvent(ev);
        queueRefetch(ev.deviceId);
        if (ev.deviceId === detailId && (ev.type === 'EVENT_TYPE_OFFLINE' || ev.type === 'EVENT_TYPE_REPLACED' || ev.type === 'EVENT_TYPE_ONLINE')) loadHistorySoon(ev.deviceId);
        inventoryStale = true;
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
    if (filter.presence === 'never' && stateOf(d) !== 'never') return false;
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
    writeURL();
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

  // ---- the URL: filters, sort, inventory key and open device ---------------
  const PRESENCES = ['all', 'online', 'offline', 'never'];
  function writeURL() {
    const p = new URLSearchParams();
    if (filter.presence !== 'all') p.set('presence', filter.presence);
    if (ui.labels.value.trim()) p.set('labels', ui.labels.value.trim());
    if (ui.idText.value.trim()) p.set('q', ui.idText.value.trim());
    if (sort.col !== 'id' || sort.desc) p.set('sort', (sort.desc ? '-' : '') + sort.col);
    if (invKey) p.set('group', invKey);
    const dev = detailId || wantDetail;
    if (dev) p.set('device', dev);
    const qs = p.toString();
    const url = location.pathname + (qs ? '?' + qs : '') + location.hash;
    if (url !== location.pathname + location.search + location.hash) history.replaceState(null, '', url);
  }
  function readURL() {
    const p = new URLSearchParams(location.search);
    const pres = p.get('presence') || 'all';
    if (PRESENCES.includes(pres)) { filter.presence = pres; ui.presence.value = pres; }
    const labels = (p.get('labels') || '').slice(0, 1024);
    const sel = parseSelector(labels);
    if (labels && sel !== null) { ui.labels.value = labels; filter.labels = sel; }
    const q = (p.get('q') || '').slice(0, 64);
    if (q) { ui.idText.value = q; filter.idText = q.toLowerCase(); }
    const so = p.get('sort') || '';
    const col = so.replace(/^-/, '');
    if (SORT_KEYS[col]) { sort.col = col; sort.desc = so.startsWith('-'); }
    const g = (p.get('group') || '').slice(0, 128);
    if (g) { invKey = g; ui.invKey.value = g; }
    const dev = p.get('device') || '';
    if (/^[A-Za-z0-9._-]{1,64}$/.test(dev)) wantDetail = dev;
  }

  // ---- sorting ---------------------------------------------------------------
  // Numeric-aware: dev-2 sorts before dev-10. Empty values sort last in
  // either direction; ties are broken by device id.
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });
  const STATE_RANK = { online: 0, offline: 1, never: 2 };
  const timeKey = (iso) => { const t = Date.parse(iso || ''); return isNaN(t) ? null : t; };
  const SORT_KEYS = {
    id: (d) => d.deviceId,
    status: (d) => STATE_RANK[stateOf(d)],
    host: (d) => (d.info && d.info.hostname) || null,
    ip: (d) => (d.info && d.info.ipAddresses && d.info.ipAddresses[0]) || null,
    agent: (d) => (d.info && d.info.agentVersion) || null,
    liveness: (d) => (d.online && d.session && d.session.livenessMode) || null,
    since: (d) => timeKey(d.online ? d.session && d.session.connectedAt : d.lastDisconnect && d.lastDisconnect.time),
    rtt: (d) => { const v = d.online && d.session && parseFloat(d.session.lastRtt); return v || v === 0 ? v : null; },
    labels: (d) => labelsText(d.info) || null,
    node: (d) => nodeOf(d) || null,
    seen: (d) => timeKey(lastSeenOf(d)),
  };
  function compareKeys(a, b) {
    if (a === b) return 0;
    if (a === null || a === undefined) return 1;
    if (b === null || b === undefined) return -1;
    if (typeof a === 'number' && typeof b === 'number') return a - b;
    return collator.compare(String(a), String(b));
  }
  function sortView(ids) {
    if (sort.col === 'id') {
      if (sort.desc) ids.reverse();
      return ids;
    }
    const key = SORT_KEYS[sort.col];
    const keyed = ids.map((id) => [key(devices.get(id)), id]);
    const dir = sort.desc ? -1 : 1;
    keyed.sort((x, y) => {
      const nx = x[0] === null || x[0] === undefined, ny = y[0] === null || y[0] === undefined;
      if (nx !== ny) return nx ? 1 : -1;
      return dir * compareKeys(x[0], y[0]) || collator.compare(x[1], y[1]);
    });
    return keyed.map((k) => k[1]);
  }
  function renderSortHeaders() {
    for (const th of thead.querySelectorAll('th[data-col]')) {
      if (th.dataset.col === sort.col) th.setAttribute('aria-sort', sort.desc ? 'descending' : 'ascending');
      else th.removeAttribute('aria-sort');
    }
    const name = thead.querySelector('th[data-col="' + sort.col + '"]').textContent.trim();
    $('devices-caption').textContent = 'Devices, sorted by ' + name.toLowerCase() + (sort.desc ? ', descending' : '') +
      '. Press a column header to sort by it; press Enter on a row for its details.';
  }
  thead.addEventListener('click', (e) => {
    const th = e.target.closest('th[data-col]');
    if (!th) return;
    const col = th.dataset.col;
    if (sort.col === col) sort.desc = !sort.desc; else { sort.col = col; sort.desc = false; }
    renderSortHeaders();
    viewDirty = true;
    writeURL();
    scheduleRender();
  });

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
      sortedIds = Array.from(devices.keys()).sort(collator.compare);
      idsDirty = false;
      viewDirty = true;
    }
    if (viewDirty) {
      viewDirty = false;
      onlineCount = 0;
      neverCount = 0;
      view = [];
      for (const id of sortedIds) {
        const d = devices.get(id);
        if (d.online) onlineCount++;
        else if (stateOf(d) === 'never') neverCount++;
        if (matches(d)) view.push(id);
      }
      view = sortView(view);
      renderSummary();
    }
    renderRows();
    if (detailDirty && detailId) renderDetail();
  }
  function renderSummary() {
    const total = devices.size;
    let s = total + (total === 1 ? ' device' : ' devices') + ' · ' + onlineCount + ' online · ' + (total - onlineCount - neverCount) + ' offline';
    if (neverCount) s += ' · ' + neverCount + ' never connected';
    if (view.length !== total) s += ' · ' + view.length + ' shown';
    ui.summary.textContent = s;
  }

  const topSpacer = spacer();
  const bottomSpacer = spacer();
  function spacer() {
    const tr = h('tr', 'spacer');
    tr.setAttribute('aria-hidden', 'true');
    const td = h('td');
    td.colSpan = 11;
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
    for (let i = 0; i < 9; i++) tr.appendChild(h('td'));
    tr.children[7].className = 'num';
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
    if (stateOf(d) === 'never') return 'Never connected (pre-registered)';
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
    const state = stateOf(d);
    st.firstChild.className = 'dot ' + (state === 'online' ? 'on' : state === 'never' ? 'never' : 'off');
    st.lastChild.className = state === 'online' ? 'st-on' : state === 'never' ? 'st-never' : 'st-off';
    setText(st.lastChild, STATE_TEXT[state]);
    setText(c[2], info.hostname || '—', info.hostname || '');
    setText(c[3], (info.ipAddresses && info.ipAddresses[0]) || '—', (info.ipAddresses || []).join(', '));
    setText(c[4], info.agentVersion || '—', info.agentVersion || '');
    setText(c[5], d.online ? livenessText(sess.livenessMode) : '—');
    const since = sinceText(d);
    const iso = d.online ? sess.connectedAt : d.lastDisconnect && d.lastDisconnect.time;
    setText(c[6], since, iso ? since + ' — ' + iso : since);
    setText(c[7], d.online ? fmtDuration(sess.lastRtt) : '—');
    const labels = labelsText(info);
    setText(c[8], labels || '—', labels);
    setText(c[9], nodeOf(d) || '—');
    const seen = lastSeenOf(d);
    setText(c[10], seen ? fmtTime(seen) + ' · ' + ago(seen) : '—', seen);
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
    wantDetail = '';
    writeURL();
    queueRefetch(id);
    loadHistory(id);
  }
  ui.detailClose.addEventListener('click', () => ui.detail.close());
  ui.detail.addEventListener('close', () => {
    const id = detailId;
    detailId = null;
    writeURL();
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
    const state = stateOf(d);
    const status = h('span', d.online ? 'st-on' : 'st-off', STATE_TEXT[state]);
    const dot = h('span', 'dot ' + (d.online ? 'on' : state === 'never' ? 'never' : 'off'));
    dot.setAttribute('aria-hidden', 'true');
    ui.detailStatus.replaceChildren(dot, status, document.createTextNode(' — ' + sinceText(d)));
    const labels = labelsText(info);
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
    renderCommandForm(d);
  }

  // ---- session history (GET /v1/devices/{id}/history) ---------------------------
  let historyFor = '';
  let historyTimer = 0;
  function loadHistorySoon(id) {
    clearTimeout(historyTimer);
    historyTimer = setTimeout(() => loadHistory(id), REFETCH_DELAY_MS);
  }
  async function loadHistory(id) {
    if (historyFor !== id) { historyFor = id; ui.historyRows.replaceChildren(); ui.historyEmpty.textContent = 'Loading the session history…'; ui.historyEmpty.hidden = false; }
    let r;
    try {
      r = await getJSON('/v1/devices/' + encodeURIComponent(id) + '/history');
    } catch (e) {
      if (detailId === id) ui.historyEmpty.textContent = 'The session history could not be read: ' + (e && e.message ? e.message : e);
      return;
    }
    if (detailId !== id) return;
    const rows = [];
    for (const s of r.sessions || []) {
      const tr = h('tr');
      const ended = h('td', null, fmtTime(s.endedAt));
      if (s.endedAt) ended.title = s.endedAt;
      const conn = h('td', null, fmtTime(s.connectedAt));
      if (s.connectedAt) conn.title = s.connectedAt;
      const reason = h('td', null, reasonText(s.reason) || 'unknown');
      if (s.message) reason.title = s.message;
      tr.append(ended, conn, reason, h('td', null, restartText(s.restart) || '—'), h('td', null, s.leaseId || ''),
        h('td', null, s.node || ''), h('td', null, fmtDuration(s.lastRtt)));
      rows.push(tr);
    }
    ui.historyRows.replaceChildren(...rows);
    ui.historyEmpty.textContent = 'No ended sessions recorded.';
    ui.historyEmpty.hidden = rows.length > 0;
  }

  // ---- the command form offers the device's allow-list ----------------------------
  // info.commands: [{name, usage, maxArgs, timeout}] as the agent reports it;
  // an agent that reports none has at least the built-ins echo and info.
  const BUILTINS = [{ name: 'echo', usage: '<text>...', maxArgs: 64 }, { name: 'info', maxArgs: 0 }];
  let cmdSpecs = BUILTINS;
  let cmdSig = '';
  function renderCommandForm(d) {
    const reported = d.info && Array.isArray(d.info.commands) && d.info.commands.length ? d.info.commands : null;
    const specs = reported || BUILTINS;
    const sig = JSON.stringify(specs);
    if (sig !== cmdSig) {
      cmdSig = sig;
      cmdSpecs = specs;
      const keep = ui.cmdName.value;
      ui.cmdName.replaceChildren(...specs.map((c) => {
        const o = h('option', null, c.name + (c.usage ? ' ' + c.usage : ''));
        o.value = c.name;
        return o;
      }));
      if (specs.some((c) => c.name === keep)) ui.cmdName.value = keep;
      ui.cmdNameHelp.textContent = reported ? 'the device\u2019s allow-list (' + specs.length + ')' : 'built-ins (the agent did not report its allow-list)';
      commandChosen();
    }
    const online = !!d.online;
    ui.cmdFields.disabled = !online;
    ui.cmdOffline.hidden = online;
  }
  function specOf(name) { return cmdSpecs.find((c) => c.name === name) || null; }
  function commandChosen() {
    const c = specOf(ui.cmdName.value);
    const max = c && typeof c.maxArgs === 'number' ? c.maxArgs : 64;
    ui.cmdArgs.disabled = max === 0;
    ui.cmdArgs.placeholder = c && c.usage ? c.usage : '';
    ARGS_HELP = max === 0 ? 'this command takes no arguments' : 'space-separated, at most ' + max + '; no shell';
    markInvalid(ui.cmdArgs, ui.cmdArgsHelp, '', ARGS_HELP);
  }
  ui.cmdName.addEventListener('change', commandChosen);

  // ---- command form --------------------------------------------------------------
  let ARGS_HELP = ui.cmdArgsHelp.textContent;
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
    const d = devices.get(id);
    if (!d || !d.online) return;
    const name = ui.cmdName.value;
    const spec = specOf(name);
    const secs = Number(ui.cmdTimeout.value);
    const badTimeout = !Number.isInteger(secs) || secs < 1 || secs > 300;
    const raw = ui.cmdArgs.disabled ? '' : ui.cmdArgs.value.trim();
    const args = raw ? raw.split(/\s+/) : [];
    const max = spec && typeof spec.maxArgs === 'number' ? spec.maxArgs : 64;
    const badArgs = args.length > max;
    markInvalid(ui.cmdArgs, ui.cmdArgsHelp, badArgs ? name + ' takes at most ' + max + ' argument' + (max === 1 ? '' : 's') : '', ARGS_HELP);
    markInvalid(ui.cmdTimeout, ui.cmdTimeoutHelp, badTimeout ? 'Enter whole seconds from 1 to 300' : '', TIMEOUT_HELP);
    if (!spec) { ui.cmdName.focus(); return; }
    if (badArgs) { ui.cmdArgs.focus(); return; }
    if (badTimeout) { ui.cmdTimeout.focus(); return; }

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

  // ---- inventory summary (GET /v1/inventory, GET /v1/nodes) -------------------------
  let invKey = '';
  let inventoryStale = true;
  let invTimer = 0;
  function countsText(list, suffix) {
    return (list || []).slice(0, 8).map((c) => c.value + ' ' + c.count + (suffix || '')).join(', ') + ((list || []).length > 8 ? ', …' : '');
  }
  let invSeq = 0;
  async function loadInventory() {
    if (keyWanted) return;
    inventoryStale = false;
    const seq = ++invSeq;
    let inv, nodes;
    try {
      [inv, nodes] = await Promise.all([
        getJSON('/v1/inventory' + (invKey ? '?label_key=' + encodeURIComponent(invKey) : '')),
        getJSON('/v1/nodes'),
      ]);
    } catch (e) {
      if (e instanceof APIError && (e.status === 404 || e.status === 501)) { ui.inventory.hidden = true; return; }
      inventoryStale = true;
      return;
    }
    if (seq !== invSeq) return; // a newer request (another label key) answers
    const n = (v) => String(Number(v || 0));
    const pairs = [
      ['Devices', n(inv.total)], ['Online', n(inv.online)], ['Offline', n(inv.offline)], ['Never connected', n(inv.neverConnected)],
      ['Agent versions', countsText(inv.byAgentVersion) || '—'], ['OS', countsText(inv.byOs) || '—'],
      ['Nodes', (nodes.nodes || []).map((x) => x.name + ' (' + n(x.sessions) + ' sessions, ' + (x.alive ? 'alive' : 'not renewing') + ')').join(', ') || '—'],
    ];
    if (inv.labelKey) pairs.push(['By ' + inv.labelKey, countsText(inv.byLabel) || '—']);
    const kids = [];
    for (const [k, v] of pairs) {
      const div = h('div');
      div.dataset.k = k;
      div.append(h('dt', null, k + ':'), h('dd', null, v));
      kids.push(div);
    }
    ui.invCounts.replaceChildren(...kids);
    if (inv.computedAt) ui.invCounts.title = 'counted at ' + inv.computedAt;
    ui.inventory.hidden = false;
  }
  ui.invKey.addEventListener('input', () => {
    clearTimeout(invTimer);
    invTimer = setTimeout(() => {
      invKey = ui.invKey.value.trim();
      writeURL();
      loadInventory();
    }, 300);
  });

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
  // The inventory: at start, then every INVENTORY_MS while events arrive
  // (the server reuses its counts for 30 s).
  setInterval(() => {
    if (!document.hidden && inventoryStale) loadInventory();
  }, INVENTORY_MS);
  readURL();
  renderSortHeaders();
  updateKeyButtons();
  scheduleRender();
  loadInventory();
  watchLoop().catch((e) => setConn('down', 'Stopped: ' + (e && e.message ? e.message : e)));
})();
