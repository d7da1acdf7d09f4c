// The operator console. Every action is one of the contract's `command` messages over
// the /ws WebSocket, sent with the operator's token; the node's ack (with its result)
// or err is shown next to the control and in the results log. The token lives in
// sessionStorage only (never in the address bar after sign-in). Live figures come
// from GET /api/stats (the same token, as a Bearer header) once a second, charted on
// small canvases.
import {
  InteractionLink,
  adoptTokenFromUrl,
  deleteResource,
  el,
  onLanguage,
  playWhep,
  setupLanguageToggle,
  t,
  wsUrl,
} from "/static/common.js";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "edge-node.operator-token";
const STATS_EVERY_MS = 1000;
const CHART_POINTS = 90;

let token = adoptTokenFromUrl(TOKEN_KEY);
let ws = null;
let signedIn = false;
let statsTimer = null;
const link = new InteractionLink({ onState, onTransport: (kind) => onLinkChange(kind) });

// ---- sign-in --------------------------------------------------------------------------

async function fetchStats(withToken) {
  const res = await fetch("/api/stats", {
    headers: { Authorization: `Bearer ${withToken}` },
    cache: "no-store",
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = new Error(body.error || `${res.status}`);
    err.status = res.status;
    throw err;
  }
  return body;
}

async function signIn(candidate) {
  $("login-error").textContent = "";
  $("login-status").textContent = t("login_checking");
  try {
    const stats = await fetchStats(candidate);
    token = candidate;
    sessionStorage.setItem(TOKEN_KEY, token);
    signedIn = true;
    $("token").value = "";
    $("login").hidden = true;
    $("console").hidden = false;
    $("logout").hidden = false;
    $("login-status").textContent = t("signed_in");
    openCommandLink();
    startPreview();
    showFigures(stats);
    statsTimer = statsTimer || setInterval(pollStats, STATS_EVERY_MS);
  } catch (err) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("login-status").textContent = "";
    $("login-error").textContent = t("login_bad", { msg: err.message });
  }
}

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const candidate = $("token").value.trim();
  if (candidate) signIn(candidate);
});

$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.replace(location.pathname);
});

function openCommandLink() {
  ws = new WebSocket(wsUrl(token));
  link.attach("ws", ws);
  ws.addEventListener("close", () => {
    ws = null;
    if (signedIn) setTimeout(openCommandLink, 2000);
  });
}

function renderLinkState() {
  $("link-state").textContent = signedIn ? t(link.kind ? "ws_connected" : "ws_closed") : "";
}

let wordsLoadedOnce = false;

/** Called on every change of the command link: the first time it is up after sign-in,
 * the editor is filled with the word list in force. */
function onLinkChange(kind) {
  renderLinkState();
  if (kind && signedIn && !wordsLoadedOnce) {
    wordsLoadedOnce = true;
    loadWords();
    loadRules();
  }
}

// ---- commands ---------------------------------------------------------------------------

/** Send a command; show its outcome next to the control (``out``) and in the log.
 * Resolves with the node's reply. */
async function run(cmd, args, out) {
  return report(cmd, await link.command(cmd, args), out);
}

/** Show the outcome of a command already answered (see ``run``); returns ``reply``. */
function report(cmd, reply, out) {
  const ok = reply.t === "ack";
  let text;
  if (ok) {
    text = t("cmd_ok", { cmd });
    const result = reply.result || {};
    // A list (the review queue) is shown by the panel itself: here only its length.
    const brief = Array.isArray(result.items) ? { items: result.items.length } : result;
    if (Object.keys(brief).length) text += ` ${JSON.stringify(brief)}`;
  } else {
    const msg = reply.msg || t(reply.code === "timeout" ? "err_timeout" : "err_offline");
    text = t("cmd_err", { cmd, code: reply.code, msg });
    // Commands the engine does not know yet answer unknown_target "unknown command".
    if (reply.code === "unknown_target" && /unknown command/.test(reply.msg || "")) text += ` ${t("not_yet")}`;
  }
  if (out) {
    out.className = `small ${ok ? "ack" : "error"}`;
    out.textContent = text;
  }
  if (!ok) $("alert").textContent = text;
  else if ($("alert").textContent.includes(cmd)) $("alert").textContent = "";
  const entry = el("li", { class: ok ? "ok" : "bad" }, `${new Date().toLocaleTimeString()} ${text}`);
  $("log").prepend(entry);
  while ($("log").children.length > 100) $("log").lastChild.remove();
  return reply;
}

