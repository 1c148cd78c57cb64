"""Leaderboard tables -> the report: Markdown (leaderboard.md), a standalone HTML page
(leaderboard.html) and CSV (leaderboard.csv). Formatting only: what is ranked and how is
decided in pipeline/leaderboard.py."""

from __future__ import annotations

import html

import pandas as pd

from pipeline.leaderboard import SIGNIFICANCE, TABLE_COLUMNS, Section

MISSING = "–"  # how NaN (e.g. the std of one seed) is shown


def _pct(value, digits: int = 2) -> str:
    return MISSING if pd.isna(value) else f"{100 * value:.{digits}f}"


def _strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell as text, '' for missing (nullable integer columns refuse fillna(''))."""
    frame = frame.astype(object)
    return frame.where(frame.notna(), "").astype(str)


def _display(table: pd.DataFrame) -> pd.DataFrame:
    """The compact, formatted columns of a section table (all strings)."""
    sort_column = table.attrs.get("sort_column", "test_accuracy_mean")
    out = pd.DataFrame(
        {
            "rank": table["rank"].astype(str),
            "model": table["model"],
            "config_label": table["config_label"],
            "n_seeds": table["n_seeds"].astype(str),
            "test_accuracy % (mean ± std)": [
                f"{_pct(m)} ± {_pct(s)}"
                for m, s in zip(
                    table["test_accuracy_mean"], table["test_accuracy_std"], strict=True
                )
            ],
            "test_f1_macro %": table["test_f1_macro_mean"].map(_pct),
            "val_accuracy_mean %": table["val_accuracy_mean"].map(_pct),
            "n_params": table["n_params"].map(lambda v: MISSING if pd.isna(v) else f"{v:,.0f}"),
            "train_time_s_mean": table["train_time_s_mean"].map(
                lambda v: MISSING if pd.isna(v) else f"{v:.1f}"
            ),
        }
    )
    if sort_column not in (  # columns shown above already
        "test_accuracy_mean",
        "test_f1_macro_mean",
        "val_accuracy_mean",
        "n_params",
        "train_time_s_mean",
    ):
        out.insert(
            4, sort_column, table[sort_column].map(lambda v: MISSING if pd.isna(v) else f"{v:.4g}")
        )
    out["pareto"] = [
        ", ".join(n for n, f in (("size", s), ("time", t)) if f)
        for s, t in zip(table["pareto_size"], table["pareto_time"], strict=True)
    ]
    if "published" in table and (table["published"] != "").any():
        out["published %"] = table["published"]
        out["ours − published (points)"] = table["ours_minus_published"]
        out["published within our seeds' range"] = table["published_within_seeds"]
    if "note_vs_next" in table:
        out["note_vs_next"] = table["note_vs_next"].fillna("")
    return out


def _champion_text(best: pd.Series | None) -> str:
    if best is None:
        return (
            "none (no evaluated run with a validation accuracy on the official data, trained"
            " on its whole training split or a subset of it)"
        )
    return (
        f"{best['model']} ({best['config_label']}), chosen by validation accuracy, never by"
        f" test accuracy: val {_pct(best['val_accuracy_mean'])}%, test"
        f" {_pct(best['test_accuracy_mean'])} ± {_pct(best['test_accuracy_std'])}% over"
        f" {best['n_seeds']} seed(s); best run {best['best_run_id']}"
    )


def _section_intro(section: Section, table: pd.DataFrame) -> str:
    metric = table.attrs.get("metric", "test_accuracy")
    text = (
        f"Ranked by the mean {metric} over seeds (mean ± sample std, ddof=1; {MISSING} for one"
        " seed). A row is one configuration trained by one code version (seeds of different"
        " code are never averaged); its best run is chosen by validation accuracy. A tuned"
        " row's runs are retrains of a study's best configuration on seeds no trial used"
        ' ("k of n seeds tuned": the other seeds are plain runs of the same configuration).'
    )
    if not section.main:
        text = (
            "Kept apart from the main section (other data, training subset or test set): its"
            " ranks are not comparable with the main section's. " + text
        )
    return text


def _commands(table: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(rank, command, detail) per row: how to reproduce the row's best run."""
    return [
        (
            str(r["rank"]),
            r["command"] or "(command not recorded)",
            f"best run {r['best_run_id']}, code {r['code_version'] or 'unknown'}",
        )
        for _, r in table.iterrows()
    ]


