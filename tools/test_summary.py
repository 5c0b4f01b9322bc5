"""Print one closing line for the whole suite from the JUnit XML each tox environment
writes (.tox/reports/*.xml): 'suite: N passed, N failed, N skipped'."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def main() -> int:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else ".tox/reports")
    passed = failed = skipped = 0
    per_env = []
    for xml in sorted(folder.glob("*.xml")):
        root = ET.parse(xml).getroot()
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        t = f = s = 0
        for suite in suites:
            t += int(suite.get("tests", 0))
            f += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            s += int(suite.get("skipped", 0))
        per_env.append(f"{xml.stem} {t - f - s}/{t}")
        passed, failed, skipped = passed + t - f - s, failed + f, skipped + s
    print("suite by environment: " + ", ".join(per_env))
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