function optionalNumber(id) {
  const raw = $(id).value.trim();
  return raw === "" ? undefined : Number(raw);
}

function withOptional(args, extra) {
  for (const [key, value] of Object.entries(extra)) if (value !== undefined && value !== "") args[key] = value;
  return args;
}

// Votes ------------------------------------------------------------------------------------
const polls = new Map(); // poll -> {options, totals, closed}

$("poll-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const poll = $("poll-id").value.trim();
  const options = $("poll-options").value.split("\n").map((o) => o.trim()).filter(Boolean);
  const args = withOptional({ poll, question: $("poll-question").value.trim(), options }, {
    seconds: optionalNumber("poll-seconds"),
  });
  const reply = await run("poll.open", args, $("poll-result"));
  if (reply.t === "ack") {
    polls.set(poll, { options, totals: options.map(() => 0), closed: false });
    renderTally();
  }
});

$("poll-close").addEventListener("click", async () => {
  const poll = $("poll-id").value.trim();
  const reply = await run("poll.close", { poll }, $("poll-result"));
  if (reply.t === "ack" && reply.result) {
    const known = polls.get(poll) || { options: null };
    polls.set(poll, { ...known, totals: reply.result.totals || [], closed: true });
    renderTally();
  }
});

$("poll-id").addEventListener("input", renderTally);

function renderTally() {
  const poll = polls.get($("poll-id").value.trim());
  const list = $("poll-tally");
  list.replaceChildren();
  if (!poll) return;
  const total = poll.totals.reduce((a, b) => a + b, 0);
  poll.totals.forEach((count, i) => {
    const name = poll.options ? poll.options[i] : t("poll_option", { n: i + 1 });
    const share = total ? Math.round((100 * count) / total) : 0;
    list.append(
      el("li", { "data-option": i }, el("span", { text: name }), el("span", { class: "count", text: `${count} (${share}%)` })),
    );
  });
  if (poll.closed) list.append(el("li", { class: "muted-text", text: t("poll_closed") }));
}

// PK ----------------------------------------------------------------------------------------
function pkArgs() {
  return {
    pk: $("pk-id").value.trim(),
    sides: [$("pk-a").value.trim(), $("pk-b").value.trim()],
    seconds: Number($("pk-seconds").value),
    scoring: $("pk-scoring").value,
  };
}

$("pk-form").addEventListener("submit", (e) => {
  e.preventDefault();
  run("pk.open", pkArgs(), $("pk-result"));
});

$("pk-close").addEventListener("click", () => {
  run("pk.close", { pk: $("pk-id").value.trim() }, $("pk-result"));
});

// Lottery -------------------------------------------------------------------------------------
$("lottery-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const args = withOptional(
    { lottery: $("lottery-id").value.trim(), winners: Number($("lottery-n").value) },
    { keyword: $("lottery-kw").value.trim(), seconds: optionalNumber("lottery-seconds") },
  );
  const reply = await run("lottery.open", args, $("lottery-status"));
  showLottery(reply, "open");
});

$("lottery-draw").addEventListener("click", async () => {
  const reply = await run("lottery.draw", { lottery: $("lottery-id").value.trim() }, $("lottery-status"));
  showLottery(reply, "draw");
});

