#!/usr/bin/env bash
# What the browser test (core/tests/test_browser.py) needs on a fresh Debian machine
# (idempotent, run as root): Debian's chromium, driven by the `playwright` Python package
# (a dev dependency) as the system browser. Playwright's own browser download is not used.
set -euo pipefail

if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
fi
