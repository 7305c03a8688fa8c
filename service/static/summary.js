// flexguard reviewer page: the unit at a glance, drawn as SVG by the page itself (no chart library, no build
// step, no network). review.js fetches GET /v1/summary and calls window.flexguardSummary.render with it.
// Each chart says in words (aria-label) what its bars show, and every bar carries its number as text.
"use strict";

window.flexguardSummary = (() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const OUTCOMES = ["cleared", "pending", "approved", "rejected", "expired"];
  // Chart geometry, in SVG user units (the SVG scales to its box: width 100%).
  const WEEK_CHART = { width: 640, height: 220, top: 16, bottom: 36, left: 32, right: 8, gap: 6 };
  const BAR_CHART = { width: 640, rowHeight: 28, label: 230, value: 130, bar: 14 };

  const svg = (tag, attributes = {}, text) => {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  };

  function chart(width, height, label) {
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "chart" });
    root.append(svg("title", {}, label));
    return root;
  }

  // Posts per week, one stacked bar a week, a colour per outcome (style.css: .outcome-*).
  function weeksChart(summary, words) {
    const g = WEEK_CHART;
    const totals = summary.weeks.map((week) => OUTCOMES.reduce((sum, outcome) => sum + (week.posts[outcome] || 0), 0));
    const most = Math.max(1, ...totals);
    const described = summary.weeks.map((week, i) => `${week.week}: ${totals[i]}`).join(", ");
    const root = chart(g.width, g.height, `${words.weeksTitle}. ${described}`);
    const plotHeight = g.height - g.top - g.bottom;
    const slot = (g.width - g.left - g.right) / summary.weeks.length;
    summary.weeks.forEach((week, i) => {
      const x = g.left + i * slot + g.gap / 2;
      let y = g.top + plotHeight;
      for (const outcome of OUTCOMES) {
        const count = week.posts[outcome] || 0;
        if (!count) continue;
        const height = (count / most) * plotHeight;
        y -= height;
        const bar = svg("rect", { x, y, width: slot - g.gap, height, class: `outcome-${outcome}`,
          "data-week": week.week, "data-outcome": outcome, "data-count": count });
        bar.append(svg("title", {}, `${week.week} · ${words.outcomes[outcome]}: ${count}`));
        root.append(bar);
      }
      if (totals[i]) root.append(svg("text", { x: x + (slot - g.gap) / 2, y: y - 3, class: "chart-value", "text-anchor": "middle" }, totals[i]));
      root.append(svg("text", { x: x + (slot - g.gap) / 2, y: g.height - g.bottom + 16, class: "chart-axis",
        "text-anchor": "middle" }, week.week.slice(-3)));
    });
    root.append(svg("text", { x: 0, y: g.top + 4, class: "chart-axis" }, most));
    return root;
  }

  // One horizontal bar per category: a name, a bar, and the figure as text.
  function categoryChart(title, rows) {
    const g = BAR_CHART;
    const root = chart(g.width, rows.length * g.rowHeight, `${title}. ${rows.map((r) => `${r.name}: ${r.text}`).join(", ")}`);
    const barWidth = g.width - g.label - g.value;
    rows.forEach((row, i) => {
      const y = i * g.rowHeight;
      root.append(svg("text", { x: 0, y: y + g.bar, class: "chart-label" }, row.name));
      root.append(svg("rect", { x: g.label, y: y + 3, width: barWidth, height: g.bar, class: "chart-track" }));
      const bar = svg("rect", { x: g.label, y: y + 3, width: Math.max(0, row.fraction) * barWidth, height: g.bar,
        class: "chart-bar", "data-category": row.id, "data-value": row.value });
      root.append(bar);
      root.append(svg("text", { x: g.width, y: y + g.bar, class: "chart-value", "text-anchor": "end" }, row.text));
    });
    return root;
  }

  function legend(words) {
    const list = document.createElement("ul");
    list.className = "chart-legend";
    for (const outcome of OUTCOMES) {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = `swatch outcome-${outcome}`;
      item.append(swatch, ` ${words.outcomes[outcome]}`);
      list.append(item);
    }
    return list;
  }

  function heading(text) {
    const h = document.createElement("h3");
    h.textContent = text;
    return h;
  }

  // `words`: the page's strings in the chosen language; `names`: category id -> name in that language.
  function render(container, summary, words, names, pct, hours) {
    const flaggedMost = Math.max(1, ...Object.values(summary.flagged));
    const ids = Object.keys(summary.flagged);
    const timing = document.createElement("p");
    timing.className = "summary-timing";
    timing.textContent = summary.decisions
      ? words.decisionTime(hours(summary.median_hours_to_decision), hours(summary.p90_hours_to_decision), summary.decisions)
      : words.noDecisions;
    container.replaceChildren(
      heading(words.weeksTitle), legend(words), weeksChart(summary, words),
      heading(words.flaggedTitle),
      categoryChart(words.flaggedTitle, ids.map((id) => ({
        id, name: names(id), value: summary.flagged[id], fraction: summary.flagged[id] / flaggedMost,
        text: String(summary.flagged[id]) }))),
      heading(words.timeTitle), timing,
      heading(words.falseAlarmTitle),
      categoryChart(words.falseAlarmTitle, ids.map((id) => {
        const figures = summary.labels[id];
        const rate = figures.false_alarm_rate;
        return { id, name: names(id), value: rate === null ? "" : rate, fraction: rate || 0,
          text: rate === null ? words.noLabels : `${pct(rate)} (${figures.false_alarms}/${figures.labelled})` };
      })),
    );
  }

  return Object.freeze({ render, OUTCOMES });
})();
