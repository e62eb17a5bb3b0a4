#!/usr/bin/env bash
# Builds ka-proxy for deployment into OUT: the compiled JavaScript, the native helper, the
# production dependencies and the config examples, nothing else; then proves with
# `ka-proxy doctor` (from OUT, as it will run) that the native helper is in use.
# The Dockerfile's build stage runs it, and so does .ci/run, so the image's steps are tested
# where Docker does not run. Needs node, npm, make, a C compiler and python3.
#
#   config/docker/build.sh OUT [WORK]     (from anywhere; WORK defaults to a temporary dir)
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:?usage: build.sh OUT [WORK]}
work=${2:-$(mktemp -d)}
mkdir -p "$out" "$work"
out=$(cd "$out" && pwd)

# A clean copy of what the build needs: never the caller's node_modules, dist or native/build.
(cd "$src" && cp -r package.json package-lock.json tsconfig.json tsconfig.build.json LICENSE README.md src config "$work"/)
mkdir -p "$work/native"
cp "$src"/native/*.c "$src"/native/*.h "$src"/native/binding.gyp "$src"/native/build-native.mjs "$work/native/"

cd "$work"
npm ci --no-audit --no-fund --prefer-offline
npm run build:native --silent
npm prune --omit=dev --no-audit --no-fund

cp -r package.json LICENSE README.md dist config node_modules "$out"/
mkdir -p "$out/native/build/Release"
cp native/build/Release/*.node "$out/native/build/Release/"
cd "$out"
[ -n "${2:-}" ] || rm -rf "$work"

# The check the image build fails on: helper loaded, options set and read back.
node "$out/dist/main.js" doctor
