// The viewer page: plays the node's output over WHEP and sends interactions over the
// WHEP session's `events` data channel, falling back to the /ws WebSocket when the data
// channel does not open (or ?via=ws asks for it, e.g. where UDP is blocked). Every
// request's ack or error is shown in words; pushed state drives the vote, lottery, PK
// and coupon panels and the auto-reply line.
import {
  InteractionLink,
  adoptTokenFromUrl,
  announce,
  applyLanguage,
  deleteResource,
  describeReply,
  el,
  onLanguage,
  playWhep,
  setupLanguageToggle,
  t,
  wsUrl,
} from "/static/common.js";

const $ = (id) => document.getElementById(id);
const video = $("video");
const statusEl = $("status");
const ackEl = $("ack");
const errorEl = $("error");

const token = adoptTokenFromUrl("edge-node.viewer-token");
const forceWs = new URLSearchParams(location.search).get("via") === "ws";
const DATA_CHANNEL_GRACE_MS = 3000;

// What the page shows, kept so a language switch can redraw it.
const view = {
  status: ["connecting", {}],
  likesSent: 0,
  muted: null, // null | {seconds}
  polls: new Map(), // poll -> {totals, closed, question, options, mine}
  currentPoll: null,
  lottery: null,
  pk: null,
  coupons: new Map(), // drop -> {open, keyword, code}, in the order first heard of
  autoreply: null, // the latest automatic answer to this viewer
};

function setStatus(key, vars = {}) {
  view.status = [key, vars];
  statusEl.textContent = t(key, vars);
}

// ---- interactions ----------------------------------------------------------------------

let ws = null;
let wsRetry = null;

const link = new InteractionLink({
  onState,
  onTransport: (kind) => {
    renderVia();
    if (kind === "datachannel" && ws) {
      ws.close(); // the data channel is up again: one link is enough
      ws = null;
    }
    if (kind === null) fallBackToWs();
  },
});

function renderVia() {
  const kind = link.kind;
  $("via").textContent = t(kind === "datachannel" ? "via_datachannel" : kind === "ws" ? "via_ws" : "via_none");
}

function fallBackToWs() {
  if (link.kind === "datachannel" || ws || wsRetry) return;
  const socket = new WebSocket(wsUrl(token));
  ws = socket;
  link.attach("ws", socket);
  socket.addEventListener("close", () => {
    if (ws !== socket) return; // closed on purpose: the data channel took over
    ws = null;
    if (link.kind !== "datachannel") wsRetry = setTimeout(() => ((wsRetry = null), fallBackToWs()), 2000);
  });
}

async function send(msg, okKey) {
  const reply = await link.request(msg);
  announce(ackEl, errorEl, describeReply(reply, okKey));
  return reply;
}

$("comment-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("comment");
  const text = input.value.trim();
  if (!text) return;
  const reply = await send({ t: "comment", text }, "ack_comment");
  if (reply.t === "ack") input.value = "";
});

// Likes are batched: a burst of taps becomes one message with n = taps (at most 100).
let likeBatch = 0;
let likeTimer = null;
$("like").addEventListener("click", () => {
  likeBatch += 1;
  if (likeTimer) return;
  likeTimer = setTimeout(async () => {
    const n = Math.min(likeBatch, 100);
    likeBatch = 0;
    likeTimer = null;
    const reply = await send({ t: "like", n }, "ack_like");
    if (reply.t === "ack") {
      view.likesSent += n;
      renderLikes();
    }
  }, 250);
});

function renderLikes() {
  $("like-count").textContent = view.likesSent ? t("likes_sent", { n: view.likesSent }) : "";
}

// ---- pushed state ------------------------------------------------------------------------

