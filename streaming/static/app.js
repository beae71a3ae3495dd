// slidergan browser page: choose or upload a portrait, drive it from the webcam, a track or sliders,
// watch the animated portrait over WebRTC. Talks to streaming/server.py (see its docstring).
"use strict";

const $ = (id) => document.getElementById(id);
// The server's per-run token: requests that change state (uploads, offers) carry it. The server puts
// it in this page's <meta>; a copy of the page served elsewhere (an --allow-origin origin, with
// <meta name="slidergan-server" content="http://host:port">) gets it from /api/info.
const meta = (name) => { const m = document.querySelector(`meta[name="${name}"]`); return m ? m.content : ""; };
const SERVER = meta("slidergan-server").replace(/\/+$/, "");
const state = {
  token: meta("slidergan-token"), info: null, portrait: null, pc: null, dc: null, local: null, running: false,
  names: [], nExp: 0, sliders: [], pinned: new Set(), dragging: -1, pending: new Map(), raf: 0,
  recorder: null, recording: null,
};

function setStatus(text, cls) {
  const s = $("status");
  s.textContent = text;
  s.className = "status " + (cls || "");
}
function showMsg(text, where = "msg", info = false) {
  const m = $(where);
  m.textContent = text || "";
  m.className = "msg" + (info ? " info" : "");
}

