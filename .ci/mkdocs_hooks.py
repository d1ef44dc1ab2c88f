"""mkdocs hook: a link from docs/ to a file of the repository outside docs/ (``../benchmarks/
RESULTS.md``) works on GitHub but has no page on the site; there it becomes the file's path in
code, so ``mkdocs build --strict`` still fails on every other broken link."""

import re

_OUTSIDE = re.compile(r"\[([^\]]+)\]\(\.\./([^)#\s]+)(#[^)\s]*)?\)")


def on_page_markdown(markdown, **kwargs):
    return _OUTSIDE.sub(lambda m: f"{m.group(1)} (`{m.group(2)}` in the repository)", markdown)