function onState(msg) {
  if ("muted" in msg) {
    view.muted = msg.muted ? { seconds: msg.seconds ?? null } : null;
    if (!msg.muted) announce(ackEl, errorEl, { ok: true, text: t("unmuted") });
    renderMuted();
  }
  if ("poll" in msg) {
    const poll = view.polls.get(msg.poll) || { mine: null };
    Object.assign(poll, {
      totals: msg.totals || poll.totals || [],
      closed: Boolean(msg.closed),
      question: msg.question ?? poll.question ?? "",
      options: msg.options ?? poll.options ?? null,
    });
    view.polls.set(msg.poll, poll);
    // The panel follows the poll that changed last, as the picture does.
    if (!poll.closed || view.currentPoll === msg.poll || view.currentPoll === null) view.currentPoll = msg.poll;
    renderPoll();
  }
  if ("lottery" in msg) {
    view.lottery = { ...(view.lottery && view.lottery.lottery === msg.lottery ? view.lottery : {}), ...msg };
    renderLottery();
  }
  if ("pk" in msg) {
    view.pk = { ...(view.pk && view.pk.pk === msg.pk ? view.pk : {}), ...msg };
    renderPk();
  }
  // A drop opening or closing goes to everyone; a code won goes to this viewer alone
  // (and again when it reconnects: the same code, so it is merged, never listed twice).
  // A drop that ended before this page heard of it is nothing to show.
  if ("coupon" in msg && (view.coupons.has(msg.coupon) || msg.open !== false || msg.code)) {
    const drop = view.coupons.get(msg.coupon) || { open: false, keyword: null, code: null };
    if ("open" in msg) drop.open = Boolean(msg.open);
    if ("keyword" in msg) drop.keyword = msg.keyword;
    if (msg.code) drop.code = msg.code;
    view.coupons.set(msg.coupon, drop);
    renderCoupons();
  }
  // Sent to this viewer alone: the automatic answer to its question.
  if ("autoreply" in msg) {
    view.autoreply = String(msg.autoreply);
    renderAutoreply();
  }
}

function renderAutoreply() {
  const box = $("autoreply");
  box.hidden = view.autoreply === null;
  box.textContent = view.autoreply === null ? "" : t("autoreply", { text: view.autoreply });
}

/** A won code is the panel's headline (large, selectable, with a copy button); a drop
 * still open says how to take part; a drop that ended without a code for this viewer
 * says so. */
function renderCoupons() {
  const items = [];
  for (const [drop, state] of view.coupons) {
    if (state.code) {
      const code = el("strong", { class: "coupon-code", "data-drop": drop, text: state.code });
      items.push(
        el(
          "li",
          { class: "won" },
          el("span", { class: "small muted-text", text: t("coupon_code_label") }),
          code,
          el("button", { type: "button", class: "ghost", "aria-label": `${t("coupon_copy")}: ${state.code}`, onclick: () => copyCode(code) }, t("coupon_copy")),
        ),
      );
    } else if (state.open) {
      const how = state.keyword ? t("coupon_keyword", { kw: state.keyword }) : t("coupon_any");
      items.push(el("li", { class: "coupon-open", "data-drop": drop, text: how }));
    } else {
      items.push(el("li", { class: "coupon-gone muted-text", "data-drop": drop, text: t("coupon_gone") }));
    }
  }
  $("coupon-list").replaceChildren(...items);
  $("coupon-panel").hidden = items.length === 0;
}

async function copyCode(node) {
  try {
    await navigator.clipboard.writeText(node.textContent);
    $("coupon-copied").textContent = t("coupon_copied");
  } catch {
    // No clipboard access (an insecure origin, a refused permission): select the code
    // so the phone's own copy menu is one tap away.
    const range = document.createRange();
    range.selectNodeContents(node);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    $("coupon-copied").textContent = t("coupon_copy_failed");
  }
}

function renderMuted() {
  const banner = $("muted-banner");
  banner.hidden = !view.muted;
  $("send").disabled = Boolean(view.muted);
  if (view.muted) {
    banner.textContent = view.muted.seconds ? t("err_muted_for", { s: Math.round(view.muted.seconds) }) : t("err_muted");
  }
}

function renderPoll() {
  const pollId = view.currentPoll;
  const poll = view.polls.get(pollId);
  $("poll-panel").hidden = !poll;
  if (!poll) return;
  $("poll-question").textContent = poll.question || "";
  $("poll-closed").hidden = !poll.closed;
  const total = poll.totals.reduce((a, b) => a + b, 0);
  const box = $("poll-options");
  box.replaceChildren();
  poll.totals.forEach((count, i) => {
    const name = poll.options ? poll.options[i] : t("poll_option", { n: i + 1 });
    const share = total ? Math.round((100 * count) / total) : 0;
    const bar = el("span", { class: "share", "aria-hidden": "true" });
    bar.style.width = `${share}%`;
    const button = el(
      "button",
      {
        type: "button",
        class: "option",
        "aria-pressed": String(poll.mine === i),
        "aria-label": `${t("poll_vote_for", { name })} (${t("votes", { n: count })}, ${share}%)`,
        disabled: poll.closed,
        "data-option": i,
        onclick: async () => {
          const reply = await send({ t: "vote", poll: pollId, option: i }, "ack_vote");
          if (reply.t === "ack") {
            poll.mine = i;
            renderPoll();
          }
        },
      },
      bar,
      el("span", { class: "label", text: name }),
      el("span", { class: "count", text: `${count} · ${share}%` }),
    );
    box.append(button);
  });
}

