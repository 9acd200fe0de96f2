// Miroir floor page: one seat per box, fed by /api/stream (server-sent events).
// No inline script (CSP default-src 'self'); styles are set through the CSSOM only.
"use strict";

(function () {
  const LABELS = {
    agent: "Agent parle",
    prospect: "Prospect parle",
    overlap: "Chevauchement",
    silence: "Silence",
    offline: "Hors ligne",
    unknown: "—",
  };
  const ONLINE_LABELS = { online: "En ligne", offline: "Hors ligne", unknown: "État inconnu" };
  const HISTORY = 30;      // talk states kept for the timeline (one per metrics message)
  const STALE_S = 10;      // an online box silent this long is shown as stale
  const STATS_EVERY_MS = 2000;

  const floorEl = document.getElementById("floor");
  const emptyEl = document.getElementById("empty");
  const template = document.getElementById("seat-template");
  const boxes = new Map();
  let messages = 0;
  let clockSkewS = 0;      // server clock minus browser clock, from the snapshot

  function nowS() { return Date.now() / 1000 + clockSkewS; }

  function deriveTalk(near, far) {
    if (near && far) return "overlap";
    if (near) return "agent";
    if (far) return "prospect";
    return "silence";
  }

  function getBox(id) {
    let b = boxes.get(id);
    if (!b) {
      b = { box: id, state: null, lastTs: null, metrics: null, talk: null,
            near: false, far: false, talkTs: 0, history: [], el: null };
      boxes.set(id, b);
    }
    return b;
  }

  function seatFor(b) {
    if (b.el) return b.el;
    const el = template.content.firstElementChild.cloneNode(true);
    el.dataset.box = b.box;
    el.querySelector(".box-id").textContent = b.box;
    const tl = el.querySelector(".timeline");
    for (let i = 0; i < HISTORY; i++) tl.appendChild(document.createElement("span"));
    // Keep seats sorted by box id.
    let before = null;
    for (const child of floorEl.children) {
      if (child.dataset.box > b.box) { before = child; break; }
    }
    floorEl.insertBefore(el, before);
    b.el = el;
    return el;
  }

  function displayState(b) {
    if (b.state === "offline") return "offline";
    return b.talk || "unknown";
  }

  function pct(x) { return (x === null || x === undefined) ? "—" : Math.round(x * 100) + " %"; }

  function render(b) {
    const el = seatFor(b);
    const st = displayState(b);
    el.className = "seat st-" + st;
    el.dataset.state = st;
    el.dataset.online = b.state || "unknown";
    el.querySelector(".talk-state").textContent = LABELS[st] || st;
    const on = el.querySelector(".online");
    on.textContent = ONLINE_LABELS[b.state || "unknown"];
    on.className = "online " + (b.state || "unknown");
    const m = b.metrics || {};
    const near = m.near_speech_ratio, far = m.far_speech_ratio;
    el.querySelector(".fill-agent").style.width = ((near || 0) * 100) + "%";
    el.querySelector(".fill-prospect").style.width = ((far || 0) * 100) + "%";
    el.querySelector(".pct-agent").textContent = pct(near);
    el.querySelector(".pct-prospect").textContent = pct(far);
    const spans = el.querySelector(".timeline").children;
    const offset = HISTORY - b.history.length;
    for (let i = 0; i < HISTORY; i++) {
      spans[i].className = i < offset ? "" : "t-" + b.history[i - offset];
    }
    renderAge(b);
  }

  function renderAge(b) {
    if (!b.el) return;
    const u = b.el.querySelector(".updated");
    if (!b.lastTs) { u.textContent = "jamais vu"; return; }
    const age = Math.max(0, nowS() - b.lastTs);
    const t = new Date(b.lastTs * 1000).toLocaleTimeString("fr-FR");
    u.textContent = "Mis à jour " + t + (age >= 2 ? " (il y a " + fmtAge(age) + ")" : "");
    b.el.classList.toggle("stale", b.state !== "offline" && age > STALE_S);
  }

  function fmtAge(s) {
    if (s < 60) return Math.round(s) + " s";
    if (s < 3600) return Math.round(s / 60) + " min";
    return Math.round(s / 3600) + " h";
  }

  function touch(b, ts) { if (ts && (!b.lastTs || ts > b.lastTs)) b.lastTs = ts; }

  function applyMetrics(b, m) {
    if (b.metrics && m.seq <= b.metrics.seq) return false;
    b.metrics = m;
    if (m.ts >= b.talkTs) {
      b.talk = m.talk_state;
      b.near = !!m.near_talking;
      b.far = !!m.far_talking;
      b.talkTs = m.ts;
    }
    b.history.push(m.talk_state);
    if (b.history.length > HISTORY) b.history.shift();
    touch(b, m.ts);
    return true;
  }

  function applyUpdate(u) {
    const b = getBox(u.box);
    if (u.kind === "metrics") {
      if (!applyMetrics(b, u)) return;
    } else if (u.kind === "status") {
      b.state = u.state;
      touch(b, u.ts);
    } else if (u.kind === "event") {
      if (u.ts >= b.talkTs) {
        const talking = u.name === "speech_start";
        if (u.channel === "near") b.near = talking; else b.far = talking;
        b.talk = deriveTalk(b.near, b.far);
        b.talkTs = u.ts;
      }
      touch(b, u.ts);
    }
    messages += 1;
    render(b);
    refreshCounters();
  }

  function applySnapshot(snap) {
    clockSkewS = snap.now - Date.now() / 1000;
    for (const row of snap.boxes) {
      const b = getBox(row.box);
      b.state = row.state;
      touch(b, row.last_status_ts);
      touch(b, row.last_seen_ts);
      if (row.metrics) applyMetrics(b, row.metrics);
      if (row.history && row.history.length) b.history = row.history.slice(-HISTORY);
      render(b);
    }
    refreshCounters();
  }

  function refreshCounters() {
    let online = 0, talking = 0;
    for (const b of boxes.values()) {
      if (b.state === "online") online += 1;
      if (b.state !== "offline" && b.talk && b.talk !== "silence") talking += 1;
    }
    document.getElementById("count-online").textContent = online;
    document.getElementById("count-total").textContent = boxes.size;
    document.getElementById("count-talking").textContent = talking;
    document.getElementById("count-messages").textContent = messages;
    emptyEl.hidden = boxes.size > 0;
  }

  function setConn(up) {
    const c = document.getElementById("conn");
    c.className = "conn " + (up ? "conn-up" : "conn-down");
    document.getElementById("conn-label").textContent = up ? "En direct" : "Déconnecté";
    document.body.dataset.live = up ? "1" : "0";
  }

  function connect() {
    const es = new EventSource("/api/stream");
    es.addEventListener("open", () => setConn(true));
    es.addEventListener("snapshot", (e) => {
      applySnapshot(JSON.parse(e.data));
      document.body.dataset.streamReady = "1";
    });
    es.addEventListener("update", (e) => applyUpdate(JSON.parse(e.data)));
    es.addEventListener("error", () => {
      setConn(false);
      if (es.readyState === EventSource.CLOSED) {
        // The server refused the stream (session expired?): check, then reconnect or log in.
        fetch("/api/ingest/stats", { credentials: "same-origin" }).then((r) => {
          if (r.status === 401) window.location.assign("/login");
          else setTimeout(connect, 2000);
        }, () => setTimeout(connect, 2000));
      }
    });
  }

  function pollStats() {
    fetch("/api/ingest/stats", { credentials: "same-origin" }).then((r) => {
      if (r.status === 401) { window.location.assign("/login"); return null; }
      return r.ok ? r.json() : null;
    }).then((s) => {
      if (!s) return;
      messages = Math.max(messages, s.inserted || 0);
      document.getElementById("count-messages").textContent = messages;
      const p95 = s.lag_ms_p95;
      document.getElementById("lag-p95").textContent =
        (p95 === null || p95 === undefined) ? "—" : Math.round(p95) + " ms";
    }).catch(() => {});
  }

  setConn(false);
  refreshCounters();
  connect();
  pollStats();
  setInterval(pollStats, STATS_EVERY_MS);
  setInterval(() => { for (const b of boxes.values()) renderAge(b); }, 1000);
})();
