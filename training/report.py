"""The evaluation report: several models side by side, and where the primary one goes wrong.

A single AUC hides what matters for flexguard: how many flex photos get through at an FPR the
product can live with, whether cheap look-alikes (hard negatives) get blocked, whether one photo
source is much easier than another (a sign of leakage or shortcuts), and what the worst mistakes
look like. The report shows all of that, for people (``report.md`` beside its images, and a
self-contained ``report.html`` to mail or attach to a review) and for tools (``metrics.json``).

Models are compared on the same numbers from ``metrics.compute_metrics``; the primary one also
gets its plots and its worst false positives and false negatives as thumbnails. Output depends
only on the inputs: no timestamps, stable orderings, fixed plot settings.

Longer than most modules: it is one document (its tables, plots, thumbnails and both output
formats), and splitting it would scatter one page's layout over several files.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import precision_recall_curve, roc_curve

from flexguard.models.metadata import Thresholds, overall_risk
from flexguard.models.preprocessing import PreprocessSpec, load_image, open_image
from flexguard.models.taxonomy import CATEGORY_IDS, ORDINARY
from flexguard.models.vocabulary import DECISIONS

from .metrics import BLOCK_FPR, REVIEW_FPR, compute_metrics, flex_mask, true_class

DEFAULT_TITLE = "flexguard evaluation"
DEFAULT_EXAMPLES = 24
THUMBNAIL_PX = 160
THUMBNAIL_JPEG_QUALITY = 85
THUMBS_DIR = "thumbs"
METRICS_FILE = "metrics.json"
MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
ROC_FILE = "roc.png"
PR_FILE = "pr.png"
HISTOGRAM_FILE = "score_hist.png"
PLOT_DPI = 110
# The zoomed ROC panel shows the low-FPR region where the thresholds actually sit.
ROC_ZOOM_MAX_FPR = 0.1
HISTOGRAM_BINS = 40
# Headline numbers are shown with three decimals; thresholds with four, as they are stored.
SHOWN_DECIMALS = 3
THRESHOLD_DECIMALS = 4
MISSING = "n/a"
# Characters that Markdown (or HTML inside Markdown) would read as markup in text we did not write.
_MARKDOWN_SPECIAL = set("\\`*_[]<>|&#")


@dataclass(frozen=True, eq=False)
class EvalResult:
    """One model's scores on one set of photos, with what the report needs to know about each photo.

    ``labels`` is ``[N, C]`` multi-hot and ``scores`` ``[N, C]``, columns in ``category_ids`` order;
    ``paths``, ``sources`` and ``hard_negative`` have one entry per photo. Build it with ``evaluate``
    so ``metrics`` always matches the arrays.
    """

    name: str
    labels: np.ndarray
    scores: np.ndarray
    thresholds: Thresholds
    paths: tuple[str, ...]
    sources: tuple[str, ...]
    hard_negative: np.ndarray
    metrics: dict[str, Any]
    category_ids: tuple[str, ...] = CATEGORY_IDS

    @classmethod
    def evaluate(
        cls,
        name: str,
        labels: np.ndarray,
        scores: np.ndarray,
        thresholds: Thresholds,
        paths: Sequence[str],
        sources: Sequence[str],
        hard_negative: Sequence[bool] | np.ndarray,
        category_ids: Sequence[str] = CATEGORY_IDS,
    ) -> "EvalResult":
        """Compute the metrics of ``scores`` against ``labels`` and keep both for the report."""
        labels = np.asarray(labels).astype(bool)
        scores = np.asarray(scores, dtype=np.float64)
        hard_negative = np.asarray(hard_negative, dtype=bool)
        if len(paths) != labels.shape[0]:
            raise ValueError(f"{name}: {len(paths)} paths for {labels.shape[0]} photos")
        metrics = compute_metrics(labels, scores, hard_negative, sources, thresholds, category_ids)
        return cls(
            name=name,
            labels=labels,
            scores=scores,
            thresholds=thresholds,
            paths=tuple(str(path) for path in paths),
            sources=tuple(str(source) for source in sources),
            hard_negative=hard_negative & ~flex_mask(labels),
            metrics=metrics,
            category_ids=tuple(category_ids),
        )

    @property
    def risk(self) -> np.ndarray:
        return overall_risk(self.scores)

    @property
    def is_flex(self) -> np.ndarray:
        return flex_mask(self.labels)


@dataclass(frozen=True)
class ReportFiles:
    """What ``write_report`` wrote."""

    markdown: Path
    html: Path
    metrics: Path
    plots: tuple[Path, ...]
    thumbnails: tuple[Path, ...]


# --- The report as a list of blocks, rendered once to Markdown and once to HTML. ---


@dataclass(frozen=True)
class _Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class _Paragraph:
    text: str


@dataclass(frozen=True)
class _BulletList:
    items: tuple[str, ...]


@dataclass(frozen=True)
class _Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class _Plot:
    file_name: str
    caption: str


@dataclass(frozen=True)
class _Example:
    """One photo in an error list; ``thumbnail`` is relative to the report, ``None`` if unreadable."""

    thumbnail: str | None
    path: str
    source: str
    risk: str
    top_category: str
    true_class: str
    decision: str


@dataclass(frozen=True)
class _Gallery:
    examples: tuple[_Example, ...]


_Block = _Heading | _Paragraph | _BulletList | _Table | _Plot | _Gallery

_GALLERY_HEADERS = ("photo", "path", "source", "risk", "top category", "true class", "decision")


def _shown(value: float | None, decimals: int = SHOWN_DECIMALS) -> str:
    return MISSING if value is None else f"{value:.{decimals}f}"


# --- Plots (matplotlib's Agg canvas directly, so no pyplot global state or GUI backend). ---


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=PLOT_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _plot_roc(results: Sequence[EvalResult], path: Path) -> None:
    figure = _new_figure(11, 4.5)
    full, zoomed = figure.subplots(1, 2)
    for result in results:
        is_flex = result.is_flex
        if is_flex.all() or not is_flex.any():
            continue  # no ROC without both classes
        false_positive_rates, true_positive_rates, _ = roc_curve(is_flex, result.risk)
        label = f"{result.name} (AUC {_shown(result.metrics['roc_auc'])})"
        for axes in (full, zoomed):
            axes.plot(false_positive_rates, true_positive_rates, label=label)
    full.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    for axes, max_fpr in ((full, 1.0), (zoomed, ROC_ZOOM_MAX_FPR)):
        for fpr in (BLOCK_FPR, REVIEW_FPR):
            axes.axvline(fpr, color="black", linestyle="--", linewidth=0.8)
        axes.set_xlim(0, max_fpr)
        axes.set_ylim(0, 1)
        axes.set_xlabel("false-positive rate (ordinary photos flagged)")
        axes.set_ylabel("recall (flex photos flagged)")
        axes.grid(alpha=0.3)
    full.set_title("Risk ROC")
    # The lines are labelled only where they are far enough apart to read.
    for fpr in (BLOCK_FPR, REVIEW_FPR):
        zoomed.annotate(f"{fpr:.0%} FPR", (fpr, 0.98), rotation=90, fontsize=8, ha="right", va="top")
    zoomed.set_title(f"Risk ROC, FPR up to {ROC_ZOOM_MAX_FPR:.0%}")
    zoomed.legend(loc="lower right", fontsize=8)
    figure.savefig(path)


def _plot_precision_recall(result: EvalResult, path: Path) -> None:
    figure = _new_figure(6.5, 5)
    axes = figure.subplots()
    for column, category_id in enumerate(result.category_ids):
        positives = result.labels[:, column]
        if not positives.any():
            continue  # AP is undefined, and so is the curve
        precision, recall, _ = precision_recall_curve(positives, result.scores[:, column])
        average_precision = result.metrics["average_precision"][category_id]
        axes.plot(recall, precision, label=f"{category_id} (AP {_shown(average_precision)})")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title(f"Per-category precision-recall: {result.name}")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize=8)
    figure.savefig(path)


def _plot_risk_histogram(result: EvalResult, path: Path) -> None:
    figure = _new_figure(7, 4.5)
    axes = figure.subplots()
    risk, is_flex = result.risk, result.is_flex
    groups = (
        ("flex", is_flex),
        ("ordinary (not hard negative)", ~is_flex & ~result.hard_negative),
        ("hard negative", result.hard_negative),
    )
    bins = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    for label, members in groups:
        if members.any():
            # Densities, so a group of 50 hard negatives is as readable as 5,000 ordinary photos.
            axes.hist(risk[members], bins=bins, density=True, histtype="step", linewidth=1.5, label=f"{label} (n={int(members.sum())})")
    for name, threshold, style in (("review", result.thresholds.review, "--"), ("block", result.thresholds.block, "-")):
        axes.axvline(threshold, color="black", linestyle=style, linewidth=1, label=f"{name} threshold {threshold:.{THRESHOLD_DECIMALS}f}")
    axes.set_xlim(0, 1)
    axes.set_xlabel("risk (highest category score)")
    axes.set_ylabel("density")
    axes.set_title(f"Risk distribution: {result.name}")
    axes.legend(fontsize=8)
    figure.savefig(path)


# --- Worst mistakes as thumbnails. ---


def _write_thumbnail(photo_path: str, destination: Path) -> bool:
    """Save a small JPEG of the photo; ``False`` if it cannot be read, so one bad file doesn't sink the report."""
    try:
        with open_image(photo_path) as opened:
            # Decoding at thumbnail size lets Pillow skip most of a large JPEG's pixels.
            image = load_image(opened, PreprocessSpec(size=THUMBNAIL_PX))
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            image.save(destination, format="JPEG", quality=THUMBNAIL_JPEG_QUALITY)
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    return True


