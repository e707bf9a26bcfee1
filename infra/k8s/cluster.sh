#!/usr/bin/env bash
# The course's test cluster: a real Kubernetes v1.32 cluster on this machine, no VM, no registry.
#
#   control plane on $NODE_IP (an extra address on lo): etcd, kube-apiserver,
#   kube-controller-manager, kube-scheduler;
#   a real node (default): a private containerd (Debian's 1.6 binary, own socket/root/state, so
#   Docker's containerd is untouched) + CNI bridge + kubelet; kube-proxy (iptables);
#   CoreDNS on the host behind Service kube-system/kube-dns; the Kubeflow training operator on
#   the host (CRDs + validating webhook); kind's local-path-provisioner on the host behind the
#   default StorageClass "standard" (a PVC without a class in any namespace gets a fresh folder
#   under $K8S_STATE/local-path when a pod first uses it).
#   KWOK=1: no kubelet/containerd; kwok simulates nodes annotated kwok.x-k8s.io/node=fake.
#
# Usage: cluster.sh up | down [--purge] | status | import IMAGE... | install-operator | install-jobset
# Binaries come from infra/k8s/build.sh (called by `up`; seconds when cached). See README.md.
# Must run as root (network, mounts, iptables).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
K8S_STATE=${K8S_STATE:-/tmp/mnist-course-k8s}        # kubeconfigs, pki, logs, pids, env
NODE_DIR=${K8S_NODE_DIR:-/var/lib/mnist-course-k8s}  # containerd root, kubelet root, CNI
NODE_RUN=${K8S_NODE_RUN:-/run/mnist-course-k8s}      # containerd socket and state
BRIDGE=${K8S_BRIDGE:-mnistk8s-br0}                   # <= 15 characters (IFNAMSIZ)
NODE_IP=${NODE_IP:-10.255.0.1}
POD_CIDR=${POD_CIDR:-10.244.0.0/24}
SERVICE_CIDR=10.96.0.0/24; API_SERVICE_IP=10.96.0.1; DNS_SERVICE_IP=10.96.0.10
API_PORT=${API_PORT:-6443}
NODE_NAME=${NODE_NAME:-$(hostname)}
KWOK=${KWOK:-0}
OPERATOR=${OPERATOR:-1}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
FIELD_MANAGER=mnist-course-k8s
# The training operator's cert rotator hard-codes this folder (pkg/cert/cert.go, v1.9.3 and v1.9.4).
WEBHOOK_CERTS=/tmp/k8s-webhook-server
STORAGE_NS=local-path-storage

# K8S_BIN ETCD_BIN COREDNS_BIN OPERATOR_BIN OPERATOR_MANIFESTS KWOK_BIN PAUSE_IMAGE LOCAL_PATH_BIN HELPER_IMAGE
eval "$("$HERE/build.sh" --paths)"
PKI=$K8S_STATE/pki; LOGS=$K8S_STATE/logs; PIDS=$K8S_STATE/pids
STORAGE_DIR=$K8S_STATE/local-path   # the provisioned volumes' folders; removed by down with the state dir
KUBECONFIG_FILE=$K8S_STATE/admin.kubeconfig
CTRD_SOCK=$NODE_RUN/containerd.sock
CTR=(ctr --address "$CTRD_SOCK" -n k8s.io)
# kept across down/up together with the containerd root: "<ref> <docker image id>" per line
IMAGE_IDS=$NODE_DIR/containerd/imported-images
API=https://$NODE_IP:$API_PORT

