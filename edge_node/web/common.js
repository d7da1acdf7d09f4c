// Shared by the viewer, console and publisher pages: UI language (Chinese/English),
// tokens kept out of the address bar, WHEP/WHIP signalling, and the interaction link
// (the contract's messages over the WHEP `events` data channel or the /ws WebSocket).
// Plain ES module, served by the node; no build step, nothing fetched from elsewhere.

// ---- language -------------------------------------------------------------------------

// key -> [English, 中文]. Pages mark elements with data-i18n (text), data-i18n-ph
// (placeholder) and data-i18n-label (aria-label); dynamic text goes through t().
const STRINGS = {
  lang_toggle: ["中文", "English"],
  lang_toggle_label: ["切换到中文", "Switch to English"],
  // viewer
  viewer_title: ["Live", "直播"],
  connecting: ["Connecting…", "正在连接…"],
  playing_in: ["Playing ({ms} ms to first frame)", "播放中（首帧 {ms} 毫秒）"],
  reconnecting: ["Connection lost, reconnecting…", "连接中断，正在重连…"],
  whep_refused: ["The node refused to play: {msg}", "节点拒绝播放：{msg}"],
  unmute: ["Sound on", "打开声音"],
  mute_sound: ["Sound off", "关闭声音"],
  comment_label: ["Comment", "评论"],
  comment_ph: ["Say something…", "说点什么…"],
  send: ["Send", "发送"],
  like: ["Like", "点赞"],
  likes_sent: ["{n} likes sent", "已点赞 {n} 次"],
  via_datachannel: ["interactions: data channel", "互动通道：数据通道"],
  via_ws: ["interactions: WebSocket", "互动通道：WebSocket"],
  via_none: ["interactions: offline", "互动通道：未连接"],
  poll_panel: ["Vote", "投票"],
  poll_option: ["Option {n}", "选项 {n}"],
  poll_closed: ["Voting closed", "投票已结束"],
  poll_vote_for: ["Vote for {name}", "投票给 {name}"],
  votes: ["{n} votes", "{n} 票"],
  lottery_panel: ["Lottery", "抽奖"],
  lottery_keyword: ["Comment “{kw}” or press Join", "发送评论“{kw}”或点击参加"],
  lottery_join: ["Join", "参加"],
  lottery_commit: ["Seed hash (committed at open): {c}", "种子哈希（开奖前公布）：{c}"],
  lottery_winners: ["Winners: {w}", "中奖者：{w}"],
  lottery_seed: ["Seed: {s}", "种子：{s}"],
  pk_panel: ["PK", "PK 对决"],
  pk_score: ["{side}: {n}", "{side}：{n}"],
  pk_winner: ["Winner: {side}", "获胜方：{side}"],
  pk_draw: ["A draw", "平局"],
  ack_pk: ["You joined this side", "已加入该阵营"],
  lottery_entered: ["You are in the draw", "你已参加抽奖"],
  lottery_won: ["You won!", "你中奖了！"],
  coupon_panel: ["Coupon", "优惠券"],
  coupon_code_label: ["Your code", "你的优惠码"],
  coupon_copy: ["Copy code", "复制优惠码"],
  coupon_copied: ["Copied", "已复制"],
  coupon_copy_failed: ["Select the code to copy it", "请选中优惠码后复制"],
  coupon_keyword: ["Comment “{kw}” to get a code", "发送评论“{kw}”领取优惠码"],
  coupon_any: ["Comment to get a code", "发送任意评论领取优惠码"],
  coupon_gone: ["This coupon drop has ended", "本轮优惠券发放已结束"],
  autoreply: ["Reply: {text}", "自动回复：{text}"],
  // acks and errors
  ack_comment: ["Comment sent", "评论已发送"],
  ack_masked: ["Comment sent; some words were masked", "评论已发送，部分词语已被屏蔽"],
  ack_like: ["Like sent", "已点赞"],
  ack_vote: ["Vote counted", "投票成功"],
  ack_join: ["You joined the lottery", "已参加抽奖"],
  ack_generic: ["Done", "完成"],
  err_muted: ["You are muted", "你已被禁言"],
  err_muted_for: ["You are muted for {s} s", "你已被禁言 {s} 秒"],
  unmuted: ["You may comment again", "你已被解除禁言"],
  err_rate_limited: ["Too fast: please slow down", "发送太快，请稍后再试"],
  err_held: ["Your comment is held for review", "你的评论正在等待审核"],
  err_blocked: ["Your comment was blocked", "你的评论未通过审核"],
  err_forbidden: ["Not allowed: {msg}", "没有权限：{msg}"],
  err_unauthorized: ["Sign-in needed: {msg}", "需要登录：{msg}"],
  err_unknown_target: ["Not found: {msg}", "对象不存在：{msg}"],
  err_busy: ["The node is busy; try again", "节点繁忙，请重试"],
  err_bad_message: ["Rejected: {msg}", "请求无效：{msg}"],
  err_timeout: ["No answer from the node", "节点无响应"],
  err_offline: ["Not connected", "未连接"],
  err_other: ["Error {code}: {msg}", "错误 {code}：{msg}"],
  // console
  console_title: ["Operator console", "运营控制台"],
  login_heading: ["Sign in", "登录"],
  login_token: ["Operator token", "运营令牌"],
  login_button: ["Sign in", "登录"],
  logout: ["Sign out", "退出"],
  login_checking: ["Checking the token…", "正在验证令牌…"],
  login_bad: ["The node refused the token: {msg}", "令牌无效：{msg}"],
  signed_in: ["Signed in", "已登录"],
  ws_connected: ["Command link: connected", "指令通道：已连接"],
  ws_closed: ["Command link: closed, reconnecting…", "指令通道：已断开，正在重连…"],
  preview: ["Preview", "预览"],
  figures: ["Live figures", "实时数据"],
  fig_events: ["Events/s", "互动/秒"],
  fig_latency: ["Event → frame p50 / p99 (ms)", "互动上屏延迟 p50 / p99（毫秒）"],
  fig_fps: ["fps in / out", "帧率 输入 / 输出"],
  fig_dropped: ["Dropped frames/s (total)", "丢帧/秒（累计）"],
  fig_viewers: ["Viewers", "观众"],
  fig_cloud: ["Cloud link · spool depth", "云端连接 · 缓存深度"],
  cloud_up: ["connected", "已连接"],
  cloud_down: ["disconnected", "未连接"],
  cloud_off: ["not configured", "未配置"],
  stats_failed: ["Live figures unavailable: {msg}", "实时数据不可用：{msg}"],
  polls: ["Votes", "投票"],
  poll_id: ["Poll id", "投票编号"],
  poll_question: ["Question", "问题"],
  poll_options: ["Options (one a line)", "选项（每行一个）"],
  seconds_opt: ["Seconds (optional)", "时长秒数（可选）"],
  poll_open: ["Start vote", "开始投票"],
  poll_close: ["Stop vote", "结束投票"],
  tally: ["Tally", "计票"],
  pks: ["PK", "PK 对决"],
  pk_id: ["PK id", "PK 编号"],
  pk_side_a: ["Side A", "甲方"],
  pk_side_b: ["Side B", "乙方"],
  pk_seconds: ["Seconds", "时长秒数"],
  pk_scoring: ["Scored by", "计分方式"],
  pk_gifts: ["gifts", "礼物"],
  pk_votes: ["votes", "投票"],
  pk_open: ["Start PK", "开始 PK"],
  pk_close: ["Stop PK", "结束 PK"],
  lotteries: ["Lottery", "抽奖"],
  lottery_id: ["Lottery id", "抽奖编号"],
  lottery_kw: ["Keyword (optional)", "口令（可选）"],
  lottery_n: ["Winners", "中奖人数"],
  lottery_open: ["Open lottery", "开始抽奖"],
  lottery_draw: ["Draw", "开奖"],
  lottery_live: ["{phase} · {n} entrants", "{phase} · {n} 人参加"],
  review: ["Review queue", "待审核评论"],
  review_refresh: ["Refresh", "刷新"],
  review_empty: ["Nothing waits for review", "没有待审核的评论"],
  approve: ["Approve", "通过"],
  reject: ["Reject", "拒绝"],
  mute_heading: ["Mute a viewer", "禁言观众"],
  mute_user: ["User id", "用户 ID"],
  mute_seconds: ["Seconds (empty: until unmuted)", "秒数（留空：直到解除）"],
  mute: ["Mute", "禁言"],
  unmute_user: ["Unmute", "解除禁言"],
  words: ["Word list", "敏感词"],
  word_pattern: ["Word or phrase", "词语"],
  word_action: ["Action", "处理方式"],
  act_block: ["block", "拦截"],
  act_mask: ["mask", "屏蔽为 ***"],
  act_hold: ["hold for review", "待审核"],
  word_add: ["Add a word", "添加词语"],
  word_remove: ["Remove", "删除"],
  words_save: ["Save word list", "保存词语列表"],
  words_loading: ["Loading the list in force…", "正在读取当前词语列表…"],
  words_loaded: ["{n} entries in force", "当前生效 {n} 条"],
  words_kept: ["{n} entries in force (your unsaved edits are kept)", "当前生效 {n} 条（保留你未保存的修改）"],
  autoreplies: ["Auto-reply", "自动回复"],
  ar_pattern: ["Keywords (separated by |)", "关键词（用 | 分隔）"],
  ar_reply: ["Reply", "回复内容"],
  ar_help: [
    "A comment containing any keyword is answered. In the reply, {user} is the asker and {text} their comment.",
    "评论包含任一关键词即自动回复。回复中 {user} 代表提问者，{text} 代表其评论。",
  ],
  ar_add: ["Add a rule", "添加规则"],
  ar_save: ["Save auto-replies", "保存自动回复"],
  ar_unsaved: ["Rules are sent as a whole and replace those in force", "规则整体发送，替换当前生效的规则"],
  coupons: ["Coupon drop", "优惠券发放"],
  coupon_id: ["Drop id", "发放编号"],
  coupon_kw: ["Keyword (optional: any comment)", "口令（可选，留空则任意评论）"],
  coupon_codes: ["Codes (one a line)", "优惠码（每行一个）"],
  coupon_count: ["{n} codes", "{n} 个优惠码"],
  coupon_open: ["Open drop", "开始发放"],
  coupon_close: ["Close drop", "结束发放"],
  coupon_live_open: ["{drop}: open", "{drop}：发放中"],
  coupon_live_closed: ["{drop}: closed, {n} given out", "{drop}：已结束，已发放 {n} 个"],
  overlay: ["Overlay style", "弹幕样式"],
  st_font: ["Font size (px)", "字号（像素）"],
  st_lanes: ["Lanes", "弹幕行数"],
  st_speed: ["Speed (px/s)", "速度（像素/秒）"],
  st_opacity: ["Opacity (0–1)", "不透明度（0–1）"],
  st_max: ["Most on screen", "同屏最多条数"],
  st_apply: ["Apply style", "应用样式"],
  announce: ["Announcement", "公告"],
  announce_text: ["Text", "内容"],
  announce_send: ["Announce", "发布公告"],
  log: ["Results", "执行结果"],
  cmd_ok: ["✓ {cmd}", "✓ {cmd}"],
  cmd_err: ["✗ {cmd}: {code}: {msg}", "✗ {cmd}：{code}：{msg}"],
  not_yet: ["(this node does not support it yet)", "（此节点暂不支持）"],
  // publisher
  publish_title: ["Publish from this browser", "浏览器推流"],
  stream_key: ["Stream key", "推流密钥"],
  publish_start: ["Start publishing", "开始推流"],
  publish_stop: ["Stop", "停止"],
  pub_idle: ["Not publishing", "未推流"],
  pub_camera: ["Opening camera and microphone…", "正在打开摄像头和麦克风…"],
  pub_signalling: ["Connecting to the node…", "正在连接节点…"],
  pub_live: ["Live: {state}", "推流中：{state}"],
  pc_new: ["starting", "准备中"],
  pc_connecting: ["connecting", "连接中"],
  pc_connected: ["connected", "已连接"],
  pc_disconnected: ["interrupted", "连接中断"],
  pc_failed: ["failed", "失败"],
  pc_closed: ["closed", "已关闭"],
  pub_stats: ["{kbps} kbit/s · {fps} fps · {w}×{h}", "{kbps} kbit/s · {fps} 帧/秒 · {w}×{h}"],
  pub_stopped: ["Stopped", "已停止"],
  pub_no_camera: ["Camera or microphone unavailable: {msg}", "无法使用摄像头或麦克风：{msg}"],
  pub_no_h264: ["This browser cannot send H.264, which the node needs", "此浏览器无法发送节点所需的 H.264 视频"],
  pub_refused: ["The node refused: {status} {msg}", "节点拒绝推流：{status} {msg}"],
  pub_with_audio: ["Send microphone audio", "发送麦克风声音"],
};

