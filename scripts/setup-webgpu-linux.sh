#!/usr/bin/env bash
# Installs a WebGPU-capable driver for the `webgpu` npm package (Dawn for Node), so that
# tensorwright's GPU backend and GPU tests can run on machines without a real GPU.
#
# On Debian 12 (bookworm) it enables bookworm-backports (a deb822 source file next to the main
# entry, with the same URIs and Signed-By keyring) and installs Mesa >= 24 (lavapipe, a software
# Vulkan driver that Dawn accepts) plus the Vulkan loader. Bookworm's own Mesa 22 lavapipe is too
# old for Dawn. It also installs Debian's chromium (headless, for the browser test: WebGPU through
# SwiftShader). Idempotent: what is already installed is not installed again.
#
# Elsewhere it prints what is needed and exits 0.
#
# Usage: scripts/setup-webgpu-linux.sh        (as root, or as a user with sudo)
set -euo pipefail

readonly MIN_MESA_MAJOR=24
readonly MAIN_SOURCES=/etc/apt/sources.list.d/debian.sources
readonly BACKPORTS_SOURCES=/etc/apt/sources.list.d/bookworm-backports.sources
readonly DEFAULT_URIS=http://deb.debian.org/debian
readonly DEFAULT_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

log() { printf '[setup-webgpu] %s\n' "$*"; }

# Prints the installed version of a Debian package, or nothing.
pkg_version() {
  dpkg-query -W -f='${db:Status-Abbrev} ${Version}\n' "$1" 2>/dev/null | awk '$1 ~ /^[hi]i/ { print $2 }' || true
}