now() { date +%s.%N; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.1f", a - b }'; }  # awk: always there, unlike bc
timing() { printf '%-26s %s after %.1f s\n' "$1" "$2" "$(since "$3")"; }
die() { echo "ERROR: $*" >&2; exit 1; }

curl_api() {  # curl_api [curl args] PATH: the apiserver as cluster admin
  local path=${*: -1}
  curl -sSf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "${@:1:$#-1}" "$API$path"
}
apply() {  # apply COLLECTION-PATH NAME JSON: server-side apply (idempotent)
  curl_api -X PATCH -H 'Content-Type: application/apply-patch+yaml' --data-binary "$3" \
    "$1/$2?fieldManager=$FIELD_MANAGER&force=true" >/dev/null
}

# --- processes -------------------------------------------------------------------------------
start() {  # start NAME CMD...: in the background, log + pid file
  local name=$1; shift
  # 8>&-: the daemons must not inherit the lock (take_lock), or it would be held until down
  "$@" >"$LOGS/$name.log" 2>&1 8>&- &
  echo $! >"$PIDS/$name.pid"
}
wait_for() {  # wait_for NAME SECONDS CHECK-CMD...
  local name=$1 secs=$2 t0 log=$LOGS/${WAIT_LOG:-$1}.log; shift 2
  t0=$(now)
  for _ in $(seq $((secs * 5))); do
    if "$@" >/dev/null 2>&1; then timing "$name" ready "$t0"; return 0; fi
    if [ -f "$PIDS/$name.pid" ] && ! kill -0 "$(cat "$PIDS/$name.pid")" 2>/dev/null; then
      echo "ERROR: $name exited during startup; last lines of $log:" >&2; tail -n 20 "$log" >&2; return 1
    fi
    sleep 0.2
  done
  echo "ERROR: $name not ready after ${secs} s; last lines of ${log}:" >&2
  tail -n 20 "$log" 2>/dev/null >&2 || true
  return 1
}
alive() { [ -f "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }

# --- certificates (openssl, EC P-256) and kubeconfigs -------------------------------------------
cert() {  # cert NAME CN O [SANS]: $PKI/NAME.{key,crt} signed by the CA
  local name=$1 cn=$2 o=$3 sans=${4:-} subj
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  subj="/CN=$cn"; [ -n "$o" ] && subj="/O=$o$subj"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr"
  { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=clientAuth,serverAuth"; [ -n "$sans" ] && echo "subjectAltName=$sans"; } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
}
kubeconfig() {  # kubeconfig FILE CERTNAME
  cat >"$1" <<EOK
apiVersion: v1
kind: Config
clusters:
- name: mnist-course
  cluster: {server: "$API", certificate-authority: "$PKI/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$PKI/$2.crt", client-key: "$PKI/$2.key"}
contexts:
- name: mnist-course
  context: {cluster: mnist-course, user: $2}
current-context: mnist-course
EOK
}
make_certs() {
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=mnist-course-k8s-ca" -days 30 -sha256 -out "$PKI/ca.crt"
  cert apiserver kube-apiserver "" "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$API_SERVICE_IP,IP:$NODE_IP"
  cert admin kubernetes-admin system:masters
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert controller-manager system:kube-controller-manager ""
  cert scheduler system:kube-scheduler ""
  cert kube-proxy system:kube-proxy ""
  cert kubelet "system:node:$NODE_NAME" system:nodes "DNS:$NODE_NAME,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/sa.key" 2>/dev/null
  openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  for k in controller-manager scheduler kube-proxy kubelet; do kubeconfig "$K8S_STATE/$k.kubeconfig" $k; done
  kubeconfig "$KUBECONFIG_FILE" admin
}

# --- control plane ------------------------------------------------------------------------------
control_plane_up() {
  start etcd "$ETCD_BIN" --name mnist-course --data-dir "$K8S_STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster mnist-course=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
    --unsafe-no-fsync --snapshot-count 10000 --quota-backend-bytes 2147483648
  wait_for etcd 30 curl -sf http://127.0.0.1:2381/health
  # Everything listens on $NODE_IP, not 127.0.0.1: the "kubernetes" Endpoints may not be loopback,
  # and pods must reach the apiserver.
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers http://127.0.0.1:2379 --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$API_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" --client-ca-file "$PKI/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --authorization-mode Node,RBAC --allow-privileged=true \
    --enable-admission-plugins NodeRestriction \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP,Hostname --profiling=false
  wait_for kube-apiserver 90 curl_api /readyz
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" --kubeconfig "$K8S_STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$K8S_STATE/controller-manager.kubeconfig" --authorization-kubeconfig "$K8S_STATE/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false
  start kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig "$K8S_STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$K8S_STATE/scheduler.kubeconfig" --authorization-kubeconfig "$K8S_STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false
  wait_for kube-controller-manager 60 curl -skf https://127.0.0.1:10257/healthz
  wait_for kube-scheduler 60 curl -skf https://127.0.0.1:10259/healthz
}

# --- the node: private containerd + CNI + kubelet -------------------------------------------------
containerd_up() {
  mkdir -p "$NODE_DIR"/{containerd/root,kubelet,cni/net.d,certs.d/docker.io} "$NODE_RUN"
  cat >"$NODE_DIR/cni/net.d/10-mnist-course.conflist" <<EOC
{"cniVersion": "1.0.0", "name": "mnist-course-k8s", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$NODE_DIR/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "firewall"}
]}
EOC
  # No registry may be reached from this node: an image that is not imported must fail at once
  # (ErrImagePull / ErrImageNeverPull) instead of pulling from the internet. docker.io goes to a
  # closed port, and HTTP(S)_PROXY below closes every other registry too.
  # (containerd 1.6 rejects a hosts.toml without a [host] tree: "invalid `host` tree")
  printf 'server = "http://127.0.0.1:1"\n[host."http://127.0.0.1:1"]\n  capabilities = ["pull", "resolve"]\n' \
    >"$NODE_DIR/certs.d/docker.io/hosts.toml"
  cat >"$NODE_DIR/containerd.toml" <<EOC
version = 2
root = "$NODE_DIR/containerd/root"
state = "$NODE_RUN/containerd-state"
[grpc]
  address = "$CTRD_SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  enable_unprivileged_ports = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$NODE_RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$NODE_DIR/certs.d"
EOC
  start containerd env HTTP_PROXY=http://127.0.0.1:1 HTTPS_PROXY=http://127.0.0.1:1 NO_PROXY= \
    http_proxy=http://127.0.0.1:1 https_proxy=http://127.0.0.1:1 no_proxy= \
    containerd --config "$NODE_DIR/containerd.toml"
  wait_for containerd 30 ctr --address "$CTRD_SOCK" version
}

# image_ref IMAGE: the name containerd gives a `docker save`d image (docker.io/library/x:latest)
image_ref() {
  local r=$1 first
  case ${r##*/} in *:*|*@*) ;; *) r=$r:latest ;; esac
  first=${r%%/*}
  if [ "$first" = "$r" ]; then r=docker.io/library/$r
  else case $first in *.*|*:*|localhost) ;; *) r=docker.io/$r ;; esac
  fi
  echo "$r"
}
# import_images IMAGE...: docker save | ctr import, skipped when the node holds the same image ID
import_images() {
  local img id ref t0
  touch "$IMAGE_IDS"
  for img in "$@"; do
    id=$(docker image inspect -f '{{.Id}}' "$img" 2>/dev/null) || die "Docker has no image $img (build it first)"
    ref=$(image_ref "$img")
    if grep -qxF "$ref $id" "$IMAGE_IDS" && "${CTR[@]}" images ls -q | grep -qxF "$ref"; then
      printf '%-26s already imported (image %s)\n' "$img" "${id:7:12}"; continue
    fi
    t0=$(now)
    docker save "$img" | "${CTR[@]}" images import - >/dev/null || die "import of $img into the node's containerd failed"
    { grep -vF "$ref " "$IMAGE_IDS" || true; echo "$ref $id"; } >"$IMAGE_IDS.new" && mv "$IMAGE_IDS.new" "$IMAGE_IDS"
    timing "$img" imported "$t0"
  done
}
default_images() {
  echo "$PAUSE_IMAGE"
  echo "$HELPER_IMAGE"
  # shellcheck disable=SC2086  # IMPORT_IMAGES is a space-separated list
  if [ -n "${IMPORT_IMAGES+x}" ]; then printf '%s\n' $IMPORT_IMAGES
  elif docker image inspect mnist-course:latest >/dev/null 2>&1; then echo mnist-course:latest
  fi
}

kubelet_up() {
  # the kubelet's root dir must be a shared mount ("/" is private here)
  mountpoint -q "$NODE_DIR/kubelet" || mount --bind "$NODE_DIR/kubelet" "$NODE_DIR/kubelet"
  mount --make-rshared "$NODE_DIR/kubelet"
  cat >"$K8S_STATE/kubelet.yaml" <<EOC
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
clusterDNS: [$DNS_SERVICE_IP]
resolvConf: /etc/resolv.conf
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
podCIDR: $POD_CIDR
maxPods: 60
EOC
  start kubelet "$K8S_BIN/kubelet" --config "$K8S_STATE/kubelet.yaml" --kubeconfig "$K8S_STATE/kubelet.kubeconfig" \
    --root-dir "$NODE_DIR/kubelet" --node-ip "$NODE_IP" --hostname-override "$NODE_NAME" --v 1
  wait_for kubelet 60 curl -sf http://127.0.0.1:10248/healthz
}
node_ready() {
  curl_api "/api/v1/nodes/$NODE_NAME" 2>/dev/null | tr -d ' \n' | grep -q '"type":"Ready","status":"True"'
}

kube_proxy_up() {
  cat >"$K8S_STATE/kube-proxy.yaml" <<EOC
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$K8S_STATE/kube-proxy.kubeconfig"}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
oomScoreAdj: 0
conntrack: {maxPerCore: 0}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
EOC
  start kube-proxy "$K8S_BIN/kube-proxy" --config "$K8S_STATE/kube-proxy.yaml"
  wait_for kube-proxy 60 curl -sf http://127.0.0.1:10256/healthz
}

# CoreDNS on the host, on $NODE_IP:53, behind a selector-less Service kube-system/kube-dns
coredns_up() {
  cat >"$K8S_STATE/Corefile" <<EOC
.:53 {
    bind $NODE_IP
    errors
    ready 127.0.0.1:18181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG_FILE mnist-course
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
}
EOC
  start coredns "$COREDNS_BIN" -conf "$K8S_STATE/Corefile"
  wait_for coredns 30 curl -sf http://127.0.0.1:18181/ready
  local ports='[{"name":"dns","port":53,"protocol":"UDP"},{"name":"dns-tcp","port":53,"protocol":"TCP"}]'
  apply /api/v1/namespaces/kube-system/services kube-dns '{"apiVersion":"v1","kind":"Service","metadata":{"name":"kube-dns","namespace":"kube-system","labels":{"k8s-app":"kube-dns"}},"spec":{"clusterIP":"'"$DNS_SERVICE_IP"'","ports":'"$ports"'}}'
  apply /api/v1/namespaces/kube-system/endpoints kube-dns '{"apiVersion":"v1","kind":"Endpoints","metadata":{"name":"kube-dns","namespace":"kube-system"},"subsets":[{"addresses":[{"ip":"'"$NODE_IP"'"}],"ports":'"$ports"'}]}'
}

# --- storage: kind's local-path-provisioner, as a host process ----------------------------------
# StorageClass "standard" (the default class, as in kind): a PVC without storageClassName, in any
# namespace, gets a PV when the first pod that uses it is scheduled (WaitForFirstConsumer). The
# provisioner runs a helper pod (busybox, $HELPER_IMAGE) on the node that makes the folder
# $STORAGE_DIR/<pv>_<namespace>_<claim> with mode 0777 (the course's pods run as uid 1000, and
# hostPath volumes ignore fsGroup); deleting the claim deletes the PV and, by another helper pod,
# the folder (reclaimPolicy Delete). Same ConfigMap layout as kind's, so `kubectl -n
# local-path-storage get configmap local-path-config -o yaml` shows what a learner's kind has.
storage_up() {
  mkdir -p "$STORAGE_DIR"
  apply /api/v1/namespaces "$STORAGE_NS" '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"'"$STORAGE_NS"'"}}'
  apply "/api/v1/namespaces/$STORAGE_NS/serviceaccounts" local-path-provisioner-service-account \
    '{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"local-path-provisioner-service-account","namespace":"'"$STORAGE_NS"'"}}'
  # YAML (server-side apply accepts it): the scripts and the helper pod as block scalars
  apply "/api/v1/namespaces/$STORAGE_NS/configmaps" local-path-config "$(cat <<EOC
apiVersion: v1
kind: ConfigMap
metadata: {name: local-path-config, namespace: $STORAGE_NS}
data:
  config.json: |-
    {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["$STORAGE_DIR"]}]}
  setup: |-
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "\$VOL_DIR"
  teardown: |-
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
  helperPod.yaml: |-
    apiVersion: v1
    kind: Pod
    metadata:
      name: helper-pod
    spec:
      priorityClassName: system-node-critical
      tolerations:
      - {key: node.kubernetes.io/disk-pressure, operator: Exists, effect: NoSchedule}
      terminationGracePeriodSeconds: 0
      containers:
      - name: helper-pod
        image: $HELPER_IMAGE
        imagePullPolicy: IfNotPresent
EOC
)"
  apply /apis/storage.k8s.io/v1/storageclasses standard '{"apiVersion":"storage.k8s.io/v1","kind":"StorageClass","metadata":{"name":"standard","annotations":{"storageclass.kubernetes.io/is-default-class":"true"}},"provisioner":"rancher.io/local-path","volumeBindingMode":"WaitForFirstConsumer","reclaimPolicy":"Delete"}'
  # It reads config.json and helperPod.yaml from the ConfigMap at start. It has no health endpoint;
  # it is ready once its controller has synced its informers ("Started provisioner controller").
  start local-path-provisioner "$LOCAL_PATH_BIN" start --kubeconfig "$KUBECONFIG_FILE" --namespace "$STORAGE_NS"
  wait_for local-path-provisioner 60 grep -q "Started provisioner controller" "$LOGS/local-path-provisioner.log"
}

# --- the Kubeflow training operator, as a host process ------------------------------------------
operator_up() {
  local t0
  t0=$(now)
  [ -x "$PYTHON" ] || die "no Python at $PYTHON (set PYTHON or run scripts/setup.sh)"
  "$PYTHON" "$HERE/training_operator.py" setup "$KUBECONFIG_FILE" "$OPERATOR_MANIFESTS" "$NODE_IP" \
    >"$LOGS/operator-setup.log" 2>&1 || { tail -n 20 "$LOGS/operator-setup.log" >&2; die "training operator setup (CRDs, webhook) failed"; }
  timing "operator CRDs + webhook" applied "$t0"
  rm -rf "$WEBHOOK_CERTS"
  KUBECONFIG=$KUBECONFIG_FILE start training-operator "$OPERATOR_BIN" --enable-scheme=tfjob \
    --metrics-bind-address 127.0.0.1:18080 --health-probe-bind-address 127.0.0.1:18081 --webhook-server-port 9443
  # the cert rotator waits (with growing backoff) for its Secret's files; copy them at once
  "$PYTHON" "$HERE/training_operator.py" certs "$KUBECONFIG_FILE" "$WEBHOOK_CERTS/serving-certs" \
    >>"$LOGS/operator-setup.log" 2>&1 || { tail -n 20 "$LOGS/operator-setup.log" >&2; die "training operator certificates were not created"; }
  wait_for training-operator 120 curl -sf http://127.0.0.1:18081/readyz
  operator_webhook_wait
}
# readyz is not enough: it is ready once the certificates are there and the webhook server listens,
# but the operator registers the TFJob handler afterwards (a goroutine), and a TFJob created in
# between fails with HTTP 500 'failed calling webhook "validator.tfjob.training-operator.kubeflow.org":
# ... the server could not find the requested resource'. So wait until a server-side dry-run create of
# a valid TFJob passes the webhook and an invalid one is denied by it (training_operator.py wait-webhook).
operator_webhook_wait() {
  local t0 log=$LOGS/training-operator.log
  t0=$(now)
  if ! "$PYTHON" "$HERE/training_operator.py" wait-webhook "$KUBECONFIG_FILE" "$log" \
      "$(cat "$PIDS/training-operator.pid" 2>/dev/null)" "${OPERATOR_WEBHOOK_TIMEOUT:-90}" >>"$LOGS/operator-setup.log" 2>&1; then
    echo "ERROR: $(tail -n 1 "$LOGS/operator-setup.log")" >&2
    echo "last lines of $log:" >&2; tail -n 20 "$log" >&2 || true
    die "the training operator's webhook does not validate TFJobs (operator log: $log)"
  fi
  timing "operator webhook" "validates TFJobs" "$t0"
}

# --- the JobSet controller, as a host process (cluster.sh install-jobset; not yet part of up) ------
# Its webhooks get certificates made here with openssl (internal rotation off: jobset.py says why).
jobset_up() {
  local t0 certs=$K8S_STATE/jobset-certs
  t0=$(now)
  [ -x "$PYTHON" ] || die "no Python at $PYTHON (set PYTHON or run scripts/setup.sh)"
  rm -rf "$certs" && mkdir -p "$certs"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=jobset-ca -keyout "$certs/ca.key" \
    -out "$certs/ca.crt" >"$LOGS/jobset-setup.log" 2>&1 || die "openssl: the JobSet CA was not made"
  openssl req -newkey rsa:2048 -nodes -subj /CN=jobset-webhook-service.jobset-system.svc \
    -keyout "$certs/tls.key" -out "$certs/tls.csr" >>"$LOGS/jobset-setup.log" 2>&1 &&
  openssl x509 -req -in "$certs/tls.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" -CAcreateserial -days 30 \
    -extfile <(printf 'subjectAltName=DNS:jobset-webhook-service.jobset-system.svc,DNS:jobset-webhook-service.jobset-system.svc.cluster.local\n') \
    -out "$certs/tls.crt" >>"$LOGS/jobset-setup.log" 2>&1 || die "openssl: the JobSet webhook certificate was not made"
  "$PYTHON" "$HERE/jobset.py" config "$certs" >"$certs/config.yaml"
  "$PYTHON" "$HERE/jobset.py" setup "$KUBECONFIG_FILE" "$JOBSET_MANIFESTS" "$NODE_IP" "$certs" \
    >>"$LOGS/jobset-setup.log" 2>&1 || { tail -n 20 "$LOGS/jobset-setup.log" >&2; die "JobSet setup (CRD, webhooks) failed"; }
  KUBECONFIG=$KUBECONFIG_FILE start jobset-controller "$JOBSET_BIN" --config "$certs/config.yaml"
  wait_for jobset-controller 60 curl -sf http://127.0.0.1:18083/readyz
  "$PYTHON" "$HERE/jobset.py" wait-webhook "$KUBECONFIG_FILE" "$LOGS/jobset-controller.log" \
    >>"$LOGS/jobset-setup.log" 2>&1 || { tail -n 3 "$LOGS/jobset-setup.log" >&2; die "the JobSet webhooks do not answer"; }
  timing "JobSet controller" "ready" "$t0"
}

# --- up ---------------------------------------------------------------------------------------
traces_left() {  # anything of a cluster on this machine (ours, or a half-started one)?
  [ -d "$PIDS" ] || [ -d "$NODE_RUN" ] || ip -br addr show dev lo | grep -q " $NODE_IP/32" ||
    ip link show "$BRIDGE" >/dev/null 2>&1 || grep -qE " ($NODE_DIR|$NODE_RUN)/" /proc/mounts
}
write_env() {
  printf 'KUBECONFIG=%s\n' "$KUBECONFIG_FILE" >"$K8S_STATE/env.new"
  mv "$K8S_STATE/env.new" "$K8S_STATE/env"
}
up_failed() {
  local saved=${K8S_STATE%/}-failed-logs
  rm -rf "$saved"; cp -r "$LOGS" "$saved" 2>/dev/null || true
  echo "ERROR: cluster.sh up failed; logs saved in $saved" >&2
  if [ "${K8S_KEEP_FAILED:-0}" = 1 ]; then
    echo "K8S_KEEP_FAILED=1: left as it is; 'cluster.sh down' cleans up" >&2
  else
    echo "cleaning up (K8S_KEEP_FAILED=1 keeps a failed cluster for inspection)" >&2
    down >/dev/null 2>&1 || true
  fi
}
up() {
  [ "$(id -u)" = 0 ] || die "cluster.sh must run as root (network, mounts, iptables)"
  if status >/dev/null 2>&1; then
    write_env
    echo "cluster already running (cluster.sh status); KUBECONFIG=$KUBECONFIG_FILE"
    return 0
  fi
  if traces_left; then echo "==> a stale or half-started cluster is present; stopping it first"; down; fi
  if ss -Htln "sport = :$API_PORT" | grep -q . || ss -Htln "sport = :2379" | grep -q .; then
    die "port $API_PORT or 2379 is in use by something that is not this cluster (another test cluster? $(ss -Htlnp "sport = :$API_PORT" | head -1))"
  fi
  local mode=node; [ "$KWOK" = 1 ] && mode=kwok
  local t0 T0; T0=$(now)
  local comps=(etcd kubernetes coredns)
  [ "$mode" = node ] && comps+=(cni local-path pause local-path-helper)
  [ "$mode" = kwok ] && comps+=(kwok)
  [ "$OPERATOR" = 1 ] && comps+=(training-operator)
  "$HERE/build.sh" "${comps[@]}" | sed 's/^/  build: /'

  trap up_failed EXIT
  mkdir -p "$PKI" "$LOGS" "$PIDS"
  echo "$mode" >"$K8S_STATE/mode"
  # The node address: an extra address on lo (this kernel has no "dummy" link type, and the
  # kubelet refuses a 127.x node IP); reachable from the host and from pods.
  ip -br addr show dev lo | grep -q " $NODE_IP/32" || ip addr add "$NODE_IP/32" dev lo
  t0=$(now); make_certs; timing certificates "done" "$t0"
  control_plane_up
  if [ "$mode" = node ]; then
    containerd_up
    t0=$(now); mapfile -t imgs < <(default_images); import_images "${imgs[@]}"; timing "image import" "done" "$t0"
    kubelet_up
  else
    start kwok "$KWOK_BIN" --kubeconfig "$KUBECONFIG_FILE" --manage-all-nodes=false \
      --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake --server-address 127.0.0.1:10247
    wait_for kwok 30 curl -sf http://127.0.0.1:10247/healthz
  fi
  kube_proxy_up
  if [ "$mode" = node ]; then WAIT_LOG=kubelet wait_for node-Ready 120 node_ready; fi
  coredns_up
  # kwok's fake nodes never run the helper pods, so a claim would stay Pending there anyway
  if [ "$mode" = node ]; then storage_up; fi
  [ "$OPERATOR" = 1 ] && operator_up
  write_env
  trap - EXIT
  timing "cluster up ($mode)" "done" "$T0"
  echo "KUBECONFIG=$KUBECONFIG_FILE  (env file: $K8S_STATE/env)"
}

# --- down ---------------------------------------------------------------------------------------
iptables_cleanup() {  # every KUBE-* / CNI-* rule and chain (kubelet, kube-proxy, CNI); Docker's stay
  local ipt t r ch
  for ipt in iptables ip6tables; do
    for t in filter nat mangle; do
      { $ipt -t $t -S 2>/dev/null | grep -E '^-A .* -j (KUBE|CNI)-' || true; } | sed 's/^-A/-D/' |
        while read -r r; do eval "$ipt -t $t $r" 2>/dev/null || true; done
      for ch in $($ipt -t $t -S 2>/dev/null | awk '/^-N (KUBE|CNI)-/{print $2}'); do $ipt -t $t -F "$ch" 2>/dev/null || true; done
      for ch in $($ipt -t $t -S 2>/dev/null | awk '/^-N (KUBE|CNI)-/{print $2}'); do $ipt -t $t -X "$ch" 2>/dev/null || true; done
    done
  done
}
stop_all() {  # stop_all NAME...: SIGTERM to all, one shared wait of <= 10 s, then SIGKILL
  local name f pids=() p alive
  for name in "$@"; do
    f=$PIDS/$name.pid; [ -f "$f" ] || continue
    pids+=("$(cat "$f")"); kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"
  done
  [ ${#pids[@]} = 0 ] && return 0
  for _ in $(seq 50); do
    alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.2
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
node_down() {
  # First the provisioner, so that it starts no helper pod while the pods go. Its volumes' folders
  # are in the state dir, which down removes.
  stop_all local-path-provisioner
  # Delete every pod while the kubelet still runs, so that it stops the sandboxes properly
  # (CNI DEL, shm unmount, netns removal).
  if alive kubelet && curl_api /readyz >/dev/null 2>&1; then
    local ns
    for ns in $(curl_api /api/v1/namespaces | tr -d ' \n' | grep -o '"metadata":{"name":"[^"]*"' | cut -d'"' -f6); do
      curl_api -X DELETE "/api/v1/namespaces/$ns/pods?gracePeriodSeconds=0" >/dev/null 2>&1 || true
    done
    for _ in $(seq 100); do ls /run/netns 2>/dev/null | grep -q '^cni-' || break; sleep 0.2; done
  fi
  stop_all jobset-controller training-operator coredns kube-proxy kubelet kwok
  [ -x "$K8S_BIN/kube-proxy" ] && "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  if [ -S "$CTRD_SOCK" ] && alive containerd; then   # remaining sandboxes and containers
    local t c
    for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks kill -s KILL "$t" >/dev/null 2>&1 || true; done
    sleep 1
    for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks delete -f "$t" >/dev/null 2>&1 || true; done
    for c in $("${CTR[@]}" containers ls -q 2>/dev/null); do "${CTR[@]}" containers delete "$c" >/dev/null 2>&1 || true; done
  fi
  stop_all containerd
  # leftover shims of our containerd instance, matched by our socket path (never Docker's)
  local p
  for p in $(pgrep -f "containerd-shim-runc-v2 -namespace k8s.io -address $CTRD_SOCK" || true); do kill -9 "$p" 2>/dev/null || true; done
  awk -v a="$NODE_DIR/" -v b="$NODE_RUN/" 'index($2, a) == 1 || index($2, b) == 1 {print $2}' /proc/mounts |
    sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  # pod network namespaces of sandboxes that never started (Docker does not use /run/netns)
  local n
  for n in $(ls /run/netns 2>/dev/null | grep '^cni-' || true); do ip netns delete "$n" 2>/dev/null || true; done
  ip link del "$BRIDGE" 2>/dev/null || true
  # libcni's result cache (not configurable in containerd 1.6): our network's and the CRI loopback's
  # entries (only this cluster's containerd uses CNI here; Docker does not)
  rm -f /var/lib/cni/results/mnist-course-k8s-* /var/lib/cni/results/cni-loopback-*
  rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true
  # Pod logs: the kubelet writes /var/log/pods/<ns>_<pod>_<uid> and links to them from
  # /var/log/containers; a killed kubelet leaves those of the last pods behind. Only this cluster's
  # kubelet runs on the machine (Docker keeps its logs under /var/lib/docker).
  rm -rf /var/log/pods/*_*_* 2>/dev/null || true
  find /var/log/containers -maxdepth 1 -type l -lname '/var/log/pods/*' -delete 2>/dev/null || true
  # folders the kubelet hard-codes; removed only when empty (i.e. nobody else uses them)
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock
  rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet /var/log/containers /var/log/pods 2>/dev/null || true
}
down() {
  local t0; t0=$(now)
  node_down
  stop_all kube-scheduler kube-controller-manager kube-apiserver etcd
  ip addr del "$NODE_IP/32" dev lo 2>/dev/null || true
  iptables_cleanup
  rm -rf "$NODE_RUN" "$WEBHOOK_CERTS"
  if [ "${PURGE:-0}" = 1 ]; then
    rm -rf "$NODE_DIR"
  else   # keep the containerd root (imported images) for the next up; nothing of it is mounted
    find "$NODE_DIR" -mindepth 1 -maxdepth 1 ! -name containerd -exec rm -rf {} + 2>/dev/null || true
    rm -rf "$NODE_DIR/containerd/opt"
  fi
  # with it the provisioned volumes' folders ($STORAGE_DIR)
  rm -rf "$K8S_STATE"
  timing "cluster down" "done" "$t0"
  [ "${PURGE:-0}" = 1 ] || [ ! -d "$NODE_DIR" ] || echo "kept $NODE_DIR/containerd (imported images); 'cluster.sh down --purge' removes it"
}

status() {
  local rc=0 f
  for f in "$PIDS"/*.pid; do
    [ -f "$f" ] || continue
    printf '%-24s pid %-8s %s\n' "$(basename "$f" .pid)" "$(cat "$f")" "$(kill -0 "$(cat "$f")" 2>/dev/null && echo running || echo DEAD)"
  done
  if [ -f "$PKI/admin.crt" ] && curl_api /readyz >/dev/null 2>&1; then echo "apiserver: ready ($API)"
  else echo "apiserver: NOT ready"; rc=1; fi
  if [ "$(cat "$K8S_STATE/mode" 2>/dev/null)" = kwok ]; then
    if curl -sf http://127.0.0.1:10247/healthz >/dev/null 2>&1; then echo "kwok: healthy"; else echo "kwok: NOT healthy"; rc=1; fi
  elif [ $rc = 0 ] && node_ready; then echo "node $NODE_NAME: Ready"
  else echo "node $NODE_NAME: NOT Ready"; rc=1; fi
  return $rc
}

need_running() { status >/dev/null 2>&1 || die "no running cluster (cluster.sh status); run cluster.sh up"; }

# One up/down/import/install-operator at a time on this machine. Without it, two test sessions that
# start the cluster at once each take the other's half-started cluster for a stale one and stop it,
# and processes whose pid files were overwritten are left running. A second `up` now waits, then
# finds the cluster running and returns. (An empty file; it is not in the state dir, which down removes.)
LOCK_FILE=${NODE_RUN%/}.lock
take_lock() {
  exec 8>"$LOCK_FILE"
  if ! flock -n 8; then
    local t0; t0=$(now)
    echo "==> cluster.sh $1: another cluster.sh holds $LOCK_FILE; waiting for it"
    flock 8
    printf '==> waited %.1f s\n' "$(since "$t0")"
  fi
}

cmd=${1:-}; shift || true
case $cmd in up|down|import|install-operator|install-jobset) take_lock "$cmd" ;; esac
case $cmd in
  up) up ;;
  down) [ "${1:-}" = --purge ] && PURGE=1; down ;;
  status) status ;;
  import)
    [ $# -gt 0 ] || die "usage: cluster.sh import IMAGE..."
    need_running; [ -S "$CTRD_SOCK" ] || die "no node containerd (KWOK mode has no images)"
    import_images "$@" ;;
  install-operator)
    need_running
    if alive training-operator; then echo "training operator already running"; operator_webhook_wait
    else "$HERE/build.sh" training-operator | sed 's/^/  build: /'; operator_up; fi ;;
  install-jobset)
    need_running
    if alive jobset-controller; then echo "JobSet controller already running"
    else "$HERE/build.sh" jobset | sed 's/^/  build: /'; jobset_up; fi ;;
  *) echo "usage: cluster.sh up | down [--purge] | status | import IMAGE... | install-operator | install-jobset" >&2; exit 2 ;;
esac