const LANG_KEY = "edge-node.lang";

export function lang() {
  const saved = localStorage.getItem(LANG_KEY);
  if (saved === "en" || saved === "zh") return saved;
  return (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
}

export function t(key, vars = {}) {
  const pair = STRINGS[key];
  let text = pair ? pair[lang() === "zh" ? 1 : 0] : key;
  for (const [name, value] of Object.entries(vars)) {
    text = text.replaceAll(`{${name}}`, String(value));
  }
  return text;
}

const relabelers = [];

/** Re-run ``fn`` whenever the language changes (dynamic text). */
export function onLanguage(fn) {
  relabelers.push(fn);
}

export function applyLanguage(root = document) {
  document.documentElement.lang = lang() === "zh" ? "zh-CN" : "en";
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-ph]")) el.placeholder = t(el.dataset.i18nPh);
  for (const el of root.querySelectorAll("[data-i18n-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  }
  for (const fn of relabelers) fn();
}

/** The language button: shows the other language's name; remembered across visits. */
export function setupLanguageToggle(button) {
  button.addEventListener("click", () => {
    localStorage.setItem(LANG_KEY, lang() === "zh" ? "en" : "zh");
    applyLanguage();
  });
  applyLanguage();
}

// ---- tokens ---------------------------------------------------------------------------

/** A token handed over in the page URL (?token=) moves to sessionStorage and leaves the
 * address bar (and so the history, bookmarks and screen shares) at once. */
export function adoptTokenFromUrl(storageKey) {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (token) {
    sessionStorage.setItem(storageKey, token);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem(storageKey);
}

// ---- signalling -----------------------------------------------------------------------

/** The node answers with every candidate and takes no trickle, so the offer must carry
 * ours: wait for gathering (instant with host candidates), at most ``ms``. */
export function iceGathered(pc, ms = 1500) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const done = () => {
      if (pc.iceGatheringState === "complete") resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ms);
  });
}