def _top_category(result: EvalResult, index: int) -> str:
    column = int(np.argmax(result.scores[index]))
    return f"{result.category_ids[column]} ({result.scores[index, column]:.{SHOWN_DECIMALS}f})"


def _worst_examples(result: EvalResult, false_positives: bool, count: int, thumbs_dir: Path, prefix: str) -> list[tuple[_Example, Path | None]]:
    risk = result.risk
    candidates = np.flatnonzero(~result.is_flex if false_positives else result.is_flex)
    # Highest-risk ordinary photos / lowest-risk flex photos first; ties broken by path for a stable order.
    direction = -1.0 if false_positives else 1.0
    ranked = sorted(candidates.tolist(), key=lambda index: (direction * risk[index], result.paths[index]))[:count]
    examples = []
    for rank, index in enumerate(ranked, start=1):
        thumbnail_path = thumbs_dir / f"{prefix}_{rank:02d}.jpg"
        readable = _write_thumbnail(result.paths[index], thumbnail_path)
        actual = true_class(result.labels[index], result.category_ids)
        if result.hard_negative[index]:
            actual = f"{ORDINARY} (hard negative)"
        example = _Example(
            thumbnail=f"{THUMBS_DIR}/{thumbnail_path.name}" if readable else None,
            path=result.paths[index],
            source=result.sources[index],
            risk=f"{risk[index]:.{SHOWN_DECIMALS}f}",
            top_category=_top_category(result, index),
            true_class=actual,
            decision=result.thresholds.decide(float(risk[index])),
        )
        examples.append((example, thumbnail_path if readable else None))
    return examples


