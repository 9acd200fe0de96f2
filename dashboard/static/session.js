// Miroir: the session of a logged-in page. The page's own background requests (the live stream,
// its periodic fetches, its reloads) do not keep the session alive, so an unattended screen locks
// at the idle timeout: a key or a click on the page does (told to the server, at most every
// quarter of the timeout and once a minute). When the session is due to end (as the server said
// with the page: a page loaded by itself, the IT page's reload or a restored tab, extended
// nothing), the page asks the server (a read that extends nothing) and goes to the login page once
// it is over; an act in another tab moved the end: it asks again then.
"use strict";

(function () {
  const me = document.currentScript;
  const idleS = parseFloat(me.dataset.idleS);
  const endsInS = parseFloat(me.dataset.endsInS);
  const csrf = me.dataset.csrf;
  if (!(idleS > 0) || !csrf) return;
  const reportEveryMs = Math.min(60000, idleS * 250);
  let reportedMs = 0;  // the first act on the page is told at once
  let timer = null;

  function ended() {
    window.location.assign("/login?ended=1");
  }

  function checkAfter(seconds) {
    clearTimeout(timer);
    timer = setTimeout(check, Math.max(1, seconds) * 1000 + 500);
  }

  function check() {
    fetch("/api/session", { credentials: "same-origin" }).then((r) => {
      if (r.status === 401) { ended(); return null; }
      return r.ok ? r.json() : null;
    }).then((s) => checkAfter(s ? s.ends_in_s : 30), () => checkAfter(30));
  }

  function act() {
    const now = Date.now();
    if (now - reportedMs < reportEveryMs) return;
    reportedMs = now;
    fetch("/api/session/activity", { method: "POST", credentials: "same-origin",
                                      headers: { "X-CSRF-Token": csrf } }).then((r) => {
      if (r.status === 401) ended();
      else checkAfter(idleS);
    }, () => {});
  }

  document.addEventListener("pointerdown", act, true);
  document.addEventListener("keydown", act, true);
  checkAfter(endsInS >= 0 ? endsInS : idleS);
})();
