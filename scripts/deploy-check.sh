#!/usr/bin/env bash
# Validate Heimdall's deployment descriptions offline:
#   compose.yaml, deploy/ (NATS and collector settings), and every
#   kustomization under k8s/ (base and overlays), rendered and checked.
#
# Tools come from .tools/ (scripts/install-validators.sh); nothing is
# downloaded here. Each check prints PASS or FAIL with the tool's own words on
# failure; the last line says `deploy-check: N passed, M failed` and the exit
# status is non-zero when anything failed.
#
# Environment:
#   HEIMDALL_K8S_VERSIONS   Kubernetes versions to validate against
#                           (default "1.29.0 1.37.0": oldest supported, newest known)
#   HEIMDALL_EXTERNAL_SECRETS  Secrets a render may reference without defining
#                           (default "postgres-credentials enigma-api-key asgard-enrollment asgard-anon-key", provided per cluster)
#   VERBOSE=1               show every tool's output, not only on failure
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.tools/venv/bin"
BIN="$ROOT/.tools/bin"
K8S_VERSIONS="${HEIMDALL_K8S_VERSIONS:-1.29.0 1.37.0}"
export HEIMDALL_EXTERNAL_SECRETS="${HEIMDALL_EXTERNAL_SECRETS:-postgres-credentials enigma-api-key asgard-enrollment asgard-anon-key}"
cd "$ROOT"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
skipped=0

# check NAME COMMAND...: run COMMAND, record PASS/FAIL, show output on failure.
check() {
    local name="$1"
    shift
    local out="$WORK/out.txt"
    if "$@" >"$out" 2>&1; then
        passed=$((passed + 1))
        printf 'PASS  %s\n' "$name"
        [ "${VERBOSE:-0}" = 1 ] && sed 's/^/      /' "$out"
    else
        failed=$((failed + 1))
        printf 'FAIL  %s\n' "$name"
        sed 's/^/      /' "$out"
    fi
    return 0
}
skip() {
    skipped=$((skipped + 1))
    printf 'SKIP  %s (%s)\n' "$1" "$2"
}

# --- tools -----------------------------------------------------------------------
missing=""
for t in check-jsonschema kubernetes-validate kubectl nats-server yamllint python; do
    [ -x "$VENV/$t" ] || missing="$missing $t"
done
if [ -n "$missing" ]; then
    echo "deploy-check: missing in .tools/venv:$missing"
    echo "deploy-check: run scripts/install-validators.sh (make setup) first"
    echo "deploy-check: 0 passed, 1 failed"
    exit 1
fi
PY="$VENV/python"

# Docker Compose: ours, else the host's plugin, else none (non-x86_64 without
# Docker; the schema check below still runs).
COMPOSE=()
if [ -x "$BIN/docker-compose" ]; then
    COMPOSE=("$BIN/docker-compose")
elif docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
fi

echo "deploy-check: validating deployment descriptions in $ROOT"
echo "  tools: $("$VENV/check-jsonschema" --version | head -1);" \
    "kubernetes-validate $("$VENV/kubernetes-validate" --version 2>&1);" \
    "kubectl $("$VENV/kubectl" version --client 2>/dev/null | awk '/Client/{print $3}')" \
    "(kustomize $("$VENV/kubectl" version --client 2>/dev/null | awk '/Kustomize/{print $3}'));" \
    "$("$VENV/nats-server" --version);" \
    "$("$VENV/yamllint" --version);" \
    "${COMPOSE[*]:+$("${COMPOSE[@]}" version 2>/dev/null)}"
echo

