"""The CSS and JavaScript inlined into the HTML pages of ``rawloop show --html`` and ``diff --html``.

They are constants, not templates: nothing from a trace is ever formatted
into them. The script reads trace data only from the page's DOM and from
``<script type="application/json">`` blocks, and writes it with
``textContent``, never ``innerHTML``, so trace content stays text.
"""

from __future__ import annotations

__all__ = ["CSS", "SCRIPT"]

CSS = """
:root { --bg:#fff; --fg:#1d2330; --dim:#6b7280; --line:#e5e7eb; --soft:#f6f7f9;
  --blue:#2563eb; --green:#15803d; --red:#b91c1c; --amber:#b45309; --violet:#7c3aed;
  --cyan:#0e7490; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;
  color:var(--fg); background:var(--bg); }
header.top { position:sticky; top:0; z-index:2; background:#fff; border-bottom:1px solid var(--line);
  padding:10px 18px; }
h1 { font-size:16px; margin:0 0 6px; word-break:break-all; }
h2 { font-size:14px; margin:14px 0 6px; }
.facts { display:flex; flex-wrap:wrap; gap:4px 18px; color:var(--dim); }
.facts b { color:var(--fg); font-weight:600; }
.tools { display:flex; gap:12px; align-items:center; margin-top:8px; flex-wrap:wrap; }
#search { width:320px; padding:4px 8px; border:1px solid #cbd5e1; border-radius:4px; font:inherit; }
.hint { color:var(--dim); font-size:12px; }
main { padding:8px 18px 40px; }
.warn { color:var(--amber); }
.bad { color:var(--red); }
.ok { color:var(--green); }
pre, code, .mono { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12.5px; }
pre { background:var(--soft); border:1px solid var(--line); border-radius:4px; padding:6px 8px;
  margin:4px 0; white-space:pre-wrap; word-break:break-word; max-height:none; }
.waterfall { border:1px solid var(--line); border-radius:4px; padding:6px 8px; margin:8px 0; }
.wf-row { display:grid; grid-template-columns:230px 1fr 80px; align-items:center; gap:8px;
  height:20px; font-size:12px; }
.wf-label { white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
.wf-label a { color:inherit; text-decoration:none; }
.wf-track { position:relative; height:12px; background:var(--soft); border-radius:2px; }
.wf-bar { position:absolute; top:0; height:12px; min-width:2px; border-radius:2px; }
.wf-wait { background:#cbd5e1; }
.wf-headers { background:#93c5fd; }
.wf-body { background:var(--blue); }
.wf-tool { background:var(--green); }
.wf-failed { background:var(--red); }
.wf-retry { background:repeating-linear-gradient(45deg,#fcd34d,#fcd34d 3px,#fff 3px,#fff 6px); }
.wf-marker { position:absolute; top:-3px; width:2px; height:18px; background:var(--violet); }
.legend i.wf-legend-marker { width:3px; background:var(--violet); }
.wf-time { color:var(--dim); text-align:right; }
.legend { display:flex; gap:12px; color:var(--dim); font-size:12px; margin-top:4px; flex-wrap:wrap; }
.legend i { display:inline-block; width:12px; height:10px; margin-right:4px; vertical-align:middle; }
details.iter { border:1px solid var(--line); border-radius:6px; margin:10px 0; }
details.iter > summary { cursor:pointer; padding:6px 10px; background:var(--soft); border-radius:6px;
  font-weight:600; list-style-position:inside; }
details.iter.current { outline:2px solid var(--blue); }
details.iter > .body { padding:4px 14px 10px; }
details.sub { margin:4px 0 4px 2px; }
details.sub > summary { cursor:pointer; color:var(--dim); }
.attempt { border-left:3px solid #93c5fd; padding-left:10px; margin:8px 0; }
.attempt.failed { border-color:var(--red); }
.kv { display:grid; grid-template-columns:max-content 1fr; gap:2px 12px; }
.kv > span:nth-child(odd) { color:var(--dim); }
.item-head { color:var(--dim); font-size:12px; margin-top:6px; }
.call { color:var(--cyan); }
.edit { color:var(--violet); }
.tag { display:inline-block; padding:0 6px; border-radius:8px; font-size:11px; font-weight:600;
  background:#e0e7ff; color:#3730a3; margin-left:6px; }
.tag.red { background:#fee2e2; color:var(--red); }
.tag.amber { background:#fef3c7; color:var(--amber); }
.tag.green { background:#dcfce7; color:var(--green); }
.sse .chunk { white-space:pre-wrap; }
.sse.bounds .chunk { border-right:2px solid var(--red); background:#fff7ed; }
.sse.bounds .chunk:nth-child(even) { background:#ecfeff; }
.grid2 { display:grid; grid-template-columns:1fr 1fr; gap:10px; }
.diffrow { border:1px solid var(--line); border-radius:6px; margin:10px 0; }
.diffrow > .rowhead { padding:4px 10px; background:var(--soft); font-weight:600; }
.diffrow.differs > .rowhead { background:#fee2e2; }
.diffrow.current { outline:2px solid var(--blue); }
.cell { padding:4px 10px; min-width:0; }
.line { border-left:3px solid transparent; padding-left:6px; margin:2px 0; }
.line.changed { border-color:var(--red); background:#fef2f2; }
.line .label { color:var(--dim); font-size:12px; }
[hidden] { display:none !important; }
"""

