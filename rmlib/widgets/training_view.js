// Training-step view: rewards of held-out responses over training steps, EX-RM vs IM-RM (precomputed).
// Plain DOM/SVG, no imports (svgEl, htmlEl: dom.js, put in front by rmlib.widgets.esm_source). Stable DOM: .training-view root, select.tv-example, svg.tv-panel[data-rm],
// polyline.tv-line[data-rm][data-response], input.tv-step (range), .tv-readout.

const COLOURS = ["#1b7837", "#762a83", "#5aae61", "#c2a5cf", "#e08214", "#2166ac"];

function render({ model, el }) {
  const root = htmlEl("div", "training-view");
  el.appendChild(root);
  const controls = htmlEl("div", "tv-controls");
  const label = htmlEl("label", null, "held-out example: ");
  const select = htmlEl("select", "tv-example");
  label.appendChild(select);
  controls.appendChild(label);
  const stepLabel = htmlEl("label", null, "  step: ");
  const slider = htmlEl("input", "tv-step");
  slider.type = "range";
  slider.min = "0";
  slider.step = "1";
  stepLabel.appendChild(slider);
  controls.appendChild(stepLabel);
  root.appendChild(controls);
  const prompt = htmlEl("div", "tv-prompt");
  const panels = htmlEl("div", "tv-panels");
  const legend = htmlEl("div", "tv-legend");
  const readout = htmlEl("div", "tv-readout");
  root.appendChild(prompt);
  root.appendChild(legend);
  root.appendChild(panels);
  root.appendChild(readout);

  function fillOptions() {
    const data = model.get("data") || {};
    select.textContent = "";
    (data.examples || []).forEach((e, i) => {
      const o = htmlEl("option", null, e.label);
      o.value = String(i);
      select.appendChild(o);
    });
    slider.max = String(Math.max(0, (data.steps || []).length - 1));
    slider.value = slider.max;
  }

  function panel(name, series, steps, responses, at) {
    const W = 320, H = 200, left = 48, right = 8, top = 22, bottom = 28;
    const svg = svgEl("svg", { width: W, height: H, class: "tv-panel", "data-rm": name });
    let lo = Infinity, hi = -Infinity;
    for (const s of series) for (const v of s) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (!(hi > lo)) { hi = lo + 1; lo = lo - 1; }
    const pad = 0.05 * (hi - lo);
    lo -= pad; hi += pad;
    const n = steps.length;
    const x = (i) => left + (n > 1 ? (i / (n - 1)) * (W - left - right) : 0);
    const y = (v) => top + (1 - (v - lo) / (hi - lo)) * (H - top - bottom);
    const title = svgEl("text", { x: left, y: 14, class: "tv-title" });
    title.textContent = name === "ex" ? "EX-RM reward" : "IM-RM reward";
    svg.appendChild(title);
    svg.appendChild(svgEl("line", { x1: left, y1: top, x2: left, y2: H - bottom, stroke: "#999" }));
    svg.appendChild(svgEl("line", { x1: left, y1: H - bottom, x2: W - right, y2: H - bottom, stroke: "#999" }));
    for (const v of [lo + pad, (lo + hi) / 2, hi - pad]) {
      const t = svgEl("text", { x: left - 4, y: y(v) + 4, "text-anchor": "end", class: "tv-tick" });
      t.textContent = Math.abs(hi - lo) < 0.01 ? v.toExponential(2) : v.toPrecision(3);
      svg.appendChild(t);
    }
    const xl = svgEl("text", { x: (left + W) / 2, y: H - 6, "text-anchor": "middle", class: "tv-tick" });
    xl.textContent = `training step (0..${steps[n - 1]})`;
    svg.appendChild(xl);
    series.forEach((s, j) => {
      const pts = s.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      const resp = responses[j];
      svg.appendChild(svgEl("polyline", { points: pts, fill: "none", stroke: COLOURS[j % COLOURS.length],
                                           "stroke-width": 2, "stroke-dasharray": resp.paraphrased ? "5,3" : "",
                                           class: "tv-line", "data-rm": name, "data-response": j }));
      svg.appendChild(svgEl("circle", { cx: x(at), cy: y(s[at]), r: 3.5, fill: COLOURS[j % COLOURS.length],
                                        class: "tv-marker" }));
    });
    svg.appendChild(svgEl("line", { x1: x(at), y1: top, x2: x(at), y2: H - bottom, stroke: "#bbb",
                                    "stroke-dasharray": "2,2" }));
    return svg;
  }

  function draw() {
    const data = model.get("data") || {};
    const examples = data.examples || [];
    panels.textContent = "";
    legend.textContent = "";
    readout.textContent = "";
    prompt.textContent = "";
    if (!examples.length) return;
    const e = examples[Math.max(0, Math.min(examples.length - 1, Number(select.value) || 0))];
    const steps = data.steps || [];
    const at = Math.max(0, Math.min(steps.length - 1, Number(slider.value)));
    prompt.textContent = `prompt: ${e.prompt}`;
    e.responses.forEach((r, j) => {
      // the line's swatch and the response's name stay together; the quoted response may wrap
      const item = htmlEl("span", "tv-legend-item");
      const key = htmlEl("span", "tv-legend-key");
      const swatch = htmlEl("span", "tv-swatch", r.paraphrased ? "- - -" : "\u2014\u2014");
      swatch.style.color = COLOURS[j % COLOURS.length];
      key.appendChild(swatch);
      key.appendChild(document.createTextNode(` ${r.name}:`));
      item.appendChild(key);
      item.appendChild(document.createTextNode(` "${r.text}"`));
      legend.appendChild(item);
    });
    panels.appendChild(panel("ex", e.ex, steps, e.responses, at));
    panels.appendChild(panel("im", e.im, steps, e.responses, at));
    const table = htmlEl("table", "tv-table");
    const head = htmlEl("tr");
    for (const h of [`step ${steps[at]}`, "EX-RM", "IM-RM"]) head.appendChild(htmlEl("th", null, h));
    table.appendChild(head);
    e.responses.forEach((r, j) => {
      const tr = htmlEl("tr");
      tr.appendChild(htmlEl("td", null, r.name));
      tr.appendChild(htmlEl("td", "tv-num", e.ex[j][at].toFixed(3)));
      tr.appendChild(htmlEl("td", "tv-num", e.im[j][at].toPrecision(3)));
      table.appendChild(tr);
    });
    readout.appendChild(table);
    const meta = data.meta || {};
    readout.appendChild(htmlEl("div", "tv-note", meta.note || ""));
  }

  fillOptions();
  select.addEventListener("change", draw);
  slider.addEventListener("input", draw);
  model.on("change:data", () => { fillOptions(); draw(); });
  draw();
}

export default { render };
