// Score your own pairs (notebook 03): the trained EX-RM's and IM-RM's rewards of a prompt and two responses,
// the IM-RM's per-token log-probability changes, and the rho_{k,l} grid of Eq. 5 against a training pair.
// Plain DOM/SVG, no imports (svgEl, htmlEl: dom.js, put in front by rmlib.widgets.esm_source). Static mode (no kernel, the built book): the precomputed examples of the
// payload. On render the panel sends {type: "ping"}; a kernel answers "pong" and the panel goes live:
// editable texts, a Score button, results computed by the kernel.
// Stable DOM for tests: .score-panel, select.sp-example, .sp-status[data-mode], textarea.sp-prompt, .sp-a,
// .sp-b, button.sp-score, .sp-verdict, table.sp-rewards, .sp-token[data-response], .sp-error,
// select.sp-grid, select.sp-train, rect.sp-cell.

function fmt(x, digits) {
  if (x === null || x === undefined || Number.isNaN(x)) return "n/a";
  const ax = Math.abs(x);
  if (ax !== 0 && (ax >= 1e4 || ax < 1e-3)) return x.toExponential(2);
  return x.toFixed(digits === undefined ? 3 : digits);
}

function signed(x, digits) {
  return (x > 0 ? "+" : x < 0 ? "\u2212" : "") + fmt(Math.abs(x), digits);
}

// fixed decimals, never an exponent (per-token changes sit in a narrow column)
function signedFixed(x, digits) {
  const s = Math.abs(x).toFixed(digits);
  return (Number(s) === 0 ? "\u00b1" : x > 0 ? "+" : "\u2212") + s;
}

function showToken(t) {
  return t.replace(/\n/g, "\\n").replace(/ /g, "\u00b7");
}

// diverging colour for rho in [-2, 2]: negative blue, positive red, 0 white
function colour(v) {
  const t = Math.max(-1, Math.min(1, v / 2));
  const a = Math.round(255 * (1 - Math.abs(t)));
  return t >= 0 ? `rgb(255,${a},${a})` : `rgb(${a},${a},255)`;
}

const STATIC_NOTE = "Live scoring needs a running kernel: open notebooks/03_persona_paraphrase.ipynb in " +
  "JupyterLab and run it to type your own prompt and responses. Here: precomputed examples, scored by this " +
  "run's trained models.";
const LIVE_NOTE = "Live: connected to the kernel. Edit the prompt or the responses and press Score " +
  "(or Ctrl+Enter in a text box).";

// the colour bar of the rho grid: -2 (blue) through 0 (white) to +2 (red)
function colourBar() {
  const W = 200, H = 10, left = 4, top = 4;
  const bar = svgEl("svg", { width: left + W + 24, height: top + H + 16, class: "sp-scale",
                             "aria-label": "colour scale: blue -2, white 0, red +2" });
  const n = 40;
  for (let i = 0; i < n; i++) {
    bar.appendChild(svgEl("rect", { x: left + (i * W) / n, y: top, width: W / n + 0.5, height: H,
                                    fill: colour(-2 + (4 * (i + 0.5)) / n) }));
  }
  bar.appendChild(svgEl("rect", { x: left, y: top, width: W, height: H, fill: "none", stroke: "#999" }));
  [["\u22122", 0, "start"], ["0", W / 2, "middle"], ["+2", W, "end"]].forEach(([label, x, anchor]) => {
    const t = svgEl("text", { x: left + x, y: top + H + 12, "text-anchor": anchor, class: "sp-axis" });
    t.textContent = label;
    bar.appendChild(t);
  });
  return bar;
}