# --- Tables. ---


def _comparison_table(results: Sequence[EvalResult]) -> _Table:
    rows = []
    for result in results:
        metrics = result.metrics
        rows.append(
            (
                result.name,
                str(metrics["n"]),
                str(metrics["n_flex"]),
                _shown(metrics["roc_auc"]),
                _shown(metrics["recall_at_fpr_1pct"]),
                _shown(metrics["recall_at_fpr_5pct"]),
                _shown(metrics["mean_average_precision"]),
                _shown(metrics["hard_negative_fpr"]["review"]),
            )
        )
    headers = ("model", "photos", "flex", "ROC-AUC", "recall @ 1% FPR", "recall @ 5% FPR", "mAP", "hard-negative FPR @ review")
    return _Table(headers, tuple(rows))


def _fold_table(results: Sequence[EvalResult]) -> _Table:
    """Cross-validation: each model's mean over folds, then every fold's own ROC-AUC / recall at 5% FPR."""
    n_folds = max(len(result.metrics["folds"]["per_fold"]) for result in results)
    rows = []
    for result in results:
        folds = result.metrics["folds"]
        rows.append((
            result.name, _shown(folds["mean"]["roc_auc"]), _shown(folds["mean"]["recall_at_fpr_5pct"]),
            *(f"{_shown(fold['roc_auc'])} / {_shown(fold['recall_at_fpr_5pct'])}" for fold in folds["per_fold"]),
        ))
    headers = ("model", "mean ROC-AUC", "mean recall @ 5% FPR", *(f"fold {fold}" for fold in range(n_folds)))
    return _Table(headers, tuple(rows))


