// Baton dashboard: small progressive enhancement on top of server-rendered pages.
// htmx sends the CSRF header (hx-headers on <body>); this file only draws the stats charts.
(function () {
  "use strict";
  var el = document.getElementById("chart-data");
  if (!el || typeof Chart === "undefined") { return; }
  var d = JSON.parse(el.textContent);
  var colors = { succeeded: "#66bb6a", failed: "#ef5350", cancelled: "#a1887f", other: "#90a4ae" };
  function chart(id, cfg) { var c = document.getElementById(id); if (c) { new Chart(c, cfg); } }
  chart("chart-daily", { type: "bar", data: { labels: d.daily.labels, datasets: Object.keys(d.daily.series).map(function (k) {
    return { label: k, data: d.daily.series[k], backgroundColor: colors[k] }; }) },
    options: { animation: false, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } } });
  chart("chart-success", { type: "bar", data: { labels: d.workflows, datasets: [{ label: "success %", data: d.success, backgroundColor: "#66bb6a" }] },
    options: { animation: false, scales: { y: { beginAtZero: true, max: 100 } } } });
  chart("chart-duration", { type: "bar", data: { labels: d.workflows, datasets: [
    { label: "average s", data: d.avg, backgroundColor: "#42a5f5" }, { label: "p95 s", data: d.p95, backgroundColor: "#1565c0" }] },
    options: { animation: false, scales: { y: { beginAtZero: true } } } });
  chart("chart-cost", { type: "bar", data: { labels: d.workflows, datasets: [{ label: "USD", data: d.cost, backgroundColor: "#ffa726" }] },
    options: { animation: false, scales: { y: { beginAtZero: true } } } });
  chart("chart-llm", { type: "bar", data: { labels: d.llm_labels, datasets: [{ label: "tokens", data: d.llm_tokens, backgroundColor: "#ab47bc" }] },
    options: { animation: false, scales: { y: { beginAtZero: true } } } });
})();
