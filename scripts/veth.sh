# Sourced by the live-capture scripts: a veth pair with one end ($VETH_INNER)
# in a network namespace of its own ($VETH_NS), where tcpreplay sends, and
# the other ($VETH_OUTER) here, where Heimdall captures. Neither end has an
# address and IPv6 is off on both: only replayed frames cross the pair, and
# nothing leaves it. Needs root. veth_down runs on exit.
veth_up() {
  [ "$(id -u)" = 0 ] || { echo "$(basename "$0"): needs root to make a veth pair" >&2; exit 1; }
  local tag
  tag="$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
  VETH_NS="hmlive-$tag" VETH_OUTER="hmo$tag" VETH_INNER="hmi$tag"
  trap veth_down EXIT
  ip netns add "$VETH_NS"
  ip link add "$VETH_OUTER" type veth peer name "$VETH_INNER" netns "$VETH_NS"
  sysctl -qw "net.ipv6.conf.$VETH_OUTER.disable_ipv6=1"
  ip netns exec "$VETH_NS" sysctl -qw "net.ipv6.conf.$VETH_INNER.disable_ipv6=1"
  ip link set "$VETH_OUTER" mtu 65535 up
  ip netns exec "$VETH_NS" ip link set "$VETH_INNER" mtu 65535 up
}

veth_down() {
  if [ -n "${VETH_CLEANUP:-}" ]; then eval "$VETH_CLEANUP"; fi
  ip link del "$VETH_OUTER" 2>/dev/null || true
  ip netns del "$VETH_NS" 2>/dev/null || true
}

# veth_replay [tcpreplay options] FILE: send FILE into the pair.
veth_replay() {
  ip netns exec "$VETH_NS" tcpreplay -i "$VETH_INNER" "$@"
}
