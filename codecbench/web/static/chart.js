// The compare page's interactive RD charts (Plotly, served by this app), drawn from the JSON the
// server put in #rd-data: one trace per curve, bpp against PSNR and against MS-SSIM.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("rd-data").textContent);
  function draw(id, chart, title) {
    var traces = chart.traces.map(function (t) {
      return { name: t.name, x: t.x, y: t.y, text: t.text, mode: "lines+markers", type: "scatter",
               hovertemplate: "%{text}<br>%{x:.4f} bpp, %{y:.4f}<extra>%{fullData.name}</extra>" };
    });
    Plotly.newPlot(id, traces, {
      title: { text: title }, xaxis: { title: { text: chart.x } }, yaxis: { title: { text: chart.y } },
      legend: { x: 1, xanchor: "right", y: 0 }, margin: { t: 40 },
    }, { displaylogo: false, responsive: true });
  }
  draw("rd-psnr", data.psnr, "bpp vs PSNR");
  draw("rd-ms-ssim", data.ms_ssim, "bpp vs MS-SSIM");
})();
