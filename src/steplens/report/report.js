// steplens report: copy buttons, click-to-zoom figures and the Chain-of-Steps viewer. No external resources.
(function () {
  'use strict';

  // 1. copy buttons: the clipboard API where allowed (http://127.0.0.1, some file:// pages), else a hidden textarea
  function fallbackCopy(text) {
    const ta = document.createElement('textarea');
    ta.value = text;
    ta.setAttribute('readonly', '');
    ta.style.position = 'fixed';
    ta.style.opacity = '0';
    document.body.appendChild(ta);
    ta.select();
    let ok = false;
    try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
    ta.remove();
    return ok;
  }
  function flash(button, text) {
    button.textContent = text;
    setTimeout(function () { button.textContent = 'copy'; }, 1200);
  }
  document.querySelectorAll('button.copy').forEach(function (b) {
    b.addEventListener('click', function () {
      const text = b.parentElement.querySelector('code').textContent;
      const done = function () { flash(b, 'copied'); };
      const fallback = function () { flash(b, fallbackCopy(text) ? 'copied' : 'press Ctrl+C'); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, fallback);
      } else {
        fallback();
      }
    });
  });

  // 2. click a figure to see it at full size; click or Escape closes
  const box = document.createElement('div');
  box.className = 'lightbox';
  const boxImg = document.createElement('img');
  boxImg.alt = '';
  box.appendChild(boxImg);
  document.body.appendChild(box);
  function closeBox() { box.classList.remove('on'); boxImg.removeAttribute('src'); }
  box.addEventListener('click', closeBox);
  document.querySelectorAll('.fig img, .fcard img.thumb').forEach(function (img) {
    img.addEventListener('click', function () {
      boxImg.src = img.src;
      boxImg.className = img.className;
      box.classList.add('on');
    });
  });

  // 3. step viewers: a slider, a sample picker and the keyboard (left/right or j/k; Home/End inside a viewer)
  const viewers = [];
  let last = null;
  document.querySelectorAll('.viewer').forEach(function (el) {
    const data = JSON.parse(el.querySelector('script.vdata').textContent);
    const img = el.querySelector('.stage img');
    const range = el.querySelector('input[type=range]');
    const label = el.querySelector('.lbl');
    const pick = el.querySelector('select');
    let s = 0, i = 0;
    function show(sample, step) {
      s = sample;
      const frames = data[s].frames, sig = data[s].sigmas;
      i = Math.max(0, Math.min(frames.length - 1, step));
      range.max = String(frames.length - 1);
      range.value = String(i);
      img.src = frames[i];
      let text = 'step ' + i + ' / ' + (frames.length - 1);
      if (i < sig.length && sig[i] !== null) { text += '   \u03c3 = ' + Number(sig[i]).toPrecision(3); }
      label.textContent = text;
      el.dataset.step = String(i);
      el.dataset.sample = data[s].id;
    }
    const v = {
      el: el,
      move: function (d) { show(s, i + d); },
      to: function (k) { show(s, k < 0 ? data[s].frames.length - 1 : k); },
    };
    range.addEventListener('input', function () { show(s, Number(range.value)); });
    if (pick) { pick.addEventListener('change', function () { show(Number(pick.value), i); }); }
    el.addEventListener('focusin', function () { last = v; });
    el.addEventListener('pointerdown', function () { last = v; });
    data.forEach(function (d) { d.frames.forEach(function (f) { (new Image()).src = f; }); });  // preload: no flicker
    show(0, 0);
    viewers.push(v);
  });

  function visible(v) {
    const r = v.el.getBoundingClientRect();
    return r.bottom > 0 && r.top < window.innerHeight;
  }
  function current() {
    if (last && visible(last)) { return last; }
    for (const v of viewers) { if (visible(v)) { return v; } }
    return null;
  }
  const MOVES = { ArrowRight: 1, j: 1, ArrowLeft: -1, k: -1 };
  document.addEventListener('keydown', function (e) {
    if (!viewers.length || e.altKey || e.ctrlKey || e.metaKey) { return; }
    if (e.key === 'Escape') { closeBox(); return; }
    const t = e.target;
    if (t && (t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || (t.tagName === 'INPUT' && t.type !== 'range'))) { return; }
    const v = current();
    if (!v) { return; }
    const inside = v.el.contains(t);
    if (e.key in MOVES) {
      v.move(MOVES[e.key]);
      e.preventDefault();
    } else if (inside && (e.key === 'Home' || e.key === 'End')) {
      v.to(e.key === 'Home' ? 0 : -1);
      e.preventDefault();
    }
  });
  if (!viewers.length) {
    document.addEventListener('keydown', function (e) { if (e.key === 'Escape') { closeBox(); } });
  }
})();