function showLottery(reply, phase) {
  const box = $("lottery-result");
  if (reply.t !== "ack") return; // the error is in lottery-status
  const r = reply.result || {};
  const lines = [];
  if (phase === "open" || r.commit) lines.push(el("p", { class: "mono", "data-field": "commit" }, t("lottery_commit", { c: r.commit ?? "—" })));
  if (phase === "draw") {
    lines.push(el("p", { class: "mono", "data-field": "seed" }, t("lottery_seed", { s: r.seed ?? "—" })));
    lines.push(el("p", { "data-field": "entrants" }, `${(r.entrants || []).length}: ${(r.entrants || []).join(", ")}`));
    lines.push(el("p", { "data-field": "winners" }, t("lottery_winners", { w: (r.winners || []).join(", ") || "—" })));
  }
  // Keep the commitment shown at open beside the draw, so the two can be compared.
  if (phase === "draw") {
    const commit = box.querySelector('[data-field="commit"]');
    if (commit) lines.unshift(commit);
  }
  box.replaceChildren(...lines);
}

// Review queue -----------------------------------------------------------------------------
let reviewWorks = false;

/** Re-read the queue; ``out`` is where its outcome shows (none after a decision, whose
 * own outcome stays in view). */
async function refreshReview(out = $("review-result")) {
  const reply = await run("review.list", {}, out);
  reviewWorks = reply.t === "ack";
  const list = $("review-list");
  list.replaceChildren();
  if (!reviewWorks) return;
  const items = (reply.result && reply.result.items) || [];
  if (!items.length) list.append(el("p", { class: "muted-text", text: t("review_empty") }));
  for (const item of items) {
    const id = item.item ?? item.id;
    const text = item.text ?? JSON.stringify(item);
    const who = item.user ? `${item.user}: ` : "";
    list.append(
      el(
        "div",
        { class: "review-item", "data-item": id },
        el("span", { class: "text", text: `${who}${text}` }),
        el("button", { type: "button", "aria-label": `${t("approve")}: ${text}`, onclick: () => decide("review.approve", id) }, t("approve")),
        el("button", { type: "button", class: "danger", "aria-label": `${t("reject")}: ${text}`, onclick: () => decide("review.reject", id) }, t("reject")),
      ),
    );
  }
}

async function decide(cmd, item) {
  await run(cmd, { item }, $("review-result"));
  await refreshReview(null);
}

$("review-refresh").addEventListener("click", () => refreshReview());
// While the queue works, keep it fresh without a click (not while it errs: no log spam).
setInterval(() => signedIn && reviewWorks && !document.hidden && refreshReviewQuietly(), 5000);

async function refreshReviewQuietly() {
  const reply = await link.command("review.list", {});
  if (reply.t !== "ack") return;
  const shown = [...$("review-list").querySelectorAll("[data-item]")].map((n) => n.dataset.item).join();
  const items = (reply.result && reply.result.items) || [];
  if (items.map((i) => String(i.item ?? i.id)).join() !== shown) refreshReview(null);
}

// Mute ----------------------------------------------------------------------------------------
$("mute-form").addEventListener("submit", (e) => {
  e.preventDefault();
  run("mute", withOptional({ user: $("mute-user").value.trim() }, { seconds: optionalNumber("mute-seconds") }), $("mute-result"));
});

$("unmute").addEventListener("click", () => {
  const user = $("mute-user").value.trim();
  if (user) run("unmute", { user }, $("mute-result"));
});

// Word list -------------------------------------------------------------------------------------
// The editor shows the list in force (``words.list``) once the command link is up and
// again after every successful save, so the operator always edits what the node
// applies. Edits not yet saved are never overwritten by a load: ``wordsDirty`` marks them.
const ACTIONS = ["block", "mask", "hold"];
let wordsDirty = false;
let wordsCount = null; // entries in force, as last read (null: not read yet)

