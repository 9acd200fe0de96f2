// Miroir: every date a page shows (<time data-ts>, written in UTC by the server) in the viewer's
// own time zone, named ("UTC+1"), in the page's language: an agent on the site and a supervisor in
// France read the same moment at different hours. A stored value no date can show ("?") stays.
"use strict";

(function () {
  const locale = document.documentElement.lang === "en" ? "en-GB" : "fr-FR";
  // every field of two digits: French's default wrote an hour before ten with one ("8:55:00")
  const opts = { day: "2-digit", month: "2-digit", year: "numeric", hour: "2-digit",
                 minute: "2-digit", second: "2-digit", timeZoneName: "short" };
  for (const tm of document.querySelectorAll("time[data-ts]")) {
    const when = new Date(parseFloat(tm.dataset.ts) * 1000);
    if (!isNaN(when.getTime())) tm.textContent = when.toLocaleString(locale, opts);
  }
})();