function renderLottery() {
  const lot = view.lottery;
  $("lottery-panel").hidden = !lot;
  if (!lot) return;
  const open = lot.phase === undefined || lot.phase === "open";
  $("lottery-keyword").textContent = lot.keyword && open ? t("lottery_keyword", { kw: lot.keyword }) : "";
  $("lottery-commit").textContent = lot.commit ? t("lottery_commit", { c: lot.commit }) : "";
  $("lottery-seed").textContent = lot.seed ? t("lottery_seed", { s: lot.seed }) : "";
  // `winners` is the number wanted while open, the drawn users afterwards.
  const winners = Array.isArray(lot.winners) ? lot.winners : null;
  $("lottery-winners").textContent = winners ? t("lottery_winners", { w: winners.join(", ") || "—" }) : "";
  $("lottery-me").textContent = lot.won ? t("lottery_won") : lot.entered ? t("lottery_entered") : "";
  $("lottery-join").disabled = !open || Boolean(lot.entered);
}

$("lottery-join").addEventListener("click", () => {
  if (view.lottery) send({ t: "join", lottery: view.lottery.lottery }, "ack_join");
});

function renderPk() {
  const pk = view.pk;
  $("pk-panel").hidden = !pk;
  if (!pk) return;
  const sides = pk.sides || ["A", "B"];
  const scores = pk.scores || [0, 0];
  // A side is picked with a `vote` whose poll is the PK's id and option the side.
  $("pk-scores").replaceChildren(
    ...sides.map((side, i) =>
      el(
        "button",
        {
          type: "button",
          class: `pk-side pk-${i}`,
          "data-side": i,
          "aria-pressed": String(pk.side === i),
          disabled: Boolean(pk.closed),
          onclick: async () => {
            const reply = await send({ t: "vote", poll: pk.pk, option: i }, "ack_pk");
            if (reply.t === "ack") {
              view.pk = { ...view.pk, side: i };
              renderPk();
            }
          },
        },
        t("pk_score", { side, n: scores[i] ?? 0 }),
      ),
    ),
  );
  let result = "";
  if (pk.closed) result = pk.winner ? t("pk_winner", { side: pk.winner }) : t("pk_draw");
  $("pk-winner").textContent = result;
}

onLanguage(() => {
  statusEl.textContent = t(...view.status);
  renderLikes();
  renderMuted();
  renderPoll();
  renderLottery();
  renderPk();
  renderCoupons();
  renderAutoreply();
  renderVia();
});

// ---- playback ----------------------------------------------------------------------------

$("sound").addEventListener("click", () => {
  video.muted = !video.muted;
  $("sound").setAttribute("aria-pressed", String(!video.muted));
  $("sound").dataset.i18n = video.muted ? "unmute" : "mute_sound";
  applyLanguage($("sound").parentElement);
});

let session = null;
let retryMs = 1000;

async function start() {
  setStatus(session ? "reconnecting" : "connecting");
  let graceTimer = null;
  try {
    session = await playWhep(video, {
      token,
      onFirstFrame: (ms) => {
        video.dataset.firstFrameMs = String(ms);
        setStatus("playing_in", { ms });
        retryMs = 1000;
      },
    });
  } catch (err) {
    setStatus("whep_refused", { msg: err.reason || err.message });
    fallBackToWs();
    setTimeout(start, retryMs);
    retryMs = Math.min(retryMs * 2, 10000);
    return;
  }
  const { pc, channel } = session;
  if (forceWs) fallBackToWs();
  else {
    link.attach("datachannel", channel);
    graceTimer = setTimeout(() => channel.readyState !== "open" && fallBackToWs(), DATA_CHANNEL_GRACE_MS);
  }
  pc.addEventListener("connectionstatechange", () => {
    if (pc.connectionState === "failed" || pc.connectionState === "closed") {
      clearTimeout(graceTimer);
      deleteResource(session.location);
      pc.close();
      fallBackToWs();
      setStatus("reconnecting");
      setTimeout(start, retryMs);
      retryMs = Math.min(retryMs * 2, 10000);
    }
  });
}

window.addEventListener("pagehide", () => session && deleteResource(session.location));

setupLanguageToggle($("lang"));
start();
