#!/usr/bin/env bash
# Installs the browser console's third-party code (noVNC, xterm.js; playwright-core for its
# test unless --omit-dev) from the npm registry exactly as console/web/package-lock.json pins
# it. ironvisor-console compiles these files in; its build fails, saying to run this, when
# they are missing. Nothing is fetched at run time.
set -euo pipefail
cd "$(dirname "$0")/../console/web"

args=(--no-audit --no-fund --ignore-scripts)
if [ "${1:-}" = "--omit-dev" ]; then
  args+=(--omit=dev)
fi
npm ci "${args[@]}"
