// Tether devices page: the Jobs panel. Plain JavaScript, no build step,
// kept apart from app.js. It uses only the public JSON API:
//   POST /v1/jobs                  run a command on the devices of the current label filter
//   GET  /v1/jobs?pageSize=10      the newest jobs and their progress (polled while open)
//   POST /v1/jobs/{id}:cancel      stop a running job
// The API key, if any, is the one app.js keeps in sessionStorage.
'use strict';

(function () {
  const POLL_MS = 2000;
  const KEY_STORAGE = 'tether.apiKey';
  const $ = (id) => document.getElementById(id);
  const ui = {
    panel: $('jobs'), form: $('job-form'), name: $('job-name'), args: $('job-args'),
    rate: $('job-rate'), target: $('job-target'), create: $('job-create'),
    msg: $('job-msg'), rows: $('job-rows'), empty: $('jobs-empty'), labels: $('f-labels'),
  };
  if (!ui.panel) return;
  let timer = 0;

  function key() {
    try { return sessionStorage.getItem(KEY_STORAGE) || ''; } catch (e) { return ''; }
  }
  async function api(path, init) {
    init = init || {};
    const headers = new Headers(init.headers || {});
    const k = key();
    if (k) headers.set('Authorization', 'Bearer ' + k);
    if (init.body) headers.set('Content-Type', 'application/json');
    const resp = await fetch(path, Object.assign({}, init, { headers }));
    let body = null;
    try { body = await resp.json(); } catch (e) { /* not JSON */ }
    if (!resp.ok) {
      const m = body && body.message ? body.message : resp.status + ' ' + resp.statusText;
      const err = new Error(resp.status === 401 ? 'an API key is needed (Enter API key, above)' :
        resp.status === 403 ? 'this API key may not run jobs (operator role needed): ' + m : m);
      err.status = resp.status;
      throw err;
    }
    return body;
  }
  function h(tag, cls, text) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = text;
    return n;
  }
  function say(text, isError) {
    ui.msg.textContent = text;
    ui.msg.classList.toggle('error-text', !!isError);
  }
  function selector() { return ui.labels ? ui.labels.value.trim() : ''; }
  function showTarget() {
    const s = selector();
    ui.target.textContent = s ? 'Target: devices matching ' + s + ' (offline ones are skipped)' :
      'Set a label selector in the filter above to choose the devices.';
    ui.create.disabled = !s;
  }
  const SHORT = {
    JOB_STATE_RUNNING: 'Running', JOB_STATE_DONE: 'Done', JOB_STATE_CANCELLED: 'Cancelled',
  };
  function progress(j) {
    const p = j.progress || {};
    const parts = [p.succeeded + ' ok'];
    if (p.failed) parts.push(p.failed + ' failed');
    if (p.skippedOffline) parts.push(p.skippedOffline + ' offline');
    if (p.unknown) parts.push(p.unknown + ' unknown');
    if (p.pending || p.dispatched) parts.push((p.pending + p.dispatched) + ' to go');
    return parts.join(' · ') + ' of ' + j.total;
  }
  function render(jobs) {
    ui.rows.replaceChildren();
    ui.empty.hidden = jobs.length > 0;
    for (const j of jobs) {
      const tr = h('tr');
      tr.dataset.id = j.jobId;
      tr.dataset.state = j.state;
      tr.append(h('td', 'mono', j.jobId));
      const spec = j.spec || {};
      tr.append(h('td', 'mono', [spec.name].concat(spec.args || []).join(' ')));
      tr.append(h('td', 'mono', (spec.target && spec.target.labelSelector) || (spec.target && (spec.target.deviceIds || []).join(',')) || ''));
      tr.append(h('td', 'job-state', SHORT[j.state] || j.state));
      const bar = h('td', 'job-progress');
      const total = Math.max(1, j.total);
      const p = j.progress || {};
      const done = total - (p.pending || 0) - (p.dispatched || 0);
      const meter = h('progress');
      meter.max = total;
      meter.value = done;
      meter.setAttribute('aria-label', 'Job ' + j.jobId + ' progress');
      bar.append(meter, h('span', 'job-counts', progress(j)));
      tr.append(bar);
      const act = h('td');
      if (j.state === 'JOB_STATE_RUNNING') {
        const b = h('button', 'secondary', 'Cancel');
        b.type = 'button';
        b.setAttribute('aria-label', 'Cancel job ' + j.jobId);
        b.addEventListener('click', () => cancel(j.jobId, b));
        act.append(b);
      }
      tr.append(act);
      ui.rows.append(tr);
    }
  }
  async function refresh() {
    try {
      const r = await api('/v1/jobs?pageSize=10');
      render(r.jobs || []);
    } catch (e) {
      say('Jobs: ' + e.message, true);
    }
  }
  function schedule() {
    clearTimeout(timer);
    if (!ui.panel.open || document.hidden) return;
    timer = setTimeout(async () => { await refresh(); schedule(); }, POLL_MS);
  }
  async function cancel(id, button) {
    button.disabled = true;
    try {
      await api('/v1/jobs/' + encodeURIComponent(id) + ':cancel', { method: 'POST', body: '{}' });
      say('Job ' + id + ' cancelled.', false);
    } catch (e) {
      say('Cancel failed: ' + e.message, true);
      button.disabled = false;
    }
    refresh();
  }
  ui.form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const s = selector();
    if (!s) { showTarget(); return; }
    const spec = {
      name: ui.name.value.trim(),
      args: ui.args.value.trim() ? ui.args.value.trim().split(/\s+/) : [],
      target: { labelSelector: s },
      rate: Number(ui.rate.value) || 0,
    };
    ui.create.disabled = true;
    say('Creating the job…', false);
    try {
      const r = await api('/v1/jobs', { method: 'POST', body: JSON.stringify(spec) });
      say('Job ' + r.job.jobId + ' started on ' + r.job.total + ' devices.', false);
    } catch (e) {
      say('Job not created: ' + e.message, true);
    }
    showTarget();
    await refresh();
    schedule();
  });
  if (ui.labels) ui.labels.addEventListener('input', showTarget);
  ui.panel.addEventListener('toggle', () => { if (ui.panel.open) { showTarget(); refresh(); } schedule(); });
  document.addEventListener('visibilitychange', schedule);
  showTarget();
})();
