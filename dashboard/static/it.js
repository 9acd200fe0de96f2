// Miroir IT page: it updates itself every data-refresh-s seconds (a reload), but never under its
// reader: not while something of it has the keyboard's focus (a reload sent it back to the top),
// nor once its switch is turned off (a screen reader started the page over at every reload);
// the switch holds for the tab (sessionStorage).
"use strict";

(function () {
  const body = document.body;
  const everyMs = parseFloat(body.dataset.refreshS) * 1000;
  const sw = document.getElementById("auto-refresh");
  const KEY = "miroir-it-refresh";
  if (!sw || !(everyMs > 0)) return;
  if (sessionStorage.getItem(KEY) === "off") sw.checked = false;
  sw.addEventListener("change", () => sessionStorage.setItem(KEY, sw.checked ? "on" : "off"));
  let skipped = 0;
  setInterval(() => {
    const inUse = document.activeElement && document.activeElement !== body;
    if (sw.checked && !inUse && document.visibilityState !== "hidden") {
      window.location.reload();
      return;
    }
    skipped += 1;
    body.dataset.refreshSkipped = String(skipped);  // the updates left out, for the tests
  }, everyMs);
})();
