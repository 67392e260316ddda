// Times in the browser's own zone; the server learns the offset (a cookie) for day headings
// and the pages seen before the script runs.
(function () {
  var off = -new Date().getTimezoneOffset();
  var m = document.cookie.match(/(?:^|; )mecam_tz=(-?\d+)/);
  document.cookie = 'mecam_tz=' + off + '; path=/; max-age=31536000; SameSite=Lax';
  // Only the list's day headings need the server to know it at once.
  if ((!m || +m[1] !== off) && document.querySelector('section.day')) {
    if (!sessionStorage.getItem('mecam_tz_reload')) {
      sessionStorage.setItem('mecam_tz_reload', '1');
      location.reload();
      return;
    }
  }
  var day = function (d) { return d.toDateString(); };
  var now = new Date(), yest = new Date(now.getTime() - 864e5);
  document.querySelectorAll('time[data-t]').forEach(function (el) {
    var d = new Date(+el.dataset.t);
    var clock = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
    if (el.dataset.f === 't') { el.textContent = clock; return; }
    var w = day(d) === day(now) ? 'Today' : day(d) === day(yest) ? 'Yesterday'
      : d.toLocaleDateString([], { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });
    el.textContent = w + ', ' + clock;
  });
})();
