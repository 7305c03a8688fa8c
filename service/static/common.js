// flexguard: what the try-it page (app.js) and the reviewer page (review.js) share, written once so that
// both pages build the DOM, word things, keep the language and show a photo's scores and evidence boxes
// the same way.
// No build step and no modules: each page loads words.js (window.flexguardWords, the service's one table of
// user-facing words: decisions, categories, error codes, in both languages) and then this file, which
// exposes window.flexguard.
"use strict";

window.flexguard = (() => {
  const LANG_STORE = "flexguard.lang"; // one language choice per browser, for both pages
  const WORDS = window.flexguardWords;
  const DECISIONS = WORDS.decision_order;
  // { allow: "...", review: "...", block: "..." } in one language, from the table.
  const decisionWords = (lang) => Object.fromEntries(DECISIONS.map((d) => [d, WORDS.decisions[d][lang]]));
  // What an error code means, in one language; undefined for a code the table does not know.
  const errorWords = (code, lang) => WORDS.errors[code]?.[lang];

  // The UI strings both pages use, in both languages; each page adds its own with withSharedStrings().
  const SHARED_STRINGS = {
    id: {
      langName: "Bahasa Indonesia",
      locale: "id-ID",
      risk: "Risiko",
      decisions: decisionWords("id"),
      categories: "Kategori",
      evidence: "Kotak pada foto menandai:",
      refused: (status) => `Permintaan ditolak (${status}).`,
      serviceDetail: "Rincian dari layanan (bahasa Inggris)",
      network: "Layanan tidak dapat dihubungi. Periksa koneksi, lalu coba lagi.",
      badResponse: "Jawaban layanan tidak dapat dibaca.",
    },
    en: {
      langName: "English",
      locale: "en-GB",
      risk: "Risk",
      decisions: decisionWords("en"),
      categories: "Categories",
      evidence: "Boxes on the photo mark:",
      refused: (status) => `The request was refused (${status}).`,
      serviceDetail: "Details from the service",
      network: "Could not reach the service. Check the connection and try again.",
      badResponse: "The service's answer could not be read.",
    },
  };
  const withSharedStrings = (own) => ({
    id: { ...SHARED_STRINGS.id, ...own.id },
    en: { ...SHARED_STRINGS.en, ...own.en },
  });

  const $ = (id) => document.getElementById(id);
  const el = (tag, props = {}, ...children) => {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  };
  const storage = (kind) => {
    try { return window[kind]; } catch { return null; } // blocked storage must not break the page
  };

  // Scores are fractions; the page shows them as whole percentages in the page's language.
  const pct = (x, locale) => new Intl.NumberFormat(locale, { style: "percent", maximumFractionDigits: 0 }).format(x);
  const clamp = (x) => Math.min(1, Math.max(0, Number(x) || 0));
  // An unknown decision is shown as the cautious one.
  const decisionOf = (decision) => (DECISIONS.includes(decision) ? decision : "review");
  // `scored` is a photo's scores as the API gives them (a /v1/score result or a stored photo).
  const categoryLabel = (category, lang) => (lang === "id" ? category.name_id : category.name_en);
  const categoryName = (scored, id, lang) => {
    const category = (scored.categories || []).find((c) => c.id === id);
    return category ? categoryLabel(category, lang) : id;
  };

  // ---- messages: the page's language first, the service's own words only as a detail ----
  // A message is a string, or {text, detail}: `text` is in the page's language; `detail` is the service's
  // message (English, with the specifics: sizes, ids, times), folded away under `label`.
  const message = (text, detail) => ({ text, detail });

  // A refused request in the page's language: the words table's sentence for its error code (a page's
  // own sentence for the codes it explains better), the HTTP status, and the service's message as detail.
  function refusal(strings, lang, status, code, detail) {
    const words = errorWords(code, lang);
    return message(words ? `${words.replace(/\.$/, "")} (${status}).` : strings.refused(status), detail);
  }

  function showMessage(node, shown, label) {
    if (!shown || typeof shown === "string") {
      node.textContent = shown || "";
      return;
    }
    node.replaceChildren(el("span", { className: "message-text" }, shown.text));
    if (shown.detail) {
      node.append(el("details", { className: "service-detail" }, el("summary", {}, label),
        el("span", { lang: "en" }, shown.detail)));
    }
  }

  // ---- the language: Bahasa Indonesia unless English was chosen ----
  const savedLanguage = () => (storage("localStorage")?.getItem(LANG_STORE) === "en" ? "en" : "id");
  const otherLanguage = (lang) => (lang === "id" ? "en" : "id");

  // Switch to the other language, remember it, and return it.
  function switchLanguage(lang) {
    const next = otherLanguage(lang);
    storage("localStorage")?.setItem(LANG_STORE, next);
    return next;
  }

  // Put `strings[lang]` into every [data-i18n] node and label the language button with the other one.
  function showLanguage(strings, lang) {
    document.documentElement.lang = lang;
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = strings[lang][node.dataset.i18n];
    const other = otherLanguage(lang);
    const button = $("lang");
    button.textContent = strings[other].langName;
    button.lang = other;
  }

  // ---- a photo's scores ----
  // Boxes are fractions of the photo as displayed, and the frame shrinks to the photo: percentages fit.
  function drawEvidence(frame, evidenceList, nameOf, locale) {
    for (const evidence of evidenceList || []) {
      const [left, top, right, bottom] = (evidence.box || []).map(clamp);
      if (!(right > left && bottom > top)) continue;
      const label = el("span", { className: "box-label" }, `${nameOf(evidence.category)} ${pct(evidence.score, locale)}`);
      // The label may be wider than its box but never leaves the photo, so it is never cut short: it
      // hangs from the box's corner nearer the photo's middle, and may take all the room from there to the
      // photo's far edge (a percentage of the box, the label's containing block), wrapping past that.
      const onRight = (left + right) / 2 > 0.5;
      const onLower = (top + bottom) / 2 > 0.5;
      label.style.maxWidth = `${(100 * (onRight ? right : 1 - left)) / (right - left)}%`;
      if (onRight) Object.assign(label.style, { left: "auto", right: "0" });
      if (onLower) Object.assign(label.style, { top: "auto", bottom: "0" });
      const box = el("div", { className: "box" }, label);
      box.dataset.category = evidence.category;
      box.setAttribute("aria-hidden", "true"); // described in text in the figcaption
      Object.assign(box.style, {
        left: `${left * 100}%`, top: `${top * 100}%`,
        width: `${(right - left) * 100}%`, height: `${(bottom - top) * 100}%`,
      });
      frame.append(box);
    }
  }

  // The boxes in words, as the figure's caption; no caption when nothing was flagged.
  function captionEvidence(figure, evidenceList, intro, nameOf, locale) {
    if (!(evidenceList || []).length) return;
    figure.append(el("figcaption", {}, `${intro} ` +
      evidenceList.map((e) => `${nameOf(e.category)} (${pct(e.score, locale)})`).join(", ")));
  }

  // One bar per category, highest first; the flagged ones (with evidence) are marked.
  function categoryBars(scored, lang, locale) {
    const flagged = new Set((scored.evidence || []).map((e) => e.category));
    const bars = el("ul", { className: "bars" });
    for (const category of [...(scored.categories || [])].sort((a, b) => b.score - a.score)) {
      const score = clamp(category.score);
      const fill = el("span", { className: "bar-fill" });
      fill.style.width = `${score * 100}%`;
      const track = el("span", { className: "bar-track" }, fill);
      track.setAttribute("aria-hidden", "true"); // the percentage is already in the text
      const bar = el("li", { className: flagged.has(category.id) ? "bar flagged" : "bar" },
        el("span", { className: "bar-name" }, categoryLabel(category, lang)),
        el("span", { className: "bar-value" }, pct(score, locale)), track);
      bar.dataset.category = category.id;
      bars.append(bar);
    }
    return bars;
  }

  return Object.freeze({
    $, el, storage, pct, clamp, decisionOf, errorWords, categoryName, message, refusal, showMessage,
    withSharedStrings, savedLanguage, switchLanguage, showLanguage,
    drawEvidence, captionEvidence, categoryBars,
  });
})();
