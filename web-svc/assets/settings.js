// The settings page's editor: masks and zones drawn with a finger (or a mouse) on the
// picture, kept in the form's text fields, which the Save button posts; and the live preview
// of what motion-svc sees (changed cells and moving boxes over the live view).
(() => {
  const $ = (id) => document.getElementById(id);
  const NS = 'http://www.w3.org/2000/svg';
  const ov = $('ov'), pic = $('pic'), view = $('view'), hint = $('hint');
  const text = { masks: $('masks'), zones: $('zones') };
  const MAX_SHAPES = 16, MAX_POINTS = 64, STEP = 0.03;
  const round = (v) => Math.round(Math.min(1, Math.max(0, v)) * 1e4) / 1e4;
  const parse = (t) => t.split('\n').map((l) => l.trim()).filter(Boolean)
    .map((l) => l.split(/\s+/).map((p) => p.split(',').map(Number)));
  const valid = (list) => list.every((p) => p.every((q) => q.length === 2 && q.every((v) => v >= 0 && v <= 1)));
  const shapes = { masks: [], zones: [] };
  let kind = null, draft = null, sel = null, down = false, preview = null, timer = 0;

  function load(k) {
    const list = parse(text[k].value);
    if (valid(list)) shapes[k] = list;
  }
  function save() {
    for (const k in text) {
      text[k].value = shapes[k].map((p) => p.map((q) => q.join(',')).join(' ')).join('\n') + (shapes[k].length ? '\n' : '');
    }
  }
  function el(name, attrs) {
    const e = document.createElementNS(NS, name);
    for (const a in attrs) e.setAttribute(a, attrs[a]);
    ov.appendChild(e);
    return e;
  }
  const points = (p) => p.map((q) => q.join(',')).join(' ');
  function draw() {
    ov.replaceChildren();
    if (preview) drawPreview(preview);
    for (const k of ['zones', 'masks']) {
      shapes[k].forEach((p, i) => {
        const on = sel && sel.k === k && sel.i === i;
        const e = el('polygon', { points: points(p), class: k + (on ? ' sel' : '') });
        e.dataset.k = k;
        e.dataset.i = i;
      });
    }
    if (draft) el('polyline', { points: points(draft.concat(draft.slice(0, 1))), class: 'draft' });
  }
  function drawPreview(p) {
    const cols = p.cols, rows = p.rows, cells = p.cells || '';
    for (let i = 0; i < cols * rows; i++) {
      const nibble = parseInt(cells[i >> 2], 16);
      if (nibble >> (3 - (i & 3)) & 1) {
        el('rect', { x: (i % cols) / cols, y: Math.floor(i / cols) / rows, width: 1 / cols, height: 1 / rows, class: 'cell' });
      }
    }
    for (const [x, y, w, h] of p.boxes || []) el('rect', { x, y, width: w, height: h, class: 'box' });
  }
  function mode(k) {
    kind = k;
    draft = k ? [] : null;
    view.classList.toggle('drawing', !!k);
    $('draw-mask').classList.toggle('on', k === 'masks');
    $('draw-zone').classList.toggle('on', k === 'zones');
    hint.textContent = k
      ? 'Tap the corners (or drag a finger around the area), then Finish shape.'
      : 'Masks (red): nothing there counts. Zones (green): only there counts. Tap a shape to select it.';
    draw();
  }
  function finish() {
    if (draft && draft.length >= 3 && shapes[kind].length < MAX_SHAPES) {
      shapes[kind].push(draft);
      save();
    }
    mode(null);
  }
  function at(ev) {
    const b = ov.getBoundingClientRect();
    return [round((ev.clientX - b.left) / b.width), round((ev.clientY - b.top) / b.height)];
  }
  function add(q) {
    if (draft.length < MAX_POINTS) draft.push(q);
    draw();
  }
  ov.addEventListener('pointerdown', (ev) => {
    if (!kind) {
      const d = ev.target.dataset || {};
      sel = d.k ? { k: d.k, i: +d.i } : null;
      draw();
      return;
    }
    ev.preventDefault();
    down = true;
    if (ov.setPointerCapture) ov.setPointerCapture(ev.pointerId);
    add(at(ev));
  });
  ov.addEventListener('pointermove', (ev) => {
    if (!kind || !down) return;
    const q = at(ev), last = draft[draft.length - 1];
    if (!last || Math.hypot(q[0] - last[0], q[1] - last[1]) >= STEP) add(q);
  });
  const up = () => { down = false; };
  ov.addEventListener('pointerup', up);
  ov.addEventListener('pointercancel', up);
  $('draw-mask').onclick = () => mode(kind === 'masks' ? null : 'masks');
  $('draw-zone').onclick = () => mode(kind === 'zones' ? null : 'zones');
  $('undo').onclick = () => { if (draft) { draft.pop(); draw(); } };
  $('done').onclick = finish;
  $('del').onclick = () => {
    if (sel) { shapes[sel.k].splice(sel.i, 1); sel = null; save(); draw(); }
  };
  for (const k in text) text[k].addEventListener('input', () => { load(k); draw(); });

  // The live preview: the live view with what motion-svc saw in its last analysed frame.
  const state = $('preview-state');
  async function poll() {
    try {
      const r = await fetch('/api/preview', { cache: 'no-store' });
      const j = await r.json();
      if (r.ok) {
        preview = j;
        state.textContent = 'motion-svc sees: ' + j.verdict.replace('_', ' ') + (j.boxes.length ? ' (' + j.boxes.length + ' moving)' : '') +
          (j.armed ? '' : ' · disarmed') + (j.recording ? ' · recording' : '');
      } else {
        preview = null;
        state.textContent = j.error || 'no preview';
      }
    } catch (e) {
      preview = null;
      state.textContent = 'no preview: ' + e;
    }
    draw();
  }
  function live(on) {
    clearInterval(timer);
    preview = null;
    if (on) {
      pic.src = '/stream.mjpg';
      poll();
      timer = setInterval(poll, 300);
    } else {
      pic.src = '/snapshot.jpg?' + Date.now();
      state.textContent = '';
    }
    draw();
  }
  $('preview').onchange = (ev) => live(ev.target.checked);
  document.addEventListener('visibilitychange', () => {
    if ($('preview').checked) live(!document.hidden);
  });
  load('masks');
  load('zones');
  $('tools').hidden = false;
  draw();
})();
