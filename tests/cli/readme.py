"""The README's commands, read from the README itself: a test that runs one names it as the
README writes it, so an example that changes or goes stale fails the suite."""

import re
import shlex
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
COMMENT = re.compile(r"(^|\s)#.*$")  # bash: `#` after whitespace starts a comment
OPTIONAL = re.compile(r"\[(--[^\[\]]+)\]")  # `[--json]`, `[--set key=...]`; not a JSON list
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z_]*[A-Z]\b|\.\.\.")


def normal(line: str) -> str:
    return " ".join(line.split())


def readme_commands(text: str | None = None) -> list[str]:
    """Every command line of the README's bash blocks, whitespace-normalized: continuation
    lines joined, comments dropped."""
    text = README.read_text() if text is None else text
    commands = []
    for block in BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            command = normal(COMMENT.sub("", line))
            if command:
                commands.append(command)
    return commands


def form(line: str, *options: str, **fill: str) -> str:
    """A README line as a shell command: the `[optional]` parts named in `options` kept,
    the other ones dropped, placeholders (`WORKFLOW_ID`, `NAME`, `...`) filled from `fill`
    (`...` as `etc`). The line must be one of the README's commands as written."""
    line = normal(line)
    if line not in readme_commands():
        raise AssertionError(f"not a README command (any more?): {line!r}")
    given = set(OPTIONAL.findall(line))
    if missing := set(options) - given:
        raise AssertionError(f"{line!r} has no optional part {sorted(missing)}")
    kept = OPTIONAL.sub(lambda m: m.group(1) if m.group(1) in options else "", line)

    def filled(match: re.Match[str]) -> str:
        name = "etc" if match.group(0) == "..." else match.group(0)
        return shlex.quote(fill[name]) if name in fill else match.group(0)

    return normal(PLACEHOLDER.sub(filled, kept))