async function errorText(res) {
  const body = await res.text();
  try {
    const parsed = JSON.parse(body);
    return parsed.field ? `${parsed.field}: ${parsed.error}` : parsed.error || body;
  } catch {
    return body || res.statusText;
  }
}

/** Browsers hide their host addresses behind mDNS names (`<uuid>.local`); the node
 * would spend a second failing to resolve each before answering (no responder on most
 * networks). Without them the node still learns our address from our first
 * connectivity check (a peer-reflexive candidate), so they are dropped. */
export function withoutMdnsCandidates(sdp) {
  return sdp
    .split("\r\n")
    .filter((line) => !/^a=candidate:\S+ \d+ \S+ \d+ \S+\.local /i.test(line))
    .join("\r\n");
}

/** POST an SDP offer (WHEP or WHIP); returns {answer, location} or throws with the
 * node's own reason. */
export async function postOffer(url, sdp, bearer) {
  const headers = { "Content-Type": "application/sdp" };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const res = await fetch(url, { method: "POST", headers, body: withoutMdnsCandidates(sdp) });
  if (res.status !== 201) {
    const reason = await errorText(res);
    const err = new Error(`${res.status} ${reason}`);
    err.status = res.status;
    err.reason = reason;
    throw err;
  }
  return { answer: await res.text(), location: res.headers.get("Location") };
}

