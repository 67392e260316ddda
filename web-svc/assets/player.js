// The event player: frames by number from the clip's own index, onto the poster's <img>.
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var P = $('player'), img = $('frame'), svg = $('boxes');
  if (!P || !img) return;
  var base = '/events/' + P.dataset.id;
  var seek = $('seek'), playBtn = $('play'), speed = $('speed'), loop = $('loop'), show = $('showboxes');
  var info = null, n = 0, playing = false, timer = 0, loading = false, pending = -1;

  function fmt(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', fractionalSecondDigits: 1 });
  }
  function boxesAt(t) {
    var best = null;
    for (var i = 0; i < info.track.length && info.track[i].t_ms <= t; i++) best = info.track[i];
    return best && t - best.t_ms <= 1000 ? best.boxes : [];
  }
  function draw(bs) {
    svg.innerHTML = bs.map(function (b) {
      return '<rect x="' + b[0] * 1000 + '" y="' + b[1] * 1000 + '" width="' + b[2] * 1000 + '" height="' + b[3] * 1000 + '"/>';
    }).join('');
  }
  function load(k) {
    if (loading) { pending = k; return; }
    loading = true;
    img.src = base + '/frames/' + k;
  }
  img.onload = img.onerror = function () {
    loading = false;
    if (pending >= 0) { var k = pending; pending = -1; load(k); }
  };
  function go(k) {
    n = Math.max(0, Math.min(info.frames - 1, k));
    seek.value = n;
    $('fno').textContent = n + 1;
    var t = n * info.ms_per_frame;
    $('ftime').textContent = info.first_frame_unix_ms ? fmt(info.first_frame_unix_ms + t) : (t / 1000).toFixed(1) + ' s';
    draw(boxesAt(t));
    P.dataset.frame = n;
    load(n);
  }
  function setPlaying(on) {
    playing = on;
    P.dataset.playing = on ? '1' : '';
    playBtn.textContent = on ? 'Pause' : 'Play';
    clearTimeout(timer);
    if (on) tick();
  }
  function tick() {
    if (!playing) return;
    if (loading) { timer = setTimeout(tick, 10); return; }
    var k = n + 1;
    if (k >= info.frames) {
      if (!loop.checked) { setPlaying(false); return; }
      k = 0;
    }
    go(k);
    timer = setTimeout(tick, info.ms_per_frame / +speed.value);
  }
  playBtn.onclick = function () {
    if (!playing && n >= info.frames - 1) go(0);
    setPlaying(!playing);
  };
  $('back').onclick = function () { setPlaying(false); go(n - 1); };
  $('fwd').onclick = function () { setPlaying(false); go(n + 1); };
  seek.oninput = function () { go(+seek.value); };
  show.onchange = function () { P.classList.toggle('noboxes', !show.checked); };
  document.addEventListener('keydown', function (e) {
    if (!info || e.target.tagName === 'INPUT' && e.target.type !== 'range' || e.target.tagName === 'SELECT') return;
    if (e.key === ' ') { e.preventDefault(); playBtn.onclick(); }
    else if (e.key === 'ArrowLeft') { e.preventDefault(); $('back').onclick(); }
    else if (e.key === 'ArrowRight') { e.preventDefault(); $('fwd').onclick(); }
  });
  fetch(base + '/frames.json').then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
    .then(function (j) {
      if (!j.frames) return;
      info = j;
      seek.max = j.frames - 1;
      $('fcount').textContent = j.frames;
      $('controls').hidden = false;
      P.dataset.ready = '1';
      go(0);
    }).catch(function () {});

  // Save as MP4: start the job, then follow it.
  var form = $('mp4form'), box = $('mp4');
  if (!form) return;
  var msg = $('mp4msg'), prog = $('mp4prog'), link = $('mp4link');
  function size(b) { return b < 1e6 ? Math.ceil(b / 1e3) + ' KB' : (b / 1e6).toFixed(1) + ' MB'; }
  function showState(s) {
    box.dataset.state = s.state;
    prog.hidden = s.state !== 'running';
    prog.value = s.progress || 0;
    link.hidden = s.state !== 'done';
    form.hidden = s.state === 'done';
    if (s.state === 'done' && s.bytes) $('mp4size').textContent = ' (' + size(s.bytes) + ')';
    msg.textContent = s.state === 'running' ? 'Making the MP4: ' + Math.round(s.progress * 100) + ' %'
      : s.state === 'failed' ? 'The MP4 could not be made: ' + s.message
      : s.state === 'done' ? '' : (s.message || '');
    if (s.state === 'running') setTimeout(poll, 700);
  }
  function poll() {
    fetch(base + '/mp4').then(function (r) { return r.json(); }).then(showState)
      .catch(function () { setTimeout(poll, 3000); });
  }
  form.onsubmit = function (e) {
    e.preventDefault();
    msg.textContent = 'Starting...';
    fetch(form.action, { method: 'POST', headers: { Accept: 'application/json' } }).then(function (r) {
      return r.ok ? r.json().then(showState) : r.text().then(function (t) { box.dataset.state = 'refused'; msg.textContent = t; });
    }).catch(function () { msg.textContent = 'The camera did not answer; try again.'; });
  };
  if (box.dataset.state === 'running') poll();
})();
