// Rho explorer (Eq. 5 of Razin et al. 2025): heatmap of rho_{k,l}(v) for an evaluated response yb
// (rows, tokens k) and a training response v (columns, tokens l). Plain DOM/SVG, no imports (svgEl, htmlEl: dom.js, put in front by rmlib.widgets.esm_source).
// Stable DOM for tests: .rho-explorer root, select.rho-pair, rect.rho-cell[data-k][data-l],
// .rho-token[data-axis][data-index] (class rho-token-active while its cell is active), .rho-readout,
// .rho-totals, select.rho-mode, svg.rho-svg (focusable), .rho-scale (the colour bar).
// A cell becomes active by mouse hover, by a tap (touch or pen), or from the keyboard: focus the heatmap
// (Tab) and move with the arrow keys, Home/End; the readout says the cell's tokens and values.

// diverging colour: negative blue, positive red, 0 white; v scaled to [-1, 1]
function colour(v) {
  const t = Math.max(-1, Math.min(1, v));
  const a = Math.round(255 * (1 - Math.abs(t)));
  return t >= 0 ? `rgb(255,${a},${a})` : `rgb(${a},${a},255)`;
}

function fmt(x, digits) {
  if (x === null || x === undefined || Number.isNaN(x)) return "n/a";
  const d = digits === undefined ? 3 : digits;
  const ax = Math.abs(x);
  if (ax !== 0 && (ax >= 1e4 || ax < 1e-3)) return x.toExponential(2);
  return x.toFixed(d);
}

function showToken(t) {
  return t.replace(/\n/g, "\\n").replace(/ /g, "\u00b7");
}

const HINT = "hover or tap a cell, or focus the heatmap and use the arrow keys";

// the colour bar: the diverging scale from -scale (blue) through 0 (white) to +scale (red)
function colourBar(scale, name) {
  const W = 220, H = 12, left = 4, top = 16;
  const bar = svgEl("svg", { width: left + W + 40, height: top + H + 16, class: "rho-scale" });
  const label = svgEl("text", { x: left, y: 11, class: "rho-axis" });
  label.textContent = `colour: ${name}` + (name === "\u03c1\u2096\u2097" ? " (clipped at \u00b12)" : "");
  bar.appendChild(label);
  const n = 40;
  for (let i = 0; i < n; i++) {
    bar.appendChild(svgEl("rect", { x: left + (i * W) / n, y: top, width: W / n + 0.5, height: H,
                                    fill: colour(-1 + (2 * (i + 0.5)) / n) }));
  }
  bar.appendChild(svgEl("rect", { x: left, y: top, width: W, height: H, fill: "none", stroke: "#999" }));
  [[-scale, 0, "start"], [0, W / 2, "middle"], [scale, W, "end"]].forEach(([v, x, anchor]) => {
    const t = svgEl("text", { x: left + x, y: top + H + 12, "text-anchor": anchor, class: "rho-axis" });
    t.textContent = v === 0 ? "0" : fmt(v, 2);
    bar.appendChild(t);
  });
  return bar;
}

