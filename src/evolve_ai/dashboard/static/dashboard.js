// Draws the charts from the JSON the page carries, and, on a live page, polls the
// same JSON to redraw them and the figures in place. No network beyond its server.
(function () {
  "use strict";
  // Generations are whole numbers: one tick per generation, or fewer on a long run.
  const generations = (xs) => ({ title: { text: "generation" }, tickformat: "d",
    dtick: Math.max(1, Math.ceil((Math.max(...xs, 0) - Math.min(...xs, 0)) / 12)) });
  const layout = (title, xs, extra) => Object.assign({
    margin: { l: 50, r: 20, t: 10, b: 40 }, xaxis: generations(xs),
    yaxis: { title: { text: title } }, legend: { orientation: "h" },
  }, extra || {});
  const config = { displaylogo: false, responsive: true };

  function fitnessTraces(history) {
    const x = history.map((h) => h.generation);
    const pick = (key) => history.map((h) => (h[key] === null ? null : h[key]));
    // Fitness lies in [0, 1]: so does the band drawn around the mean.
    const band = (sign) => history.map((h) => (h.mean === null || h.sd === null
      ? null : Math.min(1, Math.max(0, h.mean + sign * h.sd))));
    return [
      { name: "mean - sd", x, y: band(-1), mode: "lines", line: { width: 0 },
        showlegend: false, hoverinfo: "skip" },
      { name: "spread (mean ± sd)", x, y: band(1), mode: "lines", line: { width: 0 },
        fill: "tonexty", fillcolor: "rgba(69,123,157,0.18)", hoverinfo: "skip" },
      { name: "max", x, y: pick("max"), mode: "lines+markers", line: { color: "#e63946" } },
      { name: "mean", x, y: pick("mean"), mode: "lines+markers", line: { color: "#1d3557" } },
      { name: "min", x, y: pick("min"), mode: "lines+markers", line: { color: "#a8dadc" } },
    ];
  }

  function draw(data) {
    const o = data.overview;
    if (o) {
      const fitness = document.getElementById("fitness");
      if (fitness) {
        Plotly.react(fitness, fitnessTraces(o.history),
          layout("fitness", o.history.map((h) => h.generation)), config);
      }
      const genes = document.getElementById("genes");
      if (genes) {
        Plotly.react(genes, [{
          type: "heatmap", x: o.genes.generations, y: o.genes.labels, z: o.genes.share,
          customdata: o.genes.names.map((name) => o.genes.generations.map(() => name)),
          hovertemplate: "%{customdata}<br>generation %{x}: %{z:.0%}<extra></extra>",
          zmin: 0, zmax: 1, colorscale: "Viridis", colorbar: { title: { text: "share" } },
        }], layout("", o.genes.generations, { margin: { l: 280, r: 20, t: 10, b: 40 },
          yaxis: { automargin: true, tickfont: { size: 11 } } }),
        Object.assign({}, config, { displayModeBar: false }));
      }
    }
    for (const div of document.querySelectorAll(".agent-fitness")) {
      const agent = (data.agents || {})[div.dataset.agent];
      if (!agent) continue;
      const points = agent.fitness_history;
      const xs = points.map((p) => p[0]);
      Plotly.react(div, [{ name: "fitness", x: xs, y: points.map((p) => p[1]),
        mode: "lines+markers" }], layout("fitness", xs), config);
    }
    for (const element of document.querySelectorAll("[data-field]")) {
      let value = data;
      for (const key of element.dataset.field.split(".")) value = value == null ? null : value[key];
      if (value !== undefined && value !== null) element.textContent = String(value);
    }
  }

  const data = JSON.parse(document.getElementById("evolve-data").textContent);
  draw(data);
  const live = document.body.dataset.live;
  if (live) {
    setInterval(async () => {
      try {
        const answer = await fetch(live, { cache: "no-store" });
        if (answer.ok) draw(await answer.json());
      } catch (error) { /* the server stopped: keep the last figures */ }
    }, 5000);
  }
})();
