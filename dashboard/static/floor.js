// Miroir floor page: one seat per box, fed by /api/floor (layout, names) and /api/stream (SSE).
// No inline script (CSP default-src 'self'); styles are set through the CSSOM only.
"use strict";

(function () {
  const T = JSON.parse(document.getElementById("i18n").textContent);
  const t = (k) => (k in T ? T[k] : k);
  const HISTORY = 30;      // talk states kept for the timeline (one per metrics message)
  const STALE_S = 10;      // an online box silent this long is shown as stale
  const CUE_SHOW_S = 15;   // a cue badge stays this long on the seat
  const STATS_EVERY_MS = 2000;
  // Only a cue_on event is a coaching cue (a badge named by its cue id); speech_start and
  // speech_end drive the seat state, call_start and call_end whether it is in a call; every
  // other event (overlaps, far_kind) is a fact.
  const SPEECH = new Set(["speech_start", "speech_end"]);
  const CALL = new Set(["call_start", "call_end"]);

  const floorEl = document.getElementById("floor");
  const emptyEl = document.getElementById("empty");
  const template = document.getElementById("seat-template");
  const teamSel = document.getElementById("filter-team");
  const campSel = document.getElementById("filter-campaign");
  const pseudoBox = document.getElementById("pseudo");
  const boxes = new Map();
  let seats = new Map();   // box -> {label, row, col, agent, name, team, campaign, private}
  let layoutCols = null;
  let messages = 0;
  let clockSkewS = 0;      // server clock minus browser clock, from the snapshot
  let silentAfterS = null; // a box silent this long is offline: the IT page's rule, from the snapshot

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
      b = { box: id, state: null, lastTs: null, restartUntil: null, metrics: null, talk: null,
            boxPriv: null,
            captureOk: true, inCall: false, callTs: 0, onHold: false, holdTs: 0,
            near: false, far: false, talkTs: 0,
            history: [], cues: [], el: null };
      boxes.set(id, b);
    }
    return b;
  }

  function seatFor(b) {
    if (b.el) return b.el;
    const el = template.content.firstElementChild.cloneNode(true);
    el.dataset.box = b.box;
    const tl = el.querySelector(".timeline");
    for (let i = 0; i < HISTORY; i++) tl.appendChild(document.createElement("span"));
    let before = null;
    for (const child of floorEl.children) {
      if (child.dataset.box > b.box) { before = child; break; }
    }
    floorEl.insertBefore(el, before);
    b.el = el;
    decorate(b);
    return el;
  }

  function decorate(b) {
    const el = b.el;
    if (!el) return;
    const s = seats.get(b.box) || {};
    const link = el.querySelector(".box-id");
    link.textContent = s.label || b.box;
    if (s.agent) link.setAttribute("href", "/agents/" + encodeURIComponent(s.agent));
    else link.removeAttribute("href");
    el.querySelector(".agent-name").textContent = s.name || "";
    el.dataset.team = s.team || "";
    el.dataset.campaign = s.campaign || "";
    if (s.row && s.col) {  // its place on the site's seat map (style.css: where it fits)
      el.style.setProperty("--row", s.row);
      el.style.setProperty("--col", s.col);
    }
    applyFilter(el);
  }

  function applyFilter(el) {
    const team = teamSel ? teamSel.value : "";
    const camp = campSel ? campSel.value : "";
    el.hidden = (team && el.dataset.team !== team) || (camp && el.dataset.campaign !== camp);
  }

  // Private mode is the box's: its button, its control socket and the dashboard's switch all end
  // there, and its status says which (boxPriv, null until it has). The seat list's flag (the
  // dashboard's switch) only stands in for a box that never said.
  function isPrivate(b) {
    if (b.boxPriv !== null) return b.boxPriv;
    const s = seats.get(b.box);
    return !!(s && s.private);
  }

  // Offline as the IT page says it (dashboard/fleet.py is_offline): its status says so (its Last
  // Will), or the dashboard has heard nothing from it for silentAfterS, whatever its status said.
  function isOffline(b) {
    return b.state === "offline"
      || (silentAfterS !== null && !!b.lastTs && nowS() - b.lastTs > silentAfterS);
  }

  // Restarting, not offline, as the IT page says it (dashboard/fleet.py is_restarting): the box's
  // last status is the stop of a planned restart (an update, a settings reload), and the server
  // said until when (restartUntil, by the server's clock as nowS() is: its grace, from its settings).
  function isRestarting(b) { return b.restartUntil !== null && nowS() <= b.restartUntil; }

  function onlineState(b) {
    if (isRestarting(b)) return "restarting";
    return isOffline(b) ? "offline" : (b.state || "unknown");
  }

  function displayState(b) {
    if (isRestarting(b)) return "restarting";
    if (isOffline(b)) return "offline";
    if (isPrivate(b)) return "private";
    if (!b.captureOk) return "no_capture";
    // on hold, what the box hears is not the call (the agent asking a colleague, hold music)
    if (b.onHold) return "hold";
    return b.talk || "unknown";
  }

  // The box's status says whether its capture delivers (capture_ok). Once it is lost (the headset
  // unplugged) nobody is heard: the talk state the seat had is over, and nothing the box measured
  // before (ts, by the box's clock) brings it back; the next measure after it returns does.
  function setCapture(b, ok, ts) {
    if (!ok && b.captureOk) {
      b.talk = null;
      b.near = false;
      b.far = false;
      b.talkTs = Math.max(b.talkTs, ts || 0);
      setCall(b, false, ts || 0);  // the box ends the call there
    }
    b.captureOk = ok;
  }

  // Whether the seat is in a call: the box's latest word on it (ts by the box's clock), from
  // in_call in its metrics or a call_start / call_end event.
  function setCall(b, inCall, ts) {
    if (ts < b.callTs) return;
    b.inCall = inCall;
    b.callTs = ts;
    if (!inCall) setHold(b, false, ts);  // a call that ends is no longer on hold
  }

  // Whether the seat's call is on hold (the call-state input's hold or hold music on the line):
  // the box's latest word on it (ts by the box's clock), on_hold in its metrics.
  function setHold(b, onHold, ts) {
    if (ts < b.holdTs) return;
    b.onHold = onHold;
    b.holdTs = ts;
  }

  function isStale(b) {
    return b.state !== "offline" && !!b.lastTs && nowS() - b.lastTs > STALE_S;
  }

  // Counted in call: a seat whose box says so and is heard from (online, not stale, its capture
  // working). A private seat sends nothing about its call: whether it is in one is not known.
  function countsInCall(b) {
    return b.inCall && !isOffline(b) && !isPrivate(b) && b.captureOk && !isStale(b);
  }

  function pct(x) { return (x === null || x === undefined) ? "—" : Math.round(x * 100) + " %"; }

  // The box's fatigue index runs 0..100 (edge.fatigue); the seat's <meter> runs 0..1. The other
  // fatigue_* fields are not a level (fatigue_phonation_min is minutes of voice): null until the
  // box has an index.
  function fatigueOf(m) {
    const index = (m || {}).fatigue_index;
    return typeof index === "number" ? Math.max(0, Math.min(1, index / 100)) : null;
  }

  function render(b) {
    const el = seatFor(b);
    const st = displayState(b);
    el.className = "seat st-" + st + (el.classList.contains("stale") ? " stale" : "");
    el.dataset.state = st;
    const online = onlineState(b);
    el.dataset.online = online;
    el.querySelector(".talk-state").textContent = t("state." + st);
    const on = el.querySelector(".online");
    on.textContent = t("online." + online);
    on.className = "online " + online;
    const m = b.metrics || {};
    // the shares of the last 30 s (what the timeline below shows), the last second's from a box
    // that sends no rolling window: a 1 s share flips between 0 and 100 % as the turns go. A call
    // on hold for the last 30 s has no such window (the box leaves it out): "on hold", no share
    // (the last second's would be the agent's talk to a colleague; a stored row's empty 30 s
    // share read "Parole, 30 dernières s —")
    const held = m.on_hold === true && typeof m.agent_speech_ratio_30s !== "number";
    const rolling = !held && m.agent_speech_ratio_30s !== undefined;
    const near = rolling ? m.agent_speech_ratio_30s : held ? null : m.near_speech_ratio;
    const far = rolling ? m.prospect_speech_ratio_30s : held ? null : m.far_speech_ratio;
    el.querySelector(".bars-caption").textContent =
      t(rolling ? "seat.bars_30s" : held ? "seat.bars_hold" : "seat.bars_1s");
    el.querySelector(".fill-agent").style.width = ((near || 0) * 100) + "%";
    el.querySelector(".fill-prospect").style.width = ((far || 0) * 100) + "%";
    el.querySelector(".pct-agent").textContent = pct(near);
    el.querySelector(".pct-prospect").textContent = pct(far);
    const fat = fatigueOf(m);
    const fEl = el.querySelector(".fatigue");
    fEl.hidden = fat === null;
    if (fat !== null) {
      fEl.querySelector("meter").value = fat;
      // its figure beside it, on the box's 0 to 100 scale, as the speech bars say theirs: an
      // index of 0 drew an empty bar alone, read as no data
      fEl.querySelector(".pct-fatigue").textContent = Math.round(fat * 100) + " / 100";
    }
    renderCues(b);
    const spans = el.querySelector(".timeline").children;
    const offset = HISTORY - b.history.length;
    for (let i = 0; i < HISTORY; i++) {
      spans[i].className = i < offset ? "" : "t-" + b.history[i - offset];
    }
    renderAge(b);
  }

  function renderCues(b) {
    if (!b.el) return;
    const now = nowS();
    b.cues = b.cues.filter((c) => now - c.ts < CUE_SHOW_S);
    const box = b.el.querySelector(".cues");
    box.textContent = "";
    for (const c of b.cues) {
      const span = document.createElement("span");
      span.className = "cue-badge";
      span.dataset.cue = c.name;
      span.textContent = T["cue." + c.name] || c.name.replace(/_/g, " ");
      box.appendChild(span);
    }
  }

  function renderAge(b) {
    if (!b.el) return;
    const u = b.el.querySelector(".updated");
    if (!b.lastTs) { u.textContent = t("seat.never"); return; }
    const age = Math.max(0, nowS() - b.lastTs);
    // two digits to the hour, as every other time of the dashboard (French's default wrote
    // "Mis à jour 6:10:11 UTC" beside a chart's "06:10:56 UTC")
    const tm = new Date(b.lastTs * 1000).toLocaleTimeString(T.lang === "en" ? "en-GB" : "fr-FR",
                                                        { hour: "2-digit", minute: "2-digit",
                                                          second: "2-digit", timeZoneName: "short" });
    u.textContent = t("seat.updated") + " " + tm + (age >= 2 ? " (" + fmtAge(age) + ")" : "");
    b.el.classList.toggle("stale", isStale(b));
  }

  function fmtAge(s) {
    if (s < 60) return Math.round(s) + " s";
    if (s < 3600) return Math.round(s / 60) + " min";
    return Math.round(s / 3600) + " h";
  }

  function touch(b, ts) { if (ts && (!b.lastTs || ts > b.lastTs)) b.lastTs = ts; }

  // When the dashboard received a message, by the server's clock (as nowS() is): the box's own
  // ts is by the box's clock, which may be off, so it only stands in for an older server.
  function heardTs(u) { return typeof u.ingested_ts === "number" ? u.ingested_ts : u.ts; }

  function applyMetrics(b, m) {
    if (b.metrics && m.seq <= b.metrics.seq) return false;
    b.metrics = m;
    if (m.ts >= b.talkTs) {
      b.talk = m.talk_state;
      b.near = !!m.near_talking;
      b.far = !!m.far_talking;
      b.talkTs = m.ts;
    }
    if (typeof m.in_call === "boolean") setCall(b, m.in_call, m.ts);
    setHold(b, m.on_hold === true, m.ts);  // a box older than on_hold never says it is on hold
    b.history.push(m.on_hold === true ? "hold" : m.talk_state);
    if (b.history.length > HISTORY) b.history.shift();
    touch(b, heardTs(m));
    return true;
  }

  function applyUpdate(u) {
    const b = getBox(u.box);
    if (u.kind === "metrics") {
      if (!applyMetrics(b, u)) return;
    } else if (u.kind === "status") {
      b.state = u.state;
      b.restartUntil = typeof u.restarting_until_ts === "number" ? u.restarting_until_ts : null;
      if (typeof u.private === "boolean") b.boxPriv = u.private;
      if (u.capture_ok !== undefined) setCapture(b, u.capture_ok !== false, u.ts);
      touch(b, heardTs(u));
    } else if (u.kind === "event") {
      if (SPEECH.has(u.name)) {
        if (u.ts >= b.talkTs) {
          const talking = u.name === "speech_start";
          if (u.channel === "near") b.near = talking; else b.far = talking;
          b.talk = deriveTalk(b.near, b.far);
          b.talkTs = u.ts;
        }
      } else if (CALL.has(u.name)) {
        setCall(b, u.name === "call_start", u.ts);
      } else if (u.name === "cue_on" && u.cue) {
        b.cues.push({ name: u.cue, ts: heardTs(u) });
      }
      touch(b, heardTs(u));
    }
    messages += 1;
    render(b);
    refreshCounters();
  }

  function applySnapshot(snap) {
    clockSkewS = snap.now - Date.now() / 1000;
    if (typeof snap.silent_after_s === "number") silentAfterS = snap.silent_after_s;
    for (const row of snap.boxes) {
      const b = getBox(row.box);
      b.state = row.state;
      b.restartUntil = typeof row.restarting_until_ts === "number" ? row.restarting_until_ts : null;
      if (typeof row.private === "boolean") b.boxPriv = row.private;
      // last_seen_ts: when the dashboard last heard the box (last_status_ts is the box's clock)
      touch(b, row.last_seen_ts || row.last_status_ts);
      if (row.metrics) applyMetrics(b, row.metrics);
      if (row.capture_ok !== null && row.capture_ok !== undefined) {
        setCapture(b, row.capture_ok !== false, row.last_status_ts);
      }
      if (row.history && row.history.length) b.history = row.history.slice(-HISTORY);
      render(b);
    }
    for (const box of seats.keys()) render(getBox(box));
    refreshCounters();
  }

  // A box retired by site IT (miroir dashboard retire) leaves the floor: its seat and its count.
  function retire(id) {
    const b = boxes.get(id);
    if (b && b.el) b.el.remove();
    boxes.delete(id);
    seats.delete(id);
    refreshCounters();
  }

  function refreshCounters() {
    let online = 0, inCall = 0;
    for (const b of boxes.values()) {
      if (onlineState(b) === "online") online += 1;
      if (countsInCall(b)) inCall += 1;
    }
    setText("count-online", online);
    setText("count-total", boxes.size);
    setText("count-in-call", inCall);
    setText("count-messages", messages);
    emptyEl.hidden = boxes.size > 0;
  }

  // The seat counts are aria-live and refreshed every second: only a change is written (announced).
  function setText(id, value) {
    const el = document.getElementById(id);  // the ingest's figures are an admin's only
    const text = String(value);
    if (el && el.textContent !== text) el.textContent = text;
  }

  function setConn(up) {
    const c = document.getElementById("conn");
    c.className = "conn " + (up ? "conn-up" : "conn-down");
    document.getElementById("conn-label").textContent = t(up ? "live.up" : "live.down");
    document.body.dataset.live = up ? "1" : "0";
  }

  function fillSelect(sel, values) {
    if (!sel) return;
    const keep = sel.value;
    while (sel.options.length > 1) sel.remove(1);
    for (const v of values) sel.add(new Option(v, v));
    sel.value = values.indexOf(keep) >= 0 ? keep : "";
  }

  function loadSeats() {
    const pseudo = pseudoBox && pseudoBox.checked ? "true" : "false";
    return fetch("/api/floor?pseudonymous=" + pseudo, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : null)).then((f) => {
        if (!f) return;
        seats = new Map(f.seats.map((s) => [s.box, s]));
        // the site's seat map (its columns) only where seats have a place on it: otherwise the
        // seats flow to the screen's width (six fixed columns overflowed a 1280 px screen)
        const placed = f.seats.some((s) => s.row && s.col);
        layoutCols = placed ? f.layout_cols : null;
        floorEl.classList.toggle("mapped", !!layoutCols);
        if (layoutCols) floorEl.style.setProperty("--cols", layoutCols);
        fillSelect(teamSel, f.teams);
        fillSelect(campSel, f.campaigns);
        document.body.dataset.pseudo = f.pseudonymous ? "1" : "0";
        for (const s of f.seats) {
          const b = getBox(s.box);
          if (b.el) decorate(b);
          render(b);  // the seat list's private flag may stand in for the box's
        }
        refreshCounters();
      }).catch(() => {});
  }

  function connect() {
    const es = new EventSource("/api/stream");
    es.addEventListener("open", () => setConn(true));
    es.addEventListener("snapshot", (e) => {
      applySnapshot(JSON.parse(e.data));
      document.body.dataset.streamReady = "1";
    });
    es.addEventListener("update", (e) => applyUpdate(JSON.parse(e.data)));
    es.addEventListener("retired", (e) => retire(JSON.parse(e.data).box));
    es.addEventListener("error", () => {
      setConn(false);
      if (es.readyState === EventSource.CLOSED) {
        fetch("/api/ingest/stats", { credentials: "same-origin" }).then((r) => {
          if (r.status === 401) window.location.assign("/login?ended=1");
          else setTimeout(connect, 2000);
        }, () => setTimeout(connect, 2000));
      }
    });
  }

  function pollStats() {
    fetch("/api/ingest/stats", { credentials: "same-origin" }).then((r) => {
      if (r.status === 401) { window.location.assign("/login?ended=1"); return null; }
      return r.ok ? r.json() : null;
    }).then((s) => {
      if (!s) return;
      messages = Math.max(messages, s.inserted || 0);
      setText("count-messages", messages);
      const p95 = s.lag_ms_p95;
      setText("lag-p95", (p95 === null || p95 === undefined) ? "—" : Math.round(p95) + " ms");
    }).catch(() => {});
  }

  for (const sel of [teamSel, campSel]) {
    if (sel) sel.addEventListener("change", () => { for (const b of boxes.values()) if (b.el) applyFilter(b.el); });
  }
  if (pseudoBox) pseudoBox.addEventListener("change", loadSeats);

  setConn(false);
  refreshCounters();
  loadSeats().then(connect);
  pollStats();
  setInterval(pollStats, STATS_EVERY_MS);
  setInterval(() => {
    for (const b of boxes.values()) {
      // gone silent, or a restart's grace over: offline
      if (b.el && b.el.dataset.online !== onlineState(b)) render(b);
      else { renderAge(b); renderCues(b); }
    }
    refreshCounters();  // a seat gone stale is no longer counted in call, one gone silent online
  }, 1000);
})();
