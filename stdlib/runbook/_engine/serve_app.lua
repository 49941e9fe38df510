-- /app.js of `runbook serve`: the one script a served run page loads (its
-- Content-Security-Policy allows 'self' and nothing inline but the report's
-- own filter). It polls /api/runs/ID/events?after=SEQ, appends the new
-- rows to the audit trail, and redraws the header, the steps and the
-- timeline from /api/runs/ID. Every value from the journal is set with
-- textContent or setAttribute, never as HTML.
return [==[
(function () {
  'use strict';
  var idEl = document.getElementById('run-id');
  if (!idEl) return;
  var run = idEl.textContent;
  var base = '/api/runs/' + encodeURIComponent(run);
  var SVG = 'http://www.w3.org/2000/svg';
  // new rows go to the last of the trail's tables (report.lua splits it in chunks)
  var bodies = document.querySelectorAll('#trail tbody');
  var body = bodies[bodies.length - 1];
  var lastSeq = 0;
  var rows = document.querySelectorAll('#trail tbody tr[data-seq]');
  if (rows.length) lastSeq = parseInt(rows[rows.length - 1].getAttribute('data-seq'), 10) || 0;
  document.documentElement.setAttribute('data-live', 'polling');

  function text(el, s) { el.textContent = s == null ? '' : String(s); }
  function td(tr, s, cls) { var c = document.createElement('td'); if (cls) c.className = cls; text(c, s); tr.appendChild(c); }
  function filtered(tr) {
    var f = document.getElementById('filter');
    var q = f ? f.value.toLowerCase() : '';
    tr.className = (q === '' || tr.textContent.toLowerCase().indexOf(q) >= 0) ? '' : 'hidden';
  }

  function addEvents(evs) {
    for (var i = 0; i < evs.length; i++) {
      var ev = evs[i];
      var tr = document.createElement('tr');
      tr.setAttribute('data-seq', String(ev.seq));
      td(tr, ev.seq); td(tr, ev.ts, 'mono'); td(tr, ev.type); td(tr, ev.step || ''); td(tr, ev.summary);
      filtered(tr);
      body.appendChild(tr);
      if (ev.seq > lastSeq) lastSeq = ev.seq;
    }
  }

  function sectionFor(step) {
    var all = document.querySelectorAll('#steps section.step');
    for (var i = 0; i < all.length; i++) if (all[i].getAttribute('data-step') === step.id) return all[i];
    var s = document.createElement('section');
    s.className = 'step';
    s.setAttribute('data-step', step.id);
    var h = document.createElement('h3');
    var t = document.createElement('span'); t.className = 'title';
    var m = document.createElement('span'); m.className = 'mono'; text(m, step.id);
    var st = document.createElement('span'); st.className = 'status';
    h.appendChild(t); h.appendChild(document.createTextNode(' ')); h.appendChild(m);
    h.appendChild(document.createTextNode(': ')); h.appendChild(st);
    var p = document.createElement('p'); p.className = 'attempts';
    s.appendChild(h); s.appendChild(p);
    document.getElementById('steps').appendChild(s);
    return s;
  }

  function updateSteps(steps) {
    for (var i = 0; i < steps.length; i++) {
      var step = steps[i], s = sectionFor(step);
      s.setAttribute('data-status', step.status);
      s.setAttribute('data-attempts', String(step.attempts));
      text(s.querySelector('.title'), step.title);
      text(s.querySelector('.status'), step.status);
      text(s.querySelector('.attempts'), step.attempts_text);
      var err = s.querySelector('p.bad');
      if (step.error) {
        if (!err) { err = document.createElement('p'); err.className = 'bad'; s.querySelector('.attempts').after(err); }
        text(err, step.error);
      } else if (err) err.remove();
    }
  }

  function svg(name, attrs, title) {
    var el = document.createElementNS(SVG, name);
    for (var k in attrs) el.setAttribute(k, String(attrs[k]));
    if (title != null) { var t = document.createElementNS(SVG, 'title'); text(t, title); el.appendChild(t); }
    return el;
  }

  function drawTimeline(view) {
    var g = view.timeline, old = document.getElementById('timeline');
    if (!g || !old) return;
    var el = svg('svg', { id: 'timeline', role: 'img', 'aria-label': 'timeline of the run',
      width: g.width, height: g.height, viewBox: '0 0 ' + g.width + ' ' + g.height });
    var i, j;
    for (i = 0; i < g.groups.length; i++) {
      var c = g.groups[i];
      el.appendChild(svg('rect', { 'class': 'group', x: c.x, y: c.y, width: c.w, height: c.h }, c.steps + ' steps ran in parallel'));
    }
    for (i = 0; i < g.rows.length; i++) {
      var row = g.rows[i], label = svg('text', { x: 0, y: row.y + 13 });
      text(label, row.step);
      el.appendChild(label);
      for (j = 0; j < row.waits.length; j++) {
        var w = row.waits[j];
        el.appendChild(svg('rect', { 'class': 'wait', x: w.x, y: row.y, width: w.w, height: view.bar_height }, w.title));
      }
      for (j = 0; j < row.bars.length; j++) {
        var b = row.bars[j];
        el.appendChild(svg('rect', { 'class': 'bar ' + b.outcome, 'data-step': row.step, 'data-attempt': b.attempt,
          x: b.x, y: row.y, width: b.w, height: view.bar_height }, b.title));
      }
    }
    var zero = svg('text', { x: view.label, y: g.height - 4 }); text(zero, '0'); el.appendChild(zero);
    var end = svg('text', { x: view.label + view.plot, y: g.height - 4, 'text-anchor': 'end' }); text(end, g.span); el.appendChild(end);
    old.replaceWith(el);
    var empty = document.getElementById('timeline-empty');
    if (empty) empty.remove();
  }

  function getJSON(url) {
    return fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } }).then(function (r) {
      if (!r.ok) throw new Error(url + ': HTTP ' + r.status);
      return r.json();
    });
  }

  var busy = false;
  function poll() {
    if (busy) return;
    busy = true;
    getJSON(base + '/events?after=' + lastSeq).then(function (res) {
      if (!res.events.length) return null;
      addEvents(res.events);
      return getJSON(base).then(function (view) {
        text(document.getElementById('head-status'), view.status);
        text(document.getElementById('head-events'), view.events);
        updateSteps(view.steps);
        drawTimeline(view);
      });
    }).then(function () {
      document.documentElement.setAttribute('data-seq', String(lastSeq));
    }, function (e) {
      document.documentElement.setAttribute('data-live', 'error: ' + e.message);
    }).then(function () { busy = false; setTimeout(poll, 1000); });
  }
  document.documentElement.setAttribute('data-seq', String(lastSeq));
  setTimeout(poll, 1000);
})();
]==]