function addWordRow(pattern = "", action = "block", focus = true) {
  const row = document.createElement("tr");
  const n = $("words-body").children.length + 1;
  const select = el("select", { "aria-label": `${t("word_action")} ${n}`, class: "word-action" });
  for (const a of ACTIONS) select.append(el("option", { value: a, "data-i18n": `act_${a}` }, t(`act_${a}`)));
  select.value = action;
  const remove = () => {
    row.remove();
    wordsDirty = true;
  };
  row.append(
    el("td", {}, el("input", { class: "word-pattern", value: pattern, maxlength: 64, "aria-label": `${t("word_pattern")} ${n}` })),
    el("td", {}, select),
    el("td", {}, el("button", { type: "button", class: "ghost", "data-i18n": "word_remove", "aria-label": `${t("word_remove")} ${n}`, onclick: remove }, t("word_remove"))),
  );
  $("words-body").append(row);
  if (focus) row.querySelector("input").focus();
}

$("words-body").addEventListener("input", () => (wordsDirty = true));
$("words-body").addEventListener("change", () => (wordsDirty = true));

$("word-add").addEventListener("click", () => {
  wordsDirty = true;
  addWordRow();
});

let wordsStatus = null; // [key, vars] of the line under the editor, redrawn on a language switch

function renderWordsLoaded(kept = false) {
  wordsStatus = wordsCount === null ? ["words_loading", {}] : [kept ? "words_kept" : "words_loaded", { n: wordsCount }];
  $("words-loaded").textContent = t(...wordsStatus);
}

/** Read the list in force into the editor (unless it holds unsaved edits). A refusal
 * is shown next to the editor like any command's. After a save (``redraw``) the rows
 * are always rebuilt from the node's answer, blank ones dropped. */
async function loadWords(redraw = false) {
  renderWordsLoaded();
  const reply = await link.command("words.list", {});
  if (reply.t !== "ack") {
    report("words.list", reply, $("words-result"));
    wordsStatus = null;
    $("words-loaded").textContent = "";
    return;
  }
  const words = (reply.result && reply.result.words) || [];
  wordsCount = words.length;
  if (wordsDirty) {
    renderWordsLoaded(true);
    return;
  }
  // Otherwise rows already showing exactly this list stay as they are (blank rows
  // included), so a load never pulls a row from under the operator's cursor for nothing.
  const same = JSON.stringify(editorWords()) === JSON.stringify(words.map((w) => ({ pattern: w.pattern, action: w.action })));
  if (redraw || !same) {
    $("words-body").replaceChildren();
    for (const w of words) addWordRow(w.pattern, w.action, false);
    if (!words.length) addWordRow("", "block", false);
  }
  renderWordsLoaded();
}

/** The editor's entries as ``words.set`` takes them (blank rows left out). */
function editorWords() {
  return [...$("words-body").children]
    .map((row) => ({
      pattern: row.querySelector(".word-pattern").value.trim(),
      action: row.querySelector(".word-action").value,
    }))
    .filter((w) => w.pattern);
}

$("words-save").addEventListener("click", async () => {
  // Clean from the moment the rows are sent: an edit made while the node answers marks
  // them dirty again, and the reload after the save then keeps it.
  const wasDirty = wordsDirty;
  wordsDirty = false;
  const reply = await run("words.set", { words: editorWords() }, $("words-result"));
  if (reply.t !== "ack") wordsDirty = wordsDirty || wasDirty;
  else await loadWords(true);
});

// Auto-reply --------------------------------------------------------------------------------------
// Rules are replaced as a whole by ``autoreply.set``; the editor starts with the rules in
// force (``autoreply.list``), unless the operator already typed into it.
async function loadRules() {
  const reply = await link.command("autoreply.list", {});
  if (reply.t !== "ack") {
    report("autoreply.list", reply, $("autoreply-result"));
    return;
  }
  const body = $("autoreply-body");
  const untouched = [...body.children].every(
    (row) => !row.querySelector(".rule-pattern").value && !row.querySelector(".rule-reply").value,
  );
  if (!untouched) return;
  body.replaceChildren();
  for (const r of reply.result.rules) addRuleRow(r.pattern, r.reply, false);
  if (!body.children.length) addRuleRow("", "", false);
}