function render({ model, el }) {
  const data = () => model.get("data") || {};
  const root = htmlEl("div", "score-panel");
  el.appendChild(root);

  const status = htmlEl("div", "sp-status", STATIC_NOTE);
  status.dataset.mode = "static";
  root.appendChild(status);

  // --- inputs
  const controls = htmlEl("div", "sp-controls");
  const exLabel = htmlEl("label", "sp-label", "example: ");
  const select = htmlEl("select", "sp-example");
  exLabel.appendChild(select);
  controls.appendChild(exLabel);
  const trainLabel = htmlEl("label", "sp-label", "training pair for \u03c1: ");
  const trainSelect = htmlEl("select", "sp-train");
  trainLabel.appendChild(trainSelect);
  controls.appendChild(trainLabel);
  root.appendChild(controls);
  const flipNote = htmlEl("div", "sp-note sp-flip");
  root.appendChild(flipNote);

  const fields = htmlEl("div", "sp-fields");
  function field(name, cls, rows) {
    const label = htmlEl("label", "sp-field");
    label.appendChild(htmlEl("span", "sp-field-name", name));
    const area = htmlEl("textarea", cls);
    area.rows = rows;
    area.readOnly = true;
    label.appendChild(area);
    fields.appendChild(label);
    return area;
  }
  const promptArea = field("prompt x", "sp-prompt", 4);
  const aArea = field("response A", "sp-a", 2);
  const bArea = field("response B", "sp-b", 2);
  root.appendChild(fields);
  const actions = htmlEl("div", "sp-actions");
  const button = htmlEl("button", "sp-score", "Score");
  button.type = "button";
  button.disabled = true;
  button.title = "needs a running kernel";
  trainSelect.disabled = true;  // static examples are precomputed against one training pair
  trainSelect.title = "choosing another training pair needs a running kernel";
  actions.appendChild(button);
  const errorBox = htmlEl("div", "sp-error");
  errorBox.setAttribute("role", "alert");
  actions.appendChild(errorBox);
  root.appendChild(actions);

  // --- results
  const verdictBox = htmlEl("div", "sp-verdict");
  verdictBox.setAttribute("aria-live", "polite");
  const results = htmlEl("div", "sp-results");
  root.appendChild(verdictBox);
  root.appendChild(results);

  let live = false, requestId = 0, pending = null;

  function fillSelects() {
    const d = data();
    select.textContent = "";
    (d.examples || []).forEach((e, i) => {
      const o = htmlEl("option", null, "precomputed: " + e.label);
      o.value = "example:" + i;
      select.appendChild(o);
    });
    if (live) {
      (d.starts || []).forEach((s, i) => {
        const o = htmlEl("option", null, "start from: " + s.label);
        o.value = "start:" + i;
        select.appendChild(o);
      });
    }
    const keep = trainSelect.value;
    trainSelect.textContent = "";
    (d.train_pairs || []).forEach((t, i) => {
      const o = htmlEl("option", null, `${t.label}: \u201c${t.chosen}\u201d vs \u201c${t.rejected}\u201d`);
      o.value = String(i);
      trainSelect.appendChild(o);
    });
    if (keep) trainSelect.value = keep;
    const meta = d.meta || {};
    flipNote.textContent = meta.flip_note || "";
  }

  function showExample() {
    const d = data();
    if (select.value === "own") return;
    const [kind, index] = (select.value || "example:0").split(":");
    const i = Number(index) || 0;
    errorBox.textContent = "";
    if (kind === "start") {
      const s = (d.starts || [])[i];
      if (!s) return;
      promptArea.value = s.prompt; aArea.value = s.a; bArea.value = s.b;
      return;
    }
    const e = (d.examples || [])[i];
    if (!e) return;
    promptArea.value = e.prompt; aArea.value = e.a; bArea.value = e.b;
    const t = (d.train_pairs || []).findIndex(p => e.result.train_pair && p.prompt === e.result.train_pair.prompt
      && p.chosen === e.result.train_pair.chosen && p.rejected === e.result.train_pair.rejected);
    if (t >= 0) trainSelect.value = String(t);
    showResult(e.result);
  }

  function rewardsTable(result) {
    const table = htmlEl("table", "sp-rewards");
    table.setAttribute("aria-label", "rewards of responses A and B; the larger reward is the preferred response");
    const head = htmlEl("tr");
    for (const h of ["reward model", "r(x, A)", "r(x, B)", "prefers"]) head.appendChild(htmlEl("th", null, h));
    table.appendChild(head);
    for (const name of names(result)) {
      const r = result.rewards[name];
      const tr = htmlEl("tr", "sp-rm");
      tr.dataset.rm = name;
      tr.appendChild(htmlEl("td", null, name));
      tr.appendChild(htmlEl("td", "sp-num", fmt(r.A, 4)));
      tr.appendChild(htmlEl("td", "sp-num", fmt(r.B, 4)));
      const p = result.preferred[name];
      tr.appendChild(htmlEl("td", "sp-pref", p === "tie" ? "tie" : p));
      table.appendChild(tr);
    }
    return table;
  }

  // one response's per-token changes as horizontal bars around a zero line
  function tokenBars(result, key, scale) {
    const box = htmlEl("div", "sp-tokens");
    const tokens = result.tokens[key];
    const total = tokens.reduce((s, t) => s + t.change, 0);
    box.appendChild(htmlEl("div", "sp-tokens-title",
      `response ${key}: \u03a3 = ${signed(total, 2)} nats, \u03b2\u00b7\u03a3 = ${signed(result.beta * total, 4)} (IM-RM reward)`));
    tokens.forEach((t, k) => {
      const row = htmlEl("div", "sp-token");
      row.dataset.response = key;
      row.dataset.index = String(k);
      row.appendChild(htmlEl("span", "sp-token-text", showToken(t.token)));
      const track = htmlEl("span", "sp-track");
      const bar = htmlEl("span", "sp-bar " + (t.change >= 0 ? "sp-up" : "sp-down"));
      const w = scale > 0 ? (50 * Math.abs(t.change)) / scale : 0;
      bar.style.width = `${w}%`;
      bar.style.left = t.change >= 0 ? "50%" : `${50 - w}%`;
      track.appendChild(bar);
      row.appendChild(track);
      row.appendChild(htmlEl("span", "sp-num sp-token-value", signedFixed(t.change, 3)));
      box.appendChild(row);
    });
    return box;
  }

  function rhoGrid(result, which, readout) {
    const [key, role] = which.split(":");
    const g = result.rho[key][role];
    const K = g.eval_tokens.length, L = g.train_tokens.length;
    const cell = Math.max(10, Math.min(20, Math.floor(300 / Math.max(K, L))));
    const left = 96, top = 80;
    const svg = svgEl("svg", { width: left + L * cell + 6, height: top + K * cell + 6, class: "sp-grid-svg",
                               tabindex: 0, role: "img",
                               "aria-label": `rho grid, ${K} by ${L} cells; arrow keys move between cells` });
    const rows = [], cols = [], cells = [];
    g.eval_tokens.forEach((t, k) => {
      const e = svgEl("text", { x: left - 4, y: top + k * cell + cell * 0.7, "text-anchor": "end", class: "sp-axis-token" });
      e.textContent = showToken(t);
      svg.appendChild(e);
      rows.push(e);
    });
    g.train_tokens.forEach((t, l) => {
      const x = left + l * cell + cell * 0.7, y = top - 4;
      const e = svgEl("text", { x, y, transform: `rotate(-60 ${x} ${y})`, class: "sp-axis-token" });
      e.textContent = showToken(t);
      svg.appendChild(e);
      cols.push(e);
    });
    let active = null;
    function activate(k, l) {
      if (active) {
        rows[active[0]].classList.remove("sp-active");
        cols[active[1]].classList.remove("sp-active");
        cells[active[0] * L + active[1]].classList.remove("sp-cell-active");
      }
      active = [k, l];
      rows[k].classList.add("sp-active");
      cols[l].classList.add("sp-active");
      cells[k * L + l].classList.add("sp-cell-active");
      const same = g.eval_ids[k] === g.train_ids[l];
      readout.textContent = `response ${key} token ${k + 1} "${showToken(g.eval_tokens[k])}" \u00d7 training ` +
        `${role} token ${l + 1} "${showToken(g.train_tokens[l])}"${same ? " (same token)" : ""}: \u03c1 = ${fmt(g.rho[k][l])}`;
    }
    for (let k = 0; k < K; k++) {
      for (let l = 0; l < L; l++) {
        const same = g.eval_ids[k] === g.train_ids[l];
        const r = svgEl("rect", { x: left + l * cell, y: top + k * cell, width: cell - 1, height: cell - 1,
                                  fill: colour(g.rho[k][l]), class: "sp-cell" + (same ? " sp-same" : ""),
                                  "data-k": k, "data-l": l });
        r.addEventListener("mouseenter", () => activate(k, l));
        r.addEventListener("pointerdown", (ev) => { if (ev.pointerType !== "mouse") activate(k, l); });
        cells.push(r);
        svg.appendChild(r);
      }
    }
    svg.addEventListener("focus", () => { if (!active) activate(0, 0); });
    svg.addEventListener("keydown", (ev) => {
      const [k, l] = active || [0, 0];
      const moves = { ArrowUp: [k - 1, l], ArrowDown: [k + 1, l], ArrowLeft: [k, l - 1], ArrowRight: [k, l + 1] };
      if (!(ev.key in moves)) return;
      ev.preventDefault();
      const [nk, nl] = moves[ev.key];
      activate(Math.max(0, Math.min(K - 1, nk)), Math.max(0, Math.min(L - 1, nl)));
    });
    const a1 = svgEl("text", { x: 2, y: 12, class: "sp-axis" });
    a1.textContent = `rows: response ${key} tokens`;
    const a2 = svgEl("text", { x: 2, y: 26, class: "sp-axis" });
    a2.textContent = `columns: training ${role} tokens`;
    svg.appendChild(a1);
    svg.appendChild(a2);
    return svg;
  }

  function showResult(result) {
    results.textContent = "";
    verdictBox.textContent = "";
    if (!result) return;
    const rmNames = names(result);
    verdictBox.textContent = result.sentence;
    verdictBox.dataset.agree = String(result.agree);
    results.appendChild(rewardsTable(result));
    results.appendChild(htmlEl("div", "sp-note", "The larger reward is the preferred response. EX-RM: \u27e8u, h\u27e9 (Eq. 1); " +
      "IM-RM: \u03b2 (ln \u03c0\u03b8 \u2212 ln \u03c0ref) (Eq. 2)" + (rmNames.includes("EX-GRM") ? "; EX-GRM: \u03c0\u03b8(Yes | x, y) (Eq. 7)." : ".")));

    const tokensBox = htmlEl("div", "sp-section");
    tokensBox.appendChild(htmlEl("h4", "sp-heading", "IM-RM: per-token change ln \u03c0\u03b8(y\u2096|x, y<\u2096) \u2212 ln \u03c0ref(y\u2096|x, y<\u2096)"));
    let scale = 0;
    for (const key of ["A", "B"]) for (const t of result.tokens[key]) scale = Math.max(scale, Math.abs(t.change));
    const pair = htmlEl("div", "sp-token-columns");
    pair.appendChild(tokenBars(result, "A", scale));
    pair.appendChild(tokenBars(result, "B", scale));
    tokensBox.appendChild(pair);
    tokensBox.appendChild(htmlEl("div", "sp-note",
      "Blue bar to the right: the trained IM-RM made the token more likely than the initial model \u03c0ref; " +
      "orange bar to the left: less likely. The IM-RM's reward is \u03b2 times the sum (Eq. 2). " +
      "Tokens: \u00b7 is a space, \\n a line break; the end-of-turn tokens are part of the response."));
    results.appendChild(tokensBox);

    if (result.rho) {
      const rhoBox = htmlEl("div", "sp-section");
      rhoBox.appendChild(htmlEl("h4", "sp-heading", "\u03c1\u2096\u2097 of Eq. 5 against the training pair"));
      const tp = result.train_pair;
      rhoBox.appendChild(htmlEl("div", "sp-note",
        `Training pair: \u201c${tp.chosen}\u201d (chosen) vs \u201c${tp.rejected}\u201d (rejected), prompt \u201c${short(tp.prompt)}\u201d. ` +
        "\u03c1\u2096\u2097 says how one more gradient step on the training pair moves the evaluated token k through " +
        "training token l (red positive, blue negative, range \u22122 to 2; outlined: the same token), at the trained IM-RM's parameters."));
      const gridLabel = htmlEl("label", "sp-label", "grid: ");
      const gridSelect = htmlEl("select", "sp-grid");
      for (const key of ["A", "B"]) for (const role of ["chosen", "rejected"]) {
        const o = htmlEl("option", null, `response ${key} \u00d7 training ${role}`);
        o.value = `${key}:${role}`;
        gridSelect.appendChild(o);
      }
      gridLabel.appendChild(gridSelect);
      rhoBox.appendChild(gridLabel);
      const readout = htmlEl("div", "sp-readout", "hover or tap a cell, or focus the grid and use the arrow keys");
      readout.setAttribute("aria-live", "polite");
      const figure = htmlEl("div", "sp-figure");
      const draw = () => { figure.textContent = ""; figure.appendChild(rhoGrid(result, gridSelect.value, readout)); };
      gridSelect.addEventListener("change", draw);
      rhoBox.appendChild(readout);
      rhoBox.appendChild(figure);
      rhoBox.appendChild(colourBar());
      draw();
      results.appendChild(rhoBox);
    }
  }

  // the reward models in the kernel's order (the stored widget state sorts the keys of objects)
  function names(result) {
    return (result.order || Object.keys(result.rewards)).filter(n => n in result.rewards);
  }

  function short(text) {
    const t = text.split(/\s+/).join(" ");
    return t.length > 90 ? t.slice(0, 89) + "\u2026" : t;
  }

  function goLive() {
    if (live) return;
    live = true;
    status.dataset.mode = "live";
    status.textContent = LIVE_NOTE;
    for (const a of [promptArea, aArea, bArea]) a.readOnly = false;
    button.disabled = false;
    button.title = "";
    trainSelect.disabled = false;
    trainSelect.title = "";
    const current = select.value;
    fillSelects();
    select.value = current;
  }

  function requestScore() {
    if (!live) return;
    requestId += 1;
    pending = requestId;
    errorBox.textContent = "";
    button.disabled = true;
    verdictBox.textContent = "Scoring\u2026";
    model.send({ type: "score", id: requestId, prompt: promptArea.value, a: aArea.value, b: bArea.value,
                 train: Number(trainSelect.value) || 0 });
  }

  model.on("msg:custom", (msg) => {
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "pong" && msg.live) goLive();
    if (msg.type === "result" && msg.id === pending) { button.disabled = false; showResult(msg.result); }
    if (msg.type === "error" && msg.id === pending) {
      button.disabled = false;
      verdictBox.textContent = "";
      errorBox.textContent = msg.message;
    }
  });

  button.addEventListener("click", requestScore);
  for (const a of [promptArea, aArea, bArea]) {
    a.addEventListener("keydown", (ev) => { if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); requestScore(); } });
  }
  select.addEventListener("change", showExample);
  // live: once the reader edits a text, the example menu says so instead of naming a stale example
  const own = htmlEl("option", null, "your own text");
  own.value = "own";
  for (const a of [promptArea, aArea, bArea]) {
    a.addEventListener("input", () => {
      if (!live) return;
      if (!own.parentNode) select.appendChild(own);
      select.value = "own";
    });
  }
  trainSelect.addEventListener("change", () => { if (live) requestScore(); });
  model.on("change:data", () => { fillSelects(); showExample(); });

  fillSelects();
  showExample();
  // a kernel answers the ping; without one (the static book) nothing comes back and the panel stays static
  const ping = () => { try { model.send({ type: "ping" }); } catch (err) { /* no kernel: static mode */ } };
  ping();
  setTimeout(() => { if (!live) ping(); }, 1500);
}

export default { render };
