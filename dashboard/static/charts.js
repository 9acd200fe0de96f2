// Miroir charts: small SVG line charts with cue and flag markers, drawn without any library.
// Everything is built through the DOM (no inline script or style), so the strict CSP holds.
"use strict";

window.MiroirCharts = (function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 760, H = 130, PAD_L = 46, PAD_R = 10, PAD_T = 8, PAD_B = 20;
  const MIN_W = 240;  // a phone's chart is drawn at its own width: its labels keep 10 px
  const STATE_COLOURS = { agent: "#2f6fdb", prospect: "#167a55", overlap: "#b4530f",  // style.css
                          silence: "#d3d9e1", hold: "#8f3b76" };  // hold: the call on hold

  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  // In the viewer's time zone, named: the agent and a supervisor abroad read different hours;
  // in the page's language (as time.js), not the browser's: a French page says 13:37, never 01:37 PM.
  const LOCALE = document.documentElement.lang === "en" ? "en-GB" : "fr-FR";
  function fmtTime(ts) {
    return new Date(ts * 1000).toLocaleTimeString(LOCALE, { hour: "2-digit", minute: "2-digit",
                                                            second: "2-digit", timeZoneName: "short" });
  }

  // three significant digits, in the page's language as the rest of it: "4,7" on a French page
  function fmtNumber(v) {
    return (+v.toPrecision(3)).toLocaleString(LOCALE, { maximumSignificantDigits: 3 });
  }

  // The value of a point as its chart's reader is told it: three digits and the unit.
  function fmtValue(v, unit) {
    return fmtNumber(v) + (unit ? (unit === "%" ? " %" : " " + unit) : "");
  }

  function frame(container, title, t0, t1, onPick) {
    const fig = document.createElement("figure");
    fig.className = "chart";
    const cap = document.createElement("figcaption");
    cap.textContent = title;
    fig.appendChild(cap);
    // as wide as drawn where narrower than W (a 760-wide drawing shrunk to a phone's 310 px
    // wrote its labels 5 px high)
    const w = Math.max(MIN_W, Math.min(W, Math.floor(container.clientWidth) || W));
    const svg = el("svg", { viewBox: "0 0 " + w + " " + H, width: "100%", role: "img",
                            "aria-label": title });
    fig.appendChild(svg);
    container.appendChild(fig);
    const span = Math.max(1, t1 - t0);
    const x = (ts) => PAD_L + (ts - t0) / span * (w - PAD_L - PAD_R);
    el("line", { x1: PAD_L, y1: H - PAD_B, x2: w - PAD_R, y2: H - PAD_B, stroke: "#dde3ea" }, svg);
    const l = el("text", { x: PAD_L, y: H - 5, "font-size": 10, fill: "#6b7685" }, svg);
    l.textContent = fmtTime(t0);
    const r = el("text", { x: w - PAD_R, y: H - 5, "font-size": 10, fill: "#6b7685",
                           "text-anchor": "end" }, svg);
    r.textContent = fmtTime(t1);
    if (onPick) {
      svg.classList.add("pickable");
      svg.addEventListener("click", (ev) => {
        const box = svg.getBoundingClientRect();
        const px = (ev.clientX - box.left) / box.width * w;
        onPick(t0 + (px - PAD_L) / (w - PAD_L - PAD_R) * span);
      });
    }
    return { svg, x };
  }

  function markers(svg, x, cues, flags) {
    for (const c of cues || []) {
      const g = el("g", { class: "cue-marker" }, svg);
      el("line", { x1: x(c.ts), y1: PAD_T, x2: x(c.ts), y2: H - PAD_B, stroke: "#e0702a",
                   "stroke-dasharray": "3 2" }, g);
      el("title", {}, g).textContent = c.label || c.name;
    }
    for (const f of flags || []) {
      const g = el("g", { class: "flag-marker" }, svg);
      const xx = x(f.ts);
      el("path", { d: "M" + (xx - 5) + " " + PAD_T + " L" + (xx + 5) + " " + PAD_T + " L" + xx +
                   " " + (PAD_T + 8) + " Z", fill: "#1f3a5f" }, g);
      el("title", {}, g).textContent = f.note || "";
    }
  }

  function line(container, opts) {
    const pts = opts.points.filter((p) => p[1] !== null && p[1] !== undefined);
    const { svg, x } = frame(container, opts.title + (opts.unit ? " (" + opts.unit + ")" : ""),
                             opts.t0, opts.t1, opts.onPick);
    if (!pts.length) return svg;
    // a screen reader is told the chart's latest value and when (the image alone says nothing)
    const last = pts[pts.length - 1];
    if (opts.latestLabel) {
      svg.setAttribute("aria-label", svg.getAttribute("aria-label") + " : " + opts.latestLabel +
                       " " + fmtValue(last[1], opts.unit) + ", " + opts.atLabel + " " +
                       fmtTime(last[0]));
    }
    let lo = Infinity, hi = -Infinity;
    for (const p of pts) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); }
    // a quantity measured never negative (a count, a share, a time) is never given a negative
    // axis: "Respirations -1 /min" read as a negative count of breaths; a share none over 100 %
    const neverNegative = pts.every((p) => p[1] >= 0);
    const share = opts.unit === "%" && pts.every((p) => p[1] <= 100);
    // at least the metric's span (registry.CHART_MIN_SPAN) around the series: a 1 dB wobble of
    // the voice drawn from top to bottom read as a huge swing
    const minSpan = opts.minSpan || 0;
    if (hi - lo < minSpan) {
      const mid = (hi + lo) / 2;
      hi = mid + minSpan / 2;
      lo = mid - minSpan / 2;
      if (lo < 0 && neverNegative) { hi -= lo; lo = 0; }
      if (hi > 100 && share) { lo -= hi - 100; hi = 100; }
    } else if (hi === lo) {  // a flat series: a span around it, never ±1 around a zero count
      const pad = Math.max(1, Math.abs(lo) * 0.1);
      hi += pad;
      lo -= pad;
    }
    if (lo < 0 && neverNegative) lo = 0;
    const y = (v) => H - PAD_B - (v - lo) / (hi - lo) * (H - PAD_T - PAD_B);
    const top = el("text", { x: PAD_L - 4, y: PAD_T + 8, "font-size": 10, fill: "#6b7685",
                             "text-anchor": "end" }, svg);
    top.textContent = fmtNumber(hi);
    const bot = el("text", { x: PAD_L - 4, y: H - PAD_B, "font-size": 10, fill: "#6b7685",
                             "text-anchor": "end" }, svg);
    bot.textContent = fmtNumber(lo);
    let d = "";
    let prev = null;
    for (const p of pts) {
      const gap = prev !== null && p[0] - prev > (opts.gapS || 5);
      d += (d === "" || gap ? "M" : "L") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1) + " ";
      prev = p[0];
    }
    el("path", { d: d, fill: "none", stroke: opts.colour || "#2f6fdb", "stroke-width": 1.6,
                 class: "series" }, svg);
    markers(svg, x, opts.cues, opts.flags);
    return svg;
  }

  // The stretch a row's state stands for: a row's time is the end of the second it measured (the
  // box publishes it then), so it reaches back to the row before, at most 5 s (a gap), and a
  // second for the first. Drawn from the row's time onwards, the chart ran a second past the end
  // of its time axis and a second behind the lines under it.
  function stretch(rows, i) {
    const r = rows[i];
    return [i > 0 ? Math.max(rows[i - 1].ts, r.ts - 5) : r.ts - 1, r.ts];
  }

  function states(container, opts) {
    const { svg, x } = frame(container, opts.title, opts.t0, opts.t1, opts.onPick);
    const rows = opts.rows;
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i];
      const [from, to] = stretch(rows, i);
      const left = x(Math.max(from, opts.t0));  // the axis starts at the first row's time
      el("rect", { x: left, y: PAD_T + 14, width: Math.max(0.5, x(to) - left),
                   height: H - PAD_T - PAD_B - 28, fill: STATE_COLOURS[r.talk_state] || "#eef1f5",
                   class: "state-" + r.talk_state }, svg);
    }
    markers(svg, x, opts.cues, opts.flags);
    legend(svg, rows, opts);
    return svg;
  }

  // The turns in words, not by colour alone: each state's share of the window beside the chart
  // (its colour's swatch before its name) and, to a screen reader, with the latest state.
  function legend(svg, rows, opts) {
    if (!opts.stateLabel || !rows.length) return;
    const spent = {};
    let total = 0;
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i];
      if (!(r.talk_state in STATE_COLOURS)) continue;
      const [from, to] = stretch(rows, i);
      spent[r.talk_state] = (spent[r.talk_state] || 0) + (to - from);
      total += to - from;
    }
    if (!total) return;
    const p = document.createElement("p");
    p.className = "chart-legend small";
    const parts = [];
    for (const state of Object.keys(STATE_COLOURS)) {
      if (!spent[state]) continue;
      const text = opts.stateLabel(state) + " " + Math.round(spent[state] / total * 100) + " %";
      const item = document.createElement("span");
      item.className = "legend-item";
      const swatch = document.createElement("span");
      swatch.className = "swatch state-" + state;
      swatch.setAttribute("aria-hidden", "true");
      item.append(swatch, text);
      if (parts.length) p.append(" · ");
      p.appendChild(item);
      parts.push(text);
    }
    svg.after(p);
    let latest = null;
    for (let i = rows.length - 1; i >= 0 && !latest; i--) {
      if (rows[i].talk_state in STATE_COLOURS) latest = rows[i];
    }
    svg.setAttribute("aria-label", svg.getAttribute("aria-label") + " : " + parts.join(", ") +
                     " ; " + opts.latestStateLabel + " : " + opts.stateLabel(latest.talk_state) +
                     ", " + opts.atLabel + " " + fmtTime(latest.ts));
  }

  return { line, states, fmtTime, fmtNumber };
})();
