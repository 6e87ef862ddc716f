"""Take the screenshots of the control panel's main pages (``docs/screenshots/*.png``).

Runs the opt-in browser test ``test_screenshots_of_the_main_pages``: a real embedded Kafka
broker and Ray head, a store seeded as a finished training leaves it, the panel served and
photographed by Debian's headless Chromium (Playwright, no browser download)::

    python docs/screenshots/make.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def main() -> int:
    """Run the screenshot test with its output directory set to this one."""
    env = {**os.environ, "KAFKAML_SCREENSHOTS": str(HERE)}
    test = "tests/ui/test_ui_browser.py::test_screenshots_of_the_main_pages"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", test]
    return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