export function deleteResource(location) {
  if (location) fetch(location, { method: "DELETE", keepalive: true }).catch(() => {});
}

/** Play the node's output over WHEP into ``video``. Returns {pc, channel, location}.
 * ``channel`` is the contract's `events` data channel (interactions as the token's user,
 * or an anonymous viewer where the node allows it). */
export async function playWhep(video, { token = null, audio = true, onFirstFrame } = {}) {
  const started = performance.now();
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", { direction: "recvonly" });
  if (audio) pc.addTransceiver("audio", { direction: "recvonly" });
  const channel = pc.createDataChannel("events");
  const stream = new MediaStream();
  video.srcObject = stream;
  pc.addEventListener("track", (e) => {
    stream.addTrack(e.track);
    video.play().catch(() => {});
  });
  if (onFirstFrame) {
    const report = () => onFirstFrame(Math.round(performance.now() - started));
    if ("requestVideoFrameCallback" in video) video.requestVideoFrameCallback(report);
    else video.addEventListener("playing", report, { once: true });
  }
  // No wait for ICE gathering: the only candidates a page has are its host addresses,
  // hidden as mDNS names the node cannot use (see withoutMdnsCandidates). Our checks
  // reach the node's candidates from the answer and it learns our address from them,
  // so the offer goes at once (first frame ~200 ms on a LAN instead of ~1.3 s).
  await pc.setLocalDescription(await pc.createOffer());
  let reply;
  try {
    reply = await postOffer("/whep", pc.localDescription.sdp, token);
  } catch (err) {
    pc.close();
    throw err;
  }
  await pc.setRemoteDescription({ type: "answer", sdp: reply.answer });
  return { pc, channel, location: reply.location };
}

// ---- interactions ---------------------------------------------------------------------

let idCounter = 0;
const idPrefix = Math.random().toString(36).slice(2, 8);

/** A client event id: unique per page load (the node deduplicates on (user, id)). */
export function newId(kind) {
  idCounter += 1;
  return `${kind}-${idPrefix}-${idCounter}`;
}

