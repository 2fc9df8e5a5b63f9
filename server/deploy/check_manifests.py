"""Checks of the rendered manifests that Kubernetes' schemas cannot make (server/deploy/validate.sh).

Usage: check_manifests.py DIR, where DIR holds cpu.yaml, cuda.yaml, cuda-keda.yaml and
geneval.yaml from `kubectl kustomize`. Custom resources (PodMonitor, KEDA's ScaledObject) are
checked by hand here: their required fields, and that they point at what exists.
"""
import sys

import yaml

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return found[0] if len(found) == 1 else None


def env_of(container, docs):
    env = {e["name"]: e for e in container.get("env", [])}
    for ref in container.get("envFrom", []):
        cm = one(docs, "ConfigMap", ref["configMapRef"]["name"])
        for k, v in (cm or {}).get("data", {}).items():
            env.setdefault(k, {"name": k, "value": v})
    return env


def serving(name, docs, gpu):
    where = f"{name}.yaml"
    dep = one(docs, "Deployment", "janus")
    check(dep is not None, f"{where}: one Deployment janus")
    if dep is None:
        return
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    c = spec["containers"][0]
    labels = pod["metadata"]["labels"]
    env = env_of(c, docs)
    port_names = {p["name"] for p in c.get("ports", [])}

    def probe(kind, path):
        p = c.get(kind)
        check(p and p["httpGet"]["path"] == path and p["httpGet"]["port"] in port_names,
              f"{where}: {kind} on {path}")
        return p or {}

    startup = probe("startupProbe", "/ready")
    probe("readinessProbe", "/ready")
    probe("livenessProbe", "/health")
    check(startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) >= 600,
          f"{where}: the startupProbe allows at least 10 minutes for the model to load")
    grace = int(env.get("JANUS_SHUTDOWN_GRACE_SECS", {}).get("value", 30))
    pre = c.get("lifecycle", {}).get("preStop", {})
    pre_s = pre.get("sleep", {}).get("seconds", 0)
    check(pre_s > 0, f"{where}: a preStop pause")
    check(spec.get("terminationGracePeriodSeconds", 30) > pre_s + grace,
          f"{where}: terminationGracePeriodSeconds > preStop {pre_s} + JANUS_SHUTDOWN_GRACE_SECS {grace}")
    key = env.get("JANUS_API_KEY", {}).get("valueFrom", {}).get("secretKeyRef")
    check(key and one(docs, "Secret", key["name"]) is not None, f"{where}: JANUS_API_KEY from a Secret in the set")
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    cache = [n for n, p in mounts.items() if p == env.get("HF_HOME", {}).get("value")]
    check(cache and "persistentVolumeClaim" in vols[cache[0]]
          and one(docs, "PersistentVolumeClaim", vols[cache[0]]["persistentVolumeClaim"]["claimName"]),
          f"{where}: HF_HOME on a PersistentVolumeClaim of the set")
    check(spec.get("securityContext", {}).get("runAsNonRoot") is True, f"{where}: runs as non-root")
    gpus = c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
    check((gpus == 1) if gpu else gpus is None, f"{where}: nvidia.com/gpu {'1' if gpu else 'absent'} (got {gpus})")

    def selects(selector):
        return all(labels.get(k) == v for k, v in selector.items())

    svc = one(docs, "Service", "janus")
    check(svc and selects(svc["spec"]["selector"]) and
          all(p["targetPort"] in port_names for p in svc["spec"]["ports"]), f"{where}: the Service selects the pods")
    pdb = one(docs, "PodDisruptionBudget", "janus")
    check(pdb and selects(pdb["spec"]["selector"]["matchLabels"]), f"{where}: the PodDisruptionBudget selects the pods")
    pm = one(docs, "PodMonitor", "janus")
    check(pm and pm["apiVersion"] == "monitoring.coreos.com/v1" and selects(pm["spec"]["selector"]["matchLabels"])
          and all(e["port"] in port_names and e["path"] == "/metrics" for e in pm["spec"]["podMetricsEndpoints"]),
          f"{where}: the PodMonitor scrapes /metrics of the pods")
    hpa = one(docs, "HorizontalPodAutoscaler", "janus")
    so = one(docs, "ScaledObject", "janus")
    check((hpa is None) != (so is None), f"{where}: exactly one autoscaler (HPA or KEDA ScaledObject)")
    if hpa:
        m = hpa["spec"]["metrics"][0]
        check(hpa["spec"]["scaleTargetRef"]["name"] == "janus" and m["type"] == "Pods"
              and m["pods"]["metric"]["name"] == "janus_queue_depth", f"{where}: the HPA scales on janus_queue_depth")
        check(one(docs, "ConfigMap", "janus-prometheus-adapter-rules") is not None,
              f"{where}: the Prometheus Adapter rule ships with the HPA")
    if so:
        t = so["spec"]["triggers"][0]
        check(so["apiVersion"] == "keda.sh/v1alpha1" and so["spec"]["scaleTargetRef"]["name"] == "janus"
              and t["type"] == "prometheus" and "janus_queue_depth" in t["metadata"]["query"]
              and float(t["metadata"]["threshold"]) > 0 and t["metadata"]["serverAddress"].startswith("http"),
              f"{where}: the ScaledObject scales the Deployment on janus_queue_depth")


def geneval(docs):
    job = one(docs, "Job")
    check(job is not None, "geneval.yaml: one Job")
    if job is None:
        return
    s = job["spec"]
    c = s["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    check(s.get("completionMode") == "Indexed", "geneval.yaml: an Indexed Job")
    check(str(s.get("completions")) == env.get("JANUS_EVAL_SHARDS"), "geneval.yaml: completions == JANUS_EVAL_SHARDS")
    check(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu") == 1, "geneval.yaml: one GPU per shard")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    out = env.get("JANUS_EVAL_OUT", "")
    vol = next((n for p, n in mounts.items() if out.startswith(p + "/")), None)
    vols = {v["name"]: v for v in s["template"]["spec"]["volumes"]}
    pvc = vol and vols[vol].get("persistentVolumeClaim", {}).get("claimName")
    claim = one(docs, "PersistentVolumeClaim", pvc) if pvc else None
    check(claim is not None and "ReadWriteMany" in claim["spec"]["accessModes"],
          "geneval.yaml: JANUS_EVAL_OUT on a shared (ReadWriteMany) volume")


d = sys.argv[1]
serving("cpu", load(f"{d}/cpu.yaml"), gpu=False)
serving("cuda", load(f"{d}/cuda.yaml"), gpu=True)
serving("cuda-keda", load(f"{d}/cuda-keda.yaml"), gpu=True)
geneval(load(f"{d}/geneval.yaml"))
if failures:
    print("manifest checks failed:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("manifest checks passed (cpu, cuda, cuda-keda, geneval)")