function addRuleRow(pattern = "", reply = "", focus = true) {
  const row = document.createElement("tr");
  const n = $("autoreply-body").children.length + 1;
  row.append(
    el("td", {}, el("input", { class: "rule-pattern", value: pattern, maxlength: 64, spellcheck: "false", "aria-label": `${t("ar_pattern")} ${n}` })),
    el("td", {}, el("input", { class: "rule-reply", value: reply, maxlength: 200, "aria-label": `${t("ar_reply")} ${n}`, "aria-describedby": "autoreply-help" })),
    el("td", {}, el("button", { type: "button", class: "ghost", "data-i18n": "word_remove", "aria-label": `${t("word_remove")} ${n}`, onclick: () => row.remove() }, t("word_remove"))),
  );
  $("autoreply-body").append(row);
  if (focus) row.querySelector("input").focus();
}

$("autoreply-add").addEventListener("click", () => addRuleRow());

$("autoreply-save").addEventListener("click", () => {
  // A row with neither field is an unused blank; a half-filled one is sent as it is,
  // so the node names the missing field instead of the page dropping it silently.
  const rules = [...$("autoreply-body").children]
    .map((row) => ({
      pattern: row.querySelector(".rule-pattern").value.trim(),
      reply: row.querySelector(".rule-reply").value.trim(),
    }))
    .filter((r) => r.pattern || r.reply);
  run("autoreply.set", { rules }, $("autoreply-result"));
});

// Coupon drops ------------------------------------------------------------------------------------
const drops = new Map(); // drop -> merged pushed state ({open, keyword, issued})

function couponCodes() {
  return $("coupon-codes")
    .value.split("\n")
    .map((line) => line.trim())
    .filter((line) => line);
}

function renderCouponCount() {
  const n = couponCodes().length;
  $("coupon-count").textContent = n ? t("coupon_count", { n }) : "";
}

$("coupon-codes").addEventListener("input", renderCouponCount);

$("coupon-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const args = withOptional({ drop: $("coupon-id").value.trim(), codes: couponCodes() }, { keyword: $("coupon-kw").value.trim() });
  run("coupon.open", args, $("coupon-result"));
});

$("coupon-close").addEventListener("click", async () => {
  const drop = $("coupon-id").value.trim();
  const reply = await run("coupon.close", { drop }, $("coupon-result"));
  if (reply.t === "ack" && reply.result) {
    drops.set(drop, { ...(drops.get(drop) || {}), open: false, issued: reply.result.issued });
    renderCouponLive();
  }
});

$("coupon-id").addEventListener("input", renderCouponLive);

function renderCouponLive() {
  const drop = $("coupon-id").value.trim();
  const state = drops.get(drop);
  if (!state) {
    $("coupon-live").textContent = "";
    return;
  }
  $("coupon-live").textContent = state.open
    ? t("coupon_live_open", { drop })
    : t("coupon_live_closed", { drop, n: state.issued ?? 0 });
}

// Overlay style ---------------------------------------------------------------------------------
const STYLE_KEYS = ["font_size_px", "lanes", "speed_px_s", "opacity", "max_on_screen"];

$("style-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const args = {};
  for (const key of STYLE_KEYS) {
    const value = optionalNumber(`st-${key}`);
    if (value !== undefined) args[key] = value;
  }
  run("overlay.style", args, $("style-result"));
});

// Announcement ----------------------------------------------------------------------------------
$("announce-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const args = withOptional({ text: $("announce-text").value.trim() }, { seconds: optionalNumber("announce-seconds") });
  run("announce", args, $("announce-result"));
});

// ---- pushed state ------------------------------------------------------------------------