async function api(path, opts) {
  opts = Object.assign({}, opts || {});
  if (opts.method && opts.method !== "GET") {
    opts.headers = Object.assign({}, opts.headers || {}, { "X-Slidergan-Token": state.token });
  }
  const r = await fetch(SERVER + path, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { data = { error: `HTTP ${r.status}` }; }
  if (!r.ok) throw new Error(data && data.error ? data.error : `HTTP ${r.status}`);
  return data;
}

// ----------------------------------------------------------------------------------- portraits
function renderPortraits() {
  const g = $("portraits");
  g.innerHTML = "";
  for (const p of state.info.portraits) {
    const img = document.createElement("img");
    img.src = SERVER + p.url;
    img.alt = img.title = p.name;
    img.dataset.id = p.id;
    if (p.id === state.portrait) img.classList.add("sel");
    img.onclick = () => choosePortrait(p.id);
    if (p.error) { img.title = `${p.name}: ${p.error}`; img.style.opacity = 0.35; }
    g.appendChild(img);
  }
  if (!state.info.portraits.length) showMsg("No portraits yet: upload a photo with a face.", "portrait-msg", true);
}

// Portraits still being prepared (the server's warm-up: --portraits files, a group photo's other faces)
// learn whether they hold a usable face, and a group photo in --portraits lists its faces, only then: ask again
// until every one is prepared (a portrait's description has face_px or error once it is).
let refreshing = null;
function refreshPortraits(tries = 30) {
  clearTimeout(refreshing);
  refreshing = setTimeout(async () => {
    let list;
    try { list = await api("/api/portraits"); } catch (e) { return; }
    const changed = JSON.stringify(list.map((p) => [p.id, p.name, p.error])) !==
      JSON.stringify(state.info.portraits.map((p) => [p.id, p.name, p.error]));
    state.info.portraits = list;
    if (state.portrait && !list.some((p) => p.id === state.portrait)) state.portrait = list.length ? list[0].id : null;
    if (changed) renderPortraits();
    if (tries > 1 && list.some((p) => p.face_px === undefined && !p.error)) refreshPortraits(tries - 1);
  }, 1000);
}

function choosePortrait(id) {
  const p = state.info.portraits.find((x) => x.id === id);
  if (p && p.error) { showMsg(`Cannot use this photo: ${p.error}`, "portrait-msg"); return; }
  state.portrait = id;
  for (const img of $("portraits").children) img.classList.toggle("sel", img.dataset.id === id);
  showMsg("", "portrait-msg");
  if (state.running) send({ type: "portrait", id });
}

async function upload(file) {
  showMsg("Looking for a face…", "portrait-msg", true);
  const fd = new FormData();
  fd.append("image", file, file.name);
  try {
    const p = await api("/api/portraits", { method: "POST", body: fd });
    // a group photo: each face is a portrait of its own, the largest chosen
    state.info.portraits.push(p, ...(p.other_faces || []));
    state.portrait = p.id;
    renderPortraits();
    if (p.other_faces && p.other_faces.length) refreshPortraits();
    showMsg(p.message || `Face found (${Math.round(p.face_px)} px).`, "portrait-msg", true);
    if (state.running) send({ type: "portrait", id: p.id });
  } catch (e) {
    showMsg(`Cannot use this photo: ${e.message}`, "portrait-msg");
  }
}

// ------------------------------------------------------------------------------------- sliders
// The model's parameters, then (where the model can move the head) the head's pose: its sliders
// are in units of their limits, shown in degrees / eye distances.
function buildSliders(names, nExp, values, labels) {
  const box = $("sliders");
  box.innerHTML = "";
  state.sliders = [];
  const info = state.info || {};
  const nParams = names.length;
  if (info.moves_head && info.pose_names) {
    names = names.concat(info.pose_names);
    labels = (labels || names.slice(0, nParams)).concat(info.pose_labels);
  }
  // the pose's last two numbers turn the eyes: a group of their own
  const nEyes = info.moves_head && info.pose_names ? nParams + info.pose_names.indexOf("gaze_yaw") : -1;
  names.forEach((name, i) => {
    const label = labels && labels[i] ? labels[i] : name;
    const v0 = values && values[i] !== undefined ? values[i] : 0;
    if (i === 0 || i === nExp || i === nParams || i === nEyes) {
      const h = document.createElement("div");
      h.className = "group";
      h.textContent = i === 0 ? "Expression" : i === nExp ? "Speech" : i === nParams ? "Head" : "Eyes";
      box.appendChild(h);
    }
    const row = document.createElement("div");
    row.className = "slider";
    row.innerHTML = `<span class="name" title="${label} (${name})">${label}</span>` +
      `<input type="range" min="-1" max="1" step="0.01" value="${v0}" aria-label="${label}">` +
      `<span class="val">${sliderText(i, v0)}</span>`;
    const input = row.querySelector("input");
    const val = row.querySelector(".val");
    input.addEventListener("pointerdown", () => { state.dragging = i; });
    input.addEventListener("pointerup", () => { state.dragging = -1; });
    input.addEventListener("input", () => {
      val.textContent = sliderText(i, Number(input.value));
      queueSlider(i, Number(input.value));
    });
    box.appendChild(row);
    state.sliders.push({ row, input, val });
  });
}

function queueSlider(i, v) {
  state.pending.set(i, v);
  if (!state.raf) state.raf = requestAnimationFrame(flushSliders);
}
function flushSliders() {
  state.raf = 0;
  const n = state.info.n_params;
  for (const [index, value] of state.pending) {
    send(index < n ? { type: "slider", index, value } : { type: "pose", index: index - n, value });
  }
  state.pending.clear();
}

function sliderText(i, v) {
  const n = state.info ? state.info.n_params : Infinity;
  if (i < n) return v.toFixed(2);
  const k = i - n, x = v * state.info.pose_limits[k], unit = state.info.pose_units[k];
  return unit === "°" ? `${x.toFixed(0)}°` : x.toFixed(2);
}

function showParams(params, pinned) {
  state.pinned = new Set(pinned || []);
  params.forEach((v, i) => {
    const s = state.sliders[i];
    if (!s) return;
    s.row.classList.toggle("pinned", state.pinned.has(i));
    if (i !== state.dragging && !state.pending.has(i)) {
      s.input.value = v;
      s.val.textContent = sliderText(i, v);
    }
  });
}

// ---------------------------------------------------------------------------------- connection
function send(msg) {
  if (state.dc && state.dc.readyState === "open") state.dc.send(JSON.stringify(msg));
}

function routes() {
  return { exp: $("route-exp").value, speech: $("route-speech").value };
}
function needsWebcam() {
  const r = routes();
  return r.exp === "face" || r.speech === "face";
}
function needsMic() {
  return routes().speech === "mic";
}

function waitIce(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(resolve, 3000); // do not hang on a slow candidate
  });
}

