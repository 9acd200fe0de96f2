// Miroir agent view: the shift as charts with cue and flag markers that follow the call live
// (the agent's stream, /api/stream?agent=..., audited once when it opens), moment replay, and
// a live strip (the seat's state, its latest cues) fed by the same stream.
"use strict";

(function () {
  const T = JSON.parse(document.getElementById("i18n").textContent);
  const t = (k) => (k in T ? T[k] : k);
  const body = document.body;
  const agent = body.dataset.agent;
  const selfView = body.dataset.self === "1";
  // the seat's state as its reader is told it: to the agent on their own page ("Vous parlez",
  // "Le prospect parle"), in the floor's words ("Agent parle") to a supervisor
  const stateText = (key) => (selfView && ("me.state." + key) in T ? T["me.state." + key]
                                                                  : t("state." + key));
  const charts = document.getElementById("charts");
  const flagTs = document.getElementById("flag-ts");
  const flagTime = document.getElementById("flag-time");
  const flagAt = document.getElementById("flag-at");
  const SHIFT_S = 12 * 3600;
  const MAX_ROWS = 20000;  // as many as the API answers (analytics.MAX_METRIC_ROWS)
  const REDRAW_MS = 1000;  // live rows redraw the charts at most once a second
  const COLOURS = ["#2f6fdb", "#1f9d6b", "#e0702a", "#7a4cc2", "#b3261e", "#1f3a5f"];

  const two = (n) => String(n).padStart(2, "0");

  // A cue as a coach reads it: its label and the figure that raised it against its threshold,
  // in the cue's own words and unit ("Laissez parler le prospect : tour de parole qui dure déjà
  // 61,3 s (seuil 60 s)"); the label alone when the box sent no evidence in the unit the words expect.
  function cueText(c) {
    const label = c.label || T["cue." + c.name] || c.name.replace(/_/g, " ");
    const words = T["cue_evidence." + c.name + "." + c.evidence_unit];
    if (!words || typeof c.evidence_value !== "number" || typeof c.evidence_threshold !== "number") {
      return label;
    }
    return label + " : " + words.replace("{value}", MiroirCharts.fmtNumber(c.evidence_value))
      .replace("{threshold}", MiroirCharts.fmtNumber(c.evidence_threshold));
  }

  // The moment to flag: its time field (hh:mm:ss in the reader's zone) and, beside it, the
  // moment in full with its zone named (the field's description).
  function pick(ts, fromField) {
    if (!flagTs) return;
    flagTs.value = ts.toFixed(1);
    flagTime.textContent = MiroirCharts.fmtTime(ts);
    if (!fromField && flagAt) {
      const d = new Date(ts * 1000);
      flagAt.value = two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
      invalid(false);
    }
  }

  function invalid(on) {
    flagAt.setAttribute("aria-invalid", on ? "true" : "false");
    document.getElementById("flag-at-error").hidden = !on;
  }

  // A time typed in the field ("14:05:30", "14:05", "14h05"): the latest moment at that time of
  // day, today's or, if still to come, yesterday's (a shift that began before midnight); null
  // when it cannot be read.
  function typed() {
    const m = /^\s*(\d{1,2})\s*[:hH.]\s*(\d{2})(?:\s*[:mM.]\s*(\d{2}))?\s*s?\s*$/.exec(flagAt.value);
    if (!m || +m[1] > 23 || +m[2] > 59 || +(m[3] || 0) > 59) return null;
    const d = new Date();
    d.setHours(+m[1], +m[2], +(m[3] || 0), 0);
    if (d.getTime() > Date.now() + 1000) d.setDate(d.getDate() - 1);
    return d.getTime() / 1000;
  }

  if (flagTs) pick(parseFloat(flagTs.value));
  if (flagAt) {
    flagAt.addEventListener("input", () => {
      const ts = typed();
      if (ts !== null) { pick(ts, true); invalid(false); }
    });
    // a time that cannot be read is said so, the field in error, rather than the last moment
    // picked sent in its place (a readable one is the moment already: each input picks it)
    document.getElementById("flag-form").addEventListener("submit", (ev) => {
      if (typed() !== null) return;
      ev.preventDefault();
      invalid(true);
      flagAt.focus();
    });
  }

  // What of the charts and cue buttons had the keyboard's focus: draw() rebuilds them (once a
  // second while a call goes on), and the reader's place must not fall back to the page's top.
  function focused() {
    const a = document.activeElement;
    if (!a || a === body) return null;
    if (a.closest("#cue-list") && a.dataset.ts) return { cue: a.dataset.ts };
    if (a.id === "back-live") return { id: "back-live" };
    if (a.tagName === "SUMMARY" && a.closest("#charts-without-data")) return { summary: true };
    return null;
  }

  function refocus(was) {
    if (!was) return;
    let target = null;
    if (was.cue) {
      target = [...document.querySelectorAll("#cue-list .replay")]
        .find((b) => b.dataset.ts === was.cue) || null;
    } else if (was.id) {
      target = document.getElementById(was.id);
    } else if (was.summary) {
      target = document.querySelector("#charts-without-data summary");
    }
    (target || charts).focus({ preventScroll: true });  // gone ("back to live"): the charts
  }

  function draw(data, title) {
    const was = focused();
    try {
      drawCharts(data, title);
    } finally {
      refocus(was);
    }
  }

  function drawCharts(data, title) {
    charts.textContent = "";
    replaying = !!title;
    if (title) {
      const h = document.createElement("h3");
      h.textContent = title + " ";
      const back = document.createElement("button");
      back.type = "button";
      back.className = "ghost";
      back.id = "back-live";
      back.textContent = t("agent.back_live");
      back.addEventListener("click", () => { if (shift) draw(shift, null); });
      h.appendChild(back);
      charts.appendChild(h);
    }
    const rows = data.rows;
    if (!rows.length) {
      const p = document.createElement("p");
      p.className = "muted";
      p.id = "charts-empty";
      charts.appendChild(p);
      showEmpty();
      body.dataset.chartsReady = "1";
      return;
    }
    if (data.truncated) {  // more rows than the API answers: the oldest are left out
      const p = document.createElement("p");
      p.className = "muted";
      p.id = "charts-truncated";
      p.textContent = t("agent.truncated") + " " + MiroirCharts.fmtTime(rows[0].ts);
      charts.appendChild(p);
    }
    const t0 = rows[0].ts, t1 = rows[rows.length - 1].ts;
    const onPick = flagTs ? pick : null;
    const flags = data.flags.map((f) => (f.note ? f : Object.assign({}, f, {
      note: t("chart.flag") + " " + t("agent.flag_no_note") })));  // a moment marked, no words
    const cues = data.cues.map((c) => Object.assign({}, c, { label: cueText(c) }));
    const common = { t0, t1, cues, flags, onPick, stateLabel: stateText,
                     latestLabel: t("chart.latest"), latestStateLabel: t("chart.latest_state"),
                     atLabel: t("chart.at") };
    MiroirCharts.states(charts, Object.assign({ title: t("chart.turns"), rows }, common));
    const empty = [];  // measured by nobody in this window: named once, not drawn as empty frames
    data.metrics.forEach((m, i) => {
      if (!rows.some((r) => r[m.name] !== null && r[m.name] !== undefined)) {
        empty.push(m);
        return;
      }
      const pts = rows.map((r) => [r.ts, r[m.name] === null ? null :
        (m.unit === "%" ? r[m.name] * 100 : r[m.name])]);
      MiroirCharts.line(charts, Object.assign({ title: m.label, unit: m.unit, points: pts,
                                                minSpan: m.min_span,
                                                colour: COLOURS[i % COLOURS.length] }, common));
      if (m.name === "fatigue_index") charts.appendChild(factors(rows, data));
    });
    if (empty.length) charts.appendChild(withoutData(empty, rows, data));
    const list = document.getElementById("cue-list");
    if (list) {
      list.textContent = "";
      for (const c of cues) {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "cue-badge replay";
        b.dataset.ts = c.ts;
        b.textContent = MiroirCharts.fmtTime(c.ts) + " · " + c.label;
        list.appendChild(b);
      }
    }
    body.dataset.chartsReady = "1";
  }

  // Why a metric has no value in the window, where the box's data says so: its prospect analysis
  // is not running (the box's status), a rolling window (_30s, _60s) lay wholly in a hold in every
  // row (on_hold: the box leaves such a window out), a channel it reads had no signal in any row
  // (near_signal, far_signal), the fatigue index waits for the agent's baseline, or the box heard
  // its channels and too little speech; null when the rows do not say (a box that sent no signal
  // state).
  const DEAD = new Set(["none", "nan", "dc"]);
  const ROLLING = /_\d+s$/;
  function why(m, rows, data) {
    const reads = m.reads || [];
    if (m.name.startsWith("prospect_") && data.affect_state && data.affect_state !== "on") {
      return "affect_" + data.affect_state;
    }
    if (ROLLING.test(m.name) && rows.every((r) => r.on_hold === true)) return "on_hold";
    for (const c of reads) {
      if (rows.every((r) => DEAD.has(r[c + "_signal"]))) return "no_signal_" + c;
    }
    if (m.name === "fatigue_index") return "fatigue_baseline";
    if (reads.length && rows.every((r) => reads.every((c) => typeof r[c + "_signal"] === "string"))) {
      return "little_speech";
    }
    return null;
  }

  // The metrics without a value in the window, named once (not drawn as empty frames), a line
  // per reason, under their count: folded on a phone (they took 570 px of its shift panel), open
  // on a wider screen; opened or closed by the reader, they stay so as the charts are redrawn.
  const NARROW = window.matchMedia("(max-width: 600px)");
  let withoutOpen = null;
  function withoutData(empty, rows, data) {
    const groups = new Map();
    for (const m of empty) {
      const key = why(m, rows, data);
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(m.label);
    }
    const box = document.createElement("details");
    box.className = "muted without-data";
    box.id = "charts-without-data";
    box.open = withoutOpen === null ? !NARROW.matches : withoutOpen;
    box.addEventListener("toggle", () => { withoutOpen = box.open; });
    const summary = document.createElement("summary");
    summary.textContent = t("agent.no_values") + " (" + empty.length + ")";
    const ul = document.createElement("ul");
    for (const [key, labels] of groups) {
      const li = document.createElement("li");
      li.dataset.reason = key || "unknown";
      const text = key ? T["agent.why_" + key] : null;
      if (text) li.append(text + (T.lang === "en" ? ": " : " : "));
      labels.forEach((label, i) => {
        const span = document.createElement("span");
        span.className = "metric";
        span.textContent = label;
        li.append(...(i ? [", ", span] : [span]));
      });
      ul.appendChild(li);
    }
    box.append(summary, ul);
    return box;
  }

  // Under the fatigue chart: the factors of its latest value above measurement noise, largest
  // first (the box's fatigue_<factor>_z, signed towards fatigue), so that a supervisor sees why.
  function factors(rows, data) {
    let last = null;
    for (let i = rows.length - 1; i >= 0 && !last; i--) {
      if (typeof rows[i].fatigue_index === "number") last = rows[i];
    }
    const up = (data.factors || [])
      .map((f) => [f.label, last ? last[f.name] : null])
      .filter(([, z]) => typeof z === "number" && z >= data.factor_noise_z)
      .sort((a, b) => b[1] - a[1]);
    const fmt = new Intl.NumberFormat(T.lang === "en" ? "en-GB" : "fr-FR",
                                      { minimumFractionDigits: 1, maximumFractionDigits: 1,
                                        signDisplay: "always" });
    const p = document.createElement("p");
    p.className = "muted small";
    p.id = "fatigue-factors";
    p.textContent = t("agent.fatigue_factors") + " " + (up.length
      ? up.map(([label, z]) => label + " (" + fmt.format(z) + ")").join(", ")
      : t("agent.no_factor"));
    return p;
  }

  // The shift as loaded, then grown by the stream's rows and cues (those that came before the
  // load wait in `early`); a replayed moment stays on screen until "back to live".
  let shift = null, replaying = false, early = [], lastDrawMs = 0, redrawTimer = null;

  function redraw() {
    redrawTimer = null;
    if (!shift || replaying) return;
    lastDrawMs = Date.now();
    draw(shift, null);
  }

  function schedule() {
    if (redrawTimer === null) {
      redrawTimer = setTimeout(redraw, Math.max(0, lastDrawMs + REDRAW_MS - Date.now()));
    }
  }

  function addLive(u) {
    if (!shift) { early.push(u); return; }
    if (u.kind === "metrics") {
      const rows = shift.rows;
      if (rows.some((r) => r.box === u.box && r.seq === u.seq)) return;
      const row = { box: u.box, seq: u.seq, ts: u.ts, talk_state: liveTalk(u),  // as the API
                    near_signal: u.near_signal || null, far_signal: u.far_signal || null,
                    on_hold: typeof u.on_hold === "boolean" ? u.on_hold : null };
      for (const m of shift.metrics.concat(shift.factors || [])) {
        row[m.name] = u[m.name] === undefined ? null : u[m.name];
      }
      let i = rows.length;
      while (i > 0 && rows[i - 1].ts > row.ts) i--;
      rows.splice(i, 0, row);
      const oldest = Date.now() / 1000 - SHIFT_S;
      while (rows.length > MAX_ROWS || (rows.length && rows[0].ts < oldest)) rows.shift();
    } else if (u.kind === "event" && u.name === "cue_on" && u.cue) {
      if (shift.cues.some((c) => c.box === u.box && c.seq === u.seq)) return;
      shift.cues.push({ box: u.box, seq: u.seq, ts: u.ts, name: u.cue, channel: u.channel,
                        label: T["cue." + u.cue] || u.cue.replace(/_/g, " "),
                        evidence_value: u.evidence_value, evidence_threshold: u.evidence_threshold,
                        evidence_unit: u.evidence_unit });
    } else {
      return;
    }
    schedule();
  }

  function load() {
    const since = Date.now() / 1000 - SHIFT_S;
    return fetch("/api/agents/" + encodeURIComponent(agent) + "/metrics?since_ts=" + since,
                 { credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : null)).then((d) => {
        if (!d) return;
        shift = d;
        lastDrawMs = Date.now();
        draw(d, null);
        const waiting = early;
        early = [];
        waiting.forEach(addLive);
      });
  }

  function replay(ts) {
    fetch("/api/agents/" + encodeURIComponent(agent) + "/moment?ts=" + ts + "&span_s=30",
          { credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : null))
      .then((d) => { if (d) { draw(d, t("agent.replay") + " " + MiroirCharts.fmtTime(ts)); pick(ts); } });
    charts.scrollIntoView();
  }

  document.addEventListener("click", (ev) => {
    const b = ev.target.closest ? ev.target.closest(".replay") : null;
    if (b) replay(parseFloat(b.dataset.ts));
  });

  // The box's word on the seat: offline or private (its status) comes before any talk state, and
  // the talk state measured before either is over (nothing of a private stretch is shown).
  // A box the dashboard has not heard for the IT page's silence threshold is offline too, whatever
  // its last status said (a revoked box's Last Will never comes), as on the floor. A box whose
  // last status is the stop of a planned restart (an update, a settings reload) is restarting,
  // not offline, until the time the server said (restartUntil: the IT page's rule and grace).
  const seat = { state: null, priv: false, talk: null, heardS: null, restartUntil: null };
  let silentAfterS = null, clockSkewS = 0, gone = false;

  // The agent is no longer the reader's to see (erased, moved to another team): the page says so
  // once, shows no live state and stops asking for a stream that is refused (404) for good.
  function goneForGood() {
    gone = true;
    const el = document.getElementById("live-state");
    if (el) { el.textContent = "—"; el.dataset.state = "gone"; }
    const p = document.createElement("p");
    p.className = "error";
    p.id = "agent-gone";
    p.setAttribute("role", "alert");
    p.textContent = t("agent.gone");
    const main = document.querySelector("main");
    main.insertBefore(p, main.firstChild);
  }

  function silent() {
    return silentAfterS !== null && seat.heardS !== null
      && Date.now() / 1000 + clockSkewS - seat.heardS > silentAfterS;
  }

  function restarting() {
    return seat.restartUntil !== null && Date.now() / 1000 + clockSkewS <= seat.restartUntil;
  }

  function heard(ts) { if (ts && (seat.heardS === null || ts > seat.heardS)) seat.heardS = ts; }

  // Why the shift has no row, when the seat's live state knows: a private call measures nothing,
  // a box offline (its status, or silent) since it was last heard; else the bare sentence.
  function showEmpty() {
    const p = document.getElementById("charts-empty");
    if (!p) return;
    let text = t("agent.no_data");
    if (seat.priv) {
      text = t("agent.no_data_private");
    } else if (restarting()) {
      text = t("agent.no_data_restarting").replace("{time}", since(seat.heardS));
    } else if (seat.state === "offline" || silent()) {
      text = seat.heardS === null ? t("agent.no_data_offline")
        : t("agent.no_data_offline_since").replace("{time}", since(seat.heardS));
    }
    if (p.textContent !== text) p.textContent = text;
  }

  // HH:MM in the reader's zone, named; with the day when it is not today.
  function since(ts) {
    const when = new Date(ts * 1000);
    const opts = { hour: "2-digit", minute: "2-digit", timeZoneName: "short" };
    if (when.toDateString() !== new Date().toDateString()) {
      Object.assign(opts, { day: "numeric", month: "short" });
    }
    return when.toLocaleString(T.lang === "en" ? "en-GB" : "fr-FR", opts);
  }

  // The seat's state in a metrics message: its talk state, or "hold" while the call is on hold
  // (what the box hears then is not the call's: the agent asking a colleague, hold music).
  function liveTalk(m) { return m.on_hold === true ? "hold" : m.talk_state; }

  function showSeat(el) {
    showEmpty();
    if (gone) return;
    const key = restarting() ? "restarting" : seat.state === "offline" || silent() ? "offline"
      : seat.priv ? "private" : seat.talk;
    el.textContent = key ? stateText(key) : "—";
    el.dataset.state = key || "unknown";
  }

  function applyStatus(state, priv, restartUntil) {
    if (state) seat.state = state;
    seat.restartUntil = typeof restartUntil === "number" ? restartUntil : null;
    if (typeof priv === "boolean") seat.priv = priv;
    if (seat.priv || seat.state === "offline") seat.talk = null;
  }

  // The private switch of the agent's own page says what the box says (its status on the stream,
  // whoever changed it: this page, another tab, the box's button), as a reload would: once sent
  // from this page (the answer's server time, data-sent-at), what it sent until the box speaks
  // since, for data-confirm-s at most.
  const privatePanel = document.getElementById("private");
  let sentAt = privatePanel && privatePanel.dataset.sentAt
    ? parseFloat(privatePanel.dataset.sentAt) : null;
  let boxPrivate = null;  // the box's last word, null until it said one

  function showPrivate(on) {
    const toggle = document.getElementById("private-toggle");
    if (!privatePanel || !toggle) return;
    const said = document.getElementById("private-state") || document.getElementById("private-help");
    if (said && (said.id === "private-state") !== on) {
      const p = document.createElement("p");
      p.id = on ? "private-state" : "private-help";
      p.className = on ? "private-on" : "muted small";
      p.textContent = t(on ? "agent.private_is_on" : "agent.private_help");
      said.replaceWith(p);
    }
    toggle.form.elements.namedItem("private").value = on ? "0" : "1";
    toggle.textContent = t(on ? "agent.private_off" : "agent.private_on");
    toggle.className = on ? "" : "warn";
  }

  // ``priv`` said by the box at ``ts`` (its clock), or the time sent from this page is up
  function boxSaysPrivate(priv, ts) {
    if (typeof priv === "boolean") {
      boxPrivate = priv;
      if (sentAt !== null && typeof ts === "number" && ts >= sentAt) sentAt = null;
    }
    if (sentAt === null && boxPrivate !== null) showPrivate(boxPrivate);
  }

  // the switch could not reach the box (/me?sent=0): said until the box speaks again, live
  function boxSpoke(state) {
    const unsent = document.getElementById("private-unsent");
    if (unsent && state !== "offline") unsent.remove();
  }

  function awaitConfirmation() {
    if (sentAt === null) return;
    const leftS = sentAt + parseFloat(privatePanel.dataset.confirmS) - (Date.now() / 1000 + clockSkewS);
    setTimeout(() => { sentAt = null; boxSaysPrivate(null, null); }, Math.max(0, leftS * 1000));
  }

  function live() {
    const state = document.getElementById("live-state");
    const cues = document.getElementById("live-cue-list");
    const es = new EventSource("/api/stream?agent=" + encodeURIComponent(agent));
    es.addEventListener("snapshot", (e) => {
      const snap = JSON.parse(e.data);
      if (typeof snap.silent_after_s === "number") silentAfterS = snap.silent_after_s;
      if (typeof snap.now === "number") clockSkewS = snap.now - Date.now() / 1000;
      for (const b of snap.boxes) {
        seat.talk = b.metrics ? liveTalk(b.metrics) : null;
        heard(b.last_seen_ts || b.last_status_ts);
        applyStatus(b.state, b.private, b.restarting_until_ts);
        boxSaysPrivate(b.private, b.last_status_ts);
      }
      awaitConfirmation();
      if (state) showSeat(state);
      body.dataset.streamReady = "1";
    });
    es.addEventListener("update", (e) => {
      const u = JSON.parse(e.data);
      addLive(u);
      if (!state) return;
      if (u.kind === "metrics" || u.kind === "status") {
        heard(typeof u.ingested_ts === "number" ? u.ingested_ts : u.ts);
      }
      if (u.kind === "metrics") {
        seat.talk = liveTalk(u);
        showSeat(state);
      } else if (u.kind === "status") {
        applyStatus(u.state, u.private, u.restarting_until_ts);
        boxSaysPrivate(u.private, u.ts);
        boxSpoke(u.state);
        showSeat(state);
      } else if (u.kind === "event" && u.name === "cue_on" && u.cue) {
        const s = document.createElement("span");
        s.className = "cue-badge";
        s.dataset.cue = u.cue;
        s.textContent = T["cue." + u.cue] || u.cue.replace(/_/g, " ");
        cues.prepend(s);
        while (cues.children.length > 5) cues.lastChild.remove();
      }
    });
    es.addEventListener("error", () => {
      // the browser gives up on a refused stream (too many tabs, a restart): try again later,
      // log in again if the session is over, or stop if the agent is no longer there to see
      if (es.readyState !== EventSource.CLOSED) return;
      fetch("/api/agents", { credentials: "same-origin" }).then((r) => {
        if (r.status === 401) { window.location.assign("/login?ended=1"); return null; }
        return r.ok ? r.json() : { agents: [{ agent }] };
      }).then((d) => {
        if (!d) return;
        if (d.agents.some((a) => a.agent === agent)) setTimeout(live, 5000);
        else goneForGood();
      }, () => setTimeout(live, 5000));
    });
  }

  load();
  live();
  setInterval(() => {  // a box gone silent turns offline without a message to say so
    const el = document.getElementById("live-state");
    if (el) showSeat(el);
  }, 1000);
})();
