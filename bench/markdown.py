"""The one Markdown edit both benchmarks make to RESULTS.md: replace a `## ` section's body."""

from __future__ import annotations


def replace_section(text: str, heading: str, body: str) -> str:
    """`text` with the body of its `## heading` section replaced by `body` (the section is
    added at the end when missing); every other section is kept as it is."""
    lines = text.splitlines(keepends=True)
    marker = f"## {heading}"
    starts = [i for i, line in enumerate(lines) if line.rstrip() == marker]
    section = [f"{marker}\n", "\n", *(body.rstrip("\n") + "\n\n").splitlines(keepends=True)]
    if not starts:
        lines += ["\n", *section]
    else:
        end = next(
            (i for i in range(starts[0] + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        lines[starts[0] : end] = section
    return "".join(lines).rstrip("\n") + "\n"