function onState(msg) {
  if ("poll" in msg) {
    const known = polls.get(msg.poll) || { options: msg.options || null };
    polls.set(msg.poll, { ...known, options: msg.options || known.options, totals: msg.totals || [], closed: Boolean(msg.closed) });
    renderTally();
  }
  if ("pk" in msg && !("side" in msg)) {
    pks.set(msg.pk, { ...(pks.get(msg.pk) || {}), ...msg });
    renderPkLive();
  }
  if ("coupon" in msg && !("code" in msg)) {
    drops.set(msg.coupon, { ...(drops.get(msg.coupon) || {}), ...msg });
    renderCouponLive();
  }
  if ("lottery" in msg && msg.phase) {
    lotteries.set(msg.lottery, { ...(lotteries.get(msg.lottery) || {}), ...msg });
    renderLotteryLive();
  }
}

const pks = new Map(); // pk -> merged pushed state (sides come with the first)
const lotteries = new Map(); // lottery -> merged pushed state

function renderPkLive() {
  const pk = pks.get($("pk-id").value.trim());
  if (!pk || !pk.scores) return;
  const sides = pk.sides || [t("pk_side_a"), t("pk_side_b")];
  let text = sides.map((side, i) => t("pk_score", { side, n: pk.scores[i] ?? 0 })).join(" · ");
  if (pk.closed) text += ` — ${pk.winner ? t("pk_winner", { side: pk.winner }) : t("pk_draw")}`;
  $("pk-live").textContent = text;
}

function renderLotteryLive() {
  const lot = lotteries.get($("lottery-id").value.trim());
  if (!lot) return;
  const entrants = typeof lot.entrants === "number" ? lot.entrants : (lot.entrants || []).length;
  $("lottery-live").textContent = t("lottery_live", { phase: lot.phase, n: entrants });
}

// ---- preview -------------------------------------------------------------------------------

let previewStatus = ["connecting", {}];

function setPreviewStatus(key, vars = {}) {
  previewStatus = [key, vars];
  $("preview-status").textContent = t(key, vars);
}

async function startPreview() {
  setPreviewStatus("connecting");
  try {
    const session = await playWhep($("preview"), {
      audio: false,
      onFirstFrame: (ms) => setPreviewStatus("playing_in", { ms }),
    });
    session.pc.addEventListener("connectionstatechange", () => {
      if (session.pc.connectionState === "failed") {
        session.pc.close();
        setPreviewStatus("reconnecting");
        setTimeout(startPreview, 2000);
      }
    });
    window.addEventListener("pagehide", () => deleteResource(session.location));
  } catch (err) {
    setPreviewStatus("whep_refused", { msg: err.reason || err.message });
    setTimeout(startPreview, 5000);
  }
}

// ---- live figures ------------------------------------------------------------------------

class Chart {
  constructor(canvas, label, colors = ["#4aa3ff", "#ff7070"]) {
    this.canvas = canvas;
    this.label = label;
    this.colors = colors;
    this.series = colors.map(() => []);
  }

  push(...values) {
    values.forEach((v, i) => {
      this.series[i].push(v === null || v === undefined || Number.isNaN(v) ? null : Number(v));
      if (this.series[i].length > CHART_POINTS) this.series[i].shift();
    });
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(c.clientWidth * ratio));
    const h = Math.max(1, Math.round(c.clientHeight * ratio));
    if (c.width !== w || c.height !== h) Object.assign(c, { width: w, height: h });
    const ctx = c.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    const all = this.series.flat().filter((v) => v !== null);
    const max = Math.max(1e-9, ...all) * 1.1;
    ctx.strokeStyle = "#2e343a";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(0, h - 0.5);
    ctx.lineTo(w, h - 0.5);
    ctx.stroke();
    this.series.forEach((points, s) => {
      ctx.strokeStyle = this.colors[s];
      ctx.lineWidth = 1.5 * ratio;
      ctx.beginPath();
      let drawing = false;
      points.forEach((v, i) => {
        if (v === null) {
          drawing = false;
          return;
        }
        // The newest point sits at the right edge; older ones scroll left.
        const x = w - ((points.length - 1 - i) / (CHART_POINTS - 1)) * w;
        const y = h - (v / max) * (h - 2 * ratio) - ratio;
        if (drawing) ctx.lineTo(x, y);
        else ctx.moveTo(x, y);
        drawing = true;
      });
      ctx.stroke();
    });
    const latest = this.series.map((p) => p[p.length - 1]).map((v) => (v === null || v === undefined ? "–" : fmt(v)));
    c.setAttribute("aria-label", `${t(this.label)}: ${latest.join(" / ")}`);
  }
}