# True when mesa-vulkan-drivers >= MIN_MESA_MAJOR, libvulkan1 and a lavapipe ICD file are present.
have_new_lavapipe() {
  local mesa loader major
  mesa=$(pkg_version mesa-vulkan-drivers)
  loader=$(pkg_version libvulkan1)
  [[ -n "$mesa" && -n "$loader" ]] || return 1
  major=${mesa#*:}          # drop an epoch, if any
  major=${major%%.*}
  [[ "$major" =~ ^[0-9]+$ ]] && ((major >= MIN_MESA_MAJOR)) || return 1
  compgen -G '/usr/share/vulkan/icd.d/lvp_icd*.json' >/dev/null
}

# Prints "URIS<TAB>KEYRING" of the deb822 stanza in debian.sources whose Suites include "bookworm".
main_entry() {
  local uris='' keyring=''
  if [[ -r "$MAIN_SOURCES" ]]; then
    IFS=$'\t' read -r uris keyring < <(awk '
      function flush() { if (!done && suites ~ /(^|[ \t])bookworm([ \t]|$)/ && types ~ /(^|[ \t])deb([ \t]|$)/) { print uris "\t" key; done = 1 } types = ""; suites = ""; uris = ""; key = "" }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]*#/ { next }
      /^Types:/     { sub(/^Types:[ \t]*/, "");     types = $0 }
      /^URIs:/      { sub(/^URIs:[ \t]*/, "");      uris = $0 }
      /^Suites:/    { sub(/^Suites:[ \t]*/, "");    suites = $0 }
      /^Signed-By:/ { sub(/^Signed-By:[ \t]*/, ""); key = $0 }
      END { flush() }
    ' "$MAIN_SOURCES") || true
  fi
  # Signed-By may hold an inline key block (multi-line); only reuse it when it is a file path.
  [[ -n "$uris" ]] || uris=$DEFAULT_URIS
  [[ "$keyring" == /* ]] || keyring=$DEFAULT_KEYRING
  printf '%s\t%s\n' "$uris" "$keyring"
}

print_generic_help() {
  cat <<'MSG'
[setup-webgpu] tensorwright's GPU backend uses the `webgpu` npm package (Dawn), which needs a native
[setup-webgpu] graphics driver that Dawn can use:
[setup-webgpu]   - Linux:   a Vulkan driver: Mesa >= 24 (lavapipe, software, works without a GPU; package
[setup-webgpu]              names: mesa-vulkan-drivers / vulkan-swrast / mesa-vulkan-swrast) plus the Vulkan
[setup-webgpu]              loader (libvulkan1 / vulkan-loader), or your GPU vendor's Vulkan driver.
[setup-webgpu]   - macOS:   Metal, built in (macOS 13 or later recommended); nothing to install.
[setup-webgpu]   - Windows: D3D12, built in with a current GPU driver (or WARP); nothing to install.
[setup-webgpu] Without a driver, GPU tests are skipped (set REQUIRE_WEBGPU=1 to make that a failure).
MSG
}

SUDO=()
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
fi

# Installs Debian's chromium (the browser test drives it headless) unless it is there already.
ensure_chromium() {
  if [[ -n "$(pkg_version chromium)" ]]; then
    log "chromium $(pkg_version chromium) already installed."
    return 0
  fi
  if [[ $(id -u) -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
    log "error: need root (or sudo) to install chromium." >&2
    exit 1
  fi
  log "apt-get install chromium"
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y chromium || {
    log "apt-get install chromium failed; retrying after apt-get update"
    "${SUDO[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y chromium
  }
  log "done: chromium $(pkg_version chromium)."
}

os=$(uname -s)
case "$os" in
  Darwin)
    log "macOS detected: Dawn uses Metal, which is built in. Nothing to install."
    exit 0 ;;
  MINGW* | MSYS* | CYGWIN*)
    log "Windows detected: Dawn uses D3D12 (install a current GPU driver). Nothing to install."
    exit 0 ;;
  Linux) ;;
  *)
    log "unsupported OS '$os'."
    print_generic_help
    exit 0 ;;
esac

os_id='' os_version=''
if [[ -r /etc/os-release ]]; then
  os_id=$(. /etc/os-release && printf '%s' "${ID:-}")
  os_version=$(. /etc/os-release && printf '%s' "${VERSION_ID:-}")
fi

if [[ "$os_id" != debian || "$os_version" != 12 ]]; then
  log "not Debian 12 (found '${os_id:-unknown} ${os_version:-}'); this script only automates Debian 12."
  if compgen -G '/usr/share/vulkan/icd.d/*.json' >/dev/null || compgen -G '/etc/vulkan/icd.d/*.json' >/dev/null; then
    log "Vulkan ICDs found: $(ls /usr/share/vulkan/icd.d/ /etc/vulkan/icd.d/ 2>/dev/null | grep json | tr '\n' ' ')"
  else
    log "no Vulkan ICD found under /usr/share/vulkan/icd.d or /etc/vulkan/icd.d."
  fi
  print_generic_help
  exit 0
fi

if have_new_lavapipe; then
  log "already set up: mesa-vulkan-drivers $(pkg_version mesa-vulkan-drivers), libvulkan1 $(pkg_version libvulkan1)."
  ensure_chromium
  exit 0
fi

if [[ $(id -u) -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
  log "error: need root (or sudo) to install packages." >&2
  exit 1
fi

IFS=$'\t' read -r uris keyring < <(main_entry)
wanted=$(cat <<SRC
# Added by tensorwright scripts/setup-webgpu-linux.sh (Mesa >= 24 lavapipe for WebGPU/Dawn).
Types: deb
URIs: $uris
Suites: bookworm-backports
Components: main
Signed-By: $keyring
SRC
)
if [[ -f "$BACKPORTS_SOURCES" ]] && [[ "$(cat "$BACKPORTS_SOURCES")" == "$wanted" ]]; then
  log "$BACKPORTS_SOURCES already present."
else
  log "writing $BACKPORTS_SOURCES (URIs: $uris, Signed-By: $keyring)."
  printf '%s\n' "$wanted" | "${SUDO[@]}" tee "$BACKPORTS_SOURCES" >/dev/null
fi

export DEBIAN_FRONTEND=noninteractive
log "apt-get update"
"${SUDO[@]}" apt-get update
log "apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1"
"${SUDO[@]}" apt-get install -y -t bookworm-backports mesa-vulkan-drivers libvulkan1

if have_new_lavapipe; then
  log "done: mesa-vulkan-drivers $(pkg_version mesa-vulkan-drivers), libvulkan1 $(pkg_version libvulkan1)."
  ensure_chromium
else
  log "error: installed, but no Mesa >= $MIN_MESA_MAJOR lavapipe ICD found (mesa-vulkan-drivers $(pkg_version mesa-vulkan-drivers))." >&2
  exit 1
fi