def _thresholds_table(results: Sequence[EvalResult]) -> _Table:
    rows = []
    for result in results:
        metrics = result.metrics
        rows.append(
            (
                result.name,
                _shown(result.thresholds.review, THRESHOLD_DECIMALS),
                _shown(result.thresholds.block, THRESHOLD_DECIMALS),
                _shown(metrics["recall"]["review"]),
                _shown(metrics["recall"]["block"]),
                _shown(metrics["ordinary_fpr"]["review"]),
                _shown(metrics["ordinary_fpr"]["block"]),
                _shown(metrics["hard_negative_fpr"]["review"]),
                _shown(metrics["hard_negative_fpr"]["block"]),
            )
        )
    headers = (
        "model",
        "review threshold",
        "block threshold",
        "recall @ review",
        "recall @ block",
        "ordinary FPR @ review",
        "ordinary FPR @ block",
        "hard-negative FPR @ review",
        "hard-negative FPR @ block",
    )
    return _Table(headers, tuple(rows))


def _average_precision_table(results: Sequence[EvalResult], category_ids: Sequence[str]) -> _Table:
    rows = [
        (category_id, *(_shown(result.metrics["average_precision"].get(category_id)) for result in results))
        for category_id in category_ids
    ]
    rows.append(("mean", *(_shown(result.metrics["mean_average_precision"]) for result in results)))
    return _Table(("category", *(result.name for result in results)), tuple(rows))


def _confusion_table(result: EvalResult) -> _Table:
    rows = tuple(
        (true_row, *(str(counts[decision]) for decision in DECISIONS), str(sum(counts.values())))
        for true_row, counts in result.metrics["confusion"].items()
    )
    return _Table(("true class", *DECISIONS, "total"), rows)


def _source_table(result: EvalResult) -> _Table:
    rows = tuple(
        (
            source,
            str(entry["n"]),
            str(entry["n_flex"]),
            _shown(entry["roc_auc"]),
            _shown(entry["recall_at_review"]),
            _shown(entry["fpr_at_review"]),
            _shown(entry["hard_negative_fpr_at_review"]),
        )
        for source, entry in result.metrics["by_source"].items()
    )
    headers = ("source", "photos", "flex", "ROC-AUC", "recall @ review", "ordinary FPR @ review", "hard-negative FPR @ review")
    return _Table(headers, rows)


# --- Rendering. ---