async function start() {
  showMsg("");
  if (!state.portrait) {
    showMsg("Choose or upload a portrait first.");
    return;
  }
  $("start").disabled = true;
  setStatus("connecting…");
  const pc = new RTCPeerConnection();
  state.pc = pc;
  const dc = pc.createDataChannel("control");
  state.dc = dc;
  dc.onmessage = (ev) => onMessage(JSON.parse(ev.data));
  pc.ontrack = (ev) => {
    const v = $("out");
    if (v.srcObject !== ev.streams[0]) v.srcObject = ev.streams[0];
  };
  pc.onconnectionstatechange = () => {
    const s = pc.connectionState;
    if (s === "connected") setStatus("connected", "ok");
    else if (s === "failed" || s === "closed") { setStatus(s, "err"); if (state.pc === pc) stop(); }
    else setStatus(s);
  };
  try {
    const cam = needsWebcam(), mic = needsMic();
    if (cam || mic) {
      try {
        // the microphone raw: no echo cancellation or noise suppression (they gate speech onsets)
        state.local = await navigator.mediaDevices.getUserMedia({
          video: cam ? { width: 640, height: 480, frameRate: 30 } : false,
          audio: mic ? { echoCancellation: false, noiseSuppression: false, autoGainControl: false } : false });
      } catch (e) {
        throw new Error(cam ? `no webcam (${e.name}): choose "track" or "sliders" as the driver`
          : `no microphone (${e.name}): choose another driver for the speech`);
      }
      for (const t of state.local.getTracks()) pc.addTrack(t, state.local);
    }
    if (cam) {
      $("self").srcObject = state.local;
      $("self-fig").hidden = false;
    } else {
      pc.addTransceiver("video", { direction: "recvonly" });
    }
    if (!mic) pc.addTransceiver("audio", { direction: "recvonly" });
    await pc.setLocalDescription(await pc.createOffer());
    await waitIce(pc);
    const r = routes();
    const body = {
      sdp: pc.localDescription.sdp, type: pc.localDescription.type, portrait: state.portrait,
      exp: r.exp, speech: r.speech, mode: document.querySelector("input[name=mode]:checked").value,
      params: document.querySelector("input[name=params]:checked").value,
      mouth: document.querySelector("input[name=mouth]:checked").value,
      interior: document.querySelector("input[name=interior]:checked").value,
      framing: document.querySelector("input[name=framing]:checked").value,
    };
    if (state.info.moves_head) body.motion = document.querySelector("input[name=motion]:checked").value;
    body.scale = Number($("scale").value);
    if ($("track").value) body.track = $("track").value;
    const answer = await api("/offer", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    await pc.setRemoteDescription(answer);
    state.running = true;
    $("stop").disabled = false;
    $("record").disabled = $("snapshot").disabled = false;
  } catch (e) {
    showMsg(e.message);
    setStatus("not connected", "err");
    stop();
  }
}

// Recording: the received stream (video and the server's audio) through the browser's MediaRecorder,
// nothing on the server; the file is offered as a download link when the recording stops.
function recordType() {
  for (const t of ["video/webm;codecs=vp9,opus", "video/webm;codecs=vp8,opus", "video/webm"]) {
    if (window.MediaRecorder && MediaRecorder.isTypeSupported(t)) return t;
  }
  return "";
}

function toggleRecord() {
  if (state.recorder) { state.recorder.stop(); return; }
  const stream = $("out").srcObject;
  const type = recordType();
  if (!stream || !type) { showMsg(type ? "nothing to record yet" : "this browser cannot record video (MediaRecorder)"); return; }
  const chunks = [];
  let rec;
  try {
    rec = new MediaRecorder(stream, { mimeType: type });
  } catch (e) {
    showMsg(`cannot record: ${e.message}`);
    return;
  }
  rec.ondataavailable = (ev) => { if (ev.data.size) chunks.push(ev.data); };
  rec.onstop = () => {
    state.recorder = null;
    $("record").textContent = "Record";
    $("record").disabled = !state.running;
    if (!chunks.length) return;
    const blob = new Blob(chunks, { type: "video/webm" });
    if (state.recording) URL.revokeObjectURL(state.recording);
    state.recording = URL.createObjectURL(blob);
    const a = $("download");
    a.href = state.recording;
    a.download = "slidergan-" + new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19) + ".webm";
    a.textContent = `Download recording (${(blob.size / 1e6).toFixed(1)} MB)`;
    a.hidden = false;
  };
  rec.start(1000);
  state.recorder = rec;
  $("record").textContent = "Stop recording";
}