# --- YAML lint -----------------------------------------------------------------
echo "== YAML"
yaml_files=(compose.yaml .yamllint.yaml)
while IFS= read -r f; do yaml_files+=("$f"); done < <(find deploy k8s -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
check "yamllint (${#yaml_files[@]} files, .yamllint.yaml)" \
    "$VENV/yamllint" --no-warnings -c .yamllint.yaml "${yaml_files[@]}"

# compose_rules FILE: Heimdall's own rules on the effective compose model.
compose_rules() {
    # Every profile, so services that only run on request are checked too.
    "${COMPOSE[@]}" --project-directory "$ROOT" -f "$1" --profile '*' config --format json >"$WORK/compose.json" || return 1
    "$PY" - "$WORK/compose.json" <<'PY'
import json, os, sys
cfg = json.load(open(sys.argv[1]))
problems = []
# The only services allowed to add capabilities, and which ones. capture
# needs SETUID/SETGID once, to switch to its user after opening the capture
# handle; they are gone from every set after that.
cap_allow = {"postgres": {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"},
             "capture": {"NET_RAW", "NET_ADMIN", "SETUID", "SETGID"}}
services = cfg.get("services", {})
for name, svc in sorted(services.items()):
    image = svc.get("image", "")
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    if not tag or tag == "latest":
        problems.append(f"{name}: image {image!r} needs an explicit version tag")
    for p in svc.get("ports", []):
        if p.get("host_ip") not in ("127.0.0.1", "::1"):
            problems.append(f"{name}: published port {p.get('published')} is not bound to 127.0.0.1")
    if svc.get("read_only") is not True:
        problems.append(f"{name}: read_only is not true")
    if "ALL" not in (svc.get("cap_drop") or []):
        problems.append(f"{name}: cap_drop does not contain ALL")
    extra = set(svc.get("cap_add") or []) - cap_allow.get(name, set())
    if extra:
        problems.append(f"{name}: cap_add {sorted(extra)} not allowed for this service")
    if not any(o.replace(" ", "") in ("no-new-privileges:true", "no-new-privileges")
               for o in svc.get("security_opt") or []):
        problems.append(f"{name}: security_opt lacks no-new-privileges:true")
    if svc.get("privileged"):
        problems.append(f"{name}: privileged")
    if svc.get("network_mode") == "host" and name != "capture":
        problems.append(f"{name}: only capture may use the host network")
probe = services.get("x-heimdall-service-probe")
if probe is not None:
    deps = probe.get("depends_on", {})
    for d in ("nats", "postgres"):
        if deps.get(d, {}).get("condition") != "service_healthy":
            problems.append(f"x-heimdall-service: depends_on {d} is not service_healthy")
    if "/readyz" not in " ".join(probe.get("healthcheck", {}).get("test", [])):
        problems.append("x-heimdall-service: healthcheck does not probe /readyz")
for name, sec in sorted(cfg.get("secrets", {}).items()):
    f = sec.get("file")
    if f and not os.access(f, os.R_OK):
        problems.append(f"secret {name}: file {f} is missing or unreadable")
for p in problems:
    print(p)
print(f"{len(services)} services checked, {len(problems)} problems")
sys.exit(1 if problems else 0)
PY
}

# --- compose -------------------------------------------------------------------
echo "== compose.yaml"
# The shared x-heimdall-service block is not a service until a Heimdall
# service uses it; check it as one by adding a probe service built from it.
"$PY" - compose.yaml "$WORK/compose-probe.yaml" <<'PY'
import copy, sys, yaml
src, dst = sys.argv[1], sys.argv[2]
doc = yaml.safe_load(open(src))
probe = copy.deepcopy(doc["x-heimdall-service"])
probe["image"] = "heimdall/deploy-check-probe:0"
doc["services"]["x-heimdall-service-probe"] = probe
yaml.safe_dump(doc, open(dst, "w"), sort_keys=False)
PY
if [ "${#COMPOSE[@]}" -gt 0 ]; then
    check "docker compose config: compose.yaml" \
        "${COMPOSE[@]}" --project-directory "$ROOT" -f compose.yaml config --quiet
    check "docker compose config: x-heimdall-service as a service" \
        "${COMPOSE[@]}" --project-directory "$ROOT" -f "$WORK/compose-probe.yaml" config --quiet
    check "compose rules (127.0.0.1 ports, read-only, cap_drop ALL, no-new-privileges, pinned images, secret files)" \
        compose_rules "$WORK/compose-probe.yaml"
else
    skip "docker compose config" "no docker compose for $(uname -m); install Docker's compose plugin"
fi
check "compose-spec JSON schema (check-jsonschema vendor.compose-spec): compose.yaml" \
    "$VENV/check-jsonschema" --builtin-schema vendor.compose-spec compose.yaml
check "compose-spec JSON schema: x-heimdall-service as a service" \
    "$VENV/check-jsonschema" --builtin-schema vendor.compose-spec "$WORK/compose-probe.yaml"

# --- deploy/ settings shared by compose and k8s ------------------------------------
echo "== NATS and collector settings"
check "nats-server -t: deploy/nats/nats.conf" \
    env NATS_SERVER_NAME=deploy-check "$VENV/nats-server" -t -c deploy/nats/nats.conf
check "k8s/base/nats/nats.conf is identical to deploy/nats/nats.conf" \
    cmp deploy/nats/nats.conf k8s/base/nats/nats.conf
check "k8s/base/otel-collector/config.yaml is identical to deploy/otel-collector.yaml" \
    cmp deploy/otel-collector.yaml k8s/base/otel-collector/config.yaml

# --- Kubernetes ----------------------------------------------------------------
# kubernetes-validate exits 0 on a resource it has no schema for (an unknown
# or removed apiVersion, a typo in kind) and only warns; treat that as failure.
validate_k8s() {
    local file="$1" version="$2" log
    log="$("$VENV/kubernetes-validate" --strict --quiet -k "$version" "$file" 2>&1)"
    local rc=$?
    [ -n "$log" ] && printf '%s\n' "$log"
    [ "$rc" -eq 0 ] && ! grep -qE '^(WARN|ERROR)' <<<"$log"
}

k8s_rules() {
    "$PY" - "$1" <<'PY'
import os, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
external_secrets = set(os.environ.get("HEIMDALL_EXTERNAL_SECRETS", "").split())
problems = []
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

def pod_spec(d):
    k = d["kind"]
    if k in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return d["spec"]["template"]
    if k == "CronJob":
        return d["spec"]["jobTemplate"]["spec"]["template"]
    return None

templates = []
for d in docs:
    tpl = pod_spec(d)
    if tpl is None:
        continue
    where = f'{d["kind"]}/{d["metadata"]["name"]}'
    labels = tpl.get("metadata", {}).get("labels", {})
    notes = tpl.get("metadata", {}).get("annotations", {})
    spec = tpl["spec"]
    templates.append((d.get("metadata", {}).get("namespace"), labels))
    capture = labels.get("app.kubernetes.io/name") == "capture"
    psc = spec.get("securityContext", {})
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{where}: automountServiceAccountToken is not false")
    if spec.get("hostNetwork") and not capture:
        problems.append(f"{where}: only capture may use hostNetwork")
    for h in ("hostPID", "hostIPC"):
        if spec.get(h):
            problems.append(f"{where}: {h} is set")
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        cw = f'{where} container {c["name"]}'
        sc = c.get("securityContext", {})
        image = c.get("image", "")
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if not tag or tag == "latest":
            problems.append(f"{cw}: image {image!r} needs an explicit version tag")
        res = c.get("resources", {})
        for need in ("requests.cpu", "requests.memory", "limits.memory"):
            a, b = need.split(".")
            if b not in res.get(a, {}):
                problems.append(f"{cw}: resources.{need} missing")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp != "RuntimeDefault":
            problems.append(f"{cw}: seccompProfile is not RuntimeDefault")
        if not capture and sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            problems.append(f"{cw}: runAsNonRoot is not true")
        if sc.get("privileged"):
            problems.append(f"{cw}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cw}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{cw}: capabilities.drop lacks ALL")
        # capture: SETUID/SETGID only to switch to its user once the capture
        # handle is open (docs/decisions.md, 18).
        extra = set(caps.get("add", [])) - ({"NET_RAW", "NET_ADMIN", "SETUID", "SETGID"} if capture else set())
        if extra:
            problems.append(f"{cw}: capabilities.add {sorted(extra)} not allowed")
        if sc.get("readOnlyRootFilesystem") is not True and "heimdall.io/writable-root-fs" not in notes:
            problems.append(f"{cw}: readOnlyRootFilesystem is not true "
                            "(or annotate the pod heimdall.io/writable-root-fs: <reason>)")
    for v in spec.get("volumes", []):
        if "configMap" in v and v["configMap"]["name"] not in by_kind.get("ConfigMap", {}):
            problems.append(f'{where}: ConfigMap {v["configMap"]["name"]} is not in the render')
        if "secret" in v:
            n = v["secret"]["secretName"]
            if n not in by_kind.get("Secret", {}) and n not in external_secrets:
                problems.append(f"{where}: Secret {n} is neither in the render nor in HEIMDALL_EXTERNAL_SECRETS")
    for c in spec.get("containers", []):
        for ef in c.get("envFrom", []):
            ref = ef.get("configMapRef")
            if ref and ref["name"] not in by_kind.get("ConfigMap", {}):
                problems.append(f'{where}: envFrom ConfigMap {ref["name"]} is not in the render')

# Every Service selects at least one pod template.
for name, svc in by_kind.get("Service", {}).items():
    sel = svc["spec"].get("selector")
    if sel and not any(all(l.get(k) == v for k, v in sel.items()) for _, l in templates):
        problems.append(f"Service/{name}: selector {sel} matches no pod template")
# StatefulSets name an existing governing Service.
for name, sts in by_kind.get("StatefulSet", {}).items():
    if sts["spec"].get("serviceName") not in by_kind.get("Service", {}):
        problems.append(f"StatefulSet/{name}: serviceName {sts['spec'].get('serviceName')} is not in the render")
# Workload namespaces deny ingress by default.
deny = {np.get("metadata", {}).get("namespace") for np in by_kind.get("NetworkPolicy", {}).values()
        if np["spec"].get("podSelector") == {} and "Ingress" in np["spec"].get("policyTypes", [])
        and not np["spec"].get("ingress")}
for ns in {ns for ns, _ in templates}:
    if ns not in deny:
        problems.append(f"namespace {ns}: no default-deny ingress NetworkPolicy")
for p in problems:
    print(p)
print(f"{len(docs)} objects, {len(templates)} pod templates checked, {len(problems)} problems")
sys.exit(1 if problems else 0)
PY
}

echo "== Kubernetes"
n=0
while IFS= read -r kfile; do
    dir="$(dirname "$kfile")"
    n=$((n + 1))
    out="$WORK/render-$n.yaml"
    if "$VENV/kubectl" kustomize "$dir" >"$out" 2>"$WORK/render.err"; then
        passed=$((passed + 1))
        printf 'PASS  kubectl kustomize %s (%s objects)\n' "$dir" "$(grep -c '^kind:' "$out")"
        for v in $K8S_VERSIONS; do
            check "kubernetes-validate --strict -k $v: $dir" validate_k8s "$out" "$v"
        done
        check "k8s rules (securityContext, resources, references, default-deny): $dir" k8s_rules "$out"
    else
        failed=$((failed + 1))
        printf 'FAIL  kubectl kustomize %s\n' "$dir"
        sed 's/^/      /' "$WORK/render.err"
    fi
done < <(find k8s -name kustomization.yaml -o -name kustomization.yml -o -name Kustomization | sort)
if [ "$n" -eq 0 ]; then
    failed=$((failed + 1))
    echo "FAIL  no kustomization found under k8s/"
fi

echo
if [ "$failed" -eq 0 ]; then
    echo "deploy-check: PASS"
else
    echo "deploy-check: FAIL"
fi
[ "$skipped" -gt 0 ] && echo "deploy-check: $skipped check(s) skipped"
echo "deploy-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