# Plain ES5-ish JavaScript: no module loading, no fetch, no eval, no innerHTML.
SCRIPT = r"""
(function () {
  "use strict";
  var sections = Array.prototype.slice.call(document.querySelectorAll("[data-section]"));
  var search = document.getElementById("search");
  var count = document.getElementById("match-count");
  var current = -1;

  function visible() {
    return sections.filter(function (s) { return !s.hidden; });
  }
  function focusSection(section) {
    sections.forEach(function (s) { s.classList.remove("current"); });
    if (!section) { return; }
    section.classList.add("current");
    // Scroll so the section sits just under the sticky header, not behind it.
    var top = document.querySelector("header.top");
    var offset = top ? top.offsetHeight + 8 : 0;
    window.scrollTo(0, section.getBoundingClientRect().top + window.pageYOffset - offset);
    current = sections.indexOf(section);
  }
  function filter() {
    var query = search ? search.value.trim().toLowerCase() : "";
    var shown = 0;
    sections.forEach(function (s) {
      var hit = !query || s.textContent.toLowerCase().indexOf(query) !== -1;
      s.hidden = !hit;
      if (hit) { shown += 1; }
      if (hit && query && s.tagName === "DETAILS") { s.open = true; }
    });
    if (count) {
      count.textContent = query ? shown + " of " + sections.length + " match" : "";
    }
  }
  if (search) { search.addEventListener("input", filter); }

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA")) {
      if (event.key === "Escape") { target.blur(); }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var list = visible();
    if (!list.length) { return; }
    var at = list.indexOf(sections[current]);
    if (event.key === "j") {
      focusSection(list[Math.min(at + 1, list.length - 1)]);
    } else if (event.key === "k") {
      focusSection(list[Math.max(at - 1, 0)]);
    } else if (event.key === "o" && at >= 0 && list[at].tagName === "DETAILS") {
      list[at].open = !list[at].open;
    } else if (event.key === "/" && search) {
      event.preventDefault();
      search.focus();
      return;
    } else {
      return;
    }
    event.preventDefault();
  });

  // Raw SSE: built on demand from the embedded JSON, as text nodes, one span per chunk.
  var rawData = null;
  function chunksOf(key) {
    if (rawData === null) {
      var node = document.getElementById("raw-data");
      rawData = node ? JSON.parse(node.textContent) : {};
    }
    return rawData[key] || [];
  }
  Array.prototype.forEach.call(document.querySelectorAll("details[data-raw]"), function (box) {
    box.addEventListener("toggle", function () {
      var pre = box.querySelector("pre.sse");
      if (!box.open || !pre || pre.getAttribute("data-filled")) { return; }
      chunksOf(box.getAttribute("data-raw")).forEach(function (chunk, index) {
        var span = document.createElement("span");
        span.className = "chunk";
        span.title = "chunk " + index + (chunk.t === null ? "" : " at " + chunk.t + " s") +
          ", " + chunk.n + " bytes";
        span.textContent = chunk.s;
        pre.appendChild(span);
      });
      pre.setAttribute("data-filled", "1");
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("input[data-bounds]"), function (box) {
    box.addEventListener("change", function () {
      var pre = document.getElementById(box.getAttribute("data-bounds"));
      if (pre) { pre.classList.toggle("bounds", box.checked); }
    });
  });

  var first = document.querySelector("[data-first-difference]");
  if (first) { focusSection(first); }
  document.documentElement.setAttribute("data-ready", "1");
})();
"""
