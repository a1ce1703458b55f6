"""The tables of a `reface evaluate` report.html as markdown (for docs/ and the README), pictures left out.

    .venv/bin/python scripts/report_markdown.py eval_out/report.html -o docs/evaluation_50.md --header HEADER.md
"""

from __future__ import annotations

import argparse
from html.parser import HTMLParser
from pathlib import Path


class _Tables(HTMLParser):
    """Headings, paragraphs and tables in document order; cells' text only."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[str] = []
        self.text: list[str] = []
        self.row: list[str] | None = None
        self.rows: list[list[str]] = []
        self.in_table = self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script"):
            self.skip += 1
        elif tag == "table":
            self.in_table += 1
            self.rows = []
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th", "h1", "h2", "h3", "h4", "p", "summary", "li"):
            self.text = []
        elif tag == "img" and self.in_table:
            self.text.append("(picture)")

    def handle_endtag(self, tag):
        words = " ".join(" ".join(self.text).split())
        if tag in ("style", "script"):
            self.skip -= 1
        elif tag in ("td", "th") and self.row is not None:
            self.row.append(words.replace("|", "/"))
        elif tag == "tr" and self.row is not None:
            self.rows.append(self.row)
            self.row = None
        elif tag == "table":
            self.in_table -= 1
            if self.rows and not all(c in ("", "(picture)") for r in self.rows[1:] for c in r[1:]):
                width = max(len(r) for r in self.rows)
                rows = [r + [""] * (width - len(r)) for r in self.rows]
                self.out += ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * width]
                self.out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
                self.out.append("")
        elif tag in ("h1", "h2", "h3", "h4") and words:
            self.out += ["#" * (int(tag[1]) + 1) + " " + words, ""]
        elif tag == "li" and words and not self.in_table:
            self.out += ["- " + words, ""]
        elif tag in ("p", "summary") and words and not self.in_table:
            self.out += [words, ""]

    def handle_data(self, data):
        if not self.skip:
            self.text.append(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument("--header", type=Path, help="markdown to put first (commands, wall time)")
    args = parser.parse_args()
    tables = _Tables()
    tables.feed(args.report.read_text())
    text = (args.header.read_text() + "\n" if args.header else "") + "\n".join(tables.out).rstrip() + "\n"
    if args.output:
        args.output.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
