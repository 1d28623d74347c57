#!/usr/bin/env bash
# Renders deploy/k8s (base and every overlay) with `kubectl kustomize` and cross-checks what it
# renders against the code and docs/CONFIG.md, without a cluster:
#   - every key of every infrachatd ConfigMap and every INFRACHAT_* env var is in CONFIG.md's table;
#   - each workload's config (its ConfigMap file plus the pod's env) passes
#     `infrachatd --check-config` (role combinations included), run with the built daemon;
#   - probes are native gRPC probes on a port the daemon listens on, asking for a service the
#     daemon reports as SERVING on that port for those roles (names checked against the protos
#     and the code that registers them); container ports and Services agree with the listeners;
#   - terminationGracePeriodSeconds outlasts the preStop sleep plus the daemon's drain
#     (grpc.shutdown_grace_s per listener: the public one, then the internal one);
#   - every pod serves /metrics (metrics.listen_address on all interfaces) on a containerPort
#     named metrics, which its prometheus.io/scrape, port and path annotations name, and every
#     NetworkPolicy that selects it admits that port;
#   - peers.* addresses resolve to a rendered Service (or StatefulSet pod) that runs the role on
#     its internal port; a peers.region_shards entry to a shard pod of the region it names;
#     peers.shard and router.shards list exactly the StatefulSet's pods (one per replica);
#   - every shard pod's lease address (grpc.internal_advertise_address with the pod's env,
#     $(VAR) expanded) is listed, string for string, in its region's edges' peers.shard and in
#     every other region's edges' peers.region_shards, and nothing else is;
#   - one region per overlay, the same cluster.regions (the overlays' regions) in every process,
#     its own database Secret, auth in one region only and one peers.auth for every edge, no
#     Secret or database.url in the manifests, images tagged, non-root, read-only root,
#     resources, PDBs.
#   k8s_render_test.sh BUILD_DIR          (K8S_DIR=DIR checks another copy of deploy/k8s)
# The checks are jq programs in single quotes: their $names are jq's, not the shell's.
# shellcheck disable=SC2016
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build_dir=${1:?usage: k8s_render_test.sh BUILD_DIR}
daemon=$build_dir/src/exe/infrachatd
k8s=${K8S_DIR:-$root/deploy/k8s}

die() { echo "FAIL: $*" >&2; exit 1; }
command -v kubectl >/dev/null || die "kubectl is not installed (kubectl 1.32 comes with the machine image)"
command -v jq >/dev/null || die "jq is not installed (scripts/setup.sh installs it)"
[ -x "$daemon" ] || die "$daemon is not built (scripts/build.sh infrachatd)"

work=$(mktemp -d /tmp/infrachat-k8s.XXXXXX)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
# check WHAT PROBLEMS: passes when PROBLEMS is empty, otherwise prints them under WHAT.
check() {
  if [ -z "$2" ]; then
    passed=$((passed + 1))
    echo "ok   $1"
  else
    failed=$((failed + 1))
    echo "FAIL $1"
    printf '%s\n' "$2" | sed 's/^/       /'
  fi
}

# The problems a jq program finds, one a line; a jq error is a problem too, never a pass.
problems() {
  local out
  out=$(jq "$@" 2>&1) || { printf 'the check itself failed: %s' "$out"; return 0; }
  printf '%s' "$out"
}

# YAML to JSON without yq or PyYAML: kubectl decodes YAML itself, and `label --local` prints
# objects as JSON without asking a cluster. A plain YAML file (an infrachatd config) is wrapped
# in an object first.
to_json() {  # FILE (Kubernetes objects) -> JSON array on stdout
  kubectl --kubeconfig=/dev/null label --local -f "$1" k8s-render-test=1 -o json | jq -s .
}
yaml_to_json() {  # FILE (any YAML mapping) -> JSON object on stdout
  {
    printf 'apiVersion: v1\nkind: InfrachatdConfig\nmetadata:\n  name: config\nspec:\n'
    sed 's/^/  /' "$1"
  } >"$1.wrapped"
  kubectl --kubeconfig=/dev/null label --local -f "$1.wrapped" k8s-render-test=1 -o json |
    jq '.spec // {}'
}