def _markdown_text(text: str) -> str:
    flat = " ".join(str(text).split())  # a newline would end a table row or paragraph early
    return "".join(f"\\{character}" if character in _MARKDOWN_SPECIAL else character for character in flat)


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _render_markdown(blocks: Sequence[_Block], title: str) -> str:
    lines = [f"# {_markdown_text(title)}", ""]
    for block in blocks:
        if isinstance(block, _Heading):
            lines.append(f"{'#' * block.level} {_markdown_text(block.text)}")
        elif isinstance(block, _Paragraph):
            lines.append(_markdown_text(block.text))
        elif isinstance(block, _BulletList):
            lines.extend(f"- {_markdown_text(item)}" for item in block.items)
        elif isinstance(block, _Table):
            lines.append(_markdown_row([_markdown_text(header) for header in block.headers]))
            lines.append(_markdown_row(["---"] * len(block.headers)))
            lines.extend(_markdown_row([_markdown_text(cell) for cell in row]) for row in block.rows)
        elif isinstance(block, _Plot):
            lines.append(f"![{_markdown_text(block.caption)}]({block.file_name})")
        elif isinstance(block, _Gallery):
            lines.append(_markdown_row([_markdown_text(header) for header in _GALLERY_HEADERS]))
            lines.append(_markdown_row(["---"] * len(_GALLERY_HEADERS)))
            for example in block.examples:
                photo = f"![thumbnail]({example.thumbnail})" if example.thumbnail else "(unreadable)"
                fields = (example.path, example.source, example.risk, example.top_category, example.true_class, example.decision)
                lines.append(_markdown_row([photo, *(_markdown_text(value) for value in fields)]))
        lines.append("")
    return "\n".join(lines)


def _data_uri(path: Path, mime_type: str) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


_HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
img.plot { max-width: 100%; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.8em; }
.gallery figure { margin: 0; width: 180px; font-size: 0.75em; overflow-wrap: anywhere; }
.gallery .missing { width: 160px; height: 100px; background: #eee; display: flex; align-items: center; justify-content: center; }
"""


def _render_html(blocks: Sequence[_Block], title: str, out_dir: Path) -> str:
    escape = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{_HTML_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{escape(title)}</h1>",
    ]
    for block in blocks:
        if isinstance(block, _Heading):
            parts.append(f"<h{block.level}>{escape(block.text)}</h{block.level}>")
        elif isinstance(block, _Paragraph):
            parts.append(f"<p>{escape(block.text)}</p>")
        elif isinstance(block, _BulletList):
            parts.append("<ul>" + "".join(f"<li>{escape(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, _Table):
            header = "".join(f"<th>{escape(cell)}</th>" for cell in block.headers)
            body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in block.rows)
            parts.append(f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, _Plot):
            source = _data_uri(out_dir / block.file_name, "image/png")
            parts.append(f'<p><img class="plot" src="{source}" alt="{escape(block.caption)}"></p>')
        elif isinstance(block, _Gallery):
            parts.append('<div class="gallery">')
            for example in block.examples:
                if example.thumbnail:
                    picture = f'<img src="{_data_uri(out_dir / example.thumbnail, "image/jpeg")}" alt="{escape(example.path)}">'
                else:
                    picture = '<div class="missing">unreadable</div>'
                caption = "<br>".join(
                    escape(line)
                    for line in (
                        example.path,
                        f"source: {example.source}",
                        f"risk {example.risk}, {example.decision}",
                        f"top: {example.top_category}",
                        f"true: {example.true_class}",
                    )
                )
                parts.append(f"<figure>{picture}<figcaption>{caption}</figcaption></figure>")
            parts.append("</div>")
    parts.extend(["</body>", "</html>", ""])
    return "\n".join(parts)


# --- The report. ---


def _validate(results: Sequence[EvalResult], primary: str, n_examples: int) -> EvalResult:
    names = [result.name for result in results]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique in one report, got {names}")
    if primary not in names:
        raise ValueError(f"primary model {primary!r} is not among {names}")
    if n_examples < 0:
        raise ValueError(f"n_examples must be >= 0, not {n_examples}")
    return results[names.index(primary)]


def write_report(
    out_dir: str | Path,
    results: Sequence[EvalResult],
    primary: str,
    title: str = DEFAULT_TITLE,
    notes: Sequence[str] = (),
    n_examples: int = DEFAULT_EXAMPLES,
    thresholds_stamped: bool = False,
) -> ReportFiles:
    """Write ``metrics.json``, the plots, thumbnails, ``report.md`` and ``report.html`` into ``out_dir``.

    ``results`` are listed in the given order; ``primary`` names the one whose plots, confusion
    matrix, per-source table and worst ``n_examples`` false positives and false negatives are
    shown. ``notes`` are extra lines (data manifest, split, commit...) listed under the title.
    """
    primary_result = _validate(results, primary, n_examples)
    out_dir = Path(out_dir)
    thumbs_dir = out_dir / THUMBS_DIR
    thumbs_dir.mkdir(parents=True, exist_ok=True)
    for stale in sorted(thumbs_dir.glob("f[pn]_*.jpg")):
        stale.unlink()  # left by an earlier report with more examples

    metrics_path = out_dir / METRICS_FILE
    summary = {"title": title, "primary": primary, "notes": list(notes), "models": {result.name: result.metrics for result in results}}
    metrics_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")

    _plot_roc(results, out_dir / ROC_FILE)
    _plot_precision_recall(primary_result, out_dir / PR_FILE)
    _plot_risk_histogram(primary_result, out_dir / HISTOGRAM_FILE)

    false_positives = _worst_examples(primary_result, True, n_examples, thumbs_dir, "fp")
    false_negatives = _worst_examples(primary_result, False, n_examples, thumbs_dir, "fn")
    primary_metrics = primary_result.metrics

    blocks: list[_Block] = []
    if notes:
        blocks.append(_BulletList(tuple(notes)))
    blocks += [
        _Paragraph(
            f"Primary model: {primary}, on {primary_metrics['n']} photos "
            f"({primary_metrics['n_flex']} flex, {primary_metrics['n_hard_negative']} hard negatives). "
            "Risk is the highest category score; a photo is flagged for review at risk >= the review "
            "threshold and blocked at risk >= the block threshold."
        ),
        _Heading("Comparison"),
        _comparison_table(results),
        *((_Heading("By fold"), _Paragraph(
            "Each fold's photos scored by the model trained without them: the mean over folds, then each "
            "fold's ROC-AUC / recall at 5% FPR. The comparison above pools the folds' scores."),
           _fold_table(results)) if all("folds" in result.metrics for result in results) else ()),
        _Heading("Thresholds"),
        _Paragraph(
            "Each model's thresholds as stamped in its file (chosen on its own validation, not on these "
            "photos): what the model's users get."
            if thresholds_stamped else
            f"Each model's own thresholds, chosen on validation for {REVIEW_FPR:.0%} (review) and "
            f"{BLOCK_FPR:.0%} (block) false-positive rate on ordinary photos."
        ),
        _thresholds_table(results),
        _Plot(ROC_FILE, "Risk ROC of every model, with the 1% and 5% FPR lines"),
        _Heading("Average precision per category"),
        _average_precision_table(results, primary_result.category_ids),
        _Plot(PR_FILE, f"Per-category precision-recall of {primary}"),
        _Heading("Risk distribution"),
        _Plot(HISTOGRAM_FILE, f"Risk histograms of {primary}"),
        _Heading(f"Confusion matrix: {primary}"),
        _Paragraph("Rows: true class (a single category, 'multi' for several, or ordinary). Columns: decision at the thresholds."),
        _confusion_table(primary_result),
        _Heading(f"By source: {primary}"),
        _source_table(primary_result),
        _Heading(f"Worst false positives: {primary}"),
        _Paragraph(f"The {len(false_positives)} highest-risk ordinary photos."),
        _Gallery(tuple(example for example, _ in false_positives)),
        _Heading(f"Worst false negatives: {primary}"),
        _Paragraph(f"The {len(false_negatives)} lowest-risk flex photos."),
        _Gallery(tuple(example for example, _ in false_negatives)),
    ]

    markdown_path = out_dir / MARKDOWN_FILE
    markdown_path.write_text(_render_markdown(blocks, title), encoding="utf-8")
    html_path = out_dir / HTML_FILE
    html_path.write_text(_render_html(blocks, title, out_dir), encoding="utf-8")
    return ReportFiles(
        markdown=markdown_path,
        html=html_path,
        metrics=metrics_path,
        plots=(out_dir / ROC_FILE, out_dir / PR_FILE, out_dir / HISTOGRAM_FILE),
        thumbnails=tuple(path for _, path in (*false_positives, *false_negatives) if path is not None),
    )
