"use strict";
// The review page. The token lives in sessionStorage and travels only in a header.
(function () {
  let classes = [];
  let polling = null;
  const token = () => sessionStorage.getItem("rh_admin_token") || "";
  const say = (text) => { document.getElementById("status").textContent = text; };

  async function api(path, options) {
    const o = Object.assign({}, options || {});
    o.headers = Object.assign({"Authorization": "Bearer " + token()}, o.headers || {});
    const response = await fetch(path, o);
    const type = response.headers.get("content-type") || "";
    if (!response.ok) {
      const body = type.includes("json") ? await response.json() : {};
      throw new Error(body.error || ("HTTP " + response.status));
    }
    return type.includes("json") ? response.json() : response.blob();
  }

  function cell(row, content) {
    const td = document.createElement("td");
    if (content instanceof Node) td.append(content); else td.textContent = String(content);
    row.append(td);
    return td;
  }

  async function load() {
    const status = document.getElementById("filter").value;
    const data = await api("/api/admin/submissions?status=" + encodeURIComponent(status));
    const body = document.querySelector("#submissions tbody");
    body.replaceChildren();
    for (const s of data.submissions) {
      const tr = document.createElement("tr");
      tr.dataset.id = s.id;
      cell(tr, s.id);
      const img = document.createElement("img");
      img.className = "thumb";
      img.alt = "submission " + s.id;
      api("/api/admin/submissions/" + s.id + "/image").then((blob) => {
        img.src = URL.createObjectURL(blob);
      });
      cell(tr, img);
      const select = document.createElement("select");
      select.setAttribute("aria-label", "label of submission " + s.id);
      classes.forEach((c, k) => {
        const o = document.createElement("option");
        o.value = String(k);
        o.textContent = c;
        if (k === (s.reviewed_label === null ? s.label : s.reviewed_label)) o.selected = true;
        select.append(o);
      });
      cell(tr, select);
      cell(tr, classes[s.prediction]);
      cell(tr, s.fooled ? "yes" : "no");
      cell(tr, s.model_version);
      const actions = cell(tr, "");
      for (const [verb, status] of [["Accept", "accepted"], ["Reject", "rejected"]]) {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = verb;
        b.className = status;
        b.addEventListener("click", async () => {
          await api("/api/admin/submissions/" + s.id, {
            method: "POST", headers: {"Content-Type": "application/json"},
            body: JSON.stringify({status: status, label: Number(select.value)})});
          say("Submission " + s.id + " " + status + ".");
          await load();
          await stats();
        });
        actions.append(b);
      }
      body.append(tr);
    }
  }

  function pct(v) { return v === null || v === undefined ? "-" : (100 * v).toFixed(1) + "%"; }

  async function stats() {
    const s = await fetch("/api/stats").then((r) => r.json());
    const body = document.querySelector("#stats tbody");
    body.replaceChildren();
    for (const v of s.versions) {
      const tr = document.createElement("tr");
      cell(tr, v.model_version);
      cell(tr, v.submissions);
      cell(tr, pct(v.fooling_rate));
      cell(tr, v.accepted);
      cell(tr, pct(v.verified_model_error_rate));
      cell(tr, Object.entries(v.accepted_per_class).filter((e) => e[1] > 0)
        .map((e) => e[0] + ": " + e[1]).join(", ") || "-");
      body.append(tr);
    }
    const rounds = document.querySelector("#rounds tbody");
    rounds.replaceChildren();
    for (const r of s.rounds) {
      const tr = document.createElement("tr");
      cell(tr, r.round);
      cell(tr, r.status);
      cell(tr, r.from_version);
      cell(tr, r.model_version === null ? "-" : r.model_version);
      cell(tr, r.result ? pct(r.result.accuracy_standard_test) : "-");
      cell(tr, r.result ? pct(r.result.accuracy_human_test) : "-");
      cell(tr, r.progress);
      rounds.append(tr);
    }
  }

  async function poll(n) {
    const r = await api("/api/admin/rounds/" + n);
    document.getElementById("round-status").textContent =
      "Round " + n + ": " + r.status + (r.progress ? " (" + r.progress + ")" : "") +
      (r.model_version ? "; new model version " + r.model_version : "");
    if (r.status === "running") { polling = setTimeout(() => poll(n), 1000); }
    else { await stats(); await load(); }
  }

  document.getElementById("login").addEventListener("submit", async (e) => {
    e.preventDefault();
    sessionStorage.setItem("rh_admin_token", document.getElementById("token").value);
    try {
      classes = (await fetch("/api/model").then((r) => r.json())).classes;
      await load();
      await stats();
      document.getElementById("review").hidden = false;
      say("Signed in.");
    } catch (err) { say("Sign-in failed: " + err.message); }
  });
  document.getElementById("filter").addEventListener("change", load);
  document.getElementById("start-round").addEventListener("click", async () => {
    try {
      const r = await api("/api/admin/rounds", {method: "POST"});
      if (polling) clearTimeout(polling);
      poll(r.round);
    } catch (err) {
      document.getElementById("round-status").textContent = "Not started: " + err.message;
    }
  });
  document.getElementById("export").addEventListener("click", async (e) => {
    e.preventDefault();
    const blob = await api("/api/admin/export");
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "accepted.npz";
    a.click();
  });
})();
