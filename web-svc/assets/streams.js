// Leaving a page ends its MJPEG streams (live view, replay) at once: a page the browser keeps
// in its back/forward cache would otherwise hold its stream open until the server drops it as
// stalled, counted as a viewer all the while ("viewers: 2" with one tab). Coming back to the
// page starts them again.
addEventListener("pagehide", function () {
  document.querySelectorAll('img[src*=".mjpg"]').forEach(function (i) {
    i.dataset.stream = i.getAttribute("src");
    i.src = "data:,";
  });
});
addEventListener("pageshow", function (e) {
  if (!e.persisted) return;
  document.querySelectorAll("img[data-stream]").forEach(function (i) {
    i.src = i.dataset.stream;
  });
});
