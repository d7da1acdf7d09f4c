// The publisher page: camera and microphone to the node over WHIP (RFC 9725), with the
// stream key as the Bearer token, for quick venue checks without OBS. The node takes
// H.264 video (it forwards the publisher's own encoding to its decoder) and Opus audio.
import {
  deleteResource,
  iceGathered,
  onLanguage,
  postOffer,
  setupLanguageToggle,
  t,
} from "/static/common.js";

const $ = (id) => document.getElementById(id);
let session = null; // {pc, stream, location, statsTimer, lastBytes, lastAt}
let statusView = ["pub_idle", {}];

function setStatus(key, vars = {}) {
  statusView = [key, vars];
  renderStatus();
}

function renderStatus() {
  const [key, vars] = statusView;
  // A peer connection state is shown in the page's language.
  const shown = vars.state ? { ...vars, state: t(`pc_${vars.state}`) } : vars;
  $("pub-status").textContent = t(key, shown);
}

function fail(key, vars = {}) {
  $("pub-error").textContent = t(key, vars);
}

/** Prefer H.264 the node can take: packetization-mode 1, constrained baseline first. */
function preferH264(transceiver) {
  const codecs = RTCRtpSender.getCapabilities("video").codecs;
  const h264 = codecs.filter((c) => c.mimeType.toLowerCase() === "video/h264");
  if (!h264.length) return false;
  const score = (c) => {
    const fmtp = c.sdpFmtpLine || "";
    return (fmtp.includes("packetization-mode=1") ? 2 : 0) + (fmtp.includes("profile-level-id=42e01f") ? 1 : 0);
  };
  h264.sort((a, b) => score(b) - score(a));
  const rtx = codecs.filter((c) => c.mimeType.toLowerCase() === "video/rtx");
  transceiver.setCodecPreferences([...h264, ...rtx]);
  return true;
}

async function start() {
  $("pub-error").textContent = "";
  const key = $("key").value.trim();
  if (!key) return;
  $("start").disabled = true;
  setStatus("pub_camera");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
      audio: $("with-audio").checked,
    });
  } catch (err) {
    fail("pub_no_camera", { msg: err.message || err.name });
    setStatus("pub_idle");
    $("start").disabled = false;
    return;
  }
  $("local").srcObject = stream;
  const pc = new RTCPeerConnection();
  session = { pc, stream, location: null, statsTimer: null, lastBytes: 0, lastAt: 0 };
  const [videoTrack] = stream.getVideoTracks();
  const video = pc.addTransceiver(videoTrack, { direction: "sendonly", streams: [stream] });
  if (!preferH264(video)) {
    fail("pub_no_h264");
    stop();
    return;
  }
  for (const track of stream.getAudioTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
  pc.addEventListener("connectionstatechange", () => {
    setStatus("pub_live", { state: pc.connectionState });
    if (pc.connectionState === "failed") stop();
  });
  setStatus("pub_signalling");
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc, 1000);
    const reply = await postOffer("/whip", pc.localDescription.sdp, key);
    session.location = reply.location;
    await pc.setRemoteDescription({ type: "answer", sdp: reply.answer });
  } catch (err) {
    fail("pub_refused", { status: err.status ?? "", msg: err.reason || err.message });
    stop();
    return;
  }
  setStatus("pub_live", { state: pc.connectionState });
  $("stop").disabled = false;
  session.statsTimer = setInterval(showStats, 1000);
}

async function showStats() {
  if (!session) return;
  const report = await session.pc.getStats();
  report.forEach((s) => {
    if (s.type !== "outbound-rtp" || s.kind !== "video") return;
    const first = !session.lastAt;
    const kbps = first ? 0 : ((s.bytesSent - session.lastBytes) * 8) / (s.timestamp - session.lastAt);
    session.lastBytes = s.bytesSent;
    session.lastAt = s.timestamp;
    if (first) return; // a rate needs two samples
    $("pub-stats").textContent = t("pub_stats", {
      kbps: Math.round(kbps),
      fps: Math.round(s.framesPerSecond || 0),
      w: s.frameWidth || 0,
      h: s.frameHeight || 0,
    });
  });
}

function stop() {
  if (session) {
    clearInterval(session.statsTimer);
    deleteResource(session.location); // ends the publish at once; the node shows its fallback
    session.pc.close();
    for (const track of session.stream.getTracks()) track.stop();
    session = null;
    setStatus("pub_stopped");
  }
  $("local").srcObject = null;
  $("pub-stats").textContent = "";
  $("stop").disabled = true;
  $("start").disabled = false;
}

$("publish-form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (!session) start();
});
$("stop").addEventListener("click", stop);
window.addEventListener("pagehide", () => session && deleteResource(session.location));
onLanguage(renderStatus);
setupLanguageToggle($("lang"));
