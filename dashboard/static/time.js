// Miroir: every date a page shows (<time data-ts>, written in UTC by the server) in the viewer's
// own time zone, named ("UTC+1"), in the page's language: an agent on the site and a supervisor in
// France read the same moment at different hours. A stored value no date can show ("?") stays.
"use strict";

(function () {
  const locale = document.documentElement.lang === "en" ? "en-GB" : "fr-FR";
  for (const tm of document.querySelectorAll("time[data-ts]")) {
    const when = new Date(parseFloat(tm.dataset.ts) * 1000);
    if (!isNaN(when.getTime())) tm.textContent = when.toLocaleString(locale, { timeZoneName: "short" });
  }
})();
