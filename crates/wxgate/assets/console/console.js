// The wxgate console's one script: fills the server-rendered pages from the JSON API.
// No framework and no build step. Text from the API (which includes what followers
// wrote) is only ever set with textContent, never parsed as HTML.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

// Creates an element: el("td", {class: "x"}, "text", otherNode).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function api(path, options) {
  const init = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
  if (init.method === "POST") {
    init.headers["Content-Type"] = "application/json";
    init.headers["X-CSRF-Token"] = csrf;
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    location.href = "/console/login";
    throw new Error("logged out");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || "HTTP " + response.status);
  return body;
}

function time(ms) {
  const d = new Date(ms);
  const pad = (n, w) => String(n).padStart(w || 2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function pre(text, label) {
  return el("pre", { tabindex: 0, "aria-label": label }, text === undefined || text === null ? "(none)" : text);
}

function section(title, ...children) {
  return el("section", { class: "card" }, el("h2", {}, title), ...children);
}

function showError(target, error) {
  target.replaceChildren(el("p", { class: "error", role: "alert" }, error.message || String(error)));
}

// ---------------------------------------------------------------------------------------
// Log out (every page).

document.getElementById("logout")?.addEventListener("click", async () => {
  await fetch("/console/logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf } });
  location.href = "/console/login";
});

// ---------------------------------------------------------------------------------------
// The debugger.

function debuggerPage() {
  const form = document.getElementById("sim");
  const result = document.getElementById("result");
  const kind = document.getElementById("f-kind");

  function showKind() {
    for (const set of form.querySelectorAll("fieldset.kind")) {
      const on = set.dataset.kind === kind.value;
      set.hidden = !on;
      for (const input of set.querySelectorAll("input, textarea, select")) input.disabled = !on;
    }
  }
  function showTarget() {
    const target = form.querySelector('input[name="target"]:checked').value;
    for (const block of form.querySelectorAll("[data-target]")) {
      block.hidden = block.dataset.target !== target;
      for (const input of block.querySelectorAll("input, select")) input.disabled = block.hidden;
    }
  }
  kind.addEventListener("change", showKind);
  for (const radio of form.querySelectorAll('input[name="target"]')) radio.addEventListener("change", showTarget);
  showKind();
  showTarget();

  // The JSON of POST /console/api/sim/send: the CLI's field names, only those filled in.
  function request() {
    const body = {};
    for (const input of form.querySelectorAll("input, textarea, select")) {
      if (input.disabled || !input.name || input.type === "radio" || input.type === "checkbox") continue;
      if (input.name === "kind" || input.value.trim() === "") continue;
      body[input.name] = input.value;
    }
    if (kind.value !== "xml") body.kind = kind.value;
    body.retries = document.getElementById("f-retry").checked ? "3" : "0";
    return body;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = document.getElementById("send");
    button.disabled = true;
    result.replaceChildren(el("p", { class: "hint" }, "发送中 Sending…"));
    try {
      renderReport(result, await api("/console/api/sim/send", { method: "POST", body: JSON.stringify(request()) }));
    } catch (error) {
      showError(result, error);
    } finally {
      button.disabled = false;
    }
  });

  document.getElementById("verify").addEventListener("click", async () => {
    const body = {};
    const target = form.querySelector('input[name="target"]:checked').value;
    if (target === "account") body.account = document.getElementById("f-account").value;
    else {
      body.url = document.getElementById("f-url").value;
      body.token = document.getElementById("f-token").value;
    }
    result.replaceChildren(el("p", { class: "hint" }, "验证中 Verifying…"));
    try {
      const report = await api("/console/api/sim/verify", { method: "POST", body: JSON.stringify(body) });
      result.replaceChildren(
        el("div", { class: "verdict " + (report.ok ? "ok" : "fail"), id: "verdict" }, report.verdict),
        section("GET", pre(report.url, "URL"), el("p", {}, `HTTP ${report.status ?? "—"} in ${report.latency_ms} ms`),
          pre(report.response, "Response")));
    } catch (error) {
      showError(result, error);
    }
  });
}

function renderReport(target, report) {
  const o = report.outcome;
  const verdict = el("div", { class: "verdict " + (o.ok ? "ok" : "fail"), id: "verdict" },
    el("strong", {}, o.ok ? "OK · 用户看到 the follower sees: " : "FAILED · 用户看到 the follower sees: "),
    el("span", { class: "sees" }, o.follower_sees),
    o.reason ? el("div", { class: "reason" }, "because " + o.reason) : null,
    el("div", { class: "hint" }, `${o.attempts} attempt${o.attempts === 1 ? "" : "s"} · verdict ${o.verdict}`));
  const r = report.request;
  const requestCard = section("请求 Request",
    el("p", {}, `${r.method} · ${r.mode} · ${r.kind}`),
    pre(r.url, "URL"),
    el("h3", {}, "Query"), pre(r.query.split("&").join("\n"), "Query"),
    r.encrypted ? el("h3", {}, "明文 Message (before encryption)") : null,
    r.encrypted ? pre(r.plaintext, "Plaintext") : null,
    el("h3", {}, "Body (as sent)"), pre(r.body, "Body"));
  const attempts = report.attempts.map((a) => section(
    `第 ${a.attempt} 次 Attempt ${a.attempt} · +${Math.round(a.sent_at_ms)} ms`,
    el("p", {}, a.result === "answered" ? `HTTP ${a.status} in ${a.latency_ms} ms` :
      a.result === "timeout" ? `no answer within ${a.latency_ms} ms` : `connection failed after ${a.latency_ms} ms`),
    a.response !== undefined ? el("h3", {}, "Response body") : null,
    a.response !== undefined ? pre(a.response, "Response body") : null,
    a.decrypted ? el("h3", {}, "解密后的回复 Decrypted reply") : null,
    a.decrypted ? pre(a.decrypted, "Decrypted reply") : null,
    a.verdict ? el("p", {}, "read as: " + a.verdict) : null,
    a.problem ? el("p", { class: "error" }, a.problem) : null,
    a.retried ? el("p", { class: "hint" }, "→ WeChat re-sends the identical request") : null));
  target.replaceChildren(verdict, ...attempts, requestCard);
}

// ---------------------------------------------------------------------------------------
// The inbox.

function inboxPage() {
  const form = document.getElementById("filters");
  const body = document.querySelector("#messages tbody");
  const more = document.getElementById("more");
  const live = document.getElementById("live");
  let next = null;

  function query(cursor) {
    const params = new URLSearchParams();
    for (const input of form.querySelectorAll("input, select")) {
      if (!input.value) continue;
      if (input.type === "datetime-local") params.set(input.name, String(new Date(input.value).getTime()));
      else params.set(input.name, input.value);
    }
    params.set("limit", "50");
    if (cursor) params.set("cursor", cursor);
    return "/console/api/messages?" + params;
  }

  function rowOf(m) {
    const href = "/console/message?" + new URLSearchParams({ account: m.account, key: m.dedup_key });
    return el("tr", { class: "answer-" + m.answer },
      el("td", {}, el("a", { href }, time(m.received_at_ms))),
      el("td", {}, m.account),
      el("td", {}, m.kind),
      el("td", { class: "mono" }, m.sender),
      el("td", { class: "summary" }, m.summary),
      el("td", { class: "num" }, m.attempts),
      el("td", {}, el("span", { class: "badge answer" }, m.answer + (m.answer_attempt ? ` #${m.answer_attempt}` : "")),
        m.error ? el("div", { class: "error small" }, m.error) : null),
      el("td", { class: "num" }, m.handler_ms === null || m.handler_ms === undefined ? "—" : m.handler_ms + " ms"));
  }

  async function load(append) {
    try {
      const page = await api(query(append ? next : null));
      const rows = page.messages.map(rowOf);
      if (append) body.append(...rows);
      else body.replaceChildren(...rows);
      if (!append && rows.length === 0) {
        body.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "hint" }, "(no messages)")));
      }
      next = page.next;
      more.hidden = !next;
    } catch (error) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "error" }, error.message)));
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load(false);
  });
  more.addEventListener("click", () => load(true));
  load(false);

  // Live: every answered webhook request re-reads the first page (debounced).
  let pending = null;
  const events = new EventSource("/console/api/events");
  const refresh = () => {
    if (pending) return;
    pending = setTimeout(() => { pending = null; load(false); }, 250);
  };
  events.addEventListener("open", () => { live.textContent = "live 实时"; live.classList.add("on"); });
  events.addEventListener("error", () => { live.textContent = "reconnecting…"; live.classList.remove("on"); });
  events.addEventListener("message", refresh);
  events.addEventListener("lagged", refresh);
}