function render({ model, el }) {
  const root = htmlEl("div", "rho-explorer");
  el.appendChild(root);

  const controls = htmlEl("div", "rho-controls");
  const label = htmlEl("label", "rho-label", "pair (evaluated \u00d7 training response): ");
  const select = htmlEl("select", "rho-pair");
  label.appendChild(select);
  const modeLabel = htmlEl("label", "rho-label", " colour: ");
  const mode = htmlEl("select", "rho-mode");
  for (const [value, text] of [["rho", "\u03c1\u2096\u2097 (Eq. 5 coefficient)"],
                               ["contrib", "\u03c1\u2096\u2097 \u00d7 \u27e8h, h\u27e9 (contribution)"]]) {
    const o = htmlEl("option", null, text);
    o.value = value;
    mode.appendChild(o);
  }
  modeLabel.appendChild(mode);
  controls.appendChild(label);
  controls.appendChild(modeLabel);
  root.appendChild(controls);

  const texts = htmlEl("div", "rho-texts");
  const readout = htmlEl("div", "rho-readout", HINT);
  readout.setAttribute("aria-live", "polite");
  const figure = htmlEl("div", "rho-figure");
  const totals = htmlEl("div", "rho-totals");
  root.appendChild(texts);
  root.appendChild(readout);
  root.appendChild(figure);
  root.appendChild(totals);

  function fillOptions() {
    const data = model.get("data") || {};
    select.textContent = "";
    (data.pairs || []).forEach((p, i) => {
      const o = htmlEl("option", null, p.label);
      o.value = String(i);
      select.appendChild(o);
    });
  }

  function draw() {
    const data = model.get("data") || {};
    const pairs = data.pairs || [];
    const examples = data.examples || [];
    figure.textContent = "";
    texts.textContent = "";
    totals.textContent = "";
    readout.textContent = HINT;
    if (!pairs.length) return;
    const i = Math.max(0, Math.min(pairs.length - 1, Number(select.value) || 0));
    const p = pairs[i];
    const ex = examples[p.example] || {};
    const useContrib = mode.value === "contrib";

    const row = (k, v) => {
      const d = htmlEl("div", "rho-text");
      d.appendChild(htmlEl("b", null, k + ": "));
      d.appendChild(document.createTextNode(v));
      texts.appendChild(d);
    };
    row("evaluated (x\u0304, y\u0304)", `${p.eval_prompt} \u2192 ${p.eval_response}`);
    row(`training ${p.role} (x, v)`, `${p.train_prompt} \u2192 ${p.train_response}`);

    const K = p.eval_tokens.length, L = p.train_tokens.length;
    const cell = Math.max(9, Math.min(22, Math.floor(520 / Math.max(K, L))));
    const left = 110, top = 90;
    const svg = svgEl("svg", { width: left + L * cell + 10, height: top + K * cell + 10, class: "rho-svg",
                               tabindex: 0, role: "grid",
                               "aria-label": `heatmap of ${K} x ${L} cells; arrow keys move between cells` });
    // the contribution of cell (k, l) to Eq. 5's sum: rho_{k,l} * <h_{xb,yb<k}, h_{x,v<l}>
    const contrib = p.rho.map((r, k) => r.map((v, l) => v * p.inner[k][l]));
    const values = useContrib ? contrib : p.rho;
    let scale = 2;
    if (useContrib) {
      scale = 0;
      for (const r of values) for (const v of r) scale = Math.max(scale, Math.abs(v));
      scale = scale || 1;
    }
    const rowTokens = [], colTokens = [];
    p.eval_tokens.forEach((t, k) => {
      const e = svgEl("text", { x: left - 4, y: top + k * cell + cell * 0.7, "text-anchor": "end",
                                class: "rho-token", "data-axis": "eval", "data-index": k });
      e.textContent = showToken(t);
      svg.appendChild(e);
      rowTokens.push(e);
    });
    p.train_tokens.forEach((t, l) => {
      const x = left + l * cell + cell * 0.7, y = top - 4;
      const e = svgEl("text", { x, y, transform: `rotate(-60 ${x} ${y})`, class: "rho-token",
                                "data-axis": "train", "data-index": l });
      e.textContent = showToken(t);
      svg.appendChild(e);
      colTokens.push(e);
    });
    const cells = [];
    let active = null;
    function activate(k, l) {
      if (active) {
        rowTokens[active[0]].classList.remove("rho-token-active");
        colTokens[active[1]].classList.remove("rho-token-active");
        cells[active[0] * L + active[1]].classList.remove("rho-cell-active");
      }
      active = [k, l];
      const same = p.eval_ids[k] === p.train_ids[l];
      rowTokens[k].classList.add("rho-token-active");
      colTokens[l].classList.add("rho-token-active");
      cells[k * L + l].classList.add("rho-cell-active");
      readout.textContent =
        `k=${k + 1} "${showToken(p.eval_tokens[k])}"  \u00d7  l=${l + 1} "${showToken(p.train_tokens[l])}"` +
        `${same ? " (same token)" : ""}:  \u03c1 = ${fmt(p.rho[k][l])},  \u27e8h(x\u0304, y\u0304<k), h(x, v<l)\u27e9 = ` +
        `${fmt(p.inner[k][l], 1)},  product = ${fmt(contrib[k][l], 2)}`;
    }
    svg.addEventListener("keydown", (event) => {
      const [k, l] = active || [0, 0];
      const moves = { ArrowUp: [k - 1, l], ArrowDown: [k + 1, l], ArrowLeft: [k, l - 1], ArrowRight: [k, l + 1],
                      Home: [k, 0], End: [k, L - 1] };
      if (!(event.key in moves)) return;
      event.preventDefault();
      const [nk, nl] = active ? moves[event.key] : [0, 0];
      activate(Math.max(0, Math.min(K - 1, nk)), Math.max(0, Math.min(L - 1, nl)));
    });
    svg.addEventListener("focus", () => { if (!active) activate(0, 0); });
    for (let k = 0; k < K; k++) {
      for (let l = 0; l < L; l++) {
        const v = values[k][l];
        const same = p.eval_ids[k] === p.train_ids[l];
        const r = svgEl("rect", { x: left + l * cell, y: top + k * cell, width: cell - 1, height: cell - 1,
                                  fill: colour(v / scale), class: "rho-cell" + (same ? " rho-same" : ""),
                                  "data-k": k, "data-l": l });
        r.addEventListener("mouseenter", () => activate(k, l));
        r.addEventListener("pointerdown", (event) => { if (event.pointerType !== "mouse") activate(k, l); });
        cells.push(r);
        svg.appendChild(r);
      }
    }
    const axisY = svgEl("text", { x: 4, y: 14, class: "rho-axis" });
    axisY.textContent = "rows: evaluated tokens y\u0304\u2096";
    const axisX = svgEl("text", { x: 4, y: 28, class: "rho-axis" });
    axisX.textContent = `columns: training ${p.role} tokens v\u2097`;
    svg.appendChild(axisY);
    svg.appendChild(axisX);
    figure.appendChild(svg);
    figure.appendChild(colourBar(scale, useContrib ? "\u03c1\u2096\u2097 \u00d7 \u27e8h, h\u27e9" : "\u03c1\u2096\u2097"));

    const table = htmlEl("table", "rho-totals-table");
    const add = (name, value, cls) => {
      const tr = htmlEl("tr", cls);
      tr.appendChild(htmlEl("td", null, name));
      tr.appendChild(htmlEl("td", "rho-num", value));
      table.appendChild(tr);
    };
    add(`this pair: \u03a3 \u03c1\u00b7\u27e8h,h\u27e9 over same-token cells`, fmt(p.sum_same, 2));
    add(`this pair: \u03a3 \u03c1\u00b7\u27e8h,h\u27e9 over different-token cells`, fmt(p.sum_different, 2));
    add("Eq. 5 bracket (v=y\u207a minus v=y\u207b): same-token part", fmt(ex.im_same, 2), "rho-im");
    add("Eq. 5 bracket: different-token part", fmt(ex.im_different, 2), "rho-im");
    add("Eq. 5 bracket: total", fmt(ex.im_total, 2), "rho-im");
    add("IM-RM \u0394r predicted = bracket \u00b7 \u03b7 g \u03b2\u00b2 (Eq. 5)", fmt(ex.im_delta, 4), "rho-im");
    add("EX-RM term \u27e8h(x\u0304, y\u0304), h(x, y\u207a) \u2212 h(x, y\u207b)\u27e9 (Eq. 4)", fmt(ex.ex_term, 2), "rho-ex");
    add("EX-RM \u0394r predicted = term \u00b7 \u03b7 g (Eq. 4)", fmt(ex.ex_delta, 4), "rho-ex");
    totals.appendChild(table);
    const meta = data.meta || {};
    totals.appendChild(htmlEl("div", "rho-note",
      `model ${meta.model || "?"}; \u03b7 = ${meta.eta}, \u03b2 = ${meta.beta}, g = ${meta.g} (\u03c3(0): the IM-RM's ` +
      "rewards are 0 at initialization; the EX-RM's are near 0 with a small random head). " +
      "Red: positive, blue: negative (colour bar); outlined cells: same token (y\u0304\u2096 = v\u2097)."));
  }

  fillOptions();
  select.addEventListener("change", draw);
  mode.addEventListener("change", draw);
  model.on("change:data", () => { fillOptions(); draw(); });
  draw();
}

export default { render };
