// flexguard try-it page. No build step, no dependencies; the page talks only to this service.
// common.js (loaded first) gives the helpers shared with the reviewer page.
"use strict";

(() => {
  // The try-it page's UI strings, in both languages; withSharedStrings adds those the reviewer page uses too.
  // Category names are not here: they come from the response.
  const STRINGS = window.flexguard.withSharedStrings({
    id: {
      skip: "Langsung ke hasil",
      lead: "Periksa foto sebelum diunggah: flexguard menilai apakah foto memamerkan kemewahan.",
      privacy: "Foto tidak disimpan. Foto hanya dikirim ke layanan ini untuk dinilai lalu dibuang; " +
        "pratinjau ditampilkan langsung dari perangkat Anda.",
      choose: "Pilih foto",
      dropHint: "atau seret foto ke sini. Boleh beberapa foto sekaligus.",
      keySummary: "Kunci API (opsional)",
      keyLabel: "Kunci API",
      keyHelp: "Hanya perlu jika layanan ini memintanya. Disimpan di tab ini saja dan hilang saat tab ditutup.",
      resultsTitle: "Hasil",
      scoring: (n) => `Menilai ${n} foto…`,
      pending: "Sedang dinilai…",
      done: (n, failed) => failed
        ? `Selesai: ${n - failed} dari ${n} foto dinilai, ${failed} tidak dapat dinilai.`
        : `Selesai: ${n} foto dinilai.`,
      decisionHelp: {
        allow: "Tidak terlihat tanda pamer kemewahan.",
        review: "Mungkin menampilkan kemewahan. Periksa lagi sebelum diunggah.",
        block: "Foto ini menampilkan kemewahan. Sebaiknya tidak diunggah.",
      },
      photoAlt: (name) => `Foto ${name}`,
      videoFacts: (seconds, sampled, worst) => `Video ${seconds} dtk; ${sampled} bingkai dinilai; bingkai terburuk pada ${worst} dtk.`,
      videoFlagged: (times) => `Ditandai pada ${times} dtk:`,
      stripAlt: "Bingkai video yang ditandai",
      noPreview: "Pratinjau tidak tersedia di peramban ini.",
      photoFailed: "Foto ini tidak dapat dinilai.",
      unauthorized: "Kunci API diperlukan atau salah (401). Isi kolom Kunci API di atas, lalu pilih foto lagi.",
      model: (name, version) => `Model: ${name} ${version}`,
    },
    en: {
      skip: "Skip to results",
      lead: "Check photos before you post them: flexguard scores whether a photo shows off wealth.",
      privacy: "Photos are not stored. They are sent only to this service to be scored, then discarded; " +
        "the preview is shown straight from your device.",
      choose: "Choose photos",
      dropHint: "or drag photos here. Several at once is fine.",
      keySummary: "API key (optional)",
      keyLabel: "API key",
      keyHelp: "Only needed if this service asks for one. Kept in this tab only and forgotten when it closes.",
      resultsTitle: "Results",
      scoring: (n) => `Scoring ${n} ${n === 1 ? "photo" : "photos"}…`,
      pending: "Scoring…",
      done: (n, failed) => failed
        ? `Done: ${n - failed} of ${n} photos scored, ${failed} could not be scored.`
        : `Done: ${n} ${n === 1 ? "photo" : "photos"} scored.`,
      decisionHelp: {
        allow: "No sign of displayed wealth.",
        review: "May show wealth. Check again before posting.",
        block: "This photo shows wealth. Better not to post it.",
      },
      photoAlt: (name) => `Photo ${name}`,
      videoFacts: (seconds, sampled, worst) => `Video of ${seconds} s; ${sampled} frames scored; worst frame at ${worst} s.`,
      videoFlagged: (times) => `Flagged at ${times} s:`,
      stripAlt: "The video's flagged frames",
      noPreview: "No preview in this browser.",
      photoFailed: "This photo could not be scored.",
      unauthorized: "An API key is needed, or the one given is wrong (401). Enter it in the API key field above, " +
        "then choose the photos again.",
      model: (name, version) => `Model: ${name} ${version}`,
    },
  });

  const KEY_STORE = "flexguard.apiKey"; // sessionStorage only: gone when the tab closes
  const { $, el, storage, clamp, decisionOf, errorWords } = window.flexguard;

  let lang = window.flexguard.savedLanguage();
  let items = []; // [{file, url, result}] for the current selection; result undefined while pending
  let model = null;
  let request = 0; // answers to an older selection are dropped
  let alertText = null; // () => string, re-rendered on language change
  let statusText = null; // likewise

  const t = () => STRINGS[lang];
  const pct = (x) => window.flexguard.pct(x, t().locale);
  const nameIn = (result) => (id) => window.flexguard.categoryName(result, id, lang);

  // ---- static text and language ----
  function applyLanguage() {
    window.flexguard.showLanguage(STRINGS, lang);
    $("model").textContent = model ? t().model(model.name, model.version) : "";
    showAlert(alertText);
    showStatus(statusText);
  }

  function showStatus(text) {
    statusText = text;
    $("status").textContent = text ? text() : "";
  }

  function showAlert(text) {
    alertText = text;
    $("alert").hidden = !text;
    window.flexguard.showMessage($("alert"), text ? text() : null, t().serviceDetail);
  }

  // ---- result cards ----
  function photoFrame(item) {
    const frame = el("div", { className: "frame" });
    if (item.file.type.startsWith("video/") || (item.result && item.result.video)) {
      // A video is previewed as itself; its evidence is the worst frame's, shown in its strip below.
      frame.append(el("video", { src: item.url, controls: true, muted: true, preload: "metadata", playsInline: true }));
      return frame;
    }
    const img = el("img", { src: item.url, alt: t().photoAlt(item.file.name), decoding: "async" });
    img.addEventListener("error", () => {
      // The browser can't show it (HEIC, a broken file): keep the card, draw boxes on a placeholder.
      const size = item.result && item.result.ok ? item.result.image : null;
      const placeholder = el("div", { className: "placeholder" }, t().noPreview);
      if (size && size.width && size.height) placeholder.style.aspectRatio = `${size.width} / ${size.height}`;
      img.replaceWith(placeholder);
    }, { once: true });
    frame.append(img);
    const result = item.result;
    if (result && result.ok) window.flexguard.drawEvidence(frame, result.evidence, nameIn(result), t().locale);
    return frame;
  }

  function videoFacts(video) {
    const seconds = (value) => value.toLocaleString(t().locale);
    const facts = el("div", { className: "video-facts" },
      el("p", {}, t().videoFacts(seconds(video.duration_s), video.frames_sampled, seconds(video.worst_frame.time_s))));
    if (video.flagged_frames.length) {
      facts.append(el("p", {}, t().videoFlagged(video.flagged_frames.map((f) => seconds(f.time_s)).join(", "))));
    }
    if (video.strip_jpeg) facts.append(el("img", { className: "strip", src: video.strip_jpeg, alt: t().stripAlt }));
    return facts;
  }

  function card(item) {
    const { file, result } = item;
    const li = el("li", { className: "card" }, el("h3", { className: "name" }, file.name));
    const figure = el("figure", { className: "photo" }, photoFrame(item));
    li.append(figure);

    if (result === undefined) {
      li.classList.add("pending");
      li.append(el("p", { className: "pending-text" }, t().pending));
      return li;
    }
    if (!result.ok) {
      const error = result.error || {};
      li.classList.add("failed");
      const detail = el("div", { className: "error-message" });
      window.flexguard.showMessage(detail, { text: "", detail: error.message || error.code || "?" }, t().serviceDetail);
      li.append(el("div", { className: "error" },
        el("p", { className: "error-title" }, errorWords(error.code, lang) || t().photoFailed), detail));
      return li;
    }

    const decision = decisionOf(result.decision);
    li.classList.add(`decision-${decision}`);
    li.dataset.decision = decision;

    // A video has no boxes on its preview: its flagged frames are listed with their times instead.
    if (!result.video) window.flexguard.captionEvidence(figure, result.evidence, t().evidence, nameIn(result), t().locale);

    li.append(el("div", { className: "verdict" },
      el("p", { className: "decision" }, t().decisions[decision]),
      el("p", { className: "risk" }, `${t().risk}: ${pct(clamp(result.risk))}`),
      el("p", { className: "decision-help" }, t().decisionHelp[decision])));

    if (result.video) li.append(videoFacts(result.video));
    li.append(el("h4", {}, t().categories), window.flexguard.categoryBars(result, lang, t().locale));
    return li;
  }

  function render() {
    $("results").replaceChildren(...items.map(card));
  }

  // ---- scoring ----
  function detailText(body, fallback) {
    const detail = body && body.detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map((d) => (d && d.msg) || JSON.stringify(d)).join("; ");
    return detail ? JSON.stringify(detail) : fallback;
  }

  async function score(files) {
    if (!files.length) return;
    for (const item of items) URL.revokeObjectURL(item.url);
    items = files.map((file) => ({ file, url: URL.createObjectURL(file), result: undefined }));
    const mine = ++request;
    const results = $("results");
    showAlert(null);
    showStatus(() => t().scoring(files.length));
    results.setAttribute("aria-busy", "true");
    render();

    const body = new FormData();
    for (const file of files) body.append("files", file, file.name);
    const headers = {};
    const key = $("api-key").value.trim();
    if (key) headers["X-API-Key"] = key;

    let problem = null;
    try {
      const response = await fetch("v1/score", { method: "POST", body, headers });
      const data = await response.json().catch(() => null);
      if (mine !== request) return;
      if (response.status === 401) {
        problem = () => t().unauthorized;
        $("key-box").open = true;
        $("api-key").focus();
      } else if (!response.ok) {
        const detail = detailText(data, response.statusText);
        const code = data && data.error && data.error.code;
        problem = () => window.flexguard.refusal(t(), lang, response.status, code, detail);
      } else if (!data || !Array.isArray(data.results) || data.results.length !== files.length) {
        problem = () => t().badResponse;
      } else {
        model = data.model || null;
        data.results.forEach((result, i) => { items[i].result = result; });
      }
    } catch {
      if (mine !== request) return;
      problem = () => t().network;
    }

    if (problem) {
      items = items.filter((item) => { URL.revokeObjectURL(item.url); return false; });
      showAlert(problem);
      showStatus(null);
    } else {
      const failed = items.filter((item) => !item.result.ok).length;
      showStatus(() => t().done(items.length, failed));
    }
    render();
    applyLanguage();
    results.removeAttribute("aria-busy");
  }

  // ---- wiring ----
  document.addEventListener("DOMContentLoaded", () => {
    const input = $("files");
    const drop = $("drop");
    const keyInput = $("api-key");
    const session = storage("sessionStorage");

    keyInput.value = session?.getItem(KEY_STORE) || "";
    keyInput.addEventListener("input", () => {
      if (keyInput.value) session?.setItem(KEY_STORE, keyInput.value);
      else session?.removeItem(KEY_STORE);
    });

    input.addEventListener("change", () => {
      const files = [...input.files];
      input.value = ""; // choosing the same photo again still fires change
      score(files);
    });

    // Dropping anywhere but the drop zone must not navigate away from the page.
    for (const type of ["dragover", "drop"]) window.addEventListener(type, (e) => e.preventDefault());
    drop.addEventListener("dragover", (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      score([...(e.dataTransfer?.files || [])]);
    });

    $("lang").addEventListener("click", () => {
      lang = window.flexguard.switchLanguage(lang);
      const results = $("results");
      results.setAttribute("aria-live", "off"); // a language switch is not news
      applyLanguage();
      render();
      requestAnimationFrame(() => results.setAttribute("aria-live", "polite"));
    });

    $("form").addEventListener("submit", (e) => e.preventDefault());
    applyLanguage();
  });
})();