// ---------------------------------------------------------------------------------------
// One message.

async function messagePage() {
  const target = document.getElementById("detail");
  const params = new URLSearchParams(location.search);
  const key = params.get("key") || "";
  try {
    const d = await api(`/console/api/messages/${encodeURIComponent(key)}?` +
      new URLSearchParams({ account: params.get("account") || "" }));
    const row = d.row;
    const facts = el("dl", { class: "facts" });
    const fact = (name, value) => facts.append(el("dt", {}, name), el("dd", {}, value === null || value === undefined ? "—" : value));
    fact("Account", row.account);
    fact("Kind", row.kind);
    fact("Sender", d.sender);
    fact("Received", time(row.received_at_ms));
    fact("Dedup key", row.dedup_key);
    fact("Policy", d.policy);
    const handler = d.handler;
    target.replaceChildren(
      section("概要 Summary", facts),
      section("尝试 Attempts",
        el("p", { id: "attempts" }, `${d.attempts.count} deliver${d.attempts.count === 1 ? "y" : "ies"}; ` +
          `first at ${time(d.attempts.first_received_at_ms)}; last answer: ` +
          (d.attempts.last_answer ? `${d.attempts.last_answer} on attempt ${d.attempts.last_answer_attempt}` : "none yet")),
        el("ol", { id: "attempt-list" }, ...(d.attempts.answers || []).map((a) =>
          el("li", {}, `attempt ${a.attempt} · ${time(a.at_ms)} · ${a.answer}`))),
        d.deferred ? el("p", {}, "The reply waits for the follower's next message.") : null),
      section("处理 Handler",
        el("p", { id: "handler" }, handler ? `ran ${handler.duration_ms} ms` + (handler.error ? ` · failed: ${handler.error}` : " · ok") : "still running")),
      section("回复 Reply (as sent, before encryption)", pre(d.reply_xml, "Reply XML"), pre(d.reply ? JSON.stringify(d.reply, null, 2) : null, "Reply JSON")),
      section("消息 Message (JSON)", pre(JSON.stringify(d.message, null, 2), "Message JSON")),
      section("消息 Message (plaintext XML)", pre(d.xml, "Message XML")),
      section("转发 Forward", d.forward ? el("p", {}, `POST ${d.forward.url} with Idempotency-Key ${d.forward.idempotency_key}`) : el("p", { class: "hint" }, "This account has no forward upstream.")),
      section("客服消息 Push delivery", d.push ? el("p", {}, d.push.state + (d.push.reason ? ": " + d.push.reason : "")) : el("p", { class: "hint" }, "This account does not use the push policy.")));
  } catch (error) {
    showError(target, error);
  }
}

