"use strict";
// The collection page: draw, see the live prediction, submit. No inline script (CSP).
(function () {
  const pad = document.getElementById("pad");
  const ctx = pad.getContext("2d");
  const seen = document.getElementById("seen");
  const seenCtx = seen.getContext("2d");
  let classes = [];
  let drawing = false;
  let dirty = false;
  let last = null;
  let pending = null;
  let uploaded = null;  // a Blob from the file input, used instead of the canvas

  function clearPad() {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, pad.width, pad.height);
    dirty = false;
    uploaded = null;
    document.getElementById("prediction").textContent = "Draw something to see a prediction.";
    document.getElementById("bars").replaceChildren();
    seenCtx.clearRect(0, 0, seen.width, seen.height);
  }

  function point(e) {
    const r = pad.getBoundingClientRect();
    return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
  }

  function stroke(to) {
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 18;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(last[0], last[1]);
    ctx.lineTo(to[0], to[1]);
    ctx.stroke();
    last = to;
    dirty = true;
  }

  pad.addEventListener("pointerdown", (e) => {
    pad.setPointerCapture(e.pointerId);
    drawing = true;
    uploaded = null;
    last = point(e);
    stroke(last);
  });
  pad.addEventListener("pointermove", (e) => { if (drawing) stroke(point(e)); });
  const end = () => { if (drawing) { drawing = false; schedule(); } };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);
  // Keyboard: Delete or Backspace clears the drawing area.
  pad.addEventListener("keydown", (e) => {
    if (e.key === "Delete" || e.key === "Backspace") { e.preventDefault(); clearPad(); }
  });

  function image() {
    if (uploaded) return Promise.resolve(uploaded);
    return new Promise((resolve) => pad.toBlob(resolve, "image/png"));
  }

  function schedule() {
    if (pending) clearTimeout(pending);
    pending = setTimeout(predict, 120);
  }

  async function api(path, options) {
    const response = await fetch(path, Object.assign({credentials: "same-origin"}, options || {}));
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || ("HTTP " + response.status));
    return body;
  }

  function showInput(rows) {
    const h = rows.length, w = rows[0].length;
    const img = seenCtx.createImageData(w, h);
    for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) {
      const v = Math.round(rows[i][j] * 255), k = 4 * (i * w + j);
      img.data[k] = img.data[k + 1] = img.data[k + 2] = v; img.data[k + 3] = 255;
    }
    const tmp = document.createElement("canvas");
    tmp.width = w; tmp.height = h;
    tmp.getContext("2d").putImageData(img, 0, 0);
    seenCtx.imageSmoothingEnabled = false;
    seenCtx.clearRect(0, 0, seen.width, seen.height);
    seenCtx.drawImage(tmp, 0, 0, seen.width, seen.height);
  }

  function showBars(probs, top) {
    const list = document.getElementById("bars");
    list.replaceChildren();
    probs.forEach((p, k) => {
      const li = document.createElement("li");
      if (k === top) li.className = "top";
      const name = document.createElement("span");
      name.textContent = classes[k];
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = Math.max(1, Math.round(p * 200)) + "px";
      const value = document.createElement("span");
      value.textContent = (100 * p).toFixed(1) + "%";
      li.append(name, bar, value);
      list.append(li);
    });
  }

  async function predict() {
    if (!dirty && !uploaded) return;
    const form = new FormData();
    form.append("image", await image(), "drawing.png");
    try {
      const r = await api("/api/predict", {method: "POST", body: form});
      document.getElementById("prediction").textContent =
        "The model says: " + classes[r.prediction] + " (" +
        (100 * r.probabilities[r.prediction]).toFixed(1) + "%)";
      showBars(r.probabilities, r.prediction);
      showInput(r.input);
      document.getElementById("version").textContent = r.model_version;
    } catch (err) {
      document.getElementById("prediction").textContent = "Could not predict: " + err.message;
    }
  }

  async function submit() {
    const out = document.getElementById("result");
    if (!dirty && !uploaded) { out.textContent = "Draw or upload something first."; return; }
    const form = new FormData();
    form.append("image", await image(), "drawing.png");
    form.append("label", document.getElementById("label").value);
    try {
      const r = await api("/api/submissions", {method: "POST", body: form});
      out.className = r.fooled ? "fooled" : "right";
      out.textContent = r.fooled
        ? "You fooled the model: it said " + classes[r.prediction] + ". Thank you!"
        : "The model got it right (" + classes[r.prediction] + "). Try another one.";
      document.getElementById("mine").textContent = "Your submissions: " +
        r.your_submissions + ", of which " + r.your_fooled + " fooled the model.";
      refreshStats();
    } catch (err) {
      out.className = "";
      out.textContent = "Not submitted: " + err.message;
    }
  }

  async function refreshStats() {
    try {
      const s = await api("/api/stats");
      const current = s.versions.find((v) => v.model_version === s.model_version);
      const rate = current && current.verified_model_error_rate;
      document.getElementById("round").textContent = "Model version " + s.model_version +
        ": verified fooling rate " + (rate === null || rate === undefined ? "not measured yet"
        : (100 * rate).toFixed(1) + "% of accepted examples");
    } catch (err) { /* the page still works without stats */ }
  }

  document.getElementById("clear").addEventListener("click", clearPad);
  document.getElementById("submit").addEventListener("click", submit);
  document.getElementById("upload").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (!file) return;
    uploaded = file;
    predict();
  });

  api("/api/model").then((m) => {
    classes = m.classes;
    document.getElementById("version").textContent = m.version;
    const select = document.getElementById("label");
    classes.forEach((c, k) => {
      const o = document.createElement("option");
      o.value = String(k);
      o.textContent = c;
      select.append(o);
    });
    clearPad();
    refreshStats();
  });
})();
