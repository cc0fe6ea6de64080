"""The report as GitHub-flavoured Markdown."""

from __future__ import annotations

from ftl.federation.disclosure import Bullets, Para, Section

__all__ = ["render_markdown"]


def _cell(text: str) -> str:
    return text.replace("\n", " ").replace("|", "\\|")


def render_markdown(title: str, sections: list[Section]) -> str:
    """Markdown of a titled document; a warning section's bullets are bold."""
    out = [f"# {title}", ""]
    for section in sections:
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Para):
                out += [block.text, ""]
            elif isinstance(block, Bullets):
                out += [f"- **{item}**" if section.warning else f"- {item}" for item in block.items]
                out.append("")
            else:
                out.append("| " + " | ".join(_cell(h) for h in block.header) + " |")
                out.append("|" + "---|" * len(block.header))
                out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in block.rows]
                out.append("")
    return "\n".join(out)