# jq definitions shared by the checks below (prepended to their programs).
#   pod_env($pod; $ns): a workload record's container env as the kubelet gives it to pod $pod in
#     namespace $ns: literal values with $(VAR) expanded from the variables defined before them
#     (an undefined reference stays as written, as in Kubernetes; $$ escapes are not handled),
#     metadata.name and metadata.namespace from the downward API, a placeholder for a Secret.
#   pods: a StatefulSet record's pod names; lease_address($pod): what a shard pod announces in
#     its lease (grpc.internal_advertise_address from its env or its file, else the bound one).
#   regions: the regions of the cluster as a process sees them (cluster.regions, default [region]).
jq_lib='
def pod_env($pod; $ns):
  reduce (.container.env // [])[] as $e ({};
    . as $m
    | if $e.value != null then
        .[$e.name] = ($e.value | gsub("\\$\\((?<v>[A-Za-z_][A-Za-z0-9_]*)\\)"; $m[.v] // "$(\(.v))"))
      elif $e.valueFrom.fieldRef.fieldPath == "metadata.name" then .[$e.name] = $pod
      elif $e.valueFrom.fieldRef.fieldPath == "metadata.namespace" then .[$e.name] = $ns
      elif $e.valueFrom.secretKeyRef != null then
        .[$e.name] = "postgresql://k8s-render-test@localhost/infrachat"
      else . end);
def pods: [range(.replicas) as $i | "\(.name)-\($i)"];
def lease_address($pod):
  pod_env($pod; .namespace).INFRACHAT_GRPC_INTERNAL_ADVERTISE_ADDRESS
  // (.file.grpc.internal_advertise_address // "" | select(. != ""))
  // .eff.grpc.internal_listen_address;
def regions: .eff.cluster.regions as $r | if ($r | length) > 0 then $r else [.eff.region] end;
'

# ---- What the code says -------------------------------------------------------------------------

# docs/CONFIG.md's key table: | `key` | `INFRACHAT_KEY` | `default` | meaning |
sed -n 's/^| `\([a-z_.]*\)` | `\(INFRACHAT_[A-Z_]*\)` |.*/\1 \2/p' "$root/docs/CONFIG.md" >"$work/keys.txt"
[ "$(wc -l <"$work/keys.txt")" -ge 10 ] || die "cannot read the key table of docs/CONFIG.md"
jq -R -s 'split("\n") | map(select(length > 0) | split(" ") | {(.[0]): .[1]}) | add' \
  "$work/keys.txt" >"$work/keys.json"

# The gRPC health service names the daemon sets SERVING, per port and role: on the public port
# the gateway's four services (gateway_module.cc RegisterServices), on the internal listener
# ShardInternal and EventStream where the shard runs and AuthInternal where auth runs
# (daemon.cc StartInternalServer). Each name must still be declared in its proto and registered
# by that code, or the probes below would ask for a name nobody reports.
cat >"$work/served.json" <<'EOF'
{
  "public": {"gateway": ["infrachat.v1.AuthService", "infrachat.v1.RouterService",
                         "infrachat.v1.ChannelService", "infrachat.v1.ChatService"]},
  "internal": {"shard": ["infrachat.internal.v1.ShardInternal", "infrachat.internal.v1.EventStream"],
               "auth": ["infrachat.internal.v1.AuthInternal"]}
}
EOF
problems=""
for name in $(jq -r '.[][][]' "$work/served.json"); do
  package=${name%.*} service=${name##*.}
  proto_dir=$root/proto/${package//.//}
  if ! grep -qs "^package $package;" "$proto_dir"/*.proto ||
    ! grep -qs "^service $service {" "$proto_dir"/*.proto; then
    problems+="$name is not declared in $proto_dir/*.proto"$'\n'
  fi
  case $package in
    infrachat.v1) code=$root/src/modules/gateway/gateway_module.cc pattern="v1::$service::service_full_name()" ;;
    *) code=$root/src/daemon/daemon.cc pattern="internal::v1::$service::service_full_name()" ;;
  esac
  grep -qF "$pattern" "$code" || problems+="$name: $code no longer registers $pattern"$'\n'
done
check "probe service names are declared in the protos and registered by the daemon" "${problems%$'\n'}"

# ---- Render ---------------------------------------------------------------------------------------

: >"$work/services.jsonl"
renders=(base)
for dir in "$k8s"/overlays/*/; do renders+=("overlays/$(basename "$dir")"); done
[ ${#renders[@]} -ge 3 ] || die "expected base and at least two overlays under $k8s"
for render in "${renders[@]}"; do
  id=${render//\//_}
  if ! kubectl kustomize "$k8s/$render" >"$work/$id.yaml" 2>"$work/$id.err"; then
    check "$render renders" "$(cat "$work/$id.err")"
    continue
  fi
  to_json "$work/$id.yaml" >"$work/$id.json"
  jq -c --arg render "$render" '.[] | select(.kind == "Service")
    | {render: $render, namespace: (.metadata.namespace // "default"), name: .metadata.name,
       ports: [.spec.ports[].port], selector: (.spec.selector // {}), headless: (.spec.clusterIP == "None")}
  ' "$work/$id.json" >>"$work/services.jsonl"
  check "$render renders ($(jq length "$work/$id.json") objects)" ""
done

# ---- Each workload ------------------------------------------------------------------------------

# One record per Deployment or StatefulSet: its container, its config file (args --config PATH,
# found through the volume mounted at dirname(PATH)), and, below, the daemon's effective config.
: >"$work/workloads.jsonl"
for render in "${renders[@]}"; do
  id=${render//\//_}
  [ -s "$work/$id.json" ] || continue
  jq -c --arg render "$render" '
    . as $all | .[] | select(.kind == "Deployment" or .kind == "StatefulSet") | . as $w
    | .spec.template.spec as $pod
    | ($pod.containers | map(select(.name == "infrachatd"))[0]) as $c
    | ($c.args // [] | index("--config")) as $i
    | (if $i == null then null else $c.args[$i + 1] end) as $path
    | ($path // "" | sub("/[^/]*$"; "")) as $dir
    | ($path // "" | sub("^.*/"; "")) as $file
    | (($c.volumeMounts // []) | map(select(.mountPath == $dir))[0].name) as $volume
    | (($pod.volumes // []) | map(select(.name == $volume))[0].configMap.name) as $cm
    | {render: $render, namespace: (.metadata.namespace // "default"), kind, name: .metadata.name,
       replicas: (.spec.replicas // 1), serviceName: (.spec.serviceName // null),
       labels: (.spec.template.metadata.labels // {}),
       annotations: (.spec.template.metadata.annotations // {}),
       pod: $pod, container: $c, config_path: $path, configmap: $cm,
       config_text: (if $cm == null then null else
         ($all | map(select(.kind == "ConfigMap" and .metadata.name == $cm))[0].data[$file])
       end)}
  ' "$work/$id.json" >>"$work/workloads.jsonl" 2>"$work/jq.err" ||
    die "cannot read the workloads of $render: $(cat "$work/jq.err")"
done
[ -s "$work/workloads.jsonl" ] || die "no Deployment or StatefulSet rendered"

n=0
: >"$work/records.jsonl"
# A workload whose config is refused is recorded without one (eff null): its failure is reported
# once, and the checks that need its config skip it.
unchecked() { jq -c '. + {eff: null} | del(.config_text)' <<<"$record" >>"$work/records.jsonl"; }
while IFS= read -r record; do
  n=$((n + 1))
  render=$(jq -r .render <<<"$record")
  name=$(jq -r .name <<<"$record")
  what="$render $name"
  dir=$work/w$n
  mkdir -p "$dir"

  if [ "$(problems -r '.container != null' <<<"$record")" != true ]; then
    check "$what: has a container named infrachatd" "no container named infrachatd"
    unchecked
    continue
  fi
  if [ "$(problems -r '.config_text != null' <<<"$record")" != true ]; then
    check "$what: its --config file comes from a mounted ConfigMap" \
      "$(problems -r '"--config \(.config_path) is not a key of a ConfigMap mounted at its directory (configmap: \(.configmap))"' <<<"$record")"
    unchecked
    continue
  fi
  jq -r .config_text <<<"$record" >"$dir/infrachatd.yaml"
  yaml_to_json "$dir/infrachatd.yaml" >"$dir/file.json" 2>"$dir/err" ||
    { check "$what: its infrachatd YAML parses" "$(cat "$dir/err")"; unchecked; continue; }

  # Keys: a section's subkeys are section.key; a documented key whose value is a map
  # (log.modules) is one key.
  check "$what: every config key is in docs/CONFIG.md" "$(problems -r --slurpfile keys "$work/keys.json" '
    [to_entries[] | .key as $k
     | if ($keys[0][$k] == null) and (.value | type) == "object"
       then (.value | keys[] | "\($k).\(.)") else $k end]
    | map(select($keys[0][.] == null)) | .[] | "\(.): not a key of docs/CONFIG.md"
  ' "$dir/file.json")"
  check "$what: database.url is not in the ConfigMap (it is a secret)" \
    "$(problems -r 'if .database.url? then "database.url is set in the ConfigMap; take it from a Secret" else empty end' "$dir/file.json")"

  # The pod's environment, as the daemon would see it (pod_env: $(VAR) expanded, the pod's name
  # and namespace from the downward API, a placeholder for a Secret's value).
  pod_name=$(jq -r 'if .kind == "StatefulSet" then "\(.name)-0" else "\(.name)-pod" end' <<<"$record")
  check "$what: every INFRACHAT_* env var is in docs/CONFIG.md, with a value it can have" "$(problems -r --slurpfile keys "$work/keys.json" --arg pod "$pod_name" "$jq_lib"'
    ($keys[0] | [.[]]) as $envs
    | pod_env($pod; .namespace) as $expanded
    | .container.env // [] | .[] | select(.name | startswith("INFRACHAT_"))
    | if (.name as $n | $envs | index($n)) == null then "\(.name): not an environment name of docs/CONFIG.md"
      elif .value != null then
        (.name as $n | $expanded[$n] | select(test("\\$\\([A-Za-z_][A-Za-z0-9_]*\\)"))
         | "\($n): \(.) refers to a variable not defined before it in env (the kubelet leaves it as written)")
      elif .valueFrom.secretKeyRef != null or .valueFrom.fieldRef.fieldPath == "metadata.name"
           or .valueFrom.fieldRef.fieldPath == "metadata.namespace" then empty
      else "\(.name): only literal values, Secrets, metadata.name and metadata.namespace are checked here" end
  ' <<<"$record")"
  jq -r --arg pod "$pod_name" "$jq_lib"'
    pod_env($pod; .namespace) | to_entries[] | select(.key | startswith("INFRACHAT_"))
    | "\(.key)=\(.value)"
  ' <<<"$record" >"$dir/env"

  # The daemon decides whether the roles and values are valid; its effective config (file,
  # env and defaults) is what the rest is checked against.
  status=0
  mapfile -t pod_env <"$dir/env"
  env -i PATH="$PATH" "${pod_env[@]}" "$daemon" --check-config "$dir/infrachatd.yaml" \
    >"$dir/check.out" 2>&1 || status=$?
  if [ "$status" != 0 ]; then
    check "$what: infrachatd --check-config accepts its config" \
      "exit $status: $(cat "$dir/check.out")"$'\n'"config:"$'\n'"$(cat "$dir/infrachatd.yaml")"
    unchecked
    continue
  fi
  check "$what: infrachatd --check-config accepts its config ($(sed -n 's/^roles: //p' "$dir/check.out"))" ""
  sed -n '/^roles:/,$p' "$dir/check.out" >"$dir/effective.yaml"
  yaml_to_json "$dir/effective.yaml" >"$dir/effective.json" 2>"$dir/err" ||
    die "cannot read the effective config infrachatd printed: $(cat "$dir/err")"

  jq -c --slurpfile eff "$dir/effective.json" --slurpfile file "$dir/file.json" '
    . + {eff: $eff[0], file: $file[0],
         public_port: ($eff[0].grpc.listen_address | sub("^.*:"; "") | tonumber),
         internal_port: ($eff[0].grpc.internal_listen_address
                         | if . == "" then null else sub("^.*:"; "") | tonumber end),
         metrics_port: ($eff[0].metrics.listen_address // ""
                        | if . == "" then null else sub("^.*:"; "") | tonumber end)}
    | del(.config_text)' <<<"$record" >>"$work/records.jsonl"
done <"$work/workloads.jsonl"

# Per-workload checks on the effective config and the pod spec.
while IFS= read -r record; do
  what=$(jq -r '"\(.render) \(.name)"' <<<"$record")

  check "$what: listeners bind all interfaces (reachable from other pods)" "$(problems -r '
    .eff.grpc | [.listen_address, .internal_listen_address][] | select(. != "")
    | select(startswith("0.0.0.0:") or startswith("[::]:") | not) | "\(.): binds one interface only"
  ' <<<"$record")"

  # Prometheus finds a pod by the usual annotations; they must name the port the daemon serves
  # /metrics on (metrics.listen_address), which is a containerPort named "metrics".
  check "$what: serves /metrics on a containerPort named metrics, which its prometheus.io annotations name" "$(problems -r '
    . as $r
    | if $r.metrics_port == null then "metrics.listen_address is not set: Prometheus cannot scrape it"
      else
        ($r.eff.metrics.listen_address | select(startswith("0.0.0.0:") or startswith("[::]:") | not)
         | "metrics.listen_address \(.) binds one interface only"),
        ([$r.container.ports // [] | .[] | select(.name == "metrics")][0]) as $port
        | (if $port == null then "no containerPort named metrics"
           elif $port.containerPort != $r.metrics_port then
             "containerPort metrics is \($port.containerPort); metrics.listen_address is port \($r.metrics_port)"
           else empty end),
          (if $r.annotations["prometheus.io/scrape"] != "true" then
             "annotation prometheus.io/scrape is \($r.annotations["prometheus.io/scrape"]), not \"true\"" else empty end),
          (if $r.annotations["prometheus.io/port"] != ($r.metrics_port | tostring) then
             "annotation prometheus.io/port is \($r.annotations["prometheus.io/port"]); the daemon serves metrics on \($r.metrics_port)" else empty end),
          (if ($r.annotations["prometheus.io/path"] // "/metrics") != "/metrics" then
             "annotation prometheus.io/path is \($r.annotations["prometheus.io/path"]), not /metrics" else empty end)
      end
  ' <<<"$record")"

  check "$what: container ports include the listeners" "$(problems -r '
    [.container.ports // [] | .[].containerPort] as $ports
    | [.public_port, .internal_port][] | select(. != null) | select(. as $p | $ports | index($p) | not)
    | "port \(.) is listened on but not a containerPort"
  ' <<<"$record")"

  check "$what: readiness and liveness are gRPC probes on a listener, for a service served there" "$(problems -r --slurpfile served "$work/served.json" '
    . as $r | $r.eff.roles as $roles
    | def served($port):
        if $port == $r.public_port then [$roles[] as $role | $served[0].public[$role] // [] | .[]]
        elif $port == $r.internal_port then [$roles[] as $role | $served[0].internal[$role] // [] | .[]]
        else [] end;
    (["readinessProbe", "livenessProbe"][] | select($r.container[.] == null) | "\(.) is missing"),
    ( ["readinessProbe", "livenessProbe", "startupProbe"][] as $kind
      | $r.container[$kind] // empty
      | if .grpc == null then "\($kind): not a native gRPC probe (grpc: {port, service})"
        elif (.grpc.port != $r.public_port and .grpc.port != $r.internal_port) then
          "\($kind): port \(.grpc.port) is not a listener of this config (public \($r.public_port), internal \($r.internal_port))"
        elif (.grpc.service // "") == "" then
          "\($kind): no service name (the whole server stays SERVING while a role drains)"
        elif (.grpc.service as $s | served(.grpc.port) | index($s) | not) then
          "\($kind): service \(.grpc.service) is not reported SERVING on port \(.grpc.port) with roles \($roles); there: \(served(.grpc.port))"
        else empty end )
  ' <<<"$record")"

  check "$what: terminationGracePeriodSeconds outlasts preStop + grpc.shutdown_grace_s per listener" "$(problems -r '
    (.pod.terminationGracePeriodSeconds // 30) as $tg
    | (.container.lifecycle.preStop.sleep.seconds // 0) as $pre
    | .eff.grpc.shutdown_grace_s as $grace
    | (if .internal_port == null then 1 else 2 end) as $listeners
    | ($pre + $grace * $listeners) as $drain
    | if $tg > $drain then empty else
        "terminationGracePeriodSeconds \($tg) <= preStop \($pre) s + \($listeners) x grpc.shutdown_grace_s \($grace) s = \($drain) s: the kubelet kills the pod before its drain ends"
      end
  ' <<<"$record")"

  check "$what: image infrachat/infrachatd with a release tag" "$(problems -r '
    .container.image | if test("^infrachat/infrachatd:[A-Za-z0-9_][A-Za-z0-9_.-]*$") and (test(":latest$") | not)
    then empty else "image \(.): expected infrachat/infrachatd:<tag> (set by kustomize images:)" end
  ' <<<"$record")"

  check "$what: runs as non-root with a read-only root file system and no privilege escalation" "$(problems -r '
    (if (.container.securityContext.runAsNonRoot // .pod.securityContext.runAsNonRoot) == true then empty
     else "runAsNonRoot is not true" end),
    (if .container.securityContext.readOnlyRootFilesystem == true then empty
     else "readOnlyRootFilesystem is not true" end),
    (if .container.securityContext.allowPrivilegeEscalation == false then empty
     else "allowPrivilegeEscalation is not false" end)
  ' <<<"$record")"

  check "$what: resource requests and limits" "$(problems -r '
    .container.resources as $r
    | ["requests.cpu", "requests.memory", "limits.cpu", "limits.memory"][]
    | select(split(".") as $p | $r[$p[0]][$p[1]] == null) | "\(.) is not set"
  ' <<<"$record")"

  check "$what: the database URL of auth and shard comes from a Secret" "$(problems -r '
    if (.eff.roles | index("auth") or index("shard")) then
      ([.container.env // [] | .[] | select(.name == "INFRACHAT_DATABASE_URL")][0]) as $e
      | if $e.valueFrom.secretKeyRef.name == null then "INFRACHAT_DATABASE_URL is not taken from a Secret"
        else empty end
    else empty end
  ' <<<"$record")"

  check "$what: production mode; auth's key files are in a mounted Secret" "$(problems -r '
    . as $r
    | (if $r.eff.mode == "production" then empty else "mode is \($r.eff.mode), not production" end),
      (if ($r.eff.roles | index("auth")) then
         $r.eff.auth.private_key_file, $r.eff.auth.public_key_file
         | (sub("/[^/]*$"; "")) as $dir | (sub("^.*/"; "")) as $file
         | (($r.container.volumeMounts // []) | map(select(.mountPath == $dir))[0].name) as $volume
         | (($r.pod.volumes // []) | map(select(.name == $volume))[0].secret) as $secret
         | if $secret == null then "\(.): no Secret volume is mounted at \($dir)"
           elif $secret.items != null and ([$secret.items[].path] | index($file) | not) then
             "\(.): the Secret volume at \($dir) has no item \($file)"
           else empty end
       else empty end)
  ' <<<"$record")"
done < <(jq -c 'select(.eff != null)' "$work/records.jsonl")

# ---- Across the objects of one render -----------------------------------------------------------

jq -s . "$work/records.jsonl" >"$work/records.json"
jq -s . "$work/services.jsonl" >"$work/services.json"
for render in "${renders[@]}"; do
  id=${render//\//_}
  [ -s "$work/$id.json" ] || continue
  objects=$work/$id.json

  check "$render: no Secret objects (key material and URLs stay out of the repo)" \
    "$(problems -r '.[] | select(.kind == "Secret") | "Secret \(.metadata.name) is rendered"' "$objects")"

  # A Service's targetPort must be a listener of the one workload it selects: the public port
  # for a gateway, the internal listener for auth and shard.
  check "$render: each Service selects one workload and targets the listener its roles serve on" "$(problems -r --arg render "$render" --slurpfile recs "$work/records.json" '
    def matches($sel; $labels): $sel | to_entries | all(.value == $labels[.key]);
    [$recs[0][] | select(.render == $render)] as $ws
    | .[] | select(.kind == "Service") | . as $s
    | [$ws[] | select(matches($s.spec.selector // {}; .labels))] as $m
    | if ($m | length) != 1 then "Service \($s.metadata.name) selects \($m | length) workloads"
      elif $m[0].eff == null then empty
      else $m[0] as $w
      | ($s.spec.ports[] | . as $p
         | (if (.targetPort | type) == "string" then
              ($w.container.ports // [] | map(select(.name == $p.targetPort))[0].containerPort)
            else (.targetPort // .port) end) as $target
         | (if ($w.eff.roles | index("gateway")) then $w.public_port else $w.internal_port end) as $want
         | if $target == null then "Service \($s.metadata.name) port \(.port): targetPort \(.targetPort) is not a port of \($w.name)"
           elif $target != $want then "Service \($s.metadata.name) port \(.port) targets \($target); \($w.name) with roles \($w.eff.roles) serves on \($want)"
           else empty end)
      end
  ' "$objects")"

  # A NetworkPolicy that restricts ingress to a workload's pods must admit its metrics port, or
  # Prometheus (in another namespace) cannot scrape those pods.
  check "$render: NetworkPolicies admit the metrics port of the pods they select" "$(problems -r --arg render "$render" --slurpfile recs "$work/records.json" '
    def selects($sel; $labels):
      ($sel.matchLabels // {} | to_entries | all(.value == $labels[.key]))
      and ($sel.matchExpressions // [] | all(. as $e | $labels[$e.key] as $v
        | if $e.operator == "In" then ($e.values | index($v)) != null
          elif $e.operator == "NotIn" then ($e.values | index($v)) == null
          elif $e.operator == "Exists" then $v != null
          else $v == null end));
    [$recs[0][] | select(.render == $render and .metrics_port != null)] as $ws
    | .[] | select(.kind == "NetworkPolicy" and ((.spec.policyTypes // ["Ingress"]) | index("Ingress"))) | . as $np
    | $ws[] | select(selects($np.spec.podSelector; .labels)) | . as $w
    | if [$np.spec.ingress // [] | .[] | (.ports // [{port: $w.metrics_port}]) | .[] | .port]
         | map(. == $w.metrics_port or . == "metrics") | any then empty
      else "NetworkPolicy \($np.metadata.name) selects \($w.name) but admits no ingress to its metrics port \($w.metrics_port)" end
  ' "$objects")"

  check "$render: each StatefulSet has its headless Service" "$(problems -r '
    . as $all | .[] | select(.kind == "StatefulSet") | .spec.serviceName as $svc
    | ($all | map(select(.kind == "Service" and .metadata.name == $svc))[0]) as $s
    | if $s == null then "StatefulSet \(.metadata.name): serviceName \($svc) is not rendered"
      elif $s.spec.clusterIP != "None" then "Service \($svc) of StatefulSet \(.metadata.name) is not headless"
      else empty end
  ' "$objects")"

  check "$render: each workload has a PodDisruptionBudget" "$(problems -r --arg render "$render" --slurpfile recs "$work/records.json" '
    def matches($sel; $labels): $sel | to_entries | all(.value == $labels[.key]);
    [.[] | select(.kind == "PodDisruptionBudget")] as $pdbs
    | ($pdbs[] | . as $p | [$recs[0][] | select(.render == $render and matches($p.spec.selector.matchLabels // {}; .labels))]
       | select(length != 1) | "PodDisruptionBudget \($p.metadata.name) selects \(length) workloads"),
      ($recs[0][] | select(.render == $render) | . as $w
       | select([$pdbs[] | select(matches(.spec.selector.matchLabels // {}; $w.labels))] | length == 0)
       | "\(.name) has no PodDisruptionBudget")
  ' "$objects")"

  check "$render: one region for every process" "$(problems -r --arg render "$render" '
    [.[] | select(.render == $render and .eff != null) | .eff.region] | unique
    | if length > 1 then "regions \(.) in one render" else empty end,
      (if ($render | startswith("overlays/")) and (.[0] != ($render | sub("^overlays/"; ""))) then
         "region is \(.[0]); the overlay is \($render)" else empty end)
  ' "$work/records.json")"
done

# ---- Addresses: peers.* and router.shards -------------------------------------------------------

# A peer address names a Service (svc, svc.ns[.svc.cluster.local]) or a StatefulSet pod
# (pod.svc, pod.svc.ns[.svc.cluster.local]) of some render, on a port whose Service targets the
# internal listener of a workload running the role. A peers.region_shards entry region=host:port
# leads to a shard of the region it names (a workload whose region is that one); that the region
# is one of cluster.regions and not the process's own is the daemon's rule, which
# --check-config above enforces (docs/CONFIG.md).
check "peers.auth, peers.shard and peers.region_shards reach the role's internal listener (region_shards: in the region named)" "$(problems -r --slurpfile services "$work/services.json" "$jq_lib"'
  def matches($sel; $labels): $sel | to_entries | all(.value == $labels[.key]);
  . as $recs
  | .[] | select(.eff != null) | . as $w
  | ( (["auth", "shard"][] as $role | $w.eff.peers[$role] // [] | .[]
       | {role: $role, key: "peers.\($role)", entry: ., region: null, address: .}),
      ($w.eff.peers.region_shards // [] | .[]
       | {role: "shard", key: "peers.region_shards", entry: .,
          region: sub("=.*$"; ""), address: sub("^[^=]*="; "")}) )
  | . as $peer | $peer.role as $role | $peer.address as $address
  | "\($w.render) \($w.name): \($peer.key) \($peer.entry)" as $what
  | ($address | split(":")) as [$host, $port]
  | ($port | tonumber? // null) as $port
  | ($host | test("\\.svc(\\.cluster\\.local)?$")) as $qualified
  | ($host | sub("\\.svc(\\.cluster\\.local)?$"; "") | split(".")) as $parts
  | (if $qualified then $parts[-1] else $w.namespace end) as $ns
  | (if $qualified then $parts[:-1] else $parts end) as $names
  | (if ($names | length) == 2 then $names[1] else $names[0] end) as $svc
  | (if ($names | length) == 2 then $names[0] else null end) as $pod
  # The same render for a name in its own namespace, else the render of that namespace.
  | def here: select(.namespace == $ns and (.render == $w.render or $ns != $w.namespace));
    [$recs[] | here | select(.eff != null and (.eff.roles | index($role)))] as $all_runners
  # region_shards: only the workloads of the region the entry names count.
  | [$all_runners[] | select($peer.region == null or .eff.region == $peer.region)] as $runners
  | ([$services[0][] | here | select(.name == $svc)][0]) as $s
  | if ($names | length) > 2 or ($names | length) == 0 or $port == null then "\($what): cannot read host:port"
    elif ($all_runners | length) == 0 then "\($what): no workload in namespace \($ns) runs \($role)"
    elif ($runners | length) == 0 then
      "\($what): the \($role) workloads of namespace \($ns) are in region \([$all_runners[].eff.region] | unique), not \($peer.region)"
    elif $s == null then "\($what): no Service \($svc) in namespace \($ns)"
    elif ([$runners[] | select(.render == $s.render and matches($s.selector; .labels))] | length) == 0 then
      "\($what): Service \($svc) selects no workload running \($role)"
    elif $pod == null then
      (if ($s.ports | index($port)) == null then "\($what): port \($port) is not a port of Service \($svc) (\($s.ports))"
       else empty end)
    else
      # A pod name goes straight to the container: the port is the internal listener itself.
      ([$runners[] | select(.kind == "StatefulSet" and .serviceName == $svc)][0]) as $sts
      | if $sts == null or ($s.headless | not) then "\($what): \($svc) is not the headless Service of a StatefulSet running \($role)"
        elif ($sts | pods | index($pod)) == null then
          "\($what): \($pod) is not a pod of \($sts.name) (replicas \($sts.replicas))"
        elif $port != $sts.internal_port then
          "\($what): port \($port) is not the internal listener of \($sts.name) (\($sts.internal_port))"
        else empty end
    end
' "$work/records.json")"

check "peers.shard and router.shards list every shard pod of the region, and each pod's id is its name" "$(problems -r '
  . as $recs
  | .[] | . as $w
  | [$recs[] | select(.render == $w.render and .kind == "StatefulSet" and (.eff.roles | index("shard")))] as $sts_all
  | (if ($w.eff.roles | index("shard")) and $w.kind == "StatefulSet" and $w.replicas > 1
        and ([$w.container.env // [] | .[] | select(.name == "INFRACHAT_SHARD_ID") | .valueFrom.fieldRef.fieldPath][0] != "metadata.name")
     then "\($w.render) \($w.name): INFRACHAT_SHARD_ID is not the pod name, so its \($w.replicas) pods share one shard.id" else empty end),
    (select(($w.eff.roles | index("shard")) | not) | select(($w.eff.peers.shard | length) > 0)
     | if ($sts_all | length) != 1 then "\($w.render) \($w.name): \($sts_all | length) shard StatefulSets in its render" else
       $sts_all[0] as $sts
       | [range($sts.replicas) | "\($sts.name)-\(.)"] as $pods
       | ([$w.eff.peers.shard[] | split(":")[0] | split(".")[0]]) as $listed
       | (if ($listed | sort) != ($pods | sort) then
            "\($w.render) \($w.name): peers.shard lists \($listed); \($sts.name) has pods \($pods)" else empty end),
         (if ($w.eff.roles | index("router")) and ($w.eff.router.shards | sort) != ($pods | sort) then
            "\($w.render) \($w.name): router.shards is \($w.eff.router.shards); \($sts.name) has pods \($pods)" else empty end)
       end)
' "$work/records.json")"

# An edge: a process that reaches shards elsewhere (it runs a gateway, or lists peers.shard).
edge_def='def edge: .eff != null and (.eff.roles | index("shard") | not)
  and ((.eff.roles | index("gateway")) or ((.eff.peers.shard // []) | length) > 0);'

check "peers.shard has one entry per replica of its region's shard StatefulSet" "$(problems -r "$jq_lib$edge_def"'
  . as $recs
  | .[] | select(edge) | . as $w
  | [$recs[] | select(.render == $w.render and .kind == "StatefulSet" and .eff != null
                      and (.eff.roles | index("shard")))] as $sts
  | ($w.eff.peers.shard // []) as $listed
  | if ($sts | length) != 1 then "\($w.render) \($w.name): \($sts | length) shard StatefulSets in its render"
    elif ($listed | length) != $sts[0].replicas then
      "\($w.render) \($w.name): peers.shard has \($listed | length) entries; \($sts[0].name) has replicas \($sts[0].replicas)"
    elif ($listed | unique | length) != ($listed | length) then
      "\($w.render) \($w.name): peers.shard lists an address twice: \($listed)"
    else empty end
' "$work/records.json")"

# Edges read a region's live leases to place its channels and compare each lease's address
# (grpc.internal_advertise_address, with the pod's env) with their configured lists string for
# string (src/remote/routed_shard.cc): a lease address that differs from the listed name of the
# same shard is another shard to them. So every region's edges list exactly their own shard
# pods' lease addresses in peers.shard and every other region's in peers.region_shards.
check "edges list exactly the shards' lease addresses: their region's in peers.shard, every other region's in peers.region_shards" "$(problems -r "$jq_lib$edge_def"'
  def shard_sets: select(.kind == "StatefulSet" and .eff != null and (.eff.roles | index("shard")));
  def leases: [. as $sts | pods[] as $p | $sts | lease_address($p)];
  def diff($listed; $want): ($listed - $want) as $extra | ($want - $listed) as $missing
    | (if ($extra | length) > 0 then "lists \($extra), which no shard pod announces" else empty end),
      (if ($missing | length) > 0 then "lacks \($missing), announced by its shard pods" else empty end);
  . as $recs
  | .[] | select(edge) | . as $w
  | "\($w.render) \($w.name)" as $what
  | ([$recs[] | select(.render == $w.render) | shard_sets | leases[]]) as $own
  | (diff($w.eff.peers.shard // []; $own) | "\($what): peers.shard \(.)"),
    ( select($w.render | startswith("overlays/"))
      | ($w | regions)[] as $r | select($r != $w.eff.region)
      | [$recs[] | select((.render | startswith("overlays/")) and .eff.region == $r) | shard_sets] as $sts
      | if ($sts | length) == 0 then "\($what): region \($r) of cluster.regions has no shard StatefulSet in any overlay"
        else
          [$sts[] | leases[]] as $want
          | [$w.eff.peers.region_shards // [] | .[] | select(startswith("\($r)=")) | sub("^[^=]*="; "")] as $listed
          | diff($listed; $want) | "\($what): peers.region_shards for \($r) \(.)"
        end )
' "$work/records.json")"

# ---- Across regions -----------------------------------------------------------------------------

check "overlays: one region each, each with its own shard database Secret" "$(problems -r '
  [.[] | select((.render | startswith("overlays/")) and .eff != null)] as $o
  | ([$o[] | {render, region: .eff.region}] | unique | group_by(.region)[] | select(length > 1)
     | "region \(.[0].region) is used by \(map(.render))"),
    ([$o[] | select(.eff.roles | index("shard"))
      | {render, secret: ([.container.env[] | select(.name == "INFRACHAT_DATABASE_URL")][0].valueFrom.secretKeyRef.name)}]
     | unique | group_by(.secret)[] | select((map(.render) | unique | length) > 1)
     | "the shards of \(map(.render) | unique) share the database Secret \(.[0].secret)")
' "$work/records.json")"

check "overlays: auth is global (exactly one overlay runs it)" "$(problems -r '
  [.[] | select((.render | startswith("overlays/")) and (.eff.roles | index("auth"))) | .render] | unique
  | if length != 1 then "auth runs in \(length) overlays: \(.)" else empty end
' "$work/records.json")"

# Channels are homed by rendezvous hashing of their name over cluster.regions: every process of
# every region must hash over the same regions, those the overlays deploy, or two regions would
# disagree on where a channel lives.
check "overlays: every process sets the same cluster.regions, which are the overlays' regions" "$(problems -r "$jq_lib"'
  [.[] | select(.render | startswith("overlays/"))] as $o
  | ([$o[] | .render | sub("^overlays/"; "")] | unique) as $overlay_regions
  | $o[] | select(.eff != null) | "\(.render) \(.name)" as $what
  | (if (.eff.cluster.regions | length) == 0 then
       "\($what): does not set cluster.regions (default: its own region only, \(regions))"
     elif (.eff.cluster.regions | unique) != $overlay_regions then
       "\($what): cluster.regions is \(.eff.cluster.regions); the overlays are regions \($overlay_regions)"
     elif (.eff.cluster.regions | unique | length) != (.eff.cluster.regions | length) then
       "\($what): cluster.regions names a region twice: \(.eff.cluster.regions)"
     else empty end)
' "$work/records.json")"

check "overlays: every edge points peers.auth at the one global auth Service" "$(problems -r "$jq_lib$edge_def"'
  [.[] | select((.render | startswith("overlays/")) and edge)] as $edges
  | ([$edges[] | .eff.peers.auth // []] | unique) as $lists
  | if ($lists | length) > 1 then
      "the edges do not agree on peers.auth: \([$edges[] | "\(.render) \(.name): \(.eff.peers.auth)"])"
    else empty end
' "$work/records.json")"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
