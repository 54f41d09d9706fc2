# Shared helpers for scripts/*. Sourced, not run.
step() { printf '\n==> %s\n' "$*"; }
need_root() {
  if [ "$(id -u)" != 0 ]; then echo "run as root (sudo $0)" >&2; exit 1; fi
}
# Debian packages tandem needs at run time and in its tests.
PACKAGES="iproute2 nftables conntrack procps ucarp tcpdump python3 iputils-ping isc-dhcp-client udhcpc kea-dhcp4-server kea-ctrl-agent"
install_packages() {
  local missing=()
  for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}
ensure_rust_components() {
  command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
}
