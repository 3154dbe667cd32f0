// Quiver's query page: PromQL graph/table/explain, SQL and status, over the HTTP API.
// Plain browser JavaScript, no build step; the one library is uPlot (web/vendor/).
// Every URL is relative, so the page works under any path prefix. Credentials typed into
// the sign-in form live in sessionStorage only (gone with the tab) and go out as an
// Authorization header; nothing else is stored but the query history (localStorage).
"use strict";

(() => {
  const $ = (sel) => document.querySelector(sel);
  const el = (tag, attrs = {}, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) e.append(c);
    return e;
  };

  // ---------------------------------------------------------------- credentials and fetch
  const AUTH_KEY = "quiver.auth";
  const auth = {
    get header() { return sessionStorage.getItem(AUTH_KEY) || ""; },
    get who() { return sessionStorage.getItem(AUTH_KEY + ".who") || ""; },
    set(header, who) {
      sessionStorage.setItem(AUTH_KEY, header);
      sessionStorage.setItem(AUTH_KEY + ".who", who);
      showWho();
    },
    clear() {
      sessionStorage.removeItem(AUTH_KEY);
      sessionStorage.removeItem(AUTH_KEY + ".who");
      showWho();
    },
  };

  function showWho() {
    const who = auth.who;
    $("#who-name").textContent = who ? `Signed in as ${who}` : "";
    $("#sign-out").hidden = !who;
    // Offered once the server asked for credentials (see `probe`).
    $("#sign-in-open").hidden = !!who || !authRequired;
  }

  class ApiError extends Error {
    constructor(status, type, message) {
      super(message);
      this.status = status;
      this.type = type;
    }
  }

  // Calls the API: JSON envelope in, `{data, warnings, infos}` out. 401 opens the sign-in
  // form and waits for it; the call is then made again.
  async function api(path, params = {}, method = "GET") {
    for (;;) {
      const qs = new URLSearchParams();
      for (const [k, v] of Object.entries(params)) {
        if (Array.isArray(v)) v.forEach((x) => qs.append(k, x));
        else if (v !== undefined && v !== null && v !== "") qs.append(k, v);
      }
      const headers = { "X-Requested-With": "XMLHttpRequest" };
      if (auth.header) headers.Authorization = auth.header;
      let url = path;
      const init = { method, headers, credentials: "same-origin" };
      if (method === "POST") {
        headers["Content-Type"] = "application/x-www-form-urlencoded";
        init.body = qs.toString();
      } else if ([...qs].length) {
        url += "?" + qs.toString();
      }
      const r = await fetch(url, init);
      if (r.status === 401) {
        auth.clear();
        await signIn();
        continue;
      }
      let body;
      try { body = await r.json(); } catch { body = null; }
      if (!r.ok || !body || body.status !== "success") {
        const type = body && body.errorType ? body.errorType : `HTTP ${r.status}`;
        const msg = body && body.error ? body.error : r.statusText;
        throw new ApiError(r.status, type, msg);
      }
      return { data: body.data, warnings: body.warnings || [], infos: body.infos || [] };
    }
  }

  let authRequired = false;
  // Whether this server asks for credentials: then the sign-in form opens at once.
  async function probe() {
    if (auth.header) return;
    const r = await fetch("api/v1/status/buildinfo", { headers: { "X-Requested-With": "XMLHttpRequest" } });
    if (r.status === 401) signIn();
  }

  let signInWaiters = [];
  function signIn() {
    authRequired = true;
    showWho();
    const box = $("#login");
    box.hidden = false;
    $("#login-user").focus();
    return new Promise((resolve) => signInWaiters.push(resolve));
  }

  function initLogin() {
    $("#login-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const user = $("#login-user").value, pass = $("#login-pass").value;
      const token = $("#login-token").value.trim();
      let header, who;
      if (token) {
        header = "Bearer " + token;
        who = "token";
      } else if (user) {
        header = "Basic " + btoa(unescape(encodeURIComponent(user + ":" + pass)));
        who = user;
      } else {
        $("#login-error").textContent = "Error: give a user and password, or a token.";
        return;
      }
      // Check the credentials before using them.
      const r = await fetch("api/v1/status/buildinfo", {
        headers: { Authorization: header, "X-Requested-With": "XMLHttpRequest" },
      });
      if (r.status === 401) {
        $("#login-error").textContent = "Error: these credentials were refused.";
        return;
      }
      $("#login-error").textContent = "";
      $("#login-pass").value = "";
      $("#login-token").value = "";
      auth.set(header, who);
      $("#login").hidden = true;
      const waiters = signInWaiters;
      signInWaiters = [];
      waiters.forEach((w) => w());
    });
    $("#login-cancel").addEventListener("click", () => { $("#login").hidden = true; });
    $("#sign-in-open").addEventListener("click", () => { signIn(); });
    $("#sign-out").addEventListener("click", () => { auth.clear(); location.reload(); });
    showWho();
  }

  // ---------------------------------------------------------------- notes (errors, warnings)
  function notes(box, items) {
    box.replaceChildren();
    for (const [kind, text] of items) {
      const label = { error: "Error", warning: "Warning", info: "Info" }[kind];
      const p = el("p", { class: "note-" + kind, text: `${label}: ${text}` });
      if (kind === "error") p.setAttribute("role", "alert");
      box.append(p);
    }
  }
  const annotations = (r) => [
    ...r.warnings.map((w) => ["warning", w]),
    ...r.infos.map((i) => ["info", i]),
  ];
  const errorNote = (e) => ["error", e instanceof ApiError ? `${e.type}: ${e.message}` : String(e)];

  // ---------------------------------------------------------------- time and formats
  const UNITS = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800, y: 31536000 };
  function parseDuration(text) {
    const s = String(text).trim();
    if (/^\d+(\.\d+)?$/.test(s)) return parseFloat(s);
    const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)/gy;
    let total = 0, m, at = 0;
    while ((m = re.exec(s))) { total += parseFloat(m[1]) * UNITS[m[2]]; at = re.lastIndex; }
    return at === s.length && at > 0 ? total : NaN;
  }
  function formatDuration(sec) {
    for (const [u, n] of [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]]) {
      if (sec >= n && sec % n === 0) return sec / n + u;
    }
    return sec + "s";
  }
  function endTime() {
    const v = $("#end").value;
    if (!v) return Date.now() / 1000;
    const t = new Date(v).getTime();
    return isNaN(t) ? Date.now() / 1000 : t / 1000;
  }
  function formatMetric(metric) {
    const name = metric.__name__ || "";
    const pairs = Object.keys(metric)
      .filter((k) => k !== "__name__")
      .sort()
      .map((k) => `${k}=${JSON.stringify(metric[k])}`);
    return pairs.length || !name ? `${name}{${pairs.join(", ")}}` : name;
  }
  function formatNs(ns) {
    if (ns === undefined || ns === null) return "";
    if (ns >= 1e9) return (ns / 1e9).toFixed(2) + " s";
    if (ns >= 1e6) return (ns / 1e6).toFixed(2) + " ms";
    if (ns >= 1e3) return (ns / 1e3).toFixed(1) + " µs";
    return ns + " ns";
  }

  // ---------------------------------------------------------------- state in the URL
  const state = { page: "query", view: "graph" };
  function readHash() {
    const h = new URLSearchParams(location.hash.slice(1));
    if (h.get("page")) state.page = h.get("page");
    if (h.get("view")) state.view = h.get("view");
    if (h.has("expr")) $("#expr").value = h.get("expr");
    if (h.has("range")) $("#range").value = h.get("range");
    if (h.has("end")) $("#end").value = h.get("end");
    if (h.has("step")) $("#step").value = h.get("step");
    $("#stacked").checked = h.get("stacked") === "1";
    $("#analyze").checked = h.get("analyze") === "1";
    if (h.has("sql")) $("#sql").value = h.get("sql");
    return h;
  }
  function writeHash() {
    const h = new URLSearchParams();
    h.set("page", state.page);
    if (state.page === "query") {
      h.set("view", state.view);
      h.set("expr", $("#expr").value);
      h.set("range", $("#range").value);
      if ($("#end").value) h.set("end", $("#end").value);
      if ($("#step").value) h.set("step", $("#step").value);
      if ($("#stacked").checked) h.set("stacked", "1");
      if ($("#analyze").checked) h.set("analyze", "1");
    } else if (state.page === "sql") {
      h.set("sql", $("#sql").value);
    }
    history.replaceState(null, "", "#" + h.toString());
    $("#permalink").href = location.href;
  }

  // ---------------------------------------------------------------- tabs
  function tabs(buttons, onSelect) {
    const list = buttons.map((id) => $(id));
    const select = (btn, focus) => {
      for (const b of list) {
        const on = b === btn;
        b.setAttribute("aria-selected", String(on));
        b.tabIndex = on ? 0 : -1;
        $("#" + b.getAttribute("aria-controls")).hidden = !on;
      }
      if (focus) btn.focus();
      onSelect(btn);
    };
    list.forEach((b, i) => {
      b.addEventListener("click", () => select(b, false));
      b.addEventListener("keydown", (ev) => {
        const d = { ArrowRight: 1, ArrowLeft: -1 }[ev.key];
        if (d) select(list[(i + d + list.length) % list.length], true);
      });
    });
    return (id) => select($(id), false);
  }

  // ---------------------------------------------------------------- completion
  const FUNCTIONS = ("abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp clamp_max clamp_min cos cosh count_over_time days_in_month day_of_month day_of_week day_of_year deg delta deriv double_exponential_smoothing exp first_over_time floor histogram_avg histogram_count histogram_fraction histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta increase info irate label_join label_replace last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute month pi predict_linear present_over_time quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_by_label sort_by_label_desc sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time tan tanh time timestamp ts_of_max_over_time ts_of_min_over_time ts_of_last_over_time vector year").split(" ");
  const AGGREGATIONS = "sum avg count min max group stddev stdvar topk bottomk quantile count_values limitk limit_ratio".split(" ");
  const KEYWORDS = "by without on ignoring group_left group_right offset bool and or unless".split(" ");
  const cache = new Map();
  async function cached(key, load) {
    if (!cache.has(key)) cache.set(key, load().catch((e) => { cache.delete(key); throw e; }));
    return cache.get(key);
  }
  const metricNames = () => cached("names", async () => (await api("api/v1/label/__name__/values")).data.slice(0, 20000));
  const labelNames = (metric) => cached("labels:" + metric, async () =>
    (await api("api/v1/labels", metric ? { "match[]": metric } : {})).data.filter((n) => n !== "__name__"));
  const labelValues = (name, metric) => cached(`values:${name}:${metric}`, async () =>
    (await api(`api/v1/label/${encodeURIComponent(name)}/values`, metric ? { "match[]": metric } : {})).data.slice(0, 5000));

  // What is being typed at the cursor, and what may complete it.
  async function completions(text, pos) {
    const before = text.slice(0, pos);
    // Inside an unclosed `{...}`: a label value after `name="`, else a label name.
    const open = before.lastIndexOf("{");
    if (open > before.lastIndexOf("}")) {
      const metric = (before.slice(0, open).match(/([a-zA-Z_:][a-zA-Z0-9_:]*)\s*$/) || [])[1] || "";
      const inside = before.slice(open + 1);
      const value = inside.match(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)$/);
      if (value) {
        const vals = await labelValues(value[1], metric ? `{__name__=${JSON.stringify(metric)}}` : "");
        return { from: pos - value[3].length, items: rank(vals, value[3]).map((v) => [v, "value", v + '"']) };
      }
      const name = inside.match(/(?:^|,)\s*([a-zA-Z_][a-zA-Z0-9_]*)?$/);
      if (name) {
        const prefix = name[1] || "";
        const names = await labelNames(metric ? `{__name__=${JSON.stringify(metric)}}` : "");
        return { from: pos - prefix.length, items: rank(names, prefix).map((n) => [n, "label", n]) };
      }
      return null;
    }
    // Grouping labels: `by (` / `without (` / `on (` / `ignoring (`.
    const grouping = before.match(/\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*?)([a-zA-Z_][a-zA-Z0-9_]*)?$/);
    if (grouping) {
      const prefix = grouping[3] || "";
      return { from: pos - prefix.length, items: rank(await labelNames(""), prefix).map((n) => [n, "label", n]) };
    }
    const word = before.match(/([a-zA-Z_:][a-zA-Z0-9_:]*)$/);
    if (!word || word[1].length < 1) return null;
    const prefix = word[1];
    const items = [
      ...rank(FUNCTIONS, prefix).map((f) => [f, "function", f + "("]),
      ...rank(AGGREGATIONS, prefix).map((f) => [f, "aggregation", f + " ("]),
      ...rank(KEYWORDS, prefix).map((k) => [k, "keyword", k]),
      ...rank(await metricNames(), prefix).map((m) => [m, "metric", m]),
    ];
    items.sort((a, b) => (a[0].startsWith(prefix) ? 0 : 1) - (b[0].startsWith(prefix) ? 0 : 1));
    return { from: pos - prefix.length, items: items.slice(0, 50) };
  }
  function rank(list, prefix) {
    const p = prefix.toLowerCase();
    const starts = [], contains = [];
    for (const x of list) {
      const l = x.toLowerCase();
      if (l.startsWith(p)) starts.push(x);
      else if (p && l.includes(p)) contains.push(x);
      if (starts.length >= 50) break;
    }
    return [...starts, ...contains].filter((x) => x !== prefix).slice(0, 50);
  }

  function initCompletion(input, onEnter) {
    const box = $("#suggest");
    let current = null, selected = 0, seq = 0;
    const close = () => {
      seq++; // a completion still being fetched must not reopen the box
      box.hidden = true;
      current = null;
      input.setAttribute("aria-expanded", "false");
      input.removeAttribute("aria-activedescendant");
    };
    // Nothing is chosen until the arrows choose: Enter then still runs the query as typed.
    const render = () => {
      box.replaceChildren();
      current.items.forEach(([label, kind], i) => {
        const li = el("li", { id: "sugg-" + i, role: "option" }, el("span", { text: label }), el("span", { class: "kind", text: kind }));
        li.setAttribute("aria-selected", String(i === selected));
        li.addEventListener("mousedown", (ev) => { ev.preventDefault(); selected = i; accept(); });
        box.append(li);
      });
      box.hidden = false;
      input.setAttribute("aria-expanded", "true");
      if (selected >= 0) input.setAttribute("aria-activedescendant", "sugg-" + selected);
      else input.removeAttribute("aria-activedescendant");
      const s = box.children[selected];
      if (s) s.scrollIntoView({ block: "nearest" });
    };
    const accept = () => {
      const [, , insert] = current.items[Math.max(0, selected)];
      const pos = input.selectionStart;
      input.value = input.value.slice(0, current.from) + insert + input.value.slice(pos);
      const at = current.from + insert.length;
      input.setSelectionRange(at, at);
      close();
      input.focus();
    };
    const update = async () => {
      const my = ++seq;
      let c = null;
      try { c = await completions(input.value, input.selectionStart); } catch { c = null; }
      if (my !== seq || document.activeElement !== input) return;
      if (!c || !c.items.length) return close();
      current = c;
      selected = -1;
      render();
    };
    input.addEventListener("input", update);
    input.addEventListener("blur", () => setTimeout(close, 100));
    input.addEventListener("keydown", (ev) => {
      if (current && !box.hidden) {
        if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
          ev.preventDefault();
          const n = current.items.length;
          selected = ev.key === "ArrowDown" ? (selected + 1) % n : selected <= 0 ? n - 1 : selected - 1;
          render();
          return;
        }
        if ((ev.key === "Tab" && !ev.shiftKey) || (ev.key === "Enter" && selected >= 0 && !ev.shiftKey)) {
          ev.preventDefault();
          accept();
          return;
        }
        if (ev.key === "Escape") { ev.preventDefault(); close(); return; }
      }
      // Escape before the list has opened calls off a completion still being fetched.
      if (ev.key === "Escape") { close(); return; }
      if (ev.key === "Enter" && !ev.shiftKey) {
        ev.preventDefault();
        close();
        onEnter();
      }
    });
  }

  // ---------------------------------------------------------------- history
  const HISTORY_KEY = "quiver.history";
  function history_() {
    try { return JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]"); } catch { return []; }
  }
  function remember(expr) {
    const h = [expr, ...history_().filter((x) => x !== expr)].slice(0, 50);
    localStorage.setItem(HISTORY_KEY, JSON.stringify(h));
    showHistory();
  }
  function showHistory() {
    const sel = $("#history");
    sel.replaceChildren(el("option", { value: "", text: "recent queries" }));
    for (const q of history_()) sel.append(el("option", { value: q, text: q.length > 80 ? q.slice(0, 77) + "…" : q }));
  }

  // ---------------------------------------------------------------- PromQL: run
  let chart = null;
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"];
  const DASHES = [[], [6, 3], [2, 2], [10, 3, 2, 3]];

  function rangeParams() {
    const range = parseDuration($("#range").value);
    if (!(range > 0)) throw new Error(`the range ${JSON.stringify($("#range").value)} is not a duration like 1h or 30m`);
    const end = endTime();
    let step;
    if ($("#step").value.trim()) {
      step = parseDuration($("#step").value);
      if (!(step > 0)) throw new Error(`the step ${JSON.stringify($("#step").value)} is not a duration like 15s`);
    } else {
      // About 250 points, at least a second, within Prometheus's 11,000 per series.
      step = Math.max(1, Math.ceil(range / 250), Math.ceil(range / 11000));
    }
    return { start: end - range, end, step };
  }

  // Each run fetches, then renders only if no later run has started: answers arriving
  // out of order never overwrite a newer one.
  let runSeq = 0;
  async function runQuery() {
    const expr = $("#expr").value.trim();
    writeHash();
    if (!expr) return;
    remember(expr);
    const my = ++runSeq;
    const btn = $("#run");
    btn.disabled = true;
    notes($("#notes"), []);
    $("#summary").textContent = "Running…";
    const started = performance.now();
    try {
      const fetchView = { graph: fetchGraph, table: fetchTable, explain: fetchExplain }[state.view];
      const render = await fetchView(expr);
      if (my !== runSeq) return;
      render();
      $("#summary").textContent += ` (${Math.round(performance.now() - started)} ms)`;
    } catch (e) {
      if (my !== runSeq) return;
      notes($("#notes"), [errorNote(e)]);
      $("#summary").textContent = "";
    } finally {
      if (my === runSeq) btn.disabled = false;
    }
  }

  async function fetchGraph(expr) {
    const { start, end, step } = rangeParams();
    const r = await api("api/v1/query_range", { query: expr, start, end, step }, "POST");
    return () => {
      notes($("#notes"), annotations(r));
      drawGraph(r.data, start, end, step);
    };
  }

  function drawGraph(data, start, end, step) {
    const series = data.result || [];
    const n = Math.floor((end - start) / step + 1e-9) + 1;
    const xs = Array.from({ length: n }, (_, i) => start + i * step);
    const raw = series.map((s) => {
      const ys = new Array(n).fill(null);
      for (const [t, v] of s.values || []) {
        const i = Math.round((t - start) / step);
        if (i >= 0 && i < n) ys[i] = parseFloat(v);
      }
      for (const [t, h] of s.histograms || []) {
        const i = Math.round((t - start) / step);
        if (i >= 0 && i < n) ys[i] = parseFloat(h.count);
      }
      return ys;
    });
    const stacked = $("#stacked").checked;
    let plotted = raw;
    if (stacked) {
      const acc = new Array(n).fill(0);
      plotted = raw.map((ys) => ys.map((v, i) => (v === null ? null : (acc[i] += v))));
    }
    const box = $("#chart");
    if (chart) { chart.destroy(); chart = null; }
    box.replaceChildren();
    box.dataset.series = String(series.length);
    $("#summary").textContent = `${series.length} series, ${n} steps of ${formatDuration(step)}`;
    if (!series.length) {
      box.append(el("p", { class: "empty", text: "No data: the query returned no series in this range." }));
      return;
    }
    const width = Math.max(200, Math.floor($("#graph-view").getBoundingClientRect().width));
    const opts = {
      width,
      height: Math.max(220, Math.min(420, Math.round(window.innerHeight * 0.45))),
      cursor: { focus: { prox: 16 } },
      focus: { alpha: 0.3 },
      legend: { live: true },
      scales: { x: { time: true } },
      series: [
        { label: "Time" },
        ...series.map((s, i) => ({
          label: formatMetric(s.metric),
          stroke: PALETTE[i % PALETTE.length],
          dash: DASHES[Math.floor(i / PALETTE.length) % DASHES.length],
          width: 1.5,
          spanGaps: false,
          points: { show: false },
          fill: stacked ? PALETTE[i % PALETTE.length] + "40" : undefined,
          // Hover shows each series' own value, also when stacked.
          value: (u, v, si, di) => {
            const x = di === null || di === undefined ? null : raw[si - 1][di];
            return x === null || x === undefined ? "—" : String(x);
          },
        })),
      ],
      axes: [{}, { size: 70 }],
    };
    if (stacked) opts.bands = series.slice(1).map((_, i) => ({ series: [i + 2, i + 1] }));
    chart = new uPlot(opts, [xs, ...plotted], box);
  }

  async function fetchTable(expr) {
    const time = $("#end").value ? endTime() : undefined;
    const r = await api("api/v1/query", { query: expr, time }, "POST");
    return () => renderTable(r);
  }

  function renderTable(r) {
    notes($("#notes"), annotations(r));
    const body = $("#result-table tbody");
    body.replaceChildren();
    const d = r.data;
    const row = (metric, value) => {
      const tr = el("tr", {}, el("td", { class: "series", text: metric === null ? d.resultType : formatMetric(metric) }), el("td", { class: "value", text: value }));
      if (metric !== null) tr.dataset.metric = JSON.stringify(metric);
      body.append(tr);
    };
    let count = 0;
    if (d.resultType === "vector") {
      for (const s of d.result) {
        row(s.metric, s.value ? s.value[1] : `histogram: count ${s.histogram[1].count}, sum ${s.histogram[1].sum}`);
        count++;
      }
    } else if (d.resultType === "matrix") {
      for (const s of d.result) {
        const vals = (s.values || []).map(([t, v]) => `${v} @${t}`);
        const hs = (s.histograms || []).map(([t, h]) => `histogram count ${h.count} @${t}`);
        row(s.metric, [...vals, ...hs].join("\n"));
        count++;
      }
    } else {
      row(null, String(d.result[1]));
      count = 1;
    }
    if (!count) body.append(el("tr", {}, el("td", { colSpan: 2, class: "empty", text: "No data: the query returned no series." })));
    $("#summary").textContent = `${d.resultType}: ${count} ${d.resultType === "vector" || d.resultType === "matrix" ? "series" : "value"}`;
  }

  async function fetchExplain(expr) {
    const { start, end, step } = rangeParams();
    const analyze = $("#analyze").checked ? "1" : undefined;
    const r = await api("api/v1/explain", { query: expr, start, end, step, analyze }, "POST");
    return () => renderExplain(r);
  }

  function renderExplain(r) {
    notes($("#notes"), annotations(r));
    const x = r.data;
    const body = $("#plan-table tbody");
    body.replaceChildren();
    $("#plan-text").textContent = x.text;
    if (!x.planned) {
      $("#explain-summary").textContent = `Not one DataFusion plan: ${x.fallback}. That node runs in the step-vector evaluator; the subtrees under it that lower run as plans.`;
      $("#summary").textContent = "explained";
      return;
    }
    const walk = (node, depth) => {
      const op = el("td", { class: "op", text: node.name });
      op.style.paddingLeft = 8 + depth * 16 + "px";
      body.append(el("tr", {}, op,
        el("td", { class: "detail", text: node.detail }),
        el("td", { class: "num", text: node.output_rows === undefined ? "" : String(node.output_rows) }),
        el("td", { class: "num", text: formatNs(node.elapsed_compute_ns) })));
      node.children.forEach((c) => walk(c, depth + 1));
    };
    walk(x.physical, 0);
    $("#explain-summary").textContent = x.run
      ? `Ran in ${x.run.elapsed_ms.toFixed(1)} ms: ${x.run.rows} rows, ${x.run.series} series, ${x.run.samples_read} samples read. Rows and time are summed over each operator's partitions.`
      : "The physical plan, root first. Tick Analyze to run it and see rows and time per operator.";
    $("#summary").textContent = "explained";
  }

  function initQuery() {
    const selectView = tabs(["#view-graph", "#view-table", "#view-explain"], (btn) => {
      state.view = btn.id.replace("view-", "");
      document.querySelectorAll(".only-graph").forEach((e) => (e.hidden = state.view !== "graph"));
      document.querySelectorAll(".only-explain").forEach((e) => (e.hidden = state.view !== "explain"));
      document.querySelectorAll(".only-range").forEach((e) => (e.hidden = state.view === "table"));
      $("#end-label").firstChild.textContent = state.view === "table" ? "Evaluation time " : "End ";
      if ($("#expr").value.trim()) runQuery(); else writeHash();
    });
    initCompletion($("#expr"), runQuery);
    $("#run").addEventListener("click", runQuery);
    $("#end-now").addEventListener("click", () => { $("#end").value = ""; runQuery(); });
    $("#stacked").addEventListener("change", runQuery);
    $("#analyze").addEventListener("change", runQuery);
    $("#history").addEventListener("change", (ev) => {
      if (!ev.target.value) return;
      $("#expr").value = ev.target.value;
      ev.target.value = "";
      runQuery();
    });
    for (const id of ["#range", "#step", "#end"]) {
      $(id).addEventListener("keydown", (ev) => { if (ev.key === "Enter") runQuery(); });
    }
    // The chart follows its box's width (the window, a scrollbar appearing).
    new ResizeObserver(() => {
      const w = Math.max(200, Math.floor($("#graph-view").getBoundingClientRect().width));
      if (chart && Math.abs(chart.width - w) > 1) chart.setSize({ width: w, height: chart.height });
    }).observe($("#graph-view"));
    showHistory();
    return selectView;
  }

  // ---------------------------------------------------------------- SQL
  async function runSql() {
    const q = $("#sql").value.trim();
    writeHash();
    if (!q) return;
    const btn = $("#sql-run");
    btn.disabled = true;
    notes($("#sql-notes"), []);
    $("#sql-summary").textContent = "Running…";
    const started = performance.now();
    try {
      const r = await api("api/v1/sql", { query: q }, "POST");
      notes($("#sql-notes"), annotations(r));
      const { columns, rows } = r.data;
      const head = $("#sql-table thead"), body = $("#sql-table tbody");
      const numeric = columns.map((c) => rows.length > 0 && typeof rows[0][c] === "number");
      head.replaceChildren(el("tr", {}, ...columns.map((c, i) => el("th", { scope: "col", text: c, class: numeric[i] ? "num" : "" }))));
      body.replaceChildren();
      const shown = rows.slice(0, 5000);
      for (const row of shown) {
        body.append(el("tr", {}, ...columns.map((c) => {
          const v = row[c];
          const text = v === null || v === undefined ? "NULL" : typeof v === "object" ? JSON.stringify(v) : String(v);
          return el("td", { class: typeof v === "number" ? "value" : "", text });
        })));
      }
      const more = rows.length > shown.length ? ` (showing the first ${shown.length})` : "";
      $("#sql-summary").textContent = `${rows.length} rows${more} (${Math.round(performance.now() - started)} ms)`;
    } catch (e) {
      notes($("#sql-notes"), [errorNote(e)]);
      $("#sql-summary").textContent = "";
    } finally {
      btn.disabled = false;
    }
  }

  async function initSql() {
    $("#sql-run").addEventListener("click", runSql);
    $("#sql").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); runSql(); }
    });
    try {
      const r = await fetch("ui/sql-examples.json");
      const examples = await r.json();
      const box = $("#sql-examples");
      box.append(el("span", { text: "Examples:" }));
      for (const ex of examples) {
        const title = (ex.sql.match(/^--\s*(.*)$/m) || [])[1] || ex.name;
        const b = el("button", { type: "button", text: ex.name.replace(/^\d+_/, "").replace(/\.sql$/, "").replace(/_/g, " "), title });
        b.dataset.example = ex.name;
        b.addEventListener("click", () => { $("#sql").value = ex.sql.trim(); runSql(); });
        box.append(b);
      }
    } catch {
      /* The examples are a convenience; the box works without them. */
    }
  }

  // ---------------------------------------------------------------- status
  const kv = (obj) => {
    const dl = el("dl", { class: "kv" });
    for (const [k, v] of Object.entries(obj)) {
      if (v !== "" && v !== null) dl.append(el("dt", { text: k }), el("dd", { text: String(v) }));
    }
    return dl;
  };
  const table = (cols, rows, cls = []) => {
    const t = el("table", { class: "data" });
    t.append(el("thead", {}, el("tr", {}, ...cols.map((c, i) => el("th", { scope: "col", text: c, class: cls[i] || "" })))));
    const b = el("tbody");
    for (const r of rows) b.append(el("tr", {}, ...r.map((v, i) => el("td", { text: String(v), class: cls[i] || "" }))));
    t.append(b);
    return t;
  };
  const fmtTime = (ms) => new Date(ms).toISOString().replace(".000Z", "Z");
  const fmtBytes = (b) => (b >= 1 << 30 ? (b / (1 << 30)).toFixed(2) + " GiB" : b >= 1 << 20 ? (b / (1 << 20)).toFixed(1) + " MiB" : b >= 1024 ? (b / 1024).toFixed(1) + " KiB" : b + " B");

  async function section(id, load) {
    const box = $(id);
    box.replaceChildren(el("p", { text: "Loading…" }));
    try {
      box.replaceChildren(await load());
    } catch (e) {
      const why = e instanceof ApiError && e.status === 403 ? "needs the admin permission" : errorNote(e)[1];
      box.replaceChildren(el("p", { class: "muted", text: `Not shown: ${why}.` }));
    }
  }

  function loadStatus() {
    section("#st-build", async () => kv((await api("api/v1/status/buildinfo")).data));
    section("#st-limits", async () => kv((await api("api/v1/status/limits")).data));
    section("#st-tsdb", async () => {
      const d = (await api("api/v1/status/tsdb")).data;
      const hs = d.headStats;
      const frag = document.createDocumentFragment();
      frag.append(kv({
        "series (visible to you)": hs.numSeries,
        "label pairs": hs.numLabelPairs,
        "head from": hs.minTime ? fmtTime(hs.minTime) : "—",
        "head to": hs.maxTime ? fmtTime(hs.maxTime) : "—",
      }));
      const grid = el("div", { class: "grid" });
      const top = (title, list, unit) => el("div", {}, el("h3", { text: title }), table(["name", unit], list.map((x) => [x.name, x.value]), ["", "num"]));
      grid.append(
        top("Top metrics by series", d.seriesCountByMetricName, "series"),
        top("Top label pairs by series", d.seriesCountByLabelValuePair, "series"),
        top("Labels by distinct values", d.labelValueCountByLabelName, "values"),
        top("Labels by memory", d.memoryInBytesByLabelName, "bytes"));
      frag.append(grid);
      return frag;
    });
    section("#st-blocks", async () => {
      const blocks = (await api("api/v1/status/blocks")).data.blocks;
      if (!blocks.length) return el("p", { text: "No blocks yet: recent samples are in the head (the WAL and memory) until the next flush." });
      const total = blocks.reduce((a, b) => a + b.bytes, 0);
      const frag = document.createDocumentFragment();
      frag.append(el("p", { text: `${blocks.length} blocks, ${fmtBytes(total)}` }));
      frag.append(table(["block", "from", "to", "level", "series", "samples", "size"],
        blocks.map((b) => [b.id, fmtTime(b.minTime), fmtTime(b.maxTime), b.level, b.numSeries, b.numSamples, fmtBytes(b.bytes)]),
        ["mono", "", "", "num", "num", "num", "num"]));
      return frag;
    });
    section("#st-flags", async () => {
      const d = (await api("api/v1/status/flags")).data;
      return table(["flag", "value"], Object.entries(d).map(([k, v]) => [k.includes(".") ? k : "--" + k, v]), ["mono", "mono"]);
    });
  }

  // ---------------------------------------------------------------- start
  function start() {
    initLogin();
    probe();
    const h = readHash();
    const selectView = initQuery();
    initSql();
    const selectPage = tabs(["#tab-query", "#tab-sql", "#tab-status"], (btn) => {
      state.page = btn.id.replace("tab-", "");
      if (state.page === "status") loadStatus();
      writeHash();
    });
    selectPage("#tab-" + (["query", "sql", "status"].includes(state.page) ? state.page : "query"));
    if (state.page === "query") {
      // Selecting the view runs the expression from the link, if any.
      selectView("#view-" + (["graph", "table", "explain"].includes(state.view) ? state.view : "graph"));
    } else if (state.page === "sql" && h.get("sql")) {
      runSql();
    }
    if (state.page === "query") $("#expr").focus();
  }
  start();
})();