/**
 * Sends the contract's messages and matches each `ack`/`err` to its request by id.
 * Transports are attached as they open (the data channel, or the WebSocket fallback);
 * the most recent open one carries requests. Pushed `state` goes to ``onState``.
 */
export class InteractionLink {
  constructor({ onState = () => {}, onTransport = () => {}, timeoutMs = 5000 } = {}) {
    this.onState = onState;
    this.onTransport = onTransport;
    this.timeoutMs = timeoutMs;
    this.pending = new Map();
    this.transport = null; // {kind, send(str), isOpen()}
  }

  attach(kind, target) {
    const transport = {
      kind,
      target,
      send: (text) => target.send(text),
      isOpen: () => (kind === "ws" ? target.readyState === WebSocket.OPEN : target.readyState === "open"),
    };
    target.addEventListener("message", (e) => this.receive(e.data));
    const opened = () => {
      this.transport = transport;
      this.onTransport(kind);
    };
    const closed = () => {
      if (this.transport === transport) {
        this.transport = null;
        this.onTransport(null);
      }
    };
    target.addEventListener("open", opened);
    target.addEventListener("close", closed);
    if (transport.isOpen()) opened();
    return transport;
  }

  get kind() {
    return this.transport && this.transport.isOpen() ? this.transport.kind : null;
  }

  receive(data) {
    let msg;
    try {
      msg = JSON.parse(typeof data === "string" ? data : new TextDecoder().decode(data));
    } catch {
      return; // we only send text frames, so every reply is JSON
    }
    if (msg.t === "state") {
      this.onState(msg);
      return;
    }
    const waiter = msg.id != null ? this.pending.get(msg.id) : undefined;
    if (waiter) {
      this.pending.delete(msg.id);
      clearTimeout(waiter.timer);
      waiter.resolve(msg);
    }
  }

  /** Send ``msg`` (an id is added) and resolve with the node's `ack` or `err`; a link
   * that is down or silent resolves with a local `err` so the page can say so. */
  request(msg) {
    const id = msg.id || newId(msg.t);
    const full = { ...msg, id };
    return new Promise((resolve) => {
      if (!this.kind) {
        resolve({ t: "err", id, code: "offline", msg: "" });
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve({ t: "err", id, code: "timeout", msg: "" });
      }, this.timeoutMs);
      this.pending.set(id, { resolve, timer });
      this.transport.send(JSON.stringify(full));
    });
  }

  command(cmd, args = {}) {
    return this.request({ t: "command", cmd, args });
  }
}

export function wsUrl(token) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `${scheme}//${location.host}/ws${query}`;
}

/** A reply in words: {ok, text}. ``okKey`` names the success message. */
export function describeReply(reply, okKey = "ack_generic") {
  if (reply.t === "ack") {
    return { ok: true, text: t(reply.masked ? "ack_masked" : okKey) };
  }
  const msg = reply.msg || "";
  switch (reply.code) {
    case "rate_limited":
      return { ok: false, text: t("err_rate_limited") };
    case "held":
      return { ok: false, text: t("err_held") };
    case "blocked":
      return { ok: false, text: t("err_blocked") };
    case "busy":
      return { ok: false, text: t("err_busy") };
    case "forbidden":
      return { ok: false, text: /muted/.test(msg) ? t("err_muted") : t("err_forbidden", { msg }) };
    case "unauthorized":
      return { ok: false, text: t("err_unauthorized", { msg }) };
    case "unknown_target":
      return { ok: false, text: t("err_unknown_target", { msg }) };
    case "bad_message":
      return { ok: false, text: t("err_bad_message", { msg }) };
    case "timeout":
      return { ok: false, text: t("err_timeout") };
    case "offline":
      return { ok: false, text: t("err_offline") };
    default:
      return { ok: false, text: t("err_other", { code: reply.code, msg }) };
  }
}

const pendingAnnouncements = new WeakMap();

/** Show a result in a live region: polite for acks, assertive (role=alert) for errors;
 * the other region is cleared, so only the latest outcome stands. */
export function announce(okRegion, errRegion, result) {
  const target = result.ok ? okRegion : errRegion;
  const other = result.ok ? errRegion : okRegion;
  clearTimeout(pendingAnnouncements.get(okRegion));
  other.textContent = "";
  // Re-setting identical text would not be announced again: clear, then set a moment
  // later (a timer, not requestAnimationFrame, which stalls in background tabs).
  target.textContent = "";
  pendingAnnouncements.set(
    okRegion,
    setTimeout(() => {
      target.textContent = result.text;
    }, 30),
  );
}

/** Create an element with attributes and children (text or nodes). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}
