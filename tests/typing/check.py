"""`make lint`'s check of the types users see: `mypy --strict` on ok.py reports nothing,
and on mistakes.py exactly the errors its `# E: <code>` comments expect, line by line.

Imports of gonka_pool are followed silently: this checks what a user's script sees
of the package (src/ is type-checked on its own, under its own settings).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mypy import api

HERE = Path(__file__).resolve().parent
# A cache of its own: the project's mypy run, with other flags, would invalidate it.
FLAGS = [
    "--strict",
    "--follow-imports=silent",
    "--show-error-codes",
    "--no-error-summary",
    "--cache-dir=.mypy_cache/typing-check",
]
FILES = [HERE / "ok.py", HERE / "mistakes.py"]
EXPECTED = re.compile(r"#\s*E:\s*([\w-]+)")
REPORTED = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[\w-]+)\]$")


def reported() -> dict[Path, set[tuple[int, str]]]:
    stdout, stderr, status = api.run([*FLAGS, *map(str, FILES)])
    if status not in (0, 1) or stderr:
        sys.exit(f"mypy failed:\n{stdout}{stderr}")
    errors: dict[Path, set[tuple[int, str]]] = {path: set() for path in FILES}
    for match in map(REPORTED.match, stdout.splitlines()):
        if match:
            errors.setdefault(Path(match["path"]).resolve(), set()).add((int(match["line"]), match["code"]))
    return errors


def expected(path: Path) -> set[tuple[int, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {(number, m[1]) for number, text in enumerate(lines, 1) if (m := EXPECTED.search(text))}


def main() -> int:
    failed = False
    errors = reported()
    for path in errors:
        want, got = expected(path), errors[path]
        for line, code in sorted(got - want):
            print(f"{path}:{line}: unexpected mypy error [{code}]")
        for line, code in sorted(want - got):
            print(f"{path}:{line}: mypy missed the expected error [{code}]")
        failed |= want != got
        print(f"{path}: {len(got)} error(s), as expected" if want == got else f"{path}: MISMATCH")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
