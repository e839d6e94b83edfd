// Draws the dashboard's charts from the numbers the page carries (#chart-data); the tables beside
// each chart hold the same numbers, so the page says everything without JavaScript too.
(function () {
  "use strict";
  function draw(id, option) {
    var node = document.getElementById(id);
    if (!node || !window.echarts) { return; }
    var chart = window.echarts.init(node, null, { renderer: "svg" });
    chart.setOption(Object.assign({ animation: false, tooltip: { trigger: "axis" },
      grid: { left: 60, right: 20, top: 30, bottom: 40 } }, option));
    window.addEventListener("resize", function () { chart.resize(); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var source = document.getElementById("chart-data");
    if (!source) { return; }
    var data = JSON.parse(source.textContent);
    var first = function (rows) { return rows.map(function (r) { return r[0]; }); };
    var column = function (rows, i) { return rows.map(function (r) { return Number(r[i]); }); };
    draw("chart-tiers", { xAxis: { type: "category", data: first(data.tiers) }, yAxis: { type: "value" },
      series: [{ type: "bar", data: column(data.tiers, 1), label: { show: true, position: "top" } }] });
    draw("chart-stages", { tooltip: { trigger: "item" }, series: [{ type: "pie", radius: ["35%", "65%"],
      data: data.stages.map(function (r) { return { name: r[0], value: r[1] }; }), label: { formatter: "{b}: {c}" } }] });
    var earned = data.labels.earned, burned = data.labels.burned;
    draw("chart-flows", { legend: { data: [earned, burned] }, xAxis: { type: "category", data: first(data.flows) },
      yAxis: { type: "value" }, series: [
        { name: earned, type: "line", data: column(data.flows, 1) },
        { name: burned, type: "line", data: column(data.flows, 2) }] });
    draw("chart-liability", { xAxis: { type: "category", data: first(data.liability) }, yAxis: { type: "value" },
      series: [{ type: "bar", data: column(data.liability, 1) }] });
    var funnel = document.getElementById("chart-funnel");
    if (funnel) {
      var steps = JSON.parse(funnel.getAttribute("data-funnel"));
      draw("chart-funnel", { tooltip: { trigger: "item" }, series: [{ type: "funnel", sort: "descending",
        data: steps.map(function (s) { return { name: s[0], value: s[1] }; }), label: { formatter: "{b}: {c}" } }] });
    }
  });
}());
