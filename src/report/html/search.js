// report.html's only script: hover text for the timeline's marks, and the per-ID search over
// the lives embedded as JSON. Reads nothing from the network; writes only text nodes.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("lives").textContent);
  var input = document.getElementById("search-id");
  var out = document.getElementById("life");
  var hover = document.getElementById("hover");
  var kinds = { p: "produced", d: "delivered", e: "effect", a: "ack", k: "commit", f: "fault" };

  function who(s) {
    if (!s) { return ""; }
    var p = s.split("#");
    return "consumer[" + p[0] + "]#" + p[1];
  }

  // A step [t, kind, "instance#incarnation", fields...] in words (see lives::to_json).
  function words(s) {
    switch (s[1]) {
      case "p": return "produced" + (s[3] !== null ? " to partition " + s[3] + " offset " + s[4] : "") + " (" + s[5] + ")";
      case "d": return "delivered" + (s[3] !== null ? " from partition " + s[3] + " offset " + s[4] : (s[4] !== null ? " (tag " + s[4] + ")" : "")) + (s[5] ? ", redelivered" : "");
      case "e": return (s[3] ? "effect applied" : "effect replayed (idempotency key)") + " at the " + s[4] + " sink by " + (who(s[2]) || "an unknown writer") +
        (s[5] ? ", writer known by " + s[5] + (s[6] !== null ? " (pid " + s[6] + ")" : "") : "");
      case "a": return s[3];
      case "k": return "commit accepted: partition " + s[3] + " up to offset " + s[4] + " (the first to cover it)";
      default: return s[2];
    }
  }

  function secs(us) { return (us / 1e6).toFixed(3) + "s"; }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined) { e.textContent = text; }
    if (cls) { e.className = cls; }
    return e;
  }

  function row(table, t, by, what, kind) {
    var tr = el("tr", undefined, "kind-" + kind);
    tr.appendChild(el("td", secs(t)));
    tr.appendChild(el("td", kinds[kind]));
    tr.appendChild(el("td", by));
    tr.appendChild(el("td", what));
    table.appendChild(tr);
  }

  // Faults from just before the ID's first step to just after its last, or the nearest one.
  function faultsAround(steps) {
    if (!steps.length) { return []; }
    var from = steps[0][0] - 2e6, to = steps[steps.length - 1][0] + 2e6;
    var near = data.faults.filter(function (f) { return f[0] >= from && f[0] <= to; });
    if (near.length || !data.faults.length) { return near; }
    var best = data.faults[0];
    data.faults.forEach(function (f) {
      if (Math.abs(f[0] - steps[0][0]) < Math.abs(best[0] - steps[0][0])) { best = f; }
    });
    return [best];
  }

  function select(id) {
    var marks = document.querySelectorAll("svg .anomaly");
    for (var i = 0; i < marks.length; i++) {
      marks[i].classList.toggle("selected", marks[i].getAttribute("data-id") === id);
    }
  }

  function show(id) {
    out.textContent = "";
    if (!id) { return; }
    select(id);
    var life = Object.prototype.hasOwnProperty.call(data.ids, id) ? data.ids[id] : null;
    if (!life) {
      out.appendChild(el("p", data.sampled
        ? "No life kept for " + id + " in this page (" + data.kept + " of " + data.total + " IDs are kept). Search events.jsonl in the run folder for it."
        : "No message " + id + " in this run.", "note"));
      return;
    }
    var head = id + ": " + (life.o || "exact") + (life.m ? " (mechanism " + life.m + ")" : "");
    out.appendChild(el("h3", head));
    var table = el("table");
    var hdr = el("tr");
    ["at", "what", "process", "event"].forEach(function (h) { hdr.appendChild(el("th", h)); });
    table.appendChild(hdr);
    var steps = life.s.map(function (s) { return [s[0], who(s[2]), words(s), s[1]]; });
    faultsAround(life.s).forEach(function (f) {
      steps.push([f[0], "", (f[3] ? "" : "not applied: ") + f[2] + (f[1] ? " (lasting " + (f[1] / 1e3).toFixed(0) + " ms)" : ""), "f"]);
    });
    steps.sort(function (a, b) { return a[0] - b[0]; });
    steps.forEach(function (s) { row(table, s[0], s[1], s[2], s[3]); });
    out.appendChild(table);
    var effects = life.s.filter(function (s) { return s[1] === "e"; }).length;
    var covered = life.s.filter(function (s) { return s[1] === "a" || s[1] === "k"; }).length;
    out.appendChild(el("p", effects + " effect(s) seen; " + (covered ? covered + " commit(s) or ack(s) covering it" : "no commit or ack seen covering it") +
      (life.x ? "; " + life.x + " more deliveries, effects or acks not kept" : "") + ".", "note"));
  }

  document.getElementById("search").addEventListener("submit", function (e) {
    e.preventDefault();
    show(input.value.trim());
  });

  function pick(target) {
    var t = target.closest ? target.closest("[data-id]") : null;
    if (!t) { return false; }
    input.value = t.getAttribute("data-id");
    show(input.value);
    out.scrollIntoView({ block: "nearest" });
    return true;
  }
  document.addEventListener("click", function (e) { if (pick(e.target)) { e.preventDefault(); } });
  document.addEventListener("keydown", function (e) { if (e.key === "Enter" && pick(e.target)) { e.preventDefault(); } });

  var svg = document.getElementById("timeline");
  if (svg) {
    svg.addEventListener("mouseover", function (e) {
      var t = e.target.querySelector ? e.target.querySelector("title") : null;
      hover.textContent = t ? t.textContent : "\u00a0";
    });
  }
})();