// Snapshot: the received frame as it is shown, at the stream's own size, saved as a PNG (nothing on the server).
function snapshot() {
  const v = $("out");
  if (!v.videoWidth) { showMsg("nothing to save yet"); return; }
  const c = document.createElement("canvas");
  c.width = v.videoWidth;
  c.height = v.videoHeight;
  c.getContext("2d").drawImage(v, 0, 0);
  c.toBlob((blob) => {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "slidergan-" + new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19) + ".png";
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }, "image/png");
}

function showScale(v) {
  $("scale").value = v;
  $("scale-value").textContent = v.toFixed(2);
}

function stop() {
  if (state.dc && state.dc.readyState === "open") {
    try { state.dc.send(JSON.stringify({ type: "bye" })); } catch (e) { /* closing */ }
  }
  if (state.recorder) state.recorder.stop();    // what was recorded stays downloadable
  if (state.pc) state.pc.close();
  if (state.local) for (const t of state.local.getTracks()) t.stop();
  state.pc = state.dc = state.local = null;
  state.running = false;
  $("self-fig").hidden = true;
  $("start").disabled = false;
  $("stop").disabled = true;
  $("record").disabled = $("snapshot").disabled = true;
  if (!$("status").classList.contains("err")) setStatus("not connected");
}

function onMessage(m) {
  switch (m.type) {
    case "hello":
      state.names = m.param_names;
      state.nExp = m.n_exp;
      buildSliders(m.param_names, m.n_exp, m.rest, m.param_labels);
      if (m.portrait) state.portrait = m.portrait;
      for (const r of document.querySelectorAll("input[name=motion]")) r.checked = r.value === m.motion;
      if (typeof m.scale === "number") showScale(m.scale);
      break;
    case "stats":
      $("r-fps").textContent = m.fps;
      $("r-lat").textContent = m.latency_ms ?? "-";
      $("r-p95").textContent = m.latency_p95_ms ?? "-";
      $("r-render").textContent = m.render_ms ?? "-";
      $("r-drop").textContent = m.frames_dropped + (m.frames_superseded || 0);
      $("r-face").textContent = m.face === null ? "-" :
        ((m.face === "lost" ? "locked face lost" : m.face) + (m.calibrating ? " (calibrating: a relaxed face, please)" : "") +
         (m.holding ? " (holding)" : ""));
      $("r-face").title = m.face_message || "";
      $("r-mic").textContent = !m.mic ? "-" : !m.mic.heard ? "off" :
        (m.mic.silent_s !== null && m.mic.silent_s > 0.3 ? "no sound" : `${m.mic.model_ms} ms`);
      showParams(m.params.concat(m.pose || []),
        m.pinned.concat((m.pose_pinned || []).map((i) => i + m.params.length)));
      updatePreview(m.params);
      if (m.error) showMsg(m.error);
      break;
    case "preset":
      showParams(m.values, []);
      syncRoutes(m.routes);
      break;
    case "routes":
    case "track":
      if (m.routes) syncRoutes(m.routes);
      break;
    case "error":
      showMsg(m.message);
      break;
  }
}

// the blendshape model's 3D face for the current parameters (a few times a second at most)
function updatePreview(params) {
  if (!state.info || !state.info.preview || state.previewBusy) return;
  const key = params.map((v) => v.toFixed(2)).join(",");
  if (key === state.previewKey) return;
  state.previewBusy = true;
  state.previewKey = key;
  const img = $("preview");
  img.onload = img.onerror = () => { state.previewBusy = false; };
  img.src = SERVER + "/api/preview?size=160&p=" + key;
}

function syncRoutes(r) {
  if (!r) return;
  $("route-exp").value = r.exp;
  $("route-speech").value = r.speech;
}

async function onRouteChange() {
  if (!state.running) return;
  const local = state.local ? state.local.getTracks().map((t) => t.kind) : [];
  if ((needsWebcam() && !local.includes("video")) || (needsMic() && !local.includes("audio"))) {
    // the webcam or microphone was not part of this connection: reconnect with it
    stop();
    await start();
    return;
  }
  send(Object.assign({ type: "route" }, routes()));
}

