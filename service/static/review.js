// flexguard reviewer page: a unit head's queue of pending posts, and approve/reject. No build step, no
// dependencies; the page talks only to this service, with the reviewer's key on every request.
// common.js (loaded first) gives the helpers shared with the try-it page.
"use strict";

(() => {
  // The reviewer page's UI strings, in both languages; withSharedStrings adds those the try-it page uses too.
  // Category names are not here: they come from the response.
  const STRINGS = window.flexguard.withSharedStrings({
    id: {
      skip: "Langsung ke antrean",
      title: "Tinjauan atasan",
      lead: "Putuskan unggahan unit Anda yang ditandai flexguard: lihat fotonya, lalu setujui atau tolak.",
      keyLabel: "Kunci peninjau",
      keySubmit: "Masuk",
      keyForget: "Lupakan kunci",
      keyHelp: "Disimpan di tab ini saja dan hilang saat tab ditutup.",
      keyMissing: "Isi kunci peninjau terlebih dahulu.",
      queueTitle: "Menunggu keputusan",
      refresh: "Muat ulang",
      previous: "Sebelumnya",
      next: "Berikutnya",
      signedOut: "Masukkan kunci peninjau untuk melihat antrean unit Anda.",
      queueEmpty: "Tidak ada pengajuan yang menunggu keputusan.",
      queueCount: (first, last, total) => `${first}–${last} dari ${total} pengajuan, yang terlama di atas.`,
      photoCount: (n, flagged) => `${n} foto, ${flagged} ditandai`,
      noCaption: "(tanpa keterangan)",
      photosTitle: "Foto",
      facts: { status: "Status", unit: "Unit", created: "Diajukan", risk: "Risiko", model: "Model" },
      statuses: { cleared: "Lolos otomatis", pending: "Menunggu keputusan", approved: "Disetujui", rejected: "Ditolak",
        expired: "Kedaluwarsa" },
      photoTitle: (n) => `Foto ${n}`,
      photoAlt: (n, account) => `Foto ${n} dari unggahan ${account}`,
      videoAlt: (n, account) => `Bingkai yang ditandai dari video ${n} unggahan ${account}`,
      videoTitle: (n) => `Video ${n}`,
      videoFacts: (seconds, sampled) => `Video ${seconds} dtk; ${sampled} bingkai dinilai. Videonya sendiri tidak disimpan, hanya bingkai ini.`,
      frameAt: (seconds, risk) => `${seconds} dtk · ${risk}`,
      photoLoading: "Memuat foto…",
      photoNotStored: "Foto yang dinilai aman hanya disimpan sampai pengajuan diputuskan.",
      labelLegend: "Penilaian Anda atas tanda ini (boleh dilewati)",
      labelNone: "Tidak menilai",
      labelCorrect: "Benar, menampilkan kemewahan",
      labelFalseAlarm: "Bukan kemewahan (salah tanda)",
      labelCategories: "Yang terlihat di foto:",
      labelNeedsCategory: (n) => `Foto ${n}: pilih kemewahan yang terlihat, atau pilih "Tidak menilai".`,
      labelGiven: "Penilaian peninjau:",
      photoPurged: "Foto sudah dihapus setelah keputusan.",
      photoFailed: "Foto tidak dapat dimuat.",
      commentLabel: "Komentar",
      commentHelp: "Boleh kosong untuk menyetujui; wajib diisi untuk menolak.",
      commentRequired: "Tulis alasan penolakan di kolom Komentar.",
      approve: "Setujui",
      reject: "Tolak",
      deciding: "Menyimpan keputusan…",
      decidedNow: { approved: "Pengajuan disetujui.", rejected: "Pengajuan ditolak." },
      decidedBy: (status, who, when) => `${status} oleh ${who} pada ${when}.`,
      commentWas: "Komentar:",
      unauthorized: "Kunci peninjau salah atau sudah dicabut (401). Periksa kunci lalu masuk lagi.",
      notReviewer: (role) => `Ini kunci ${role}, bukan kunci peninjau. Halaman ini untuk kunci peninjau (review) unit.`,
      notFound: "Pengajuan tidak ditemukan (404).",
      conflict: "Pengajuan ini sudah diputuskan oleh peninjau lain (409).",
      tryPage: "Halaman uji foto",
      summaryTitle: "Ringkasan unit (12 minggu terakhir)",
      weeksTitle: "Unggahan per minggu menurut hasilnya",
      outcomes: { cleared: "Lolos otomatis", pending: "Menunggu", approved: "Disetujui", rejected: "Ditolak",
        expired: "Kedaluwarsa" },
      flaggedTitle: "Foto yang ditandai per kategori",
      timeTitle: "Waktu sampai keputusan",
      decisionTime: (median, p90, n) => `Median ${median}, 90% dalam ${p90} (${n} keputusan).`,
      noDecisions: "Belum ada keputusan.",
      falseAlarmTitle: "Salah tanda menurut penilaian peninjau",
      noLabels: "belum dinilai",
      hours: (h) => (h < 1 ? `${Math.round(h * 60)} menit` : `${h.toLocaleString("id-ID", { maximumFractionDigits: 1 })} jam`),
    },
    en: {
      skip: "Skip to the queue",
      title: "Supervisor review",
      lead: "Decide your unit's posts that flexguard flagged: look at the photos, then approve or reject.",
      keyLabel: "Reviewer key",
      keySubmit: "Sign in",
      keyForget: "Forget key",
      keyHelp: "Kept in this tab only and forgotten when it closes.",
      keyMissing: "Enter a reviewer key first.",
      queueTitle: "Waiting for a decision",
      refresh: "Refresh",
      previous: "Previous",
      next: "Next",
      signedOut: "Enter your reviewer key to see your unit's queue.",
      queueEmpty: "No submissions are waiting for a decision.",
      queueCount: (first, last, total) => `${first}–${last} of ${total} submissions, oldest first.`,
      photoCount: (n, flagged) => `${n} ${n === 1 ? "photo" : "photos"}, ${flagged} flagged`,
      noCaption: "(no caption)",
      photosTitle: "Photos",
      facts: { status: "Status", unit: "Unit", created: "Submitted", risk: "Risk", model: "Model" },
      statuses: { cleared: "Cleared at once", pending: "Waiting for a decision", approved: "Approved", rejected: "Rejected",
        expired: "Expired" },
      photoTitle: (n) => `Photo ${n}`,
      photoAlt: (n, account) => `Photo ${n} of the post by ${account}`,
      videoAlt: (n, account) => `The flagged frames of video ${n} of the post by ${account}`,
      videoTitle: (n) => `Video ${n}`,
      videoFacts: (seconds, sampled) => `Video of ${seconds} s; ${sampled} frames scored. The video itself is not kept, only these frames.`,
      frameAt: (seconds, risk) => `${seconds} s · ${risk}`,
      photoLoading: "Loading the photo…",
      photoNotStored: "Photos the model allowed are kept only until the submission is decided.",
      labelLegend: "Your verdict on this flag (optional)",
      labelNone: "No verdict",
      labelCorrect: "Correct: it shows luxury",
      labelFalseAlarm: "Not luxury (false alarm)",
      labelCategories: "What the photo shows:",
      labelNeedsCategory: (n) => `Photo ${n}: tick what it shows, or choose "No verdict".`,
      labelGiven: "Reviewer's verdict:",
      photoPurged: "The photo was deleted after the decision.",
      photoFailed: "The photo could not be loaded.",
      commentLabel: "Comment",
      commentHelp: "May be empty to approve; required to reject.",
      commentRequired: "Say why you reject it in the Comment field.",
      approve: "Approve",
      reject: "Reject",
      deciding: "Saving the decision…",
      decidedNow: { approved: "Submission approved.", rejected: "Submission rejected." },
      decidedBy: (status, who, when) => `${status} by ${who} on ${when}.`,
      commentWas: "Comment:",
      unauthorized: "The reviewer key is wrong or was revoked (401). Check it and sign in again.",
      notReviewer: (role) => `This is a ${role} key, not a reviewer key. This page is for a unit's review keys.`,
      notFound: "Submission not found (404).",
      conflict: "Another reviewer has already decided this submission (409).",
      tryPage: "Photo check page",
      summaryTitle: "Unit summary (last 12 weeks)",
      weeksTitle: "Posts per week by outcome",
      outcomes: { cleared: "Cleared at once", pending: "Waiting", approved: "Approved", rejected: "Rejected",
        expired: "Expired" },
      flaggedTitle: "Flagged photos per category",
      timeTitle: "Time to decision",
      decisionTime: (median, p90, n) => `Median ${median}, 90% within ${p90} (${n} decisions).`,
      noDecisions: "No decisions yet.",
      falseAlarmTitle: "False alarms by the reviewers' labels",
      noLabels: "not labelled yet",
      hours: (h) => (h < 1 ? `${Math.round(h * 60)} min` : `${h.toLocaleString("en-GB", { maximumFractionDigits: 1 })} h`),
    },
  });

  const KEY_STORE = "flexguard.reviewKey"; // sessionStorage only: gone when the tab closes
  const PAGE_SIZE = 50; // the API's default page
  const HTTP = { unauthorized: 401, notFound: 404, conflict: 409 };
  const { $, el, storage, clamp, decisionOf } = window.flexguard;

  let lang = window.flexguard.savedLanguage();
  let key = "";
  let queue = null; // the last page of the pending list: {submissions, total}; null when signed out
  let offset = 0;
  let current = null; // the submission open in the detail view
  let photoUrls = new Map(); // position -> blob: URL of the open submission's stored photos
  let photoFailures = new Set(); // positions whose photo could not be fetched
  // The reviewer's verdicts on the open submission's flagged photos: position -> {verdict, categories}.
  let photoLabels = new Map();
  let summary = null; // the unit's GET /v1/summary, drawn below the queue
  // Answers to an older request are dropped: the reviewer may click on while one is on its way.
  let queueRequest = 0;
  let detailRequest = 0;
  let deciding = false;
  // Messages are kept as functions so that a language switch re-renders them.
  const messages = { status: null, alert: null, "decide-alert": null };

  const t = () => STRINGS[lang];
  const pct = (x) => window.flexguard.pct(x, t().locale);
  const when = (iso) => {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso)
      : new Intl.DateTimeFormat(t().locale, { dateStyle: "medium", timeStyle: "short" }).format(date);
  };
  const nameIn = (photo) => (id) => window.flexguard.categoryName(photo, id, lang);

  // ---- messages ----
  function say(id, text) {
    messages[id] = text;
    const node = $(id);
    window.flexguard.showMessage(node, text ? text() : null, t().serviceDetail);
    if (id !== "status") node.hidden = !text;
  }

  class ApiError extends Error {
    constructor(status, code, detail) {
      super(detail);
      this.status = status; // 0: the service could not be reached
      this.code = code; // the error code from the body, when there is one
    }
  }

  // What the reviewer reads: in the page's language, with the service's message only as a detail.
  function problem(error) {
    if (!(error instanceof ApiError)) return () => t().badResponse;
    const detail = error.message;
    const { message } = window.flexguard;
    switch (error.status) {
      case 0: return () => t().network;
      case HTTP.unauthorized: return () => t().unauthorized;
      case HTTP.notFound: return () => message(t().notFound, detail);
      case HTTP.conflict: return () => message(t().conflict, detail);
      default: return () => window.flexguard.refusal(t(), lang, error.status, error.code, detail);
    }
  }

  // ---- the API ----
  async function api(path, options = {}) {
    const headers = { "X-API-Key": key };
    if (options.body) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, { ...options, headers, cache: "no-store" });
    } catch {
      throw new ApiError(0, null, "");
    }
    if (response.ok) return response;
    const body = await response.json().catch(() => null);
    // Every error body is {"error": {"code", "message"}}; the status says which kind, the message why.
    const error = (body && body.error) || {};
    throw new ApiError(response.status, error.code, error.message || response.statusText);
  }

  async function apiJson(path, options) {
    const response = await api(path, options);
    const data = await response.json().catch(() => null);
    if (!data || typeof data !== "object") throw new Error("unreadable answer");
    return data;
  }

  const submissionPath = (id) => `/v1/submissions/${encodeURIComponent(id)}`;

  // A 401 means the key is no good for anything: drop what it showed and ask for it again.
  function signedOutBy(error) {
    if (!(error instanceof ApiError) || error.status !== HTTP.unauthorized) return false;
    queue = null;
    closeDetail();
    renderQueue();
    $("review-key").focus();
    return true;
  }

  // ---- the queue ----
  async function loadQueue() {
    const mine = ++queueRequest;
    $("queue").setAttribute("aria-busy", "true");
    try {
      const data = await apiJson(`/v1/submissions?status=pending&limit=${PAGE_SIZE}&offset=${offset}`);
      if (mine !== queueRequest) return;
      if (!Array.isArray(data.submissions)) throw new Error("unreadable answer");
      if (!data.submissions.length && offset > 0) {
        // Decisions emptied this page: show the one before it.
        offset = Math.max(0, offset - PAGE_SIZE);
        loadQueue();
        return;
      }
      queue = data;
    } catch (error) {
      if (mine !== queueRequest) return;
      say("alert", problem(error));
      signedOutBy(error);
    }
    renderQueue();
    $("queue").removeAttribute("aria-busy");
  }

  function queueItem(submission) {
    const photos = submission.photos || [];
    const flagged = photos.filter((p) => p.decision !== "allow").length;
    const button = el("button", { type: "button", className: "queue-item" },
      el("span", { className: "queue-account" }, submission.account),
      el("span", { className: "queue-caption" }, submission.caption || t().noCaption),
      el("span", { className: "queue-meta" },
        `${t().risk} ${pct(clamp(submission.risk))} · ${t().photoCount(photos.length, flagged)} · ${when(submission.created_at)}`));
    button.dataset.id = submission.id;
    if (current && current.id === submission.id) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => openSubmission(submission.id));
    return el("li", {}, button);
  }

  function renderQueue() {
    const list = $("queue");
    const count = $("queue-count");
    $("refresh").disabled = !key;
    if (!queue) {
      list.replaceChildren();
      count.textContent = t().signedOut;
      $("pager").hidden = true;
      return;
    }
    const shown = queue.submissions;
    list.replaceChildren(...shown.map(queueItem));
    count.textContent = shown.length ? t().queueCount(offset + 1, offset + shown.length, queue.total) : t().queueEmpty;
    $("pager").hidden = queue.total <= PAGE_SIZE;
    $("prev").disabled = offset === 0;
    $("next").disabled = offset + shown.length >= queue.total;
  }

  // ---- one submission ----
  function dropPhotos() {
    for (const url of photoUrls.values()) URL.revokeObjectURL(url);
    photoUrls = new Map();
    photoFailures = new Set();
  }

  function closeDetail() {
    ++detailRequest;
    dropPhotos();
    current = null;
    $("detail").hidden = true;
    $("photos").removeAttribute("aria-busy");
  }

  async function openSubmission(id) {
    say("alert", null);
    say("status", null);
    if (await loadSubmission(id)) $("detail-title").focus();
  }

  // Fetch a submission and its stored photos into the detail view; true once it is shown.
  async function loadSubmission(id) {
    const mine = ++detailRequest;
    try {
      const submission = await apiJson(submissionPath(id));
      if (mine !== detailRequest) return false;
      if (!current || current.id !== submission.id) { // a refresh keeps what was typed and ticked
        resetComment();
        photoLabels = new Map();
      }
      dropPhotos();
      current = submission;
      renderDetail();
      renderQueue(); // marks the open one
      loadPhotos(submission, mine);
      return true;
    } catch (error) {
      if (mine !== detailRequest) return false;
      say("alert", problem(error));
      signedOutBy(error);
      return false;
    }
  }

  function resetComment() {
    $("comment").value = "";
    markCommentValid();
  }

  function markCommentValid() {
    const commentBox = $("comment");
    commentBox.removeAttribute("aria-invalid");
    commentBox.setAttribute("aria-describedby", "comment-help");
    say("decide-alert", null);
  }

  async function loadPhotos(submission, mine) {
    const stored = (submission.photos || []).filter((photo) => photo.stored && photo.url);
    const list = $("photos");
    list.setAttribute("aria-busy", "true");
    await Promise.all(stored.map(async (photo) => {
      try {
        const blob = await (await api(photo.url)).blob();
        if (mine !== detailRequest) return;
        photoUrls.set(photo.position, URL.createObjectURL(blob));
      } catch {
        if (mine !== detailRequest) return;
        photoFailures.add(photo.position);
      }
      renderPhotos();
    }));
    if (mine === detailRequest) list.removeAttribute("aria-busy");
  }

  function placeholderText(photo) {
    if (photoFailures.has(photo.position)) return t().photoFailed;
    if (photo.stored) return t().photoLoading;
    return current.photos_purged_at ? t().photoPurged : t().photoNotStored;
  }

  function photoFrame(photo) {
    const frame = el("div", { className: "frame" });
    const url = photoUrls.get(photo.position);
    if (url && photo.video) return videoFrame(photo, frame, url);
    if (url) {
      frame.append(el("img", { src: url, alt: t().photoAlt(photo.position + 1, current.account), decoding: "async" }));
    } else {
      const placeholder = el("div", { className: "placeholder" }, placeholderText(photo));
      const size = photo.image || {};
      if (size.width && size.height) placeholder.style.aspectRatio = `${size.width} / ${size.height}`;
      frame.append(placeholder);
    }
    window.flexguard.drawEvidence(frame, photo.evidence, nameIn(photo), t().locale);
    return frame;
  }

  // What is stored of a video is a strip of its flagged frames (its worst when none is flagged), each
  // at its strip_box; the worst frame's evidence is drawn on it there, and every frame's time under it.
  function stripFrames(video) {
    return [video.worst_frame, ...video.flagged_frames]
      .filter((f, i, all) => f.strip_box && all.findIndex((g) => g.index === f.index) === i)
      .sort((a, b) => a.time_s - b.time_s);
  }

  function videoFrame(photo, frame, url) {
    frame.classList.add("video-strip");
    frame.append(el("img", { src: url, alt: t().videoAlt(photo.position + 1, current.account), decoding: "async" }));
    const worst = photo.video.worst_frame;
    if (worst.strip_box) {
      const [sl, , sr] = worst.strip_box;
      const inStrip = (photo.evidence || []).map((e) => ({
        ...e, box: [sl + e.box[0] * (sr - sl), e.box[1], sl + e.box[2] * (sr - sl), e.box[3]],
      }));
      window.flexguard.drawEvidence(frame, inStrip, nameIn(photo), t().locale);
    }
    const times = el("ol", { className: "frame-times" });
    for (const f of stripFrames(photo.video)) {
      const [left, , right] = f.strip_box;
      const item = el("li", {}, t().frameAt(f.time_s.toLocaleString(t().locale), pct(clamp(f.risk))));
      item.dataset.time = f.time_s;
      Object.assign(item.style, { left: `${left * 100}%`, width: `${(right - left) * 100}%` });
      times.append(item);
    }
    // The strip and its times share one shrink-wrapped box, so the times' percentages are the strip's.
    return el("div", {}, el("div", { className: "video-frames" }, frame, times),
      el("p", { className: "video-facts" }, t().videoFacts(photo.video.duration_s.toLocaleString(t().locale),
        photo.video.frames_sampled)));
  }

  function photoCard(photo) {
    const decision = decisionOf(photo.decision);
    const figure = el("figure", { className: "photo" }, photoFrame(photo));
    window.flexguard.captionEvidence(figure, photo.evidence, t().evidence, nameIn(photo), t().locale);
    const title = photo.video ? t().videoTitle(photo.position + 1) : t().photoTitle(photo.position + 1);
    const li = el("li", { className: `card decision-${decision}` },
      el("h4", { className: "name" }, title), figure,
      el("div", { className: "verdict" },
        el("p", { className: "decision" }, t().decisions[decision]),
        el("p", { className: "risk" }, `${t().risk}: ${pct(clamp(photo.risk))}`)));
    li.dataset.position = photo.position;
    li.append(el("h5", {}, t().categories), window.flexguard.categoryBars(photo, lang, t().locale));
    if (current.status === "pending" && decision !== "allow") li.append(labelChoice(photo));
    else if (photo.review_label) li.append(el("p", { className: "review-label" }, `${t().labelGiven} ${labelText(photo)}`));
    return li;
  }

  const VERDICTS = ["", "correct", "false_alarm"];
  const verdictWords = { "": "labelNone", correct: "labelCorrect", false_alarm: "labelFalseAlarm" };

  function labelText(photo) {
    const label = photo.review_label;
    const words = t()[verdictWords[label.verdict]] || label.verdict;
    return label.categories.length ? `${words} (${label.categories.map(nameIn(photo)).join(", ")})` : words;
  }

  // A flagged photo's verdict: none (the default), correct with what it shows, or a false alarm.
  function labelChoice(photo) {
    const flaggedByModel = (photo.evidence || []).map((e) => e.category);
    const state = photoLabels.get(photo.position) || { verdict: "", categories: [...new Set(flaggedByModel)] };
    const change = (next, focusSelector) => {
      photoLabels.set(photo.position, { ...state, ...next });
      renderPhotos();
      document.querySelector(focusSelector)?.focus(); // the cards were drawn again
    };
    const name = `label-${photo.position}`;
    const fieldset = el("fieldset", { className: "photo-label" }, el("legend", {}, t().labelLegend));
    for (const verdict of VERDICTS) {
      const input = el("input", { type: "radio", name, value: verdict, checked: state.verdict === verdict });
      input.addEventListener("change", () => change({ verdict }, `input[name="${name}"][value="${verdict}"]`));
      fieldset.append(el("label", { className: "choice" }, input, ` ${t()[verdictWords[verdict]]}`));
    }
    if (state.verdict === "correct") {
      const group = el("fieldset", { className: "label-categories" }, el("legend", {}, t().labelCategories));
      for (const category of photo.categories || []) {
        const box = el("input", { type: "checkbox", name: `${name}-category`, value: category.id,
          checked: state.categories.includes(category.id) });
        box.addEventListener("change", () => change(
          { categories: box.checked ? [...state.categories, category.id] : state.categories.filter((c) => c !== category.id) },
          `input[name="${name}-category"][value="${category.id}"]`));
        group.append(el("label", { className: "choice" }, box, ` ${nameIn(photo)(category.id)}`));
      }
      fieldset.append(group);
    }
    return fieldset;
  }

  // The verdicts to send with the decision; a "correct" with nothing ticked is asked about first.
  function labelsToSend() {
    const labels = [];
    for (const [position, state] of [...photoLabels].sort((a, b) => a[0] - b[0])) {
      if (!state.verdict) continue;
      if (state.verdict === "correct" && !state.categories.length) return { missing: position };
      labels.push({ position, verdict: state.verdict, categories: state.verdict === "correct" ? state.categories : [] });
    }
    return { labels };
  }

  function renderPhotos() {
    if (current) $("photos").replaceChildren(...(current.photos || []).map(photoCard));
  }

  function fact(name, value) {
    return [el("dt", {}, t().facts[name]), el("dd", { className: `fact-${name}` }, value)];
  }

  function renderDetail() {
    const detail = $("detail");
    if (!current) {
      detail.hidden = true;
      return;
    }
    const s = current;
    detail.hidden = false;
    detail.dataset.status = s.status;
    $("detail-title").textContent = s.account;
    $("detail-caption").textContent = s.caption || t().noCaption;
    $("detail-facts").replaceChildren(
      ...fact("status", t().statuses[s.status] || s.status),
      ...fact("unit", s.unit),
      ...fact("created", when(s.created_at)),
      ...fact("risk", pct(clamp(s.risk))),
      ...fact("model", s.model ? `${s.model.name} ${s.model.version}` : "?"),
    );
    renderPhotos();

    const pending = s.status === "pending";
    $("decide-form").hidden = !pending;
    const decided = $("decided");
    decided.hidden = pending;
    if (!pending) {
      const status = t().statuses[s.status] || s.status;
      const line = s.decided_at ? t().decidedBy(status, s.decided_by || "?", when(s.decided_at)) : status;
      decided.replaceChildren(el("p", { className: "decided-line" }, line));
      if (s.comment) decided.append(el("p", { className: "decided-comment" }, `${t().commentWas} ${s.comment}`));
    }
  }

  // ---- deciding ----
  function setDeciding(on) {
    deciding = on;
    for (const id of ["approve", "reject"]) $(id).disabled = on;
    $("decide-form").setAttribute("aria-busy", String(on));
  }

  async function decide(approve) {
    if (!current || deciding) return;
    const id = current.id;
    const commentBox = $("comment");
    const comment = commentBox.value.trim();
    say("alert", null);
    say("decide-alert", null);
    if (!approve && !comment) {
      // The service refuses it too (422); asking here saves the round trip and keeps the focus in place.
      commentBox.setAttribute("aria-invalid", "true");
      commentBox.setAttribute("aria-describedby", "decide-alert comment-help");
      say("decide-alert", () => t().commentRequired);
      commentBox.focus();
      return;
    }
    const { labels, missing } = labelsToSend();
    if (missing !== undefined) {
      say("decide-alert", () => t().labelNeedsCategory(missing + 1));
      document.querySelector(`input[name="label-${missing}"][value="correct"]`)?.focus();
      return;
    }
    setDeciding(true);
    say("status", () => t().deciding);
    try {
      const decided = await apiJson(`${submissionPath(id)}/${approve ? "approve" : "reject"}`,
        { method: "POST", body: JSON.stringify({ comment, labels }) });
      if (current && current.id === id) {
        current = decided;
        renderDetail();
        $("decided").focus();
      }
      say("status", () => t().decidedNow[decided.status] || decided.status);
    } catch (error) {
      say("status", null);
      say("decide-alert", problem(error));
      if (!signedOutBy(error) && error instanceof ApiError && error.status === HTTP.conflict) {
        // Someone decided first: show what they decided, keeping the message on screen.
        const message = messages["decide-alert"];
        if (await loadSubmission(id)) say("decide-alert", message);
      }
    } finally {
      setDeciding(false);
    }
    loadQueue();
  }

  // ---- the unit at a glance ----
  async function loadSummary() {
    const asked = key;
    try {
      const data = await apiJson("/v1/summary");
      if (asked !== key) return;
      summary = data;
    } catch {
      summary = null; // the queue says what went wrong with the key; the summary just stays hidden
    }
    renderSummary();
  }

  // Category names for the summary, from the words table (the summary carries ids only).
  const categoryNames = Object.entries(window.flexguardWords.categories)
    .map(([id, name]) => ({ id, name_en: name.en, name_id: name.id }));

  function renderSummary() {
    $("summary").hidden = !summary;
    if (!summary) return;
    const names = (id) => window.flexguard.categoryName({ categories: categoryNames }, id, lang);
    window.flexguardSummary.render($("summary-charts"), summary, t(), names, pct, (h) => t().hours(h));
  }

  // ---- static text and language ----
  function applyLanguage() {
    window.flexguard.showLanguage(STRINGS, lang);
    document.title = `flexguard — ${t().title}`;
    for (const [id, text] of Object.entries(messages)) say(id, text);
    renderQueue();
    renderDetail();
    renderSummary();
  }

  function signIn(newKey) {
    key = newKey;
    if (key) storage("sessionStorage")?.setItem(KEY_STORE, key);
    else storage("sessionStorage")?.removeItem(KEY_STORE);
    offset = 0;
    queue = null;
    summary = null;
    renderSummary();
    closeDetail();
    say("alert", null);
    say("status", null);
    renderQueue();
    if (key) start();
  }

  // Only a review key decides: a submit or admin key is told so at sign-in, not by a 403 later.
  async function start() {
    const asked = key;
    try {
      const me = await apiJson("/v1/me");
      if (asked !== key) return;
      if (me.role !== "review") {
        say("alert", () => t().notReviewer(me.role));
        return;
      }
    } catch (error) {
      if (asked !== key) return;
      say("alert", problem(error));
      signedOutBy(error);
      return;
    }
    loadQueue();
    loadSummary();
  }

  // ---- wiring ----
  document.addEventListener("DOMContentLoaded", () => {
    const keyInput = $("review-key");
    keyInput.value = storage("sessionStorage")?.getItem(KEY_STORE) || "";

    $("key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const value = keyInput.value.trim();
      if (!value) {
        say("alert", () => t().keyMissing);
        keyInput.focus();
        return;
      }
      signIn(value);
    });
    $("forget").addEventListener("click", () => {
      keyInput.value = "";
      signIn("");
      keyInput.focus();
    });

    $("refresh").addEventListener("click", () => {
      say("alert", null);
      loadQueue();
      loadSummary();
      if (current) loadSubmission(current.id);
    });
    $("prev").addEventListener("click", () => {
      offset = Math.max(0, offset - PAGE_SIZE);
      loadQueue();
    });
    $("next").addEventListener("click", () => {
      offset += PAGE_SIZE;
      loadQueue();
    });

    $("decide-form").addEventListener("submit", (e) => e.preventDefault());
    $("approve").addEventListener("click", () => decide(true));
    $("reject").addEventListener("click", () => decide(false));
    $("comment").addEventListener("input", (e) => {
      if (e.target.hasAttribute("aria-invalid")) markCommentValid();
    });

    $("lang").addEventListener("click", () => {
      lang = window.flexguard.switchLanguage(lang);
      applyLanguage();
    });

    applyLanguage();
    if (keyInput.value) signIn(keyInput.value.trim());
  });
})();
