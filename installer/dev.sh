#!/usr/bin/env bash
# Builds, runs and tests Citadel from a source checkout on Debian/Ubuntu.
#
#   installer/dev.sh serve [ARGS…]   build the console and the release binary, then
#                                    `citadel serve ARGS…` on the embedded defaults
#   installer/dev.sh test            everything CI runs: fmt, clippy, all tests
#   installer/dev.sh deps            only install what the tests need
set -euo pipefail
cd "$(dirname "$0")/.."

# .cargo/config.toml's rustflags and rustdocflags (the console's `--cfg erase_components`) do
# not apply when RUSTFLAGS / RUSTDOCFLAGS are set: keep the flag in that case.
if [[ -n "${RUSTFLAGS:-}" && "$RUSTFLAGS" != *erase_components* ]]; then
  export RUSTFLAGS="$RUSTFLAGS --cfg erase_components"
fi
if [[ -n "${RUSTDOCFLAGS:-}" && "$RUSTDOCFLAGS" != *erase_components* ]]; then
  export RUSTDOCFLAGS="$RUSTDOCFLAGS --cfg erase_components"
fi

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages, installed only when missing.
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      say "installing the Rust toolchain (rustup)"
      apt_install curl ca-certificates
      curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
      export PATH="$HOME/.cargo/bin:$PATH"
    fi
  fi
}

build_deps() {
  # make: jemalloc (the allocator) is built from source by its crate. brotli: the console's
  # assets are compressed at build time.
  apt_install gcc libc6-dev make pkg-config ca-certificates brotli
  ensure_rust
}

test_deps() {
  build_deps
  # openssl: the TLS/X.509 oracle; chromium + chromedriver: the console tests;
  # libnss3-tools: to make the test browser trust Citadel's CA like a real client would.
  # scep: Debian's scepclient, the SCEP oracle.
  # certmonger + dbus-daemon: certmonger's SCEP client, run on a private session bus.
  # python3: plistlib builds and reads the MDM tests' plists; its http.server and hmac play
  # the webhook receiver, and its hmac computes TOTP codes independently of the server.
  # slapd + ldap-utils: a real OpenLDAP server for the directory sign-in tests; rsyslog (with
  # gnutls): a real syslog collector for audit forwarding.
  apt_install openssl chromium chromium-driver libnss3-tools scep certmonger dbus-daemon python3 slapd ldap-utils rsyslog rsyslog-gnutls
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  serve)
    build_deps
    installer/build-ui.sh
    say "building citadel (release)"
    cargo build --release --bin citadel
    say "starting citadel: open https://localhost:8443/ (stop with Ctrl-C)"
    exec target/release/citadel serve "$@"
    ;;
  test)
    test_deps
    installer/build-ui.sh
    say "cargo fmt --check"
    cargo fmt --all --check
    say "cargo clippy"
    cargo clippy --workspace --all-targets -- -D warnings
    say "cargo test"
    log=$(mktemp)
    cargo test --workspace 2>&1 | tee "$log"
    # The schema generator is its own workspace: its tests check the committed generated code
    # against Apple's schema when ../shared is present.
    cargo test --manifest-path installer/schema-gen/Cargo.toml 2>&1 | tee -a "$log"
    # One closing line for the whole run: cargo prints a result per test binary.
    awk '/^test result:/ {p += $4; f += $6} END {printf "cargo test: %d passed, %d failed\n", p, f}' "$log"
    rm -f "$log"
    ;;
  deps)
    test_deps
    ;;
  *)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