def _blocks(sections, unranked_runs, references, best) -> list[tuple]:
    """The report as a list of blocks, rendered by to_markdown and to_html alike."""
    blocks = [("h1", "Fashion-MNIST leaderboard"), ("p", "Champion", _champion_text(best))]
    for section, table in sections.items():
        blocks += [("h2", section.name), ("p", "", _section_intro(section, table))]
        if table.empty:
            blocks.append(("p", "", "No evaluated runs."))
            continue
        blocks += [("table", _display(table)), ("p", "Method", SIGNIFICANCE)]
        blocks.append(("commands", _commands(table)))
    blocks.append(("h2", "Not ranked: failed, killed, running, unevaluated or superseded runs"))
    if unranked_runs is None or unranked_runs.empty:
        blocks.append(("p", "", "None."))
    else:
        shown = unranked_runs.drop(columns=["start_time"], errors="ignore")
        blocks.append(("table", _strings(shown)))
    blocks += [
        ("h2", "Published reference numbers (not produced by this pipeline)"),
        ("p", "", "Figures copied from the five reference reports (000-004), the Fashion-MNIST"
         " paper and the other sources each row names (percent; the project keeps them in"
         " pipeline/references.csv). None was produced by this pipeline, settings differ, and"
         " several are known to be wrong: read the validity column before comparing."),
        ("table", references.assign(value=references["value"].map("{:g}".format)).astype(str)),
    ]  # fmt: skip
    return blocks


def _md_cell(text: str) -> str:
    # A bare '|' (config labels contain one) would split a Markdown table cell.
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(
    sections: dict[Section, pd.DataFrame],
    unranked: pd.DataFrame,
    references: pd.DataFrame,
    champion: pd.Series | None,
) -> str:
    """The leaderboard as Markdown (leaderboard.md)."""
    lines = []
    for block in _blocks(sections, unranked, references, champion):
        kind = block[0]
        if kind == "h1":
            lines += [f"# {block[1]}", ""]
        elif kind == "h2":
            lines += [f"## {block[1]}", ""]
        elif kind == "p":
            lead = f"**{block[1]}:** " if block[1] else ""
            lines += [lead + block[2], ""]
        elif kind == "table":
            cells = block[1].map(_md_cell).rename(columns=_md_cell)
            lines += [cells.to_markdown(index=False, disable_numparse=True), ""]
        else:
            lines += [f"{rank}. `{cmd}`: {detail}" for rank, cmd, detail in block[1]] + [""]
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 110rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } tr:nth-child(even) td { background: #fafafa; }
code { font-size: 0.8rem; background: #f4f4f4; padding: 0 0.2rem; }
"""


def to_html(
    sections: dict[Section, pd.DataFrame],
    unranked: pd.DataFrame,
    references: pd.DataFrame,
    champion: pd.Series | None,
) -> str:
    """The leaderboard as a standalone HTML page (leaderboard.html): inline CSS, no links."""
    body = []
    for block in _blocks(sections, unranked, references, champion):
        kind, esc = block[0], html.escape
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{esc(block[1])}</{kind}>")
        elif kind == "p":
            lead = f"<strong>{esc(block[1])}:</strong> " if block[1] else ""
            body.append(f"<p>{lead}{esc(block[2])}</p>")
        elif kind == "table":
            body.append(block[1].to_html(index=False, escape=True, border=0))
        else:
            items = "".join(
                f'<li value="{esc(rank)}"><code>{esc(cmd)}</code>: {esc(detail)}</li>'
                for rank, cmd, detail in block[1]
            )
            body.append(f"<ol>{items}</ol>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Fashion-MNIST leaderboard</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def to_csv_frame(sections: dict[Section, pd.DataFrame]) -> pd.DataFrame:
    """All sections stacked (leaderboard.csv), the section name in the first column."""
    frames = [t.assign(section=s.name) for s, t in sections.items() if not t.empty]
    if not frames:
        return pd.DataFrame(columns=["section", *TABLE_COLUMNS])
    out = pd.concat(frames, ignore_index=True)
    return out[["section", *(c for c in out if c != "section")]]
