# shellcheck shell=bash
# The nodes of the multi-node test cluster: one network namespace per node (its own hostname through
# a UTS namespace, its own address on a private bridge), all sharing this machine's filesystem like a
# cluster's shared storage. Sourced by scripts/slurm-up, slurm-down, sshd-up and the tests' helpers.
#
# Addresses live on NODE_NET.0/24 (default 10.231.0.0/24): the bridge (this machine's side, where
# slurmctld listens) is .1, node i is .(10+i). Nothing is routed beyond the bridge: the namespaces have
# no default route, so a process inside one can reach loopback, the bridge and the other nodes only.
# SERVETEST_NODE_PREFIX (default st) names them: namespaces <p>n<i>, veths <p>v<i>, bridge <p>br0,
# hosts <p>node<i>; a second set beside the first needs another prefix and another NODE_NET.
NODE_NET=${SERVETEST_NODE_NET:-10.231.0}
NODE_PREFIX=${SERVETEST_NODE_PREFIX:-st}
NODE_BRIDGE=${NODE_PREFIX}br0
node_ns() { echo "${NODE_PREFIX}n$1"; }
node_name() { echo "${NODE_PREFIX}node$1"; }
node_veth() { echo "${NODE_PREFIX}v$1"; }
node_addr() { echo "$NODE_NET.$((10 + $1))"; }
bridge_addr() { echo "$NODE_NET.1"; }

nodes_log() { printf 'nodes: %s\n' "$*" >&2; }

# Who made the nodes: the checkout whose scripts source this file. Each namespace records it in
# /etc/netns/<ns>/owner; nodes_up refuses nodes another checkout owns and nodes_down leaves them.
NODE_OWNER=${NODE_OWNER:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
node_owner() { cat "/etc/netns/$1/owner" 2>/dev/null || true; }
# Namespaces with our names that another checkout made (one per line).
nodes_foreign() {
  local ns owner
  for ns in $(nodes_present); do
    owner=$(node_owner "$ns")
    [[ -n "$owner" && "$owner" != "$NODE_OWNER" ]] && echo "$ns ($owner)"
  done
  return 0
}

# The namespaces this machine has that look like ours (stn1, stn2, …).
nodes_present() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${NODE_PREFIX}n[0-9]+\$" | sort -V || true; }

# Creates bridge and nodes 1..N (idempotent; existing ones are kept), then checks each one exists
# with its address before anything is started in it.
nodes_up() {
  local n=$1 i ns veth all foreign
  foreign=$(nodes_foreign)
  if [[ -n "$foreign" ]]; then
    nodes_log "nodes made by another checkout exist: $foreign; stop them there (scripts/slurm-down, sshd-down) or set SERVETEST_NODE_PREFIX and SERVETEST_NODE_NET"
    return 1
  fi
  # Hosts files name every node, those made earlier by a larger cluster included.
  all=$(( $(nodes_present | wc -l) > n ? $(nodes_present | wc -l) : n ))
  if ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    ip link add "$NODE_BRIDGE" type bridge
  fi
  ip addr replace "$(bridge_addr)/24" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  mkdir -p /etc/netns
  for i in $(seq 1 "$n"); do
    ns=$(node_ns "$i") veth=$(node_veth "$i")
    [[ -e "/run/netns/$ns" ]] || ip netns add "$ns"
    mkdir -p "/etc/netns/$ns"
    echo "$NODE_OWNER" > "/etc/netns/$ns/owner"
    if ! ip link show "$veth" >/dev/null 2>&1; then
      ip link add "$veth" type veth peer name eth0 netns "$ns"
    fi
    ip link set "$veth" master "$NODE_BRIDGE" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr replace "$(node_addr "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    # node_exec bind-mounts this over /etc/hosts in the node's own mount namespace, so every node
    # resolves every node's name (and this machine's hosts file stays untouched).
    mkdir -p "/etc/netns/$ns"
    {
      echo "127.0.0.1 localhost"
      echo "$(bridge_addr) $(hostname -s)"
      for j in $(seq 1 "$all"); do echo "$(node_addr "$j") $(node_name "$j")"; done
    } > "/etc/netns/$ns/hosts"
  done
  for i in $(seq 1 "$n"); do
    ns=$(node_ns "$i")
    [[ -e "/run/netns/$ns" ]] || { nodes_log "namespace $ns was not created"; return 1; }
    ip -n "$ns" -br addr show eth0 | grep -q "$(node_addr "$i")/24" \
      || { nodes_log "namespace $ns has no address $(node_addr "$i")"; return 1; }
  done
}

# True when any of the given pid files names a live process (other scripts' daemons on the nodes).
any_alive() {
  local f
  for f in "$@"; do
    [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null && return 0
  done
  return 1
}

# Runs a command on node I: in its network namespace, under its own hostname, with the nodes' hosts
# file. (Not `ip netns exec`: it remounts /sys, which hides /sys/fs/cgroup from slurmd.)
node_exec() {
  local i=$1 ns; shift
  ns=$(node_ns "$i")
  nsenter --net="/run/netns/$ns" unshare --uts --mount --propagation private -- \
    sh -c 'hostname "$0" && mount --bind "$1" /etc/hosts && shift && exec "$@"' \
    "$(node_name "$i")" "/etc/netns/$ns/hosts" "$@"
}

# Removes this checkout's nodes: their processes (SIGKILL), namespaces, veths and hosts files, then
# the bridge once no node is left. Works after a crash too: it looks at what exists, not at what a
# pid file says. Nodes another checkout owns are left alone.
nodes_down() {
  local ns pids owner veth i
  for ns in $(nodes_present); do
    owner=$(node_owner "$ns")
    if [[ -n "$owner" && "$owner" != "$NODE_OWNER" ]]; then
      nodes_log "leaving $ns: it belongs to $owner"
      continue
    fi
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    # shellcheck disable=SC2086
    [[ -n "$pids" ]] && { kill -KILL $pids 2>/dev/null || true; }
    for _ in $(seq 1 50); do
      [[ -z "$(ip netns pids "$ns" 2>/dev/null)" ]] && break
      sleep 0.1
    done
    ip netns del "$ns" 2>/dev/null || nodes_log "could not delete namespace $ns"
    rm -rf "/etc/netns/$ns"
    # Its veth went with the namespace's end; remove a host end left by a crash.
    i=${ns#"${NODE_PREFIX}n"}
    veth=$(node_veth "$i")
    ip link del "$veth" 2>/dev/null || true
  done
  if [[ -z "$(nodes_present)" ]]; then
    ip link del "$NODE_BRIDGE" 2>/dev/null || true
  fi
  rmdir /etc/netns 2>/dev/null || true
  return 0
}
