#!/usr/bin/env bash
# Refreshes the web chat page's copy of the official socket.io-client
# browser bundle (driver/assets/app/socket.io.min.js, served at
# /app/socket.io.min.js) from the version pinned in
# tests/e2e/browser/package.json: change the version there first to move to
# another one. The file is copied byte for byte (its license banner
# included); the browser test checks that what the server serves is
# identical to the file npm installed.
#
# Usage: scripts/update-app-bundle.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BROWSER="$ROOT/tests/e2e/browser"
FROM="$BROWSER/node_modules/socket.io-client/dist/socket.io.min.js"
TO="$ROOT/driver/assets/app/socket.io.min.js"

(cd "$BROWSER" && npm ci --no-audit --no-fund --loglevel=error)
version="$(node -p 'require(process.argv[1]).version' "$BROWSER/node_modules/socket.io-client/package.json")"
cp "$FROM" "$TO"
echo "driver/assets/app/socket.io.min.js: socket.io-client $version ($(wc -c <"$TO") bytes)"
