// ecr-sniff report: the message view, table sorting and filtering. No network.
(function () {
  "use strict";
  var texts = JSON.parse(document.getElementById("texts").textContent);
  var detail = document.getElementById("detail-text");
  var title = document.getElementById("detail-title");
  var hint = document.getElementById("detail-hint");
  var selected = null;

  function show(id, scroll) {
    var text = texts[id];
    if (text === undefined) { return; }
    detail.textContent = text;
    title.textContent = id.charAt(0) === "m" ? "Message " + id.slice(2) : "Finding";
    hint.hidden = true;
    if (selected) { selected.classList.remove("selected"); }
    selected = document.getElementById(id);
    if (selected) {
      selected.classList.add("selected");
      if (scroll && selected.scrollIntoView) { selected.scrollIntoView({ block: "nearest" }); }
    }
  }

  Array.prototype.forEach.call(document.querySelectorAll("g.arrow, g.marker"), function (g) {
    g.addEventListener("click", function () {
      if (history.replaceState) { history.replaceState(null, "", "#" + g.id); }
      show(g.id, false);
    });
    g.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); show(g.id, false); }
    });
  });
  window.addEventListener("hashchange", function () { show(location.hash.slice(1), true); });
  // On load the browser has already scrolled to the #m-N of the address.
  if (location.hash) {
    show(location.hash.slice(1), false);
  } else {
    // Otherwise start with the first message that has an error (else a warning).
    var first = document.querySelector("g.arrow.sev-error") || document.querySelector("g.arrow.sev-warning");
    if (first) { show(first.id, false); }
  }

  // Sortable tables: click a header; numeric columns sort by their data-v.
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener("click", function () {
        var asc = th.getAttribute("data-dir") !== "asc";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("data-dir"); });
        th.setAttribute("data-dir", asc ? "asc" : "desc");
        var num = th.getAttribute("data-type") === "num";
        var key = function (r) {
          var c = r.cells[col];
          var v = c.hasAttribute("data-v") ? c.getAttribute("data-v") : c.textContent;
          return num ? (parseFloat(v) || 0) : v.trim().toLowerCase();
        };
        rows.sort(function (a, b) {
          var x = key(a), y = key(b);
          var c = num ? x - y : (x < y ? -1 : x > y ? 1 : 0);
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
    var filter = document.querySelector('input[data-filter-for="' + table.id + '"]');
    var count = document.getElementById(table.id + "-count") || document.getElementById("tx-count");
    function apply() {
      var q = filter ? filter.value.trim().toLowerCase() : "";
      var shown = 0;
      rows.forEach(function (r) {
        var ok = !q || r.textContent.toLowerCase().indexOf(q) >= 0;
        r.hidden = !ok;
        if (ok) { shown += 1; }
      });
      if (count) { count.textContent = shown + " of " + rows.length + " shown"; }
    }
    if (filter) { filter.addEventListener("input", apply); }
    apply();
  });

  // What the script saw, for the browser tests and for a reader wondering.
  var n = function (sel) { return document.querySelectorAll(sel).length; };
  document.getElementById("js-status").textContent =
    "Script ran: " + n("svg.ladder g.arrow") + " arrows in " + n("svg.ladder") + " ladders, " +
    n("#tx tbody tr") + " transactions, " + n("#findings-table tbody tr") + " findings.";
  document.documentElement.setAttribute("data-ready", "1");
})();
