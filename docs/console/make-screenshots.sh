#!/usr/bin/env bash
# Makes the console screenshots the README shows (docs/console/*.png) from
# a real run: the server in process, a few workers and tasks, headless
# Chromium (installed by the test set-up if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo test --locked --test console -- --ignored --exact make_screenshots