// ---------------------------------------------------------------------------------------
// The overview.

function chart(title, points, series) {
  const width = 300, height = 90;
  const max = Math.max(1e-9, ...points.flatMap((p) => series.map((s) => s.value(p))));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  for (const s of series) {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", points.map((p, i) =>
      `${(i / Math.max(1, points.length - 1)) * width},${height - (s.value(p) / max) * (height - 4) - 2}`).join(" "));
    line.setAttribute("class", "line " + s.class);
    svg.append(line);
  }
  const last = points[points.length - 1];
  const legend = el("div", { class: "legend" }, ...series.map((s) =>
    el("span", { class: "key " + s.class }, `${s.name} ${last ? +s.value(last).toFixed(2) : 0}`)));
  return el("figure", { class: "chart card" }, el("figcaption", {}, `${title} (max ${+max.toFixed(2)})`), svg, legend);
}

async function overviewPage() {
  const health = document.getElementById("health");
  const accounts = document.querySelector("#accounts tbody");
  const charts = document.getElementById("charts");
  const modes = { plaintext: "明文模式 plaintext", compatible: "兼容模式 compatible", safe: "安全模式 safe" };
  const keys = { no_key: "none", single_key: "one key", rotating: "rotating (previous key accepted)" };
  async function refresh() {
    let o;
    try {
      o = await api("/console/api/overview");
    } catch (error) {
      showError(health, error);
      return;
    }
    health.replaceChildren(
      el("div", { class: "card stat " + (o.health.store.ok ? "ok" : "fail") }, el("strong", {}, "Store"), o.health.store.ok ? "ok" : o.health.store.error),
      el("div", { class: "card stat" }, el("strong", {}, "Inbox"), `${o.health.inbox_size ?? "?"} messages`),
      el("div", { class: "card stat" }, el("strong", {}, "Push workers"), o.health.push_workers ? "running" : "none"));
    accounts.replaceChildren(...o.accounts.map((a) => el("tr", {},
      el("td", {}, a.name), el("td", {}, modes[a.mode] || a.mode), el("td", {}, a.policy),
      el("td", { class: "mono" }, a.path), el("td", { class: "mono" }, a.app_id),
      el("td", {}, keys[a.key_rotation] || a.key_rotation), el("td", { class: "num" }, a.rules))));
    const p = o.series.points;
    const answerKinds = [...new Set(p.flatMap((x) => Object.keys(x.answers)))].sort();
    const codes = [...new Set(p.flatMap((x) => Object.keys(x.crypto_failures)))].sort();
    charts.replaceChildren(
      chart("Requests/s", p, [{ name: "req/s", class: "c0", value: (x) => x.requests_per_s }]),
      chart("Answers by kind (per 10 s)", p, answerKinds.length ? answerKinds.map((k, i) => ({ name: k, class: "c" + (i % 6), value: (x) => x.answers[k] || 0 }))
        : [{ name: "none", class: "c0", value: () => 0 }]),
      chart("Time to answer (ms)", p, [{ name: "p50", class: "c0", value: (x) => x.p50_ms }, { name: "p99", class: "c1", value: (x) => x.p99_ms }]),
      chart("Retries coalesced", p, [{ name: "retries", class: "c2", value: (x) => x.retries_coalesced }]),
      chart("Crypto failures by code", p, codes.length ? codes.map((c, i) => ({ name: c, class: "c" + ((i + 3) % 6), value: (x) => x.crypto_failures[c] || 0 }))
        : [{ name: "none", class: "c3", value: () => 0 }]),
      chart("Handler failures", p, [{ name: "failures", class: "c4", value: (x) => x.handler_failures }]));
  }
  await refresh();
  setInterval(refresh, 5000);
}

const pages = { debugger: debuggerPage, inbox: inboxPage, message: messagePage, overview: overviewPage };
const page = document.getElementById("main")?.dataset.page;
if (pages[page]) pages[page]();
