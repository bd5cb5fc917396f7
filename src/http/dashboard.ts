/**
 * The approvals dashboard: one self-contained page, no build step. It signs in with a token kept in
 * sessionStorage (a `#token=` fragment is read once and removed from the URL), follows /v1/events with a
 * streaming fetch (EventSource cannot send an Authorization header), and renders every value with
 * textContent, so nothing a command contains can become markup. Invisible and bidi characters in commands
 * are shown as visible escapes, because what the approver reads must be exactly what runs.
 */
const PAGE = String.raw`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>execgate — approvals</title>
<style>
  :root { --fg:#1b1f24; --muted:#57606a; --bg:#fff; --card:#f6f8fa; --line:#d0d7de; --ok:#1a7f37; --bad:#cf222e; --warn:#9a6700; --focus:#0969da; }
  * { box-sizing: border-box; }
  body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); margin: 0; }
  header { display:flex; gap:1rem; align-items:center; justify-content:space-between; padding:.75rem 1.25rem; border-bottom:1px solid var(--line); }
  header h1 { font-size:1.1rem; margin:0; }
  main { max-width: 72rem; margin: 0 auto; padding: 1rem 1.25rem 3rem; }
  section { margin-top: 1.5rem; }
  h2 { font-size: 1rem; margin: 0 0 .5rem; }
  .card { background: var(--card); border:1px solid var(--line); border-radius:8px; padding:.75rem 1rem; margin:.5rem 0; }
  code, pre, .cmd { font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; }
  .cmd { white-space: pre-wrap; word-break: break-all; background:#fff; border:1px solid var(--line); border-radius:6px; padding:.4rem .6rem; display:block; }
  .esc { background:#ffebe9; color:var(--bad); border-radius:3px; padding:0 2px; font-weight:600; }
  .meta { color: var(--muted); font-size: .85rem; }
  .row { display:flex; flex-wrap:wrap; gap:.5rem; align-items:center; margin-top:.5rem; }
  button { font: inherit; padding:.35rem .8rem; border-radius:6px; border:1px solid var(--line); background:#fff; cursor:pointer; }
  button.approve { background: var(--ok); border-color: var(--ok); color:#fff; }
  button.reject { background: var(--bad); border-color: var(--bad); color:#fff; }
  button:focus-visible, input:focus-visible, select:focus-visible { outline: 3px solid var(--focus); outline-offset: 1px; }
  input, select { font: inherit; padding:.3rem .5rem; border:1px solid var(--line); border-radius:6px; }
  table { border-collapse: collapse; width: 100%; font-size:.9rem; }
  th, td { text-align:left; padding:.35rem .5rem; border-bottom:1px solid var(--line); vertical-align: top; }
  .deny { color: var(--bad); } .ask { color: var(--warn); } .allow { color: var(--ok); }
  .empty { color: var(--muted); font-style: italic; }
  .hidden { display: none; }
  .switch { display:flex; gap:.5rem; align-items:center; }
  .sr { position:absolute; width:1px; height:1px; overflow:hidden; clip:rect(0 0 0 0); }
</style>
</head>
<body>
<header>
  <h1>execgate</h1>
  <div id="who" class="meta"></div>
  <div class="switch hidden" id="safe-wrap">
    <label for="safe-mode">Safe mode</label>
    <input type="checkbox" id="safe-mode" role="switch" aria-describedby="safe-help">
    <span id="safe-help" class="meta">on: commands the policy asks about wait for a human</span>
  </div>
  <button id="sign-out" class="hidden">Sign out</button>
</header>
<main>
  <form id="sign-in" class="card hidden" autocomplete="off">
    <h2>Sign in</h2>
    <label for="token">Token</label>
    <input id="token" type="password" size="48" required>
    <button type="submit">Sign in</button>
    <p id="sign-in-error" class="deny" role="alert"></p>
  </form>
  <div id="app" class="hidden">
    <p id="status" class="meta" role="status" aria-live="polite"></p>
    <section aria-labelledby="pending-h">
      <h2 id="pending-h">Pending approvals <span id="pending-count" class="meta"></span></h2>
      <div id="pending" aria-live="polite"></div>
    </section>
    <section aria-labelledby="exec-h">
      <h2 id="exec-h">Recent executions</h2>
      <table><thead><tr><th>When</th><th>Team</th><th>Command</th><th>Decision</th><th>Status</th><th>Exit</th><th>Duration</th><th>Approver</th></tr></thead>
      <tbody id="executions"></tbody></table>
    </section>
    <section aria-labelledby="sessions-h">
      <h2 id="sessions-h">Sessions</h2>
      <table><thead><tr><th>Started</th><th>Team</th><th>By</th><th>Image</th><th>Commands</th><th>Idle ends</th><th>Ends at</th><th></th></tr></thead>
      <tbody id="sessions"></tbody></table>
    </section>
    <section aria-labelledby="rules-h">
      <h2 id="rules-h">Remembered rules</h2>
      <div id="rules"></div>
    </section>
  </div>
</main>
<script>
(() => {
  const KEY = 'execgate.token';
  const $ = (id) => document.getElementById(id);
  const m = location.hash.match(/token=([^&]+)/);
  if (m) { sessionStorage.setItem(KEY, decodeURIComponent(m[1])); history.replaceState(null, '', location.pathname); }
  let token = sessionStorage.getItem(KEY);
  let approvals = [];
  let streamAbort = null;

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props) for (const [k, v] of Object.entries(props)) {
      if (k === 'class') e.className = v; else if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else if (v !== undefined) e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  // Every character an approver could not see, or that reorders text, becomes a visible escape.
  const INVISIBLE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb]|[\u{e0000}-\u{e0fff}]/u;
  function visible(text) {
    const frag = document.createDocumentFragment();
    let buf = '';
    for (const ch of text) {
      if (INVISIBLE.test(ch) || (ch.codePointAt(0) > 0x7e && /\p{Cf}|\p{Zs}/u.test(ch) && ch !== ' ')) {
        if (buf) { frag.append(buf); buf = ''; }
        const cp = ch.codePointAt(0).toString(16).toUpperCase().padStart(4, '0');
        frag.append(el('span', { class: 'esc', title: 'invisible character U+' + cp }, '\\u{' + cp + '}'));
      } else buf += ch;
    }
    if (buf) frag.append(buf);
    return frag;
  }

  async function api(method, path, body) {
    const res = await fetch(path, { method, headers: { authorization: 'Bearer ' + token, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
    if (res.status === 401) { signOut('That token was not accepted.'); throw new Error('unauthorized'); }
    const data = res.status === 204 ? null : await res.json();
    if (!res.ok) throw new Error((data && data.error && data.error.message) || res.statusText);
    return data;
  }

  function say(text) { $('status').replaceChildren(visible(text)); }

  function renderApprovals() {
    const box = $('pending');
    box.replaceChildren();
    const pending = approvals.filter((a) => a.status === 'pending');
    $('pending-count').textContent = '(' + pending.length + ')';
    if (pending.length === 0) { box.append(el('p', { class: 'empty' }, 'Nothing is waiting.')); return; }
    for (const a of pending) {
      const segs = el('ul');
      for (const s of a.explanation.segments || []) {
        segs.append(el('li', null, el('code', null, visible(s.canonical)), ' — ', el('span', { class: s.verdict }, s.verdict), ' ', s.code, s.rule ? ' (rule: ' + s.rule + ')' : '', s.pattern ? ' (pattern: ' + s.pattern + ')' : '', ': ', visible(s.reason)));
      }
      const scope = el('select', { 'aria-label': 'remember this approval' }, el('option', { value: '' }, 'just this once'), el('option', { value: 'exact' }, 'remember exactly this command'), el('option', { value: 'prefix' }, 'remember command + subcommand'));
      const ttl = el('select', { 'aria-label': 'remember for' }, el('option', { value: '3600000' }, 'for 1 hour'), el('option', { value: '86400000' }, 'for 1 day'), el('option', { value: '' }, 'until removed'));
      const reason = el('input', { type: 'text', placeholder: 'reason (optional)', 'aria-label': 'reason for rejecting' });
      const left = el('span', { class: 'meta countdown', 'data-expires': a.expiresAt });
      const card = el('article', { class: 'card approval', 'data-id': a.id, 'aria-label': 'approval ' + a.id },
        el('div', { class: 'cmd' }, visible(a.command)),
        el('div', { class: 'meta' }, 'team ', el('b', null, a.team), ' · cwd ', el('code', null, visible(a.cwd)), ' · by ', a.requestedBy, ' · ', left),
        Object.keys(a.env || {}).length ? el('div', { class: 'meta' }, 'env: ', el('code', null, visible(Object.entries(a.env).map(([k, v]) => k + '=' + v).join(' ')))) : null,
        a.stdin ? el('div', { class: 'meta' }, 'stdin (' + a.stdin.bytes + ' bytes, sha256 ' + a.stdin.sha256.slice(0, 16) + (a.stdin.bytes > 4096 ? ', first 4096 shown' : '') + (a.stdin.encoding === 'base64' ? ', base64' : '') + '):') : null,
        a.stdin ? el('pre', { class: 'cmd stdin' }, visible(a.stdin.preview)) : null,
        el('div', { class: 'meta' }, 'why it asks: ', visible(a.explanation.reason)),
        segs,
        el('div', { class: 'meta' }, 'plan ', el('code', null, a.planHash.slice(0, 16)), ' · policy ', el('code', null, a.explanation.policyHash)),
        el('div', { class: 'row' },
          el('button', { class: 'approve', onclick: () => decide(a, 'approve', { scope: scope.value, ttl: ttl.value }) }, 'Approve'), scope, ttl,
          el('span', { style: 'flex:1' }), reason,
          el('button', { class: 'reject', onclick: () => decide(a, 'reject', { reason: reason.value }) }, 'Reject')));
      box.append(card);
    }
    tick();
  }

  function tick() {
    for (const c of document.querySelectorAll('.countdown')) {
      const s = Math.max(0, Math.round((Date.parse(c.dataset.expires) - Date.now()) / 1000));
      c.textContent = s > 0 ? 'expires in ' + Math.floor(s / 60) + 'm ' + (s % 60) + 's' : 'expired';
    }
  }
  setInterval(tick, 1000);

  async function decide(a, action, opts) {
    try {
      if (action === 'approve') {
        const body = {};
        if (opts.scope) body.remember = { scope: opts.scope, ...(opts.ttl ? { ttlMs: Number(opts.ttl) } : {}) };
        await api('POST', '/v1/approvals/' + encodeURIComponent(a.id) + '/approve', body);
        say('Approved: ' + a.command);
      } else {
        await api('POST', '/v1/approvals/' + encodeURIComponent(a.id) + '/reject', opts.reason ? { reason: opts.reason } : {});
        say('Rejected: ' + a.command);
      }
    } catch (e) { say('Could not ' + action + ': ' + e.message); }
    refresh();
  }

  function renderExecutions(rows) {
    const body = $('executions');
    body.replaceChildren();
    if (rows.length === 0) { body.append(el('tr', null, el('td', { colspan: '8', class: 'empty' }, 'No executions yet.'))); return; }
    for (const r of rows) {
      body.append(el('tr', { 'data-id': r.id, 'data-status': r.status },
        el('td', null, new Date(r.createdAt).toLocaleTimeString()), el('td', null, r.team),
        el('td', null, el('code', null, visible(r.command.length > 120 ? r.command.slice(0, 120) + '…' : r.command))),
        el('td', { class: r.decision }, r.decision + ' (' + r.code + ')'), el('td', { class: 'status' }, r.status),
        el('td', { class: 'exit' }, r.exitCode === undefined || r.exitCode === null ? '' : String(r.exitCode)),
        el('td', null, r.durationMs === undefined ? '' : r.durationMs + ' ms'), el('td', null, r.approvedBy || '')));
    }
  }

  function renderSessions(rows) {
    const body = $('sessions');
    body.replaceChildren();
    if (rows.length === 0) { body.append(el('tr', null, el('td', { colspan: '8', class: 'empty' }, 'No open sessions.'))); return; }
    for (const s of rows) {
      const idle = new Date(Date.parse(s.lastUsedAt) + s.idleTimeoutMs);
      body.append(el('tr', { 'data-id': s.id },
        el('td', null, new Date(s.createdAt).toLocaleTimeString()), el('td', null, s.team), el('td', null, s.createdBy),
        el('td', null, el('code', null, visible(s.image))), el('td', null, String(s.commands) + (s.busy ? ' (running)' : '')),
        el('td', null, s.busy ? '—' : idle.toLocaleTimeString()), el('td', null, new Date(s.expiresAt).toLocaleTimeString()),
        el('td', null, el('button', { class: 'end-session', 'aria-label': 'End session ' + s.id, onclick: async () => {
          try { await api('DELETE', '/v1/sessions/' + encodeURIComponent(s.id)); say('Ended session ' + s.id); } catch (e) { say('Could not end the session: ' + e.message); }
          refresh();
        } }, 'End'))));
    }
  }

  function renderRules(rules) {
    const box = $('rules');
    box.replaceChildren();
    if (rules.length === 0) { box.append(el('p', { class: 'empty' }, 'No remembered rules.')); return; }
    for (const r of rules) {
      box.append(el('div', { class: 'card row' }, el('code', null, visible(r.command)), el('span', { class: 'meta' }, r.scope + ' · team ' + r.team + ' · ' + (r.expiresAt ? 'until ' + new Date(r.expiresAt).toLocaleString() : 'until removed') + ' · by ' + r.createdBy),
        el('button', { onclick: async () => { try { await api('DELETE', '/v1/rules/remembered/' + encodeURIComponent(r.id)); say('Removed rule for ' + r.command); } catch (e) { say(e.message); } refresh(); } }, 'Remove')));
    }
  }

  async function refresh() {
    try {
      const [a, ex] = await Promise.all([api('GET', '/v1/approvals?status=pending'), api('GET', '/v1/executions?limit=25')]);
      approvals = a.approvals; renderApprovals(); renderExecutions(ex.executions);
      api('GET', '/v1/rules/remembered').then((r) => renderRules(r.rules), () => {});
      api('GET', '/v1/sessions').then((r) => renderSessions(r.sessions), () => {});
      api('GET', '/v1/safe-mode').then((s) => { $('safe-wrap').classList.remove('hidden'); $('safe-mode').checked = s.enabled; }, () => {});
    } catch (e) { if (e.message !== 'unauthorized') say('Could not load: ' + e.message); }
  }

  async function follow() {
    streamAbort = new AbortController();
    for (;;) {
      try {
        const res = await fetch('/v1/events', { headers: { authorization: 'Bearer ' + token }, signal: streamAbort.signal });
        if (!res.ok) throw new Error('events: ' + res.status);
        const reader = res.body.getReader();
        const dec = new TextDecoder();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const chunk = buf.slice(0, i); buf = buf.slice(i + 2);
            const data = chunk.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
            if (!data) continue;
            const ev = JSON.parse(data);
            if (ev.type === 'approval_created') say('New approval request: ' + ev.approval.command);
            refresh();
          }
        }
      } catch (e) { if (streamAbort.signal.aborted) return; }
      await new Promise((r) => setTimeout(r, 2000));
    }
  }

  $('safe-mode').addEventListener('change', async (e) => {
    try { const s = await api('PUT', '/v1/safe-mode', { enabled: e.target.checked }); say('Safe mode ' + (s.enabled ? 'on' : 'off') + ' for team ' + s.team); }
    catch (err) { say('Could not switch safe mode: ' + err.message); e.target.checked = !e.target.checked; }
  });

  function signOut(msg) {
    sessionStorage.removeItem(KEY); token = null; if (streamAbort) streamAbort.abort();
    $('app').classList.add('hidden'); $('sign-out').classList.add('hidden'); $('safe-wrap').classList.add('hidden');
    $('sign-in').classList.remove('hidden'); $('sign-in-error').textContent = msg || ''; $('who').textContent = '';
    $('token').focus();
  }
  $('sign-out').addEventListener('click', () => signOut());
  $('sign-in').addEventListener('submit', (e) => { e.preventDefault(); token = $('token').value.trim(); sessionStorage.setItem(KEY, token); $('token').value = ''; start(); });

  function start() {
    if (!token) return signOut();
    $('sign-in').classList.add('hidden'); $('app').classList.remove('hidden'); $('sign-out').classList.remove('hidden');
    $('who').textContent = 'signed in';
    refresh(); follow();
  }
  start();
})();
</script>
</body>
</html>`;

export function dashboardHtml(): string {
  return PAGE;
}