// ------------------------------------------------------------------------------------------ init
async function init() {
  try {
    state.info = await api("/api/info");
    if (!state.token && state.info.token) state.token = state.info.token;
  } catch (e) {
    showMsg(`Server not reachable: ${e.message}`);
    return;
  }
  state.portrait = state.info.portraits.length ? state.info.portraits[0].id : null;
  renderPortraits();
  refreshPortraits();
  // parameters from the face mesh need the model's blendshapes; without them only the head is offered
  const sources = state.info.params_sources || ["head"];
  for (const r of document.querySelectorAll("input[name=params]")) {
    r.disabled = !sources.includes(r.value);
    r.checked = r.value === sources[0];
  }
  for (const r of document.querySelectorAll("input[name=mouth]")) {
    r.checked = r.value === (state.info.source_mouth || "closed");
  }
  for (const r of document.querySelectorAll("input[name=interior]")) {
    r.checked = r.value === (state.info.mouth_interior || "driver");
  }
  for (const r of document.querySelectorAll("input[name=framing]")) {
    r.checked = r.value === (state.info.framing || "square");
  }
  // head motion needs the geometry-guided model
  $("motion-row").hidden = !state.info.moves_head;
  const tsel = $("track");
  for (const t of state.info.tracks) {
    const o = document.createElement("option");
    o.value = t.id;
    o.textContent = `${t.name} (${t.duration.toFixed(1)} s${t.audio ? ", audio" : ""})`;
    tsel.appendChild(o);
  }
  const pbox = $("presets");
  for (const name of state.info.presets) {
    const b = document.createElement("button");
    b.textContent = name;
    b.onclick = () => send({ type: "preset", name });
    pbox.appendChild(b);
  }
  buildSliders(state.info.param_names, state.info.n_exp, null, state.info.param_labels);
  if (state.info.preview) {
    $("preview-fig").hidden = false;
    updatePreview(new Array(state.info.n_params).fill(0));
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    $("route-exp").value = "sliders";
    $("route-speech").value = "sliders";
    showMsg("No webcam access in this browser (it needs https or localhost): sliders drive the portrait.", "msg", true);
  }
  $("upload").onchange = (e) => { if (e.target.files[0]) upload(e.target.files[0]); e.target.value = ""; };
  $("start").onclick = start;
  $("stop").onclick = stop;
  $("release").onclick = () => send({ type: "release" });
  $("record").onclick = toggleRecord;
  $("snapshot").onclick = snapshot;
  $("calibrate").onclick = () => send({ type: "calibrate" });
  // several people in view: click a face in the webcam view to follow that one
  $("self").addEventListener("click", (ev) => {
    const r = ev.currentTarget.getBoundingClientRect();
    if (!r.width || !r.height) return;
    // the view is mirrored (style.css), the frames the server gets are not
    const x = Math.min(1, Math.max(0, 1 - (ev.clientX - r.left) / r.width));
    const y = Math.min(1, Math.max(0, (ev.clientY - r.top) / r.height));
    send({ type: "face", x, y });
  });
  $("route-exp").onchange = onRouteChange;
  $("route-speech").onchange = onRouteChange;
  $("track").onchange = () => {
    const id = $("track").value || null;
    if (id && $("route-speech").value !== "track") $("route-speech").value = "track";
    if (state.running) send({ type: "track", id });
  };
  for (const r of document.querySelectorAll("input[name=mode]")) {
    r.onchange = () => send({ type: "mode", mode: r.value });
  }
  for (const r of document.querySelectorAll("input[name=params]")) {
    r.onchange = () => send({ type: "params", params: r.value });
  }
  for (const r of document.querySelectorAll("input[name=motion]")) {
    r.onchange = () => send({ type: "motion", motion: r.value });
  }
  for (const r of document.querySelectorAll("input[name=mouth]")) {
    r.onchange = () => send({ type: "mouth", mouth: r.value });
  }
  for (const r of document.querySelectorAll("input[name=interior]")) {
    r.onchange = () => send({ type: "interior", interior: r.value });
  }
  for (const r of document.querySelectorAll("input[name=framing]")) {
    r.onchange = () => send({ type: "framing", framing: r.value });
  }
  $("scale").oninput = () => {
    showScale(Number($("scale").value));
    send({ type: "scale", value: Number($("scale").value) });
  };
  window.addEventListener("pagehide", stop);
}

init();