const charts = {
  events: new Chart($("chart-events"), "fig_events", ["#4aa3ff"]),
  latency: new Chart($("chart-latency"), "fig_latency"),
  fps: new Chart($("chart-fps"), "fig_fps", ["#5fd08a", "#4aa3ff"]),
  dropped: new Chart($("chart-dropped"), "fig_dropped", ["#ff7070"]),
  viewers: new Chart($("chart-viewers"), "fig_viewers", ["#ffc857"]),
  spool: new Chart($("chart-spool"), "fig_cloud", ["#c792ea"]),
};

function fmt(v, digits = 1) {
  if (v === null || v === undefined) return "–";
  return Number.isInteger(v) ? String(v) : Number(v).toFixed(digits);
}

let lastStats = null;

function showFigures(s) {
  lastStats = s;
  $("fig-events").textContent = fmt(s.events_per_s);
  $("fig-latency").textContent = `${fmt(s.latency_ms.p50)} / ${fmt(s.latency_ms.p99)}`;
  $("fig-fps").textContent = `${fmt(s.fps_in)} / ${fmt(s.fps_out)}`;
  $("fig-dropped").textContent = `${fmt(s.dropped_per_s)} (${fmt(s.dropped_total, 0)})`;
  $("fig-viewers").textContent = fmt(s.viewers, 0);
  const cloud = s.cloud === null ? t("cloud_off") : t(s.cloud.connected ? "cloud_up" : "cloud_down");
  $("fig-cloud").textContent = `${cloud} · ${fmt(s.spool_depth, 0)}`;
  $("fig-cloud").title = s.cloud && s.cloud.last_error ? s.cloud.last_error : "";
  charts.events.push(s.events_per_s);
  charts.latency.push(s.latency_ms.p50, s.latency_ms.p99);
  charts.fps.push(s.fps_in, s.fps_out);
  charts.dropped.push(s.dropped_per_s);
  charts.viewers.push(s.viewers);
  charts.spool.push(s.spool_depth);
}

let statsBusy = false;
async function pollStats() {
  if (statsBusy || document.hidden) return;
  statsBusy = true;
  try {
    showFigures(await fetchStats(token));
    $("stats-error").textContent = "";
  } catch (err) {
    $("stats-error").textContent = t("stats_failed", { msg: err.message });
    if (err.status === 401 || err.status === 403) {
      // The token expired or was revoked: back to the sign-in form.
      signedIn = false;
      sessionStorage.removeItem(TOKEN_KEY);
      location.replace(location.pathname);
    }
  } finally {
    statsBusy = false;
  }
}

onLanguage(() => {
  $("preview-status").textContent = t(...previewStatus);
  renderLinkState();
  renderTally();
  renderCouponLive();
  renderCouponCount();
  if (wordsStatus) $("words-loaded").textContent = t(...wordsStatus);
  for (const chart of Object.values(charts)) chart.draw();
  if (lastStats) {
    const s = lastStats;
    const cloud = s.cloud === null ? t("cloud_off") : t(s.cloud.connected ? "cloud_up" : "cloud_down");
    $("fig-cloud").textContent = `${cloud} · ${fmt(s.spool_depth, 0)}`;
  }
});

setupLanguageToggle($("lang"));
addWordRow("", "block", false);
addRuleRow("", "", false);
if (token) signIn(token);
