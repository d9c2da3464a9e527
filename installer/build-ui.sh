#!/usr/bin/env bash
# Builds the hydrated web console (crate citadel-ui) into static site assets:
#   $CITADEL_SITE_DIR (default <repo>/target/site/pkg)/
#     citadel.js  citadel_bg.wasm  citadel.css  favicon.svg
# The server's build.rs embeds whatever is there, so run this BEFORE building
# the `citadel` binary (or the embedded console is stale or missing).
#
# Needs: rustup (adds wasm32-unknown-unknown), cargo, brotli and gzip. Installs the wasm-bindgen
# CLI at exactly the version of the wasm-bindgen crate pinned in Cargo.lock.
# Runs wasm-opt only if it is already on PATH (npm package `binaryen`).
#
# Environment:
#   CITADEL_SITE_DIR   output directory (default: <repo>/target/site/pkg)
#   CITADEL_UI_PROFILE cargo profile for the wasm build (default: wasm-release,
#                      see step 3)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

site_dir="${CITADEL_SITE_DIR:-$repo/target/site/pkg}"
wasm_target_dir="$repo/target/wasm"
target=wasm32-unknown-unknown
started=$SECONDS

# .cargo/config.toml's rustflags (the console's `--cfg erase_components`) do not apply when
# RUSTFLAGS is set: keep the flag in that case.
if [[ -n "${RUSTFLAGS:-}" && "$RUSTFLAGS" != *erase_components* ]]; then
  export RUSTFLAGS="$RUSTFLAGS --cfg erase_components"
fi

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build-ui: error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo not found"

# 1. The wasm target.
if command -v rustup >/dev/null; then
    if ! rustup target list --installed | grep -qx "$target"; then
        log "rustup target add $target"
        rustup target add "$target"
    fi
else
    log "rustup not found; assuming the $target standard library is installed"
fi

# 2. wasm-bindgen CLI, same version as the crate in Cargo.lock (they must match exactly).
[[ -f Cargo.lock ]] || cargo generate-lockfile
wb_version="$(awk '
    /^\[\[package\]\]/ { in_wb = 0 }
    /^name = "wasm-bindgen"$/ { in_wb = 1; next }
    in_wb && /^version = / { gsub(/"/, "", $3); print $3; exit }
' Cargo.lock)"
[[ -n "$wb_version" ]] || die "no wasm-bindgen package in Cargo.lock"

installed_wb=""
if command -v wasm-bindgen >/dev/null; then
    installed_wb="$(wasm-bindgen --version | awk '{print $2}')"
fi
if [[ "$installed_wb" != "$wb_version" ]]; then
    log "installing wasm-bindgen-cli $wb_version (found: ${installed_wb:-none}); this takes a few minutes"
    # Not --locked: the CLI's own lockfile may require a newer rustc than ours.
    cargo install wasm-bindgen-cli --version "=$wb_version"
    hash -r
    installed_wb="$(wasm-bindgen --version | awk '{print $2}')"
    [[ "$installed_wb" == "$wb_version" ]] \
        || die "wasm-bindgen on PATH is $installed_wb, wanted $wb_version (check ~/.cargo/bin is first on PATH)"
fi

# 3. Compile the UI crate to wasm. The `wasm-release` profile optimises for
# size (opt-level z, fat LTO, one codegen unit; for the first console shell this gave
# ~410 KB wasm, ~113 KB brotli, vs ~565 KB / 131 KB with the server's `release` profile). It is defined here
# through cargo's environment configuration unless the workspace defines it.
profile="${CITADEL_UI_PROFILE:-wasm-release}"
if [[ "$profile" == wasm-release ]] && ! grep -q '^\[profile\.wasm-release\]' Cargo.toml; then
    export CARGO_PROFILE_WASM_RELEASE_INHERITS=release
    export CARGO_PROFILE_WASM_RELEASE_OPT_LEVEL="${CARGO_PROFILE_WASM_RELEASE_OPT_LEVEL:-z}"
    export CARGO_PROFILE_WASM_RELEASE_LTO="${CARGO_PROFILE_WASM_RELEASE_LTO:-fat}"
    export CARGO_PROFILE_WASM_RELEASE_CODEGEN_UNITS="${CARGO_PROFILE_WASM_RELEASE_CODEGEN_UNITS:-1}"
    export CARGO_PROFILE_WASM_RELEASE_PANIC="${CARGO_PROFILE_WASM_RELEASE_PANIC:-abort}"
    # Not `strip = true`: wasm-bindgen needs the target_features section.
    # The name section is dropped by wasm-bindgen below instead.
fi
log "cargo build citadel-ui for $target (profile $profile)"
cargo build -p citadel-ui --lib \
    --target "$target" \
    --no-default-features --features hydrate \
    --profile "$profile" \
    --target-dir "$wasm_target_dir"

profile_dir="$profile"
[[ "$profile" == dev ]] && profile_dir=debug
wasm_in="$wasm_target_dir/$target/$profile_dir/citadel_ui.wasm"
[[ -f "$wasm_in" ]] || die "expected $wasm_in after cargo build"

# 4. JS glue + final wasm, into a fresh staging dir swapped in at the end, so
# a failed run never leaves a half-written site behind.
mkdir -p "$(dirname "$site_dir")"
staging="$(mktemp -d "$(dirname "$site_dir")/.pkg-staging.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

log "wasm-bindgen $wb_version"
wasm-bindgen --target web --no-typescript \
    --remove-name-section --remove-producers-section \
    --out-dir "$staging" --out-name citadel "$wasm_in"

if command -v wasm-opt >/dev/null; then
    log "wasm-opt -Oz"
    wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
        --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
        "$staging/citadel_bg.wasm" -o "$staging/citadel_bg.opt.wasm"
    mv "$staging/citadel_bg.opt.wasm" "$staging/citadel_bg.wasm"
else
    log "wasm-opt not on PATH; skipping (optional: npm install -g binaryen)"
fi

# 5. Static assets.
cp ui/style/citadel.css "$staging/citadel.css"
cp ui/assets/favicon.svg "$staging/favicon.svg"

# 6. Precompressed copies (X.br, X.gz), served in place of X to browsers that accept them, so
# the appliance never compresses the 2 MB wasm per request. build.rs embeds them.
command -v brotli >/dev/null || die "brotli not found (Debian package brotli)"
for f in citadel_bg.wasm citadel.js citadel.css; do
    brotli -q 11 -k -f "$staging/$f"
    gzip -9 -n -k -f "$staging/$f"
done

rm -rf "$site_dir"
mv "$staging" "$site_dir"
chmod 755 "$site_dir"
trap - EXIT

# 7. Report.
log "site assets in $site_dir (built in $((SECONDS - started)) s):"
for f in "$site_dir"/*; do
    case "$f" in *.br|*.gz) continue ;; esac
    raw=$(stat -c %s "$f")
    if [[ -f "$f.br" ]]; then
        printf '    %-20s %9d bytes  (brotli %d, gzip %d)\n' "$(basename "$f")" "$raw" \
            "$(stat -c %s "$f.br")" "$(stat -c %s "$f.gz")" >&2
    else
        printf '    %-20s %9d bytes\n' "$(basename "$f")" "$raw" >&2
    fi
done
