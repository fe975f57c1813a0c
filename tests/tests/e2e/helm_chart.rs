//! The Helm chart in `helm/absa`, checked by the real helm without a cluster.
//!
//! `helm lint --strict` and `helm template` (from `scripts/chart-tools.sh`, named by
//! `ABSA_HELM`) render the chart against `values.yaml` and against overrides that turn on
//! KEDA, the ServiceMonitor, existing Secrets, volumes and a distributed run; helm itself
//! validates the values against `values.schema.json`. Every render then passes
//! `kubernetes-validate --strict` (Kubernetes 1.37's OpenAPI schemas, `ABSA_KUBERNETES_VALIDATE`)
//! and the checks here: references between objects (Secrets, ConfigMaps, volumes, ports,
//! scale targets, selectors), the probes, the migrations hook, the trainer's GPU, the TOML
//! the binaries read, the Grafana dashboard against the metrics `absa-api` exports, the
//! schema's defaults against `values.yaml`, and the Dockerfiles against `scripts/native.sh`.
//! What this cannot check (the API server's admission, image builds) is listed in
//! `helm/README.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value as J;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn chart_dir() -> PathBuf {
    repo().join("helm/absa")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------
// Rendering the chart

struct Manifest {
    /// The template file that printed it (`# Source:` in helm's output).
    template: String,
    obj: J,
}

struct Rendered {
    manifests: Vec<Manifest>,
    /// The release's values: `values.yaml` with the overrides merged as helm merges them.
    values: J,
    /// All of helm's output, as `kubernetes-validate` reads it.
    output: String,
    /// The values file it was rendered with, for messages.
    overrides: String,
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&J> {
        self.manifests.iter().filter(|m| m.obj["kind"] == kind).map(|m| &m.obj).collect()
    }

    fn find(&self, kind: &str, name: &str) -> Option<&J> {
        self.manifests.iter().map(|m| &m.obj).find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    fn get(&self, kind: &str, name: &str) -> &J {
        self.find(kind, name).unwrap_or_else(|| panic!("no {kind} {name} rendered; have {:?}", self.names()))
    }

    fn names(&self) -> Vec<String> {
        self.manifests.iter().map(|m| format!("{}/{}", m.obj["kind"].as_str().unwrap_or("?"), m.obj["metadata"]["name"].as_str().unwrap_or("?"))).collect()
    }

    fn value(&self, path: &str) -> &J {
        path.split('.').fold(&self.values, |v, k| v.get(k).unwrap_or(&J::Null))
    }

    fn value_str(&self, path: &str) -> String {
        self.value(path).as_str().unwrap_or_else(|| panic!("{path} is {}, not a string", self.value(path))).to_owned()
    }

    fn value_num(&self, path: &str) -> f64 {
        self.value(path).as_f64().unwrap_or_else(|| panic!("{path} is {}, not a number", self.value(path)))
    }
}

const RELEASE: &str = "prod";
const NAMESPACE: &str = "absa";

fn template_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("templates")).expect("templates folder").map(|e| e.expect("entry").path()).collect();
    files.sort();
    files
}

/// A tool `scripts/chart-tools.sh` installs, named by its environment variable.
fn tool(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(path) if Path::new(&path).is_file() => PathBuf::from(path),
        _ => panic!("{var} does not name a file: run the tests through scripts/test.sh, or `eval \"$(bash scripts/chart-tools.sh)\"` first"),
    }
}

/// Runs the real helm with `stdin` as its standard input; stdout, or stderr as the error.
fn helm(args: &[&str], stdin: &str) -> Result<String, String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(tool("ABSA_HELM"))
        .args(args)
        // No cluster is asked anything: a kube config that does not exist makes sure of it.
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("helm starts");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write helm's stdin");
    let out = child.wait_with_output().expect("helm runs");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("helm prints UTF-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Helm's coalescing of a values file over the chart's values: maps merge key by key,
/// anything else replaces, and null deletes the key.
fn merge_values(base: &mut J, overrides: &J) {
    match (base, overrides) {
        (J::Object(b), J::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(k);
                } else if let Some(slot) = b.get_mut(k).filter(|slot| slot.is_object() && v.is_object()) {
                    merge_values(slot, v);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// `helm template prod helm/absa --namespace absa -f -` with `overrides` as the values file.
fn render(overrides: &str) -> Result<Rendered, String> {
    let chart = chart_dir();
    let output = helm(&["template", RELEASE, chart.to_str().expect("chart path"), "--namespace", NAMESPACE, "-f", "-"], overrides)?;
    let mut values = values_json();
    if !overrides.trim().is_empty() {
        merge_values(&mut values, &serde_norway::from_str(overrides).map_err(|e| format!("overrides: {e}"))?);
    }
    let mut manifests = Vec::new();
    for doc in output.split("\n---\n") {
        let Some(source) = doc.lines().find_map(|l| l.strip_prefix("# Source: absa/templates/")) else { continue };
        let obj: J = serde_norway::from_str(doc).map_err(|e| format!("{source}: {e}\n{doc}"))?;
        if !obj.is_object() {
            return Err(format!("{source}: a document that is not an object:\n{doc}"));
        }
        manifests.push(Manifest { template: source.to_owned(), obj });
    }
    Ok(Rendered { manifests, values, output, overrides: overrides.to_owned() })
}

/// The release notes helm prints after an install (NOTES.txt), from a client-side dry run.
fn notes(overrides: &str) -> String {
    let chart = chart_dir();
    let args = ["install", RELEASE, chart.to_str().expect("chart path"), "--namespace", NAMESPACE, "--dry-run=client", "-o", "json", "-f", "-"];
    let out = helm(&args, overrides).unwrap_or_else(|e| panic!("helm install --dry-run: {e}"));
    let release: J = serde_json::from_str(&out).expect("helm's release JSON");
    release["info"]["notes"].as_str().expect("info.notes").to_owned()
}

/// `kubernetes-validate --strict` over a render: every object against the OpenAPI schema
/// of its kind in Kubernetes 1.37 (unknown fields refused). Custom resources (KEDA,
/// the Prometheus operator) have no schema there: only those may be skipped.
fn validate_with_kubernetes_schemas(r: &Rendered) {
    static RENDERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RENDERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!("absa-helm-{}-{n}.yaml", std::process::id()));
    let what = format!("render {n} (values: {})", r.overrides.trim());
    std::fs::write(&file, &r.output).expect("write the render");
    let out = std::process::Command::new(tool("ABSA_KUBERNETES_VALIDATE")).arg("--strict").arg(&file).output().expect("kubernetes-validate runs");
    let _ = std::fs::remove_file(&file);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what}: kubernetes-validate failed:\n{text}");
    let passed = text.lines().filter(|l| l.starts_with("INFO") && l.contains(" passed for resource ")).count();
    let skipped: Vec<&str> = text.lines().filter(|l| l.contains("Couldn't find schema for kind")).collect();
    for line in &skipped {
        assert!(["keda.sh/", "monitoring.coreos.com/"].iter().any(|g| line.contains(g)), "{what}: {line}");
    }
    assert_eq!(passed + skipped.len(), r.manifests.len(), "{what}: every object validated or a known custom resource:\n{text}");
}

/// A render that must succeed; every one is also checked against Kubernetes' schemas.
fn render_ok(overrides: &str) -> Rendered {
    let r = render(overrides).unwrap_or_else(|e| panic!("render failed: {e}"));
    validate_with_kubernetes_schemas(&r);
    r
}

/// Everything turned on: KEDA instead of the HPA, the ServiceMonitor, existing Secrets,
/// an artifacts volume, a models claim, overrides of names and images, the ingress and
/// the NetworkPolicies.
const ALL_ON: &str = r#"
fullnameOverride: absa
image: {registry: "", tag: "1.2.3"}
imagePullSecrets: [{name: regcred}]
podAnnotations: {team: nlp}
serviceAccount: {create: false, name: absa-runner}
database: {existingSecret: pg-credentials, secretKey: uri}
amqp: {existingSecret: mq-credentials, secretKey: uri}
config:
  worker: {artifacts_dir: /var/lib/absa/artifacts}
  onnx: {intra_threads: 4}
  amqp: {prefix: absa-prod}
persistence: {artifacts: {existingClaim: absa-artifacts}}
api: {extraEnv: [{name: RUST_BACKTRACE, value: "1"}], nodeSelector: {pool: web}}
scorer:
  keda: {enabled: true, cpuUtilization: 0}
  tolerations: [{key: spot, operator: Exists}]
trainer:
  image: {tag: "1.2.3-cuda"}
  models: {existingClaim: base-models}
metrics: {key: {existingSecret: scrape-key}, serviceMonitor: {enabled: true, labels: {release: kube-prometheus-stack}}}
grafana: {dashboard: {labels: {team: nlp}, annotations: {grafana_folder: ABSA}}}
ingress: {enabled: true, host: absa.example.org, tlsSecret: absa-tls, className: nginx}
networkPolicy: {enabled: true}
"#;

// ---------------------------------------------------------------------------------
// Generic checks on every rendered manifest

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_dns_label(s: &str) -> bool {
    is_dns_subdomain(s) && s.len() <= 63 && !s.contains('.')
}

fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn string_map(v: &J, what: &str) -> BTreeMap<String, String> {
    match v {
        J::Null => BTreeMap::new(),
        J::Object(m) => m
            .iter()
            .map(|(k, x)| (k.clone(), x.as_str().unwrap_or_else(|| panic!("{what}: {k} is {x}, not a string (Kubernetes wants strings)")).to_owned()))
            .collect(),
        other => panic!("{what} is {other}, not a map"),
    }
}

fn subset(small: &BTreeMap<String, String>, big: &BTreeMap<String, String>) -> bool {
    small.iter().all(|(k, v)| big.get(k) == Some(v))
}

fn hook_events(o: &J) -> Option<&str> {
    o["metadata"]["annotations"]["helm.sh/hook"].as_str()
}

fn hook_weight(o: &J) -> i64 {
    o["metadata"]["annotations"]["helm.sh/hook-weight"].as_str().map_or(0, |w| w.parse().expect("hook weight is an integer string"))
}

/// Scalars that YAML 1.1 (what Kubernetes parses) reads as booleans.
fn yaml11_trap(s: &str) -> bool {
    ["y", "yes", "n", "no", "on", "off"].contains(&s.to_ascii_lowercase().as_str())
}

fn walk_strings<'a>(v: &'a J, out: &mut Vec<&'a str>) {
    match v {
        J::String(s) => out.push(s),
        J::Array(a) => a.iter().for_each(|x| walk_strings(x, out)),
        J::Object(m) => {
            for (k, x) in m {
                out.push(k);
                walk_strings(x, out);
            }
        }
        _ => {}
    }
}

const KINDS: &[(&str, &str)] = &[
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("apps/v1", "Deployment"),
    ("batch/v1", "Job"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "Ingress"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
];

fn check_common(r: &Rendered) {
    let mut seen = BTreeSet::new();
    for m in &r.manifests {
        let o = &m.obj;
        let what = format!("{} ({})", o["metadata"]["name"], m.template);
        let api_version = o["apiVersion"].as_str().unwrap_or_else(|| panic!("{what}: no apiVersion"));
        let kind = o["kind"].as_str().unwrap_or_else(|| panic!("{what}: no kind"));
        assert!(KINDS.contains(&(api_version, kind)), "{what}: unexpected {api_version} {kind}");
        let name = o["metadata"]["name"].as_str().unwrap_or_else(|| panic!("{what}: no metadata.name"));
        assert!(is_dns_subdomain(name), "{what}: name {name:?} is not a DNS subdomain");
        if kind == "Service" {
            assert!(is_dns_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase()), "{what}: a Service name must be a DNS-1035 label");
        }
        assert!(o["metadata"].get("namespace").is_none(), "{what}: namespace is left to helm");
        assert!(seen.insert((kind.to_owned(), name.to_owned())), "{what}: two {kind} objects named {name}");
        let labels = string_map(&o["metadata"]["labels"], &format!("{what} labels"));
        for (k, v) in &labels {
            assert!(is_label_value(v), "{what}: label {k}={v:?} is not a valid label value");
        }
        assert_eq!(labels.get("app.kubernetes.io/instance").map(String::as_str), Some(RELEASE), "{what}: instance label");
        assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("Helm"), "{what}: managed-by label");
        string_map(&o["metadata"]["annotations"], &format!("{what} annotations"));
        let mut strings = Vec::new();
        walk_strings(o, &mut strings);
        for s in strings {
            assert!(!yaml11_trap(s), "{what}: {s:?} would be a boolean for Kubernetes' YAML 1.1 parser if written plain");
        }
        if kind == "Secret" {
            for (k, v) in o["data"].as_object().unwrap_or_else(|| panic!("{what}: Secret without data")) {
                let v = v.as_str().unwrap_or_else(|| panic!("{what}: data.{k} is not a string"));
                assert!(v.len() % 4 == 0 && v.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c)), "{what}: data.{k} is not base64");
            }
        }
        if kind == "ConfigMap" {
            string_map(&o["data"], &format!("{what} data"));
        }
        if let Some(events) = hook_events(o) {
            assert_eq!(events, "pre-install,pre-upgrade", "{what}: the only hooks are the migrations'");
            let policy = o["metadata"]["annotations"]["helm.sh/hook-delete-policy"].as_str().unwrap_or_else(|| panic!("{what}: hook without a delete policy"));
            assert!(policy.split(',').any(|p| p == "before-hook-creation"), "{what}: a re-run hook must replace its leftovers");
        }
    }
}

/// The pod spec of a Deployment or Job.
fn pod_spec(o: &J) -> &J {
    &o["spec"]["template"]["spec"]
}

fn container<'a>(o: &'a J, name: &str) -> &'a J {
    pod_spec(o)["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {}", o["metadata"]["name"]))
}

fn env_value<'a>(c: &'a J, name: &str) -> Option<&'a J> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name)
}

/// Every referenced Secret, ConfigMap, volume, port and service account exists, env
/// values are strings, the root filesystem is read-only and what is written is a volume.
fn check_pods(r: &Rendered) {
    let existing_secrets: BTreeSet<String> =
        ["database.existingSecret", "amqp.existingSecret", "metrics.key.existingSecret"].iter().map(|p| r.value_str(p)).filter(|s| !s.is_empty()).collect();
    for m in &r.manifests {
        let o = &m.obj;
        let kind = o["kind"].as_str().expect("kind");
        if kind != "Deployment" && kind != "Job" {
            continue;
        }
        let name = o["metadata"]["name"].as_str().expect("name");
        let hook = hook_events(o);
        let spec = pod_spec(o);
        // Objects this pod can rely on: hooks may only use hooks of a lower weight (the
        // release's own objects do not exist yet on install); workloads use non-hooks.
        let available = |k: &str, n: &str| -> bool {
            r.manifests.iter().map(|x| &x.obj).any(|x| {
                x["kind"] == k
                    && x["metadata"]["name"] == n
                    && match hook {
                        None => hook_events(x).is_none(),
                        Some(events) => hook_events(x) == Some(events) && hook_weight(x) < hook_weight(o),
                    }
            })
        };
        let template_labels = string_map(&o["spec"]["template"]["metadata"]["labels"], &format!("{name} pod labels"));
        string_map(&o["spec"]["template"]["metadata"]["annotations"], &format!("{name} pod annotations"));
        if kind == "Deployment" {
            let selector = string_map(&o["spec"]["selector"]["matchLabels"], &format!("{name} selector"));
            assert!(!selector.is_empty(), "{name}: empty selector");
            assert!(subset(&selector, &template_labels), "{name}: selector {selector:?} does not match the pod labels {template_labels:?}");
            for other in r.all("Deployment") {
                if other["metadata"]["name"] != name {
                    let other_labels = string_map(&other["spec"]["template"]["metadata"]["labels"], "pod labels");
                    assert!(!subset(&selector, &other_labels), "{name}: its selector also selects {}'s pods", other["metadata"]["name"]);
                }
            }
            assert!(hook.is_none(), "{name}: a Deployment must not be a hook");
        } else {
            assert_eq!(spec["restartPolicy"], "Never", "{name}: Job pods");
        }
        let sa = spec["serviceAccountName"].as_str().expect("serviceAccountName");
        if r.value("serviceAccount.create") == &J::Bool(true) {
            assert!(r.find("ServiceAccount", sa).is_some(), "{name}: service account {sa} not rendered");
        }
        assert_eq!(spec["automountServiceAccountToken"], false, "{name}: no role calls the Kubernetes API");
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{name}: runAsNonRoot");
        let volumes: BTreeMap<&str, &J> = spec["volumes"].as_array().expect("volumes").iter().map(|v| (v["name"].as_str().expect("volume name"), v)).collect();
        let mut mounted = BTreeSet::new();
        for c in spec["containers"].as_array().expect("containers") {
            let cname = format!("{name}/{}", c["name"].as_str().expect("container name"));
            let image = c["image"].as_str().unwrap_or_else(|| panic!("{cname}: no image"));
            let (_, tag) = image.rsplit_once(':').unwrap_or_else(|| panic!("{cname}: image {image} has no tag"));
            assert!(!tag.is_empty() && !tag.contains('/'), "{cname}: image {image} has no tag");
            // The distributed run's ranks take the launcher's flags and their train command.
            let launcher = c["args"][0] == "launch";
            assert!(c["args"].as_array().is_some_and(|a| a.len() == 1 || launcher), "{cname}: one subcommand as args");
            assert!(c["resources"]["requests"]["memory"].is_string(), "{cname}: memory request");
            assert!(c["resources"]["limits"]["memory"].is_string(), "{cname}: memory limit");
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true, "{cname}: read-only root filesystem");
            assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false, "{cname}");
            let ports: BTreeSet<&str> = c["ports"].as_array().map(|p| p.iter().map(|p| p["name"].as_str().expect("port name")).collect()).unwrap_or_default();
            for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                if let Some(port) = c[probe]["httpGet"]["port"].as_str() {
                    assert!(ports.contains(port), "{cname}: {probe} uses port {port} which is not declared");
                }
            }
            let mut env_names = BTreeSet::new();
            for e in c["env"].as_array().expect("env") {
                let ename = e["name"].as_str().expect("env name");
                assert!(env_names.insert(ename), "{cname}: env {ename} twice");
                match (e.get("value"), e.get("valueFrom")) {
                    (Some(v), None) => assert!(v.is_string(), "{cname}: env {ename} = {v} must be a string"),
                    (None, Some(from)) => {
                        let sref = &from["secretKeyRef"];
                        let sname = sref["name"].as_str().unwrap_or_else(|| panic!("{cname}: {ename} from something other than a Secret"));
                        let key = sref["key"].as_str().expect("secret key");
                        if !existing_secrets.contains(sname) {
                            assert!(available("Secret", sname), "{cname}: {ename} reads Secret {sname}, not available to it");
                            let secret = r.get("Secret", sname);
                            assert!(secret["data"].get(key).is_some(), "{cname}: Secret {sname} has no key {key}");
                        }
                    }
                    _ => panic!("{cname}: env {ename} needs exactly one of value and valueFrom"),
                }
            }
            let mut paths = BTreeMap::new();
            for vm in c["volumeMounts"].as_array().expect("volumeMounts") {
                let vname = vm["name"].as_str().expect("mount name");
                assert!(volumes.contains_key(vname), "{cname}: mounts undefined volume {vname}");
                mounted.insert(vname);
                let path = vm["mountPath"].as_str().expect("mountPath");
                assert!(path.starts_with('/'), "{cname}: mount path {path}");
                assert!(paths.insert(path.to_owned(), (vname, vm["readOnly"] == true)).is_none(), "{cname}: two mounts at {path}");
            }
            // ABSA_CONFIG names a key of the ConfigMap mounted at its folder.
            let config = env_value(c, "ABSA_CONFIG").unwrap_or_else(|| panic!("{cname}: no ABSA_CONFIG"))["value"].as_str().expect("ABSA_CONFIG value");
            let (dir, file) = config.rsplit_once('/').expect("ABSA_CONFIG is a path");
            let (vname, _) = paths.get(dir).unwrap_or_else(|| panic!("{cname}: nothing mounted at {dir}"));
            let cm_name = volumes[vname]["configMap"]["name"].as_str().unwrap_or_else(|| panic!("{cname}: {dir} is not a ConfigMap"));
            assert!(available("ConfigMap", cm_name), "{cname}: ConfigMap {cm_name} not available to it");
            assert!(r.get("ConfigMap", cm_name)["data"].get(file).is_some(), "{cname}: ConfigMap {cm_name} has no {file}");
            // With a read-only root filesystem, every folder the binary writes is a writable volume.
            let mut writes = vec!["/tmp".to_owned()];
            let role = c["name"].as_str().expect("name");
            if role == "api" {
                writes.push(r.value_str("config.api.upload_dir"));
            }
            if role == "trainer" || role == "scorer" {
                writes.push(r.value_str("config.worker.work_dir"));
                writes.push(r.value_str("config.worker.cache_dir"));
                if let Some(dir) = r.value("config.worker.artifacts_dir").as_str() {
                    writes.push(dir.to_owned());
                }
            }
            for w in writes {
                let (vname, read_only) = paths.get(&w).unwrap_or_else(|| panic!("{cname}: writes {w} but nothing is mounted there"));
                assert!(!read_only, "{cname}: {w} ({vname}) is mounted read-only");
            }
        }
        for (vname, v) in &volumes {
            assert!(mounted.contains(vname), "{name}: volume {vname} is never mounted");
            if let Some(cm) = v["configMap"]["name"].as_str() {
                assert!(available("ConfigMap", cm), "{name}: volume {vname} uses ConfigMap {cm}, not available to it");
            }
            if let Some(s) = v["secret"]["secretName"].as_str() {
                assert!(existing_secrets.contains(s) || available("Secret", s), "{name}: volume {vname} uses Secret {s}");
            }
            if v.get("persistentVolumeClaim").is_some() {
                assert!(v["persistentVolumeClaim"]["claimName"].as_str().is_some_and(|c| !c.is_empty()), "{name}: volume {vname} without a claim");
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// docs/configuration.md, metrics.rs, native.sh: the facts the chart must agree with

/// The settings the binaries read, from their `Settings` structs (api, scheduler,
/// trainer, scorer) and the section structs they hold: `section.key` for a field of a
/// section struct, `key` for a plain field (`models_dir`). docs/configuration.md's
/// table documents the same keys.
fn binary_settings_keys() -> BTreeSet<String> {
    let files = [
        "platform/src/config.rs",
        "store/src/worker.rs",
        "api/src/settings.rs",
        "scheduler/src/settings.rs",
        "trainer-worker/src/settings.rs",
        "scorer-worker/src/settings.rs",
        "platform/src/metrics.rs",
        "store/src/webhooks.rs",
    ];
    // struct name -> (field, type) of every `pub struct Name { pub field: Type, ... }`.
    let mut structs: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut settings = 0;
    let mut plain_and_sections = Vec::new();
    for file in files {
        let src = read(&repo().join(file));
        let mut lines = src.lines();
        while let Some(line) = lines.next() {
            let Some(rest) = line.strip_prefix("pub struct ") else { continue };
            let Some(name) = rest.strip_suffix(" {") else { continue };
            let mut fields = Vec::new();
            for body in lines.by_ref().take_while(|l| *l != "}") {
                if let Some((field, ty)) = body.trim().strip_prefix("pub ").and_then(|f| f.split_once(':')) {
                    fields.push((field.trim().to_owned(), ty.trim().trim_end_matches(',').to_owned()));
                }
            }
            if name == "Settings" {
                settings += 1;
                plain_and_sections.extend(fields);
            } else {
                structs.insert(name.to_owned(), fields);
            }
        }
    }
    assert_eq!(settings, 4, "one Settings struct per binary");
    let mut keys = BTreeSet::new();
    for (field, ty) in plain_and_sections {
        match structs.get(&ty) {
            Some(section) => keys.extend(section.iter().map(|(k, _)| format!("{field}.{k}"))),
            None => {
                keys.insert(field);
            }
        }
    }
    for expected in [
        "database.url",
        "amqp.prefix",
        "http.bind",
        "api.max_upload_bytes",
        "dispatch.shard_size",
        "worker.lease_secs",
        "torch.threads",
        "onnx.precision",
        "models_dir",
    ] {
        assert!(keys.contains(expected), "settings structs parsed wrongly: no {expected} in {keys:?}");
    }
    keys
}

/// `ABSA_<SECTION>__<KEY>` (or `ABSA_<KEY>`) of a settings key, as platform::config reads it.
fn env_name(key: &str) -> String {
    format!("ABSA_{}", key.replace('.', "__").to_ascii_uppercase())
}

/// Metric names the processes export: the families registered with the Prometheus
/// client (`platform/src/metrics.rs`), with the sample suffixes the client writes
/// (`_total` for counters, `_bucket`, `_sum`, `_count` for histograms).
/// `tests/tests/e2e/process_metrics.rs` scrapes the running processes for the same names.
fn exported_metrics() -> BTreeSet<String> {
    let src = read(&repo().join("platform/src/metrics.rs"));
    let registered: Vec<String> = src.split("r.register(\"").skip(1).map(|s| s.split('"').next().expect("name").to_owned()).collect();
    assert!(registered.len() >= 20 && registered.iter().any(|n| n == "absa_jobs"), "platform/src/metrics.rs parsed wrongly: {registered:?}");
    let mut names = BTreeSet::new();
    for name in registered {
        names.extend(["", "_total", "_bucket", "_sum", "_count"].iter().map(|suffix| format!("{name}{suffix}")));
    }
    names
}

fn native_version(var: &str) -> String {
    let script = read(&repo().join("scripts/native.sh"));
    let line = script.lines().find(|l| l.starts_with(&format!("{var}="))).unwrap_or_else(|| panic!("{var} not in scripts/native.sh"));
    line[var.len() + 1..].split_whitespace().next().expect("value").trim_matches('"').to_owned()
}

fn workspace_version() -> String {
    let cargo: toml::Table = read(&repo().join("Cargo.toml")).parse().expect("Cargo.toml");
    cargo["workspace"]["package"]["version"].as_str().expect("workspace version").to_owned()
}

// ---------------------------------------------------------------------------------
// values.schema.json: its defaults (helm itself validates values against it)

mod schema {
    use serde_json::Value as J;

    /// The values a schema implies: a node's `default`, or for an object without one,
    /// its properties' defaults. `None` where neither exists.
    pub fn defaults(schema: &J) -> Option<J> {
        if let Some(d) = schema.get("default") {
            return Some(d.clone());
        }
        let props = schema.get("properties")?.as_object()?;
        Some(J::Object(props.iter().filter_map(|(k, s)| defaults(s).map(|d| (k.clone(), d))).collect()))
    }

    /// Every schema node below `path` that is a leaf (no properties) yet has no default.
    pub fn leaves_without_default(schema: &J, path: &str, out: &mut Vec<String>) {
        if schema.get("default").is_some() {
            return;
        }
        match schema.get("properties").and_then(J::as_object) {
            Some(props) => props.iter().for_each(|(k, s)| leaves_without_default(s, &format!("{path}.{k}"), out)),
            None => out.push(path.to_owned()),
        }
    }
}

/// JSON equality with numbers compared as numbers (YAML's `1.0` and JSON's `1.0`, or
/// `8` parsed as an integer by one and a float by the other, are the same value to Helm).
fn same(a: &J, b: &J) -> bool {
    match (a, b) {
        (J::Number(x), J::Number(y)) => x.as_f64() == y.as_f64(),
        (J::Array(x), J::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        (J::Object(x), J::Object(y)) => x.len() == y.len() && x.iter().all(|(k, p)| y.get(k).is_some_and(|q| same(p, q))),
        _ => a == b,
    }
}

fn differences(a: &J, b: &J, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (J::Object(x), J::Object(y)) => {
            for k in x.keys().chain(y.keys()).collect::<BTreeSet<_>>() {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => differences(p, q, &format!("{path}.{k}"), out),
                    (p, q) => out.push(format!("{path}.{k}: values.yaml {p:?}, schema default {q:?}")),
                }
            }
        }
        _ if !same(a, b) => out.push(format!("{path}: values.yaml {a}, schema default {b}")),
        _ => {}
    }
}

fn values_json() -> J {
    serde_norway::from_str(&read(&chart_dir().join("values.yaml"))).expect("values.yaml parses")
}

fn schema_json() -> J {
    serde_json::from_str(&read(&chart_dir().join("values.schema.json"))).expect("values.schema.json parses")
}

// ---------------------------------------------------------------------------------
// The tests

#[test]
fn values_yaml_equals_the_schema_defaults_and_helm_lint_passes() {
    let (values, schema) = (values_json(), schema_json());
    let mut missing = Vec::new();
    schema::leaves_without_default(&schema, "", &mut missing);
    assert_eq!(missing, vec![".global"], "every schema leaf but `global` has a default");
    let defaults = schema::defaults(&schema).expect("defaults");
    let mut diff = Vec::new();
    differences(&values, &defaults, "", &mut diff);
    assert!(diff.is_empty(), "values.yaml and the schema's defaults differ:\n{}", diff.join("\n"));
    // helm lint renders the chart and validates values.yaml against values.schema.json;
    // --strict turns its warnings into failures.
    let chart = chart_dir();
    let lint = helm(&["lint", "--strict", chart.to_str().expect("chart path")], "").unwrap_or_else(|e| panic!("helm lint --strict: {e}"));
    assert!(lint.contains("1 chart(s) linted, 0 chart(s) failed"), "{lint}");
    // Helm reads values as YAML 1.1, where y/n/yes/no/on/off (keys too) are booleans.
    let mut strings = Vec::new();
    walk_strings(&values, &mut strings);
    for s in strings {
        assert!(!yaml11_trap(s), "values.yaml: {s:?} is a boolean to Helm's YAML 1.1 parser");
    }
}

#[test]
fn helm_refuses_typos_wrong_types_and_out_of_range_values_by_the_schema() {
    let bad = |patch: &str, expect: &str| match render(patch) {
        Ok(_) => panic!("{patch} rendered"),
        Err(e) => assert!(e.contains(expect), "{patch} should fail with {expect:?}, got {e}"),
    };
    bad("config: {dispatch: {shard_sise: 10}}", "at '/config/dispatch': additional properties 'shard_sise' not allowed");
    bad("config: {database: {url: 'postgres://x'}}", "at '/config/database': additional properties 'url' not allowed");
    bad("scorer: {kedaa: {enabled: true}}", "at '/scorer': additional properties 'kedaa' not allowed");
    bad("api: {replicas: two}", "at '/api/replicas': got string, want integer");
    bad("config: {api: {max_upload_bytes: 1.5}}", "at '/config/api/max_upload_bytes': got number, want integer");
    bad("config: {onnx: {precision: fp16}}", "at '/config/onnx/precision': value must be one of");
    bad("scorer: {autoscaling: {targetCPUUtilizationPercentage: 150}}", "at '/scorer/autoscaling/targetCPUUtilizationPercentage': maximum: got 150, want 100");
    bad("api: {containerPort: 0}", "at '/api/containerPort': minimum: got 0, want 1");
    bad("api: {extraEnv: [{value: x}]}", "at '/api/extraEnv/0': missing property 'name'");
    bad("trainer: {resources: {limit: {}}}", "at '/trainer/resources': additional properties 'limit' not allowed");
    // A value for a nullable key, and an empty `global`, are fine.
    render_ok("config: {worker: {artifacts_dir: /data}}\npersistence: {artifacts: {existingClaim: rwx}}\nglobal: {}");
}

/// `.Values.a.b` paths in the templates, as written.
fn referenced_value_paths() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for path in template_files() {
        let src = read(&path);
        for piece in src.split(".Values.").skip(1) {
            let chain: String = piece.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.').collect();
            let chain = chain.trim_end_matches('.').to_owned();
            out.entry(chain).or_insert_with(|| path.file_name().expect("name").to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn every_value_the_templates_use_exists_and_every_value_is_used() {
    let values = values_json();
    let refs = referenced_value_paths();
    assert!(refs.len() > 40, "{refs:?}");
    for (path, file) in &refs {
        let mut cur = &values;
        for key in path.split('.') {
            cur = cur.get(key).unwrap_or_else(|| panic!("{file} uses .Values.{path}, which values.yaml lacks (key {key})"));
        }
    }
    // The reverse: every leaf of values.yaml is read by a template (directly, or through
    // an ancestor handed to toYaml/range), so no knob is dead.
    fn leaves(v: &J, prefix: &str, out: &mut Vec<String>) {
        match v {
            J::Object(m) if !m.is_empty() => m.iter().for_each(|(k, x)| leaves(x, &if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, out)),
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut all = Vec::new();
    leaves(&values, "", &mut all);
    for leaf in all {
        let used = refs.keys().any(|r| leaf == *r || leaf.starts_with(&format!("{r}.")));
        assert!(used, "values.yaml's {leaf} is used by no template");
    }
}

#[test]
fn the_default_render_has_every_role_with_its_required_fields() {
    let r = render_ok("");
    check_common(&r);
    check_pods(&r);
    let full = format!("{RELEASE}-absa");
    let app_version = workspace_version();
    let chart: J = serde_norway::from_str(&read(&chart_dir().join("Chart.yaml"))).expect("Chart.yaml");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "absa");
    assert_eq!(chart["appVersion"], app_version.as_str(), "Chart appVersion (the default image tag) is the workspace version");
    assert!(chart["version"].as_str().is_some_and(|v| v.split('.').count() == 3), "chart version is SemVer");

    // Exactly these objects (no Secret: credentials come from Secrets the user creates);
    // hooks are the migrations' ConfigMap and Job.
    let mut names = r.names();
    names.sort();
    let expected = [
        "ConfigMap/prod-absa-config",
        "ConfigMap/prod-absa-dashboard",
        "ConfigMap/prod-absa-migrations",
        "Deployment/prod-absa-api",
        "Deployment/prod-absa-scheduler",
        "Deployment/prod-absa-scorer",
        "Deployment/prod-absa-trainer",
        "HorizontalPodAutoscaler/prod-absa-scorer",
        "Job/prod-absa-migrations",
        "PodDisruptionBudget/prod-absa-api",
        "PodDisruptionBudget/prod-absa-scheduler",
        "PodDisruptionBudget/prod-absa-scorer",
        "Service/prod-absa-api",
        "ServiceAccount/prod-absa",
    ];
    assert_eq!(names, expected);

    // Images and subcommands per role.
    let image = |role: &str| format!("registry.example.com/absa/absa-{role}:{app_version}");
    for (role, args) in [("api", "serve"), ("scheduler", "run"), ("scorer", "work"), ("trainer", "work")] {
        let d = r.get("Deployment", &format!("{full}-{role}"));
        let c = container(d, role);
        assert_eq!(c["image"], image(role).as_str(), "{role} image");
        assert_eq!(c["args"], serde_json::json!([args]), "{role} subcommand");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        for var in ["ABSA_CONFIG", "ABSA_DATABASE__URL", "ABSA_AMQP__URL"] {
            assert!(env_value(c, var).is_some(), "{role}: no {var}");
        }
        let checksum = d["spec"]["template"]["metadata"]["annotations"]["checksum/config"].as_str().expect("checksum/config");
        let toml_text = r.get("ConfigMap", &format!("{full}-config"))["data"]["absa.toml"].as_str().expect("absa.toml").to_owned();
        use sha2::Digest;
        let digest: String = sha2::Sha256::digest(toml_text.trim_end_matches('\n').as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(checksum, digest, "{role}: checksum/config is the ConfigMap's content hash, so pods roll on config changes");
    }

    // Secrets: the URLs from values, base64.
    // The URLs from the Secrets named in values (absa-database, absa-amqp; key url), in
    // every pod, the migrations hook included; no URL anywhere in the render.
    for d in r.all("Deployment").into_iter().chain(r.all("Job")) {
        let c = &pod_spec(d)["containers"][0];
        assert_eq!(env_value(c, "ABSA_DATABASE__URL").expect("db")["valueFrom"]["secretKeyRef"], serde_json::json!({"name": "absa-database", "key": "url"}));
        if d["kind"] == "Deployment" {
            assert_eq!(env_value(c, "ABSA_AMQP__URL").expect("amqp")["valueFrom"]["secretKeyRef"], serde_json::json!({"name": "absa-amqp", "key": "url"}));
        }
    }
    assert!(!r.output.contains("postgres://") && !r.output.contains("amqp://"), "no credentials in the chart's objects");

    // The API: probes on /healthz and /readyz, bound to the container port the Service targets.
    let api = r.get("Deployment", &format!("{full}-api"));
    let c = container(api, "api");
    assert_eq!(api["spec"]["replicas"], 2);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["startupProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "http");
        assert!(c[probe]["periodSeconds"].as_u64().is_some_and(|p| p > 0), "{probe} timings from values");
    }
    let port = r.value_num("api.containerPort") as u64;
    let http = c["ports"].as_array().expect("ports").iter().find(|p| p["name"] == "http").expect("http port");
    assert_eq!(http["containerPort"], port);
    assert_eq!(
        env_value(c, "ABSA_HTTP__BIND").expect("ABSA_HTTP__BIND")["value"],
        format!("0.0.0.0:{port}").as_str(),
        "the API listens where the probes and the Service look"
    );
    let svc = r.get("Service", &format!("{full}-api"));
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    let svc_selector = string_map(&svc["spec"]["selector"], "service selector");
    assert!(subset(&svc_selector, &string_map(&api["spec"]["template"]["metadata"]["labels"], "api pod labels")), "the Service selects the API pods");
    for other in ["scheduler", "scorer", "trainer"] {
        let labels = string_map(&r.get("Deployment", &format!("{full}-{other}"))["spec"]["template"]["metadata"]["labels"], "labels");
        assert!(!subset(&svc_selector, &labels), "the API Service also selects {other} pods");
    }
    let uploads = api["spec"]["template"]["spec"]["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == "uploads").expect("uploads volume");
    assert_eq!(uploads["emptyDir"]["sizeLimit"], "4Gi");

    // The scheduler: several replicas, one leads.
    assert_eq!(r.get("Deployment", &format!("{full}-scheduler"))["spec"]["replicas"], 2);

    // The scorer: no fixed replicas (the HPA owns them), CPU requests for utilisation,
    // time to finish a shard on SIGTERM.
    let scorer = r.get("Deployment", &format!("{full}-scorer"));
    assert!(scorer["spec"].get("replicas").is_none(), "an autoscaled Deployment leaves replicas to the autoscaler");
    assert!(container(scorer, "scorer")["resources"]["requests"]["cpu"].is_string(), "HPA utilisation needs a CPU request");
    assert!(pod_spec(scorer)["terminationGracePeriodSeconds"].as_u64().is_some_and(|s| s >= 60));
    let hpa = r.get("HorizontalPodAutoscaler", &format!("{full}-scorer"));
    assert_eq!(hpa["spec"]["scaleTargetRef"], serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("{full}-scorer")}));
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["type"], "Utilization");
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 70);
    assert!(hpa["spec"]["minReplicas"].as_u64() <= hpa["spec"]["maxReplicas"].as_u64());

    // The trainer: a GPU, GPU nodes, one job per pod, time to release the job on SIGTERM.
    let trainer = r.get("Deployment", &format!("{full}-trainer"));
    let tc = container(trainer, "trainer");
    assert!(tc["resources"]["limits"]["nvidia.com/gpu"].as_u64().is_some_and(|g| g >= 1), "trainer limits carry nvidia.com/gpu: {}", tc["resources"]);
    let ts = pod_spec(trainer);
    assert!(ts["nodeSelector"].as_object().is_some_and(|m| !m.is_empty()), "trainer nodeSelector");
    assert!(ts["tolerations"].as_array().expect("tolerations").iter().any(|t| t["key"] == "nvidia.com/gpu"), "trainer tolerates GPU taints");
    let grace = ts["terminationGracePeriodSeconds"].as_f64().expect("grace period");
    assert!(
        grace >= 300.0 && grace > r.value_num("config.worker.lease_secs"),
        "trainer grace period {grace}s: long enough to stop at a step and release the job"
    );
    assert_eq!(trainer["spec"]["strategy"]["rollingUpdate"]["maxSurge"], 0, "no surge pods waiting for GPUs");
    assert_eq!(trainer["spec"]["replicas"], 1);
    let models = ts["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == "models").expect("models volume");
    assert!(models.get("emptyDir").is_some(), "no claim: an emptyDir");
    assert!(tc["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .any(|m| m["name"] == "models" && m["mountPath"] == r.value_str("config.models_dir").as_str()));

    // Migrations: a pre-install,pre-upgrade hook running `absa-api migrate` with the API image,
    // after (lower weight) its own copy of the configuration.
    let job = r.get("Job", &format!("{full}-migrations"));
    assert_eq!(hook_events(job), Some("pre-install,pre-upgrade"));
    let jc = container(job, "migrate");
    assert_eq!(jc["args"], serde_json::json!(["migrate"]));
    assert_eq!(jc["image"], image("api").as_str());
    let hook_config = r.get("ConfigMap", &format!("{full}-migrations"));
    assert_eq!(hook_events(hook_config), Some("pre-install,pre-upgrade"));
    assert!(hook_weight(hook_config) < hook_weight(job), "the hook's ConfigMap exists before the Job runs");
    assert_eq!(
        r.get("ConfigMap", &format!("{full}-migrations"))["data"],
        r.get("ConfigMap", &format!("{full}-config"))["data"],
        "the hook's configuration is the release's"
    );
    assert!(job["spec"]["backoffLimit"].is_u64());

    // Every ABSA_ variable the chart sets is a setting the binaries read.
    let envs: BTreeSet<String> = binary_settings_keys().iter().map(|k| env_name(k)).collect();
    for d in r.all("Deployment").into_iter().chain(r.all("Job")) {
        for c in pod_spec(d)["containers"].as_array().expect("containers") {
            for e in c["env"].as_array().expect("env") {
                let name = e["name"].as_str().expect("name");
                if name.starts_with("ABSA_") && name != "ABSA_CONFIG" {
                    assert!(envs.contains(name), "{name} is not a setting of the binaries ({envs:?})");
                }
            }
        }
    }

    // The notes render and name the things to do next.
    let notes = notes("");
    assert!(notes.contains("create-key") && notes.contains(&format!("svc/{full}-api")), "{notes}");
    assert!(notes.contains("WARNING: trainer.models.existingClaim is empty"), "{notes}");
    assert!(notes.contains("from Secret absa-database (key url)") && notes.contains("from Secret absa-amqp (key url)"), "{notes}");
}

#[test]
fn the_config_map_is_the_toml_the_binaries_read() {
    let r = render_ok("");
    let cm = r.get("ConfigMap", &format!("{RELEASE}-absa-config"));
    let text = cm["data"]["absa.toml"].as_str().expect("absa.toml");
    let table: toml::Table = text.parse().unwrap_or_else(|e| panic!("absa.toml does not parse: {e}\n{text}"));
    // Every section and top-level key the binaries read (http.bind and metrics.bind
    // come from the env, set from api.containerPort and metrics.port), and nothing unknown to them (they ignore unknown keys).
    let keys = binary_settings_keys();
    for key in &keys {
        match key.split_once('.') {
            // Set from values by the chart: api.containerPort and metrics.port.
            Some(("http" | "metrics", _)) => {}
            Some((section, _)) => assert!(table.get(section).is_some_and(toml::Value::is_table), "no [{section}] in\n{text}"),
            None => assert!(table.contains_key(key), "no {key} in\n{text}"),
        }
    }
    assert_eq!(table["models_dir"].as_str(), Some("/models"));
    for (k, v) in &table {
        match v {
            toml::Value::Table(t) => {
                for key in t.keys() {
                    assert!(keys.contains(&format!("{k}.{key}")), "{k}.{key} is not a setting of the binaries");
                }
            }
            _ => assert!(keys.contains(k), "{k} is not a setting"),
        }
    }
    assert!(table["database"].get("url").is_none() && table["amqp"].get("url").is_none(), "URLs with passwords come from Secrets, not the ConfigMap");
    assert!(table["worker"].get("artifacts_dir").is_none(), "a null value leaves its key out");
    assert!(table["onnx"].get("intra_threads").is_none());
    // Integers stay integers (Helm's float64 values printed plainly would be 5.36870912e+08).
    assert_eq!(table["api"]["max_upload_bytes"].as_integer(), Some(536_870_912));
    assert_eq!(table["dispatch"]["shard_size"].as_integer(), Some(5000));
    assert_eq!(table["database"]["max_connections"].as_integer(), Some(8));
    assert_eq!(table["torch"]["threads"].as_integer(), Some(0));
    assert_eq!(table["log"]["json"].as_bool(), Some(true));
    assert_eq!(table["onnx"]["precision"].as_str(), Some("fp32"));
    assert_eq!(table["amqp"]["prefix"].as_str(), Some("absa"));

    // Read the file the way the binaries do (absa_platform::config::load, the `config`
    // crate) into the platform's setting types.
    let dir = std::env::temp_dir().join(format!("absa-helm-chart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("absa.toml");
    std::fs::write(&file, text).expect("write");
    let loaded: J = absa_platform::config::load(Some(&file)).expect("config::load reads the rendered file");
    std::fs::remove_dir_all(&dir).ok();
    let db: absa_platform::config::DatabaseSettings = serde_json::from_value(loaded["database"].clone()).expect("database settings");
    assert_eq!((db.max_connections, db.connect_timeout_secs), (8, 5));
    let amqp: absa_platform::config::AmqpSettings = serde_json::from_value(loaded["amqp"].clone()).expect("amqp settings");
    assert_eq!(amqp.prefix, "absa");
    let log: absa_platform::config::LogSettings = serde_json::from_value(loaded["log"].clone()).expect("log settings");
    assert!(log.json);
    let worker: absa_store::worker::WorkerSettings = serde_json::from_value(loaded["worker"].clone()).expect("worker settings");
    assert_eq!(worker.work_dir, Path::new("/var/lib/absa/work"));
    assert!(worker.artifacts_dir.is_none());

    // With an artifacts folder and thread count set, they appear (and integers stay integers).
    let r = render_ok("config: {worker: {artifacts_dir: /shared/artifacts}, onnx: {intra_threads: 4}}\npersistence: {artifacts: {existingClaim: rwx}}");
    let text = r.get("ConfigMap", &format!("{RELEASE}-absa-config"))["data"]["absa.toml"].as_str().expect("toml").to_owned();
    let table: toml::Table = text.parse().expect("toml");
    assert_eq!(table["worker"]["artifacts_dir"].as_str(), Some("/shared/artifacts"));
    assert_eq!(table["onnx"]["intra_threads"].as_integer(), Some(4));
}

#[test]
fn everything_enabled_renders_keda_servicemonitor_existing_secrets_and_volumes() {
    let r = render_ok(ALL_ON);
    check_common(&r);
    check_pods(&r);
    let mut names = r.names();
    names.sort();
    assert_eq!(
        names,
        [
            "ConfigMap/absa-config",
            "ConfigMap/absa-dashboard",
            "ConfigMap/absa-migrations",
            "Deployment/absa-api",
            "Deployment/absa-scheduler",
            "Deployment/absa-scorer",
            "Deployment/absa-trainer",
            "Ingress/absa-api",
            "Job/absa-migrations",
            "NetworkPolicy/absa-api",
            "NetworkPolicy/absa-default",
            "NetworkPolicy/absa-webhooks",
            "PodDisruptionBudget/absa-api",
            "PodDisruptionBudget/absa-scheduler",
            "PodDisruptionBudget/absa-scorer",
            "ScaledObject/absa-scorer",
            "Service/absa-api",
            "ServiceMonitor/absa-api",
            "TriggerAuthentication/absa-scorer-amqp",
        ],
        "no HPA next to KEDA, no Secrets and no ServiceAccount of our own"
    );
    // KEDA: the scorer Deployment, the <prefix>.score queue, the AMQP URL from the Secret.
    let so = r.get("ScaledObject", "absa-scorer");
    assert_eq!(so["spec"]["scaleTargetRef"]["name"], "absa-scorer");
    assert_eq!(r.get("Deployment", "absa-scorer")["kind"], "Deployment");
    assert!(r.get("Deployment", "absa-scorer")["spec"].get("replicas").is_none());
    let triggers = so["spec"]["triggers"].as_array().expect("triggers");
    assert_eq!(triggers.len(), 1, "cpuUtilization 0 leaves the CPU trigger out");
    let t = &triggers[0];
    assert_eq!(t["type"], "rabbitmq");
    assert_eq!(t["metadata"]["queueName"], "absa-prod.score");
    assert_eq!(t["metadata"]["mode"], "QueueLength");
    assert_eq!(t["metadata"]["value"], "2", "KEDA trigger metadata values are strings");
    let auth = r.get("TriggerAuthentication", t["authenticationRef"]["name"].as_str().expect("auth ref"));
    assert_eq!(auth["spec"]["secretTargetRef"][0], serde_json::json!({"parameter": "host", "name": "mq-credentials", "key": "uri"}));
    // KEDA's default render has the CPU trigger too.
    let keda_default = render_ok("scorer: {keda: {enabled: true}}");
    let triggers = keda_default.get("ScaledObject", "prod-absa-scorer")["spec"]["triggers"].as_array().expect("triggers").clone();
    assert_eq!(triggers.iter().map(|t| t["type"].as_str().expect("type")).collect::<Vec<_>>(), ["rabbitmq", "cpu"]);
    assert_eq!(triggers[1]["metadata"]["value"], "70");
    assert_eq!(
        keda_default.get("TriggerAuthentication", "prod-absa-scorer-amqp")["spec"]["secretTargetRef"][0]["name"],
        "absa-amqp",
        "the default AMQP Secret"
    );
    assert!(keda_default.find("HorizontalPodAutoscaler", "prod-absa-scorer").is_none());

    // ServiceMonitor: selects the API Service and its http port, /metrics, extra labels.
    let sm = r.get("ServiceMonitor", "absa-api");
    let svc = r.get("Service", "absa-api");
    assert!(subset(&string_map(&sm["spec"]["selector"]["matchLabels"], "sm selector"), &string_map(&svc["metadata"]["labels"], "svc labels")));
    assert_eq!(sm["spec"]["endpoints"][0]["port"], svc["spec"]["ports"][0]["name"]);
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(sm["metadata"]["labels"]["release"], "kube-prometheus-stack");
    // The scrape key: the ServiceMonitor's bearer token and the API's ABSA_API__METRICS_KEY.
    let scrape_key = serde_json::json!({"name": "scrape-key", "key": "metrics-key"});
    assert_eq!(sm["spec"]["endpoints"][0]["authorization"], serde_json::json!({"type": "Bearer", "credentials": scrape_key}));
    let api_container = &pod_spec(r.get("Deployment", "absa-api"))["containers"][0];
    assert_eq!(env_value(api_container, "ABSA_API__METRICS_KEY").expect("metrics key")["valueFrom"]["secretKeyRef"], scrape_key);

    // Existing Secrets by name and key; the migrations hook reads the existing one directly.
    for d in r.all("Deployment").into_iter().chain(r.all("Job")) {
        let c = &pod_spec(d)["containers"][0];
        assert_eq!(env_value(c, "ABSA_DATABASE__URL").expect("db")["valueFrom"]["secretKeyRef"], serde_json::json!({"name": "pg-credentials", "key": "uri"}));
        if d["kind"] == "Deployment" {
            assert_eq!(env_value(c, "ABSA_AMQP__URL").expect("amqp")["valueFrom"]["secretKeyRef"], serde_json::json!({"name": "mq-credentials", "key": "uri"}));
        }
        assert_eq!(pod_spec(d)["serviceAccountName"], "absa-runner");
        assert_eq!(pod_spec(d)["imagePullSecrets"], serde_json::json!([{"name": "regcred"}]));
    }
    // Images: no registry, global tag, the trainer's own tag.
    assert_eq!(container(r.get("Deployment", "absa-api"), "api")["image"], "absa-api:1.2.3");
    assert_eq!(container(r.get("Deployment", "absa-trainer"), "trainer")["image"], "absa-trainer:1.2.3-cuda");
    // Volumes: the artifacts claim on both workers at artifacts_dir, the models claim read-only.
    for role in ["scorer", "trainer"] {
        let d = r.get("Deployment", &format!("absa-{role}"));
        let vol = pod_spec(d)["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == "artifacts")
            .unwrap_or_else(|| panic!("{role}: no artifacts volume"));
        assert_eq!(vol["persistentVolumeClaim"]["claimName"], "absa-artifacts");
        let c = container(d, role);
        assert!(c["volumeMounts"].as_array().expect("mounts").iter().any(|m| m["name"] == "artifacts" && m["mountPath"] == "/var/lib/absa/artifacts"));
    }
    let trainer = r.get("Deployment", "absa-trainer");
    let models = pod_spec(trainer)["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == "models").expect("models");
    assert_eq!(models["persistentVolumeClaim"], serde_json::json!({"claimName": "base-models", "readOnly": true}));
    // Extra env, node selectors, tolerations, pod annotations pass through.
    let api = r.get("Deployment", "absa-api");
    assert_eq!(env_value(container(api, "api"), "RUST_BACKTRACE").expect("extra env")["value"], "1");
    assert_eq!(pod_spec(api)["nodeSelector"], serde_json::json!({"pool": "web"}));
    assert_eq!(pod_spec(r.get("Deployment", "absa-scorer"))["tolerations"][0]["key"], "spot");
    assert_eq!(api["spec"]["template"]["metadata"]["annotations"]["team"], "nlp");
    let dash = r.get("ConfigMap", "absa-dashboard");
    assert_eq!(dash["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(dash["metadata"]["labels"]["team"], "nlp");
    assert_eq!(dash["metadata"]["annotations"]["grafana_folder"], "ABSA");
    let notes = notes(ALL_ON);
    assert!(notes.contains("ServiceMonitor absa-api") && notes.contains("KEDA on queue absa-prod.score"), "{notes}");
    assert!(!notes.contains("WARNING"), "{notes}");

    // Turning things off.
    let r = render_ok("migrations: {enabled: false}\ngrafana: {dashboard: {enabled: false}}\nscorer: {autoscaling: {enabled: false}, replicas: 3}");
    check_common(&r);
    check_pods(&r);
    assert!(r.find("Job", "prod-absa-migrations").is_none() && r.find("ConfigMap", "prod-absa-dashboard").is_none());
    assert!(r.all("HorizontalPodAutoscaler").is_empty());
    assert_eq!(r.get("Deployment", "prod-absa-scorer")["spec"]["replicas"], 3);
}

#[test]
fn a_distributed_run_is_an_indexed_job_whose_pods_meet_at_pod_zero() {
    for (values, message) in [
        ("distributedRun: {enabled: true, sharedClaim: runs}", "distributedRun.args"),
        ("distributedRun: {enabled: true, args: [train]}", "distributedRun.sharedClaim"),
    ] {
        match render(values) {
            Ok(_) => panic!("{values} rendered"),
            Err(e) => assert!(e.contains(message), "{values}: {e}"),
        }
    }
    let r = render_ok(
        "distributedRun: {enabled: true, nodes: 3, ranksPerNode: 2, sharedClaim: runs, args: [train, --base, /shared/models/xlm-roberta-xl, --sharding, full-shard]}",
    );
    check_common(&r);
    check_pods(&r);
    let job = r.get("Job", "prod-absa-run");
    let svc = r.get("Service", "prod-absa-run");
    assert_eq!(
        (job["spec"]["completionMode"].as_str(), job["spec"]["completions"].as_i64(), job["spec"]["parallelism"].as_i64()),
        (Some("Indexed"), Some(3), Some(3))
    );
    assert_eq!(job["spec"]["backoffLimit"], 0, "a failed rank fails the run");
    // Pod k of an Indexed Job is <job>-k; with the Service as its subdomain it resolves
    // as <job>-k.<service>: node 0 is the rendezvous address every rank is given.
    let spec = pod_spec(job);
    assert_eq!(spec["subdomain"], svc["metadata"]["name"]);
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(svc["spec"]["publishNotReadyAddresses"], true, "ranks meet before any pod is ready");
    let pod_labels = string_map(&job["spec"]["template"]["metadata"]["labels"], "run pod labels");
    assert!(subset(&string_map(&svc["spec"]["selector"], "run service selector"), &pod_labels));
    let c = container(job, "ranks");
    let args: Vec<&str> = c["args"].as_array().expect("args").iter().map(|a| a.as_str().expect("string args")).collect();
    assert_eq!(
        args,
        [
            "launch",
            "--nnodes",
            "3",
            "--nproc-per-node",
            "2",
            "--node-rank",
            "$(JOB_COMPLETION_INDEX)",
            "--master-addr",
            "prod-absa-run-0.prod-absa-run",
            "--master-port",
            "29500",
            "--",
            "train",
            "--base",
            "/shared/models/xlm-roberta-xl",
            "--sharding",
            "full-shard",
        ]
    );
    assert_eq!(c["ports"][0]["containerPort"], 29500);
    assert_eq!(svc["spec"]["ports"][0]["port"], 29500);
    assert_eq!(c["image"], "registry.example.com/absa/absa-trainer:0.1.0");
    let shared = spec["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == "shared").expect("shared volume");
    assert_eq!(shared["persistentVolumeClaim"]["claimName"], "runs");
    assert!(c["volumeMounts"].as_array().expect("mounts").iter().any(|m| m["name"] == "shared" && m["mountPath"] == "/shared"));
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], 1);
    // Off by default.
    assert!(render_ok("").find("Job", "prod-absa-run").is_none());
}

#[test]
fn missing_secrets_and_claims_fail_the_render_with_a_message() {
    for (values, message) in [
        // null removes the key: the template's own message.
        ("database: {existingSecret: null}", "database.existingSecret is required: the name of a Secret you created"),
        ("amqp: {existingSecret: null}", "amqp.existingSecret is required: the name of a Secret you created"),
        // An empty name: the schema's.
        ("database: {existingSecret: \"\"}", "at '/database/existingSecret': minLength"),
        // A URL in values is refused outright.
        ("database: {url: \"postgres://absa:absa@db/absa\"}", "at '/database': additional properties 'url' not allowed"),
        ("config: {worker: {artifacts_dir: /a}}", "persistence.artifacts.existingClaim is required"),
        ("config: {api: {upload_dir: null}}", "config.api.upload_dir must be set"),
    ] {
        match render(values) {
            Ok(_) => panic!("{values} rendered"),
            Err(e) => assert!(e.contains(message), "{values}: {e}"),
        }
    }
    // The release name shapes every name; long names are cut to 63 characters.
    let r = render_ok("");
    assert!(r.find("Deployment", "prod-absa-api").is_some());
    let long = render_ok(&format!("fullnameOverride: {}", "x".repeat(70)));
    check_common(&long);
    assert!(long.manifests.iter().all(|m| m.obj["metadata"]["labels"]["app.kubernetes.io/name"] == "absa"));
    assert!(long.find("Job", &format!("{}-migrations", "x".repeat(52))).is_some());
}

#[test]
fn the_grafana_dashboard_charts_the_metrics_the_processes_export() {
    let r = render_ok("");
    let cm = r.get("ConfigMap", &format!("{RELEASE}-absa-dashboard"));
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1", "the Grafana sidecar finds dashboards by this label");
    let text = cm["data"]["absa.json"].as_str().expect("absa.json");
    assert_eq!(text.trim(), read(&chart_dir().join("dashboards/absa.json")).trim(), "the ConfigMap carries the file unchanged");
    let dash: J = serde_json::from_str(text).expect("dashboard JSON");
    assert!(dash["uid"].is_string() && dash["title"].is_string());
    assert!(dash["templating"]["list"].as_array().expect("templating").iter().any(|v| v["name"] == "datasource" && v["type"] == "datasource"));
    let exported = exported_metrics();
    let mut exprs = Vec::new();
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().expect("panels") {
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "panel ids are unique");
        assert!(p["gridPos"]["w"].as_u64().is_some_and(|w| w > 0 && w <= 24), "panel width");
        assert_eq!(p["datasource"]["uid"], "${datasource}");
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    for e in &exprs {
        assert_eq!(e.matches('(').count(), e.matches(')').count(), "unbalanced PromQL: {e}");
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("absa_")) {
            assert!(exported.contains(word), "{word} in {e:?} is not registered in platform/src/metrics.rs ({exported:?})");
        }
    }
    let uses = |needle: &str| exprs.iter().any(|e| e.contains(needle));
    assert!(uses("sum by (state) (absa_jobs)"), "jobs by state");
    assert!(uses("absa_jobs{kind=\"score_shard\",state=~\"queued|dispatched\"}"), "shards waiting for a scorer");
    assert!(uses("rate(absa_scorer_predictions_total["), "scoring throughput from a counter");
    for kind in ["lease_expired", "attempt_failed"] {
        assert!(uses(&format!("increase(absa_job_events_total{{kind=\"{kind}\"}}[")), "{kind} events");
    }
    assert!(uses("rate(absa_api_request_duration_seconds_count["), "API request rate");
    assert!(uses("absa_queue_depth_messages"), "RabbitMQ depth per queue, dead-letter queues included");
    assert!(uses("absa_live_workers"), "live workers by role");
    assert!(uses("absa_api_request_duration_seconds_bucket"), "API latency");
    assert!(uses("absa_scorer_documents_total"), "scorer throughput from a counter");
    assert!(uses("absa_trainer_step_duration_seconds_bucket"), "training step time");
    assert!(uses("rate(absa_trainer_samples_total["), "training samples per second from a counter");
    // Counters are read through rate() or increase(), never raw: a raw counter only
    // shows how long a process has run.
    for e in &exprs {
        for word in
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("absa_") && (w.ends_with("_total") || w.ends_with("_count")))
        {
            assert!(e.contains(&format!("rate({word}")) || e.contains(&format!("increase({word}")), "{e}: the counter {word} is charted raw");
        }
    }
}

#[test]
fn the_dockerfiles_build_each_role_with_the_native_libraries_of_scripts_native_sh() {
    let docker = repo().join("docker");
    let cargo: toml::Table = read(&repo().join("Cargo.toml")).parse().expect("Cargo.toml");
    let members: Vec<String> = cargo["workspace"]["members"].as_array().expect("members").iter().map(|m| m.as_str().expect("member").to_owned()).collect();
    let values = values_json();
    let uid = values["podSecurityContext"]["runAsUser"].as_u64().unwrap_or_else(|| panic!("runAsUser {}", values["podSecurityContext"]));
    // The trainer's and the scorer's binaries live in their worker crates.
    for (role, package, cmd) in [
        ("api", "absa-api", "serve"),
        ("scheduler", "absa-scheduler", "run"),
        ("scorer", "absa-scorer-worker", "work"),
        ("trainer", "absa-trainer-worker", "work"),
    ] {
        let file = docker.join(format!("{role}.Dockerfile"));
        let text = read(&file);
        let bin = format!("absa-{role}");
        assert!(text.lines().filter(|l| l.starts_with("FROM ")).count() >= 2, "{role}: multi-stage build");
        assert!(text.contains(&format!("cargo build --release --locked -p {package} --bin {bin}")), "{role}: builds {bin}");
        // The workspace resolves only with every member's manifest (and the embedded
        // migrations); the compile-time query checks read .sqlx, offline by .cargo's setting.
        for dir in members.iter().map(String::as_str).chain(["migrations", ".cargo", ".sqlx"]) {
            assert!(text.contains(&format!("COPY {dir} {dir}")), "{role}: the workspace member {dir} is not copied into the build");
        }
        assert!(text.contains(&format!("ENTRYPOINT [\"{bin}\"]")), "{role}: entrypoint");
        assert!(text.contains(&format!("CMD [\"{cmd}\"]")), "{role}: default subcommand");
        assert!(text.contains(&format!("USER {uid}")), "{role}: runs as the chart's runAsUser {uid}");
        let repo_value = values.get(role).and_then(|r| r.get("image")).and_then(|i| i.get("repository"));
        assert_eq!(repo_value.and_then(J::as_str), Some(bin.as_str()), "{role}: values' image repository is the binary's name");
    }
    let scorer = read(&docker.join("scorer.Dockerfile"));
    let ort = native_version("ORT_VERSION");
    assert!(scorer.contains(&format!("ARG ORT_VERSION={ort}")), "scorer: ONNX Runtime {ort} as in scripts/native.sh");
    assert!(scorer.contains("onnxruntime==${ORT_VERSION}") && scorer.contains("ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so.${ORT_VERSION}"));
    let trainer = read(&docker.join("trainer.Dockerfile"));
    let torch = native_version("TORCH_VERSION");
    assert!(trainer.contains(&format!("ARG TORCH_VERSION={torch}")), "trainer: torch {torch} as in scripts/native.sh (tch expects exactly it)");
    assert!(trainer.contains("torch==${TORCH_VERSION}"));
    assert!(trainer.contains("ENV LIBTORCH=/opt/libtorch"), "trainer: LIBTORCH set at build time");
    assert!(trainer.lines().any(|l| l.starts_with("ARG CUDA_IMAGE=nvidia/cuda:") && l.contains("runtime")), "trainer: runs on an nvidia/cuda runtime image");
    for f in ["api", "scheduler"] {
        assert!(read(&docker.join(format!("{f}.Dockerfile"))).contains("debian:bookworm-slim"), "{f}: slim Debian runtime");
    }
}

/// The pod labels of every Deployment and Job, by object name.
fn pod_labels(r: &Rendered) -> BTreeMap<String, BTreeMap<String, String>> {
    r.all("Deployment")
        .into_iter()
        .chain(r.all("Job"))
        .map(|o| (o["metadata"]["name"].as_str().expect("name").to_owned(), string_map(&o["spec"]["template"]["metadata"]["labels"], "pod labels")))
        .collect()
}

/// Names of the Deployments and Jobs whose pods a label selector selects.
fn selected(r: &Rendered, selector: &J) -> BTreeSet<String> {
    let wanted = string_map(&selector["matchLabels"], "matchLabels");
    assert!(selector.get("matchExpressions").is_none(), "only matchLabels are used");
    pod_labels(r).into_iter().filter(|(_, labels)| subset(&wanted, labels)).map(|(name, _)| name).collect()
}

fn profile(name: &str) -> String {
    read(&chart_dir().join("profiles").join(format!("{name}.yaml")))
}

#[test]
fn every_values_profile_lints_renders_and_passes_the_kubernetes_schemas() {
    let mut names: Vec<String> = std::fs::read_dir(chart_dir().join("profiles"))
        .expect("profiles folder")
        .map(|e| e.expect("entry").path().file_stem().expect("stem").to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["cluster", "laptop", "single-gpu"]);
    let chart = chart_dir();
    for name in &names {
        let file = chart.join("profiles").join(format!("{name}.yaml"));
        let lint = helm(&["lint", "--strict", chart.to_str().expect("chart"), "-f", file.to_str().expect("profile")], "")
            .unwrap_or_else(|e| panic!("{name}: helm lint: {e}"));
        assert!(lint.contains("1 chart(s) linted, 0 chart(s) failed"), "{name}: {lint}");
        let r = render_ok(&profile(name));
        check_common(&r);
        check_pods(&r);
    }

    // laptop: one node, no GPU, nothing that needs several nodes.
    let r = render_ok(&profile("laptop"));
    let trainer = pod_spec(r.get("Deployment", "prod-absa-trainer"));
    assert!(trainer["containers"][0]["resources"]["limits"].get("nvidia.com/gpu").is_none(), "laptop: the trainer asks for no GPU");
    assert!(trainer.get("nodeSelector").is_none() && trainer.get("tolerations").is_none(), "laptop: the trainer runs on any node");
    for kind in ["HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress", "NetworkPolicy", "ScaledObject"] {
        assert!(r.all(kind).is_empty(), "laptop renders no {kind}");
    }
    for d in ["api", "scheduler", "scorer", "trainer"] {
        assert_eq!(r.get("Deployment", &format!("prod-absa-{d}"))["spec"]["replicas"], 1, "laptop: one {d}");
    }

    // single GPU node: the defaults' trainer on the GPU, scorers kept off that node.
    let r = render_ok(&profile("single-gpu"));
    assert_eq!(pod_spec(r.get("Deployment", "prod-absa-trainer"))["containers"][0]["resources"]["limits"]["nvidia.com/gpu"], 1);
    let scorer = pod_spec(r.get("Deployment", "prod-absa-scorer"));
    let term = &scorer["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"][0];
    assert_eq!((term["key"].as_str(), term["operator"].as_str()), (Some("nvidia.com/gpu.present"), Some("DoesNotExist")));
    assert_eq!(r.all("HorizontalPodAutoscaler").len(), 1);

    // cluster: no credentials in the chart's objects, TLS ingress, policies, KEDA to zero
    // for scorers and trainers.
    let r = render_ok(&profile("cluster"));
    assert!(r
        .all("Secret")
        .iter()
        .all(|s| !s["metadata"]["name"].as_str().unwrap_or("").ends_with("-database") && !s["metadata"]["name"].as_str().unwrap_or("").ends_with("-amqp")));
    assert!(!r.output.contains("postgres://") && !r.output.contains("amqp://"), "cluster: no URL in any rendered object");
    assert_eq!(r.get("Ingress", "prod-absa-api")["spec"]["tls"][0]["secretName"], "absa-tls");
    assert_eq!(r.all("NetworkPolicy").len(), 3, "the default, the API's, the scheduler's webhooks");
    assert_eq!(r.get("ScaledObject", "prod-absa-scorer")["spec"]["minReplicaCount"], 0, "scorers scale to zero");
    let trainers = &r.get("ScaledObject", "prod-absa-trainer")["spec"];
    assert_eq!((trainers["minReplicaCount"].as_u64(), trainers["maxReplicaCount"].as_u64()), (Some(0), Some(4)), "GPU trainers from zero to four");
    let spread = &pod_spec(r.get("Deployment", "prod-absa-api"))["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "topology.kubernetes.io/zone");
}

#[test]
fn disruption_budgets_and_spreading_cover_the_replicated_roles() {
    let r = render_ok("");
    let pdbs = r.all("PodDisruptionBudget");
    assert_eq!(pdbs.len(), 3, "api, scheduler, scorer");
    for role in ["api", "scheduler", "scorer"] {
        let name = format!("prod-absa-{role}");
        let pdb = r.get("PodDisruptionBudget", &name);
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        assert_eq!(selected(&r, &pdb["spec"]["selector"]), BTreeSet::from([name.clone()]), "{name}: the budget covers exactly its Deployment's pods");
        let spec = pod_spec(r.get("Deployment", &name));
        let spread = spec["topologySpreadConstraints"].as_array().unwrap_or_else(|| panic!("{name}: no topologySpreadConstraints"));
        assert_eq!(spread.len(), 1);
        assert_eq!((spread[0]["topologyKey"].as_str(), spread[0]["whenUnsatisfiable"].as_str()), (Some("kubernetes.io/hostname"), Some("ScheduleAnyway")));
        assert_eq!(selected(&r, &spread[0]["labelSelector"]), BTreeSet::from([name.clone()]), "{name}: spreads its own pods");
    }
    // The trainer hands its job back on SIGTERM: no budget, one GPU pod at a time.
    assert!(r.find("PodDisruptionBudget", "prod-absa-trainer").is_none());
    assert!(pod_spec(r.get("Deployment", "prod-absa-trainer")).get("topologySpreadConstraints").is_none());
    let r = render_ok("podDisruptionBudget: {enabled: false}\ntopologySpread: {enabled: false}");
    assert!(r.all("PodDisruptionBudget").is_empty());
    assert!(r.all("Deployment").iter().all(|d| pod_spec(d).get("topologySpreadConstraints").is_none()));
}

#[test]
fn network_policies_open_only_the_api_and_let_pods_reach_only_dns_postgres_and_rabbitmq() {
    assert!(render_ok("").all("NetworkPolicy").is_empty(), "off by default: it needs an enforcing network plugin");
    let r = render_ok(
        "networkPolicy: {enabled: true, api: {from: [{namespaceSelector: {matchLabels: {name: ingress}}}]}, metrics: {from: [{podSelector: {matchLabels: {app: prometheus}}}]}, database: {port: 6432}}\n\
         distributedRun: {enabled: true, sharedClaim: shared, args: [train]}",
    );
    let every_pod: BTreeSet<String> = pod_labels(&r).into_keys().collect();
    assert!(every_pod.len() >= 6, "{every_pod:?}");

    let default = &r.get("NetworkPolicy", "prod-absa-default")["spec"];
    assert_eq!(selected(&r, &default["podSelector"]), every_pod, "the default policy covers every pod of the release");
    assert_eq!(default["policyTypes"], serde_json::json!(["Ingress", "Egress"]));
    assert_eq!(default["ingress"].as_array().map(Vec::len), Some(1), "one ingress rule: the metrics port");
    assert_eq!(
        default["ingress"][0]["ports"],
        serde_json::json!([{"port": "metrics", "protocol": "TCP"}]),
        "only scrapes reach a pod unless another policy opens more"
    );
    assert_eq!(default["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app"], "prometheus");
    let ports: BTreeSet<(u64, String)> = default["egress"]
        .as_array()
        .expect("egress")
        .iter()
        .flat_map(|rule| {
            rule["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .map(|p| (p["port"].as_u64().expect("port number"), p["protocol"].as_str().expect("protocol").to_owned()))
        })
        .collect();
    let expected: BTreeSet<(u64, String)> = [(53, "UDP"), (53, "TCP"), (6432, "TCP"), (5672, "TCP")].into_iter().map(|(p, t)| (p, t.to_owned())).collect();
    assert_eq!(ports, expected, "egress: DNS, Postgres, RabbitMQ only");
    // The scheduler alone reaches webhook receivers, on 443 and 80.
    let hooks = &r.get("NetworkPolicy", "prod-absa-webhooks")["spec"];
    assert_eq!(selected(&r, &hooks["podSelector"]), BTreeSet::from(["prod-absa-scheduler".to_owned()]));
    assert_eq!(hooks["policyTypes"], serde_json::json!(["Egress"]));
    assert_eq!(hooks["egress"][0]["ports"], serde_json::json!([{"port": 443, "protocol": "TCP"}, {"port": 80, "protocol": "TCP"}]));
    assert!(render_ok("networkPolicy: {enabled: true, webhooks: {ports: []}}").find("NetworkPolicy", "prod-absa-webhooks").is_none());
    // Exporting traces opens the collector's port, and only then.
    let traced = render_ok("networkPolicy: {enabled: true}\nconfig: {log: {otlp_traces_endpoint: \"http://otel-collector.observability:4318/v1/traces\"}}");
    let egress = traced.get("NetworkPolicy", "prod-absa-default")["spec"]["egress"].as_array().expect("egress").clone();
    assert_eq!(egress.len(), 4, "DNS, Postgres, RabbitMQ and the collector: {egress:?}");
    assert_eq!(egress[3]["ports"], serde_json::json!([{"port": 4318, "protocol": "TCP"}]));
    let toml = traced.get("ConfigMap", "prod-absa-config")["data"]["absa.toml"].as_str().expect("toml").to_owned();
    assert!(toml.contains("otlp_traces_endpoint = \"http://otel-collector.observability:4318/v1/traces\""), "{toml}");

    let api = &r.get("NetworkPolicy", "prod-absa-api")["spec"];
    assert_eq!(selected(&r, &api["podSelector"]), BTreeSet::from(["prod-absa-api".to_owned()]));
    assert_eq!(api["ingress"][0]["ports"][0]["port"], "http");
    assert_eq!(api["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["name"], "ingress");
    let container = container(r.get("Deployment", "prod-absa-api"), "api");
    assert!(container["ports"].as_array().expect("ports").iter().any(|p| p["name"] == "http"), "the opened port is the API's");

    let run = &r.get("NetworkPolicy", "prod-absa-run")["spec"];
    let ranks = selected(&r, &run["podSelector"]);
    assert_eq!(ranks, BTreeSet::from(["prod-absa-run".to_owned()]));
    assert_eq!(selected(&r, &run["ingress"][0]["from"][0]["podSelector"]), ranks, "ranks accept each other");
    assert_eq!(selected(&r, &run["egress"][0]["to"][0]["podSelector"]), ranks, "ranks reach each other");
}

#[test]
fn the_ingress_routes_to_the_api_service_with_optional_tls() {
    assert!(render_ok("").all("Ingress").is_empty());
    match render("ingress: {enabled: true}") {
        Ok(_) => panic!("an ingress without a host rendered"),
        Err(e) => assert!(e.contains("ingress.host is required when ingress.enabled"), "{e}"),
    }
    let r = render_ok("ingress: {enabled: true, host: absa.example.org, className: nginx}");
    let ing = &r.get("Ingress", "prod-absa-api")["spec"];
    assert_eq!(ing["ingressClassName"], "nginx");
    assert!(ing.get("tls").is_none());
    let rule = &ing["rules"][0];
    assert_eq!(rule["host"], "absa.example.org");
    let backend = &rule["http"]["paths"][0]["backend"]["service"];
    let service = r.get("Service", backend["name"].as_str().expect("backend service"));
    assert!(service["spec"]["ports"].as_array().expect("ports").iter().any(|p| p["name"] == backend["port"]["name"]), "the backend port is the Service's");
    let r = render_ok("ingress: {enabled: true, host: absa.example.org, tlsSecret: absa-tls}");
    let tls = &r.get("Ingress", "prod-absa-api")["spec"]["tls"][0];
    assert_eq!((tls["hosts"][0].as_str(), tls["secretName"].as_str()), (Some("absa.example.org"), Some("absa-tls")));
}

#[test]
fn the_scheduler_and_the_workers_serve_metrics_and_health_on_the_metrics_port() {
    let r = render_ok("metrics: {port: 9100, podMonitor: {enabled: true}, serviceMonitor: {labels: {release: kps}}}");
    for role in ["scheduler", "scorer", "trainer"] {
        let c = container(r.get("Deployment", &format!("prod-absa-{role}")), role);
        let port = c["ports"].as_array().expect("ports").iter().find(|p| p["name"] == "metrics").unwrap_or_else(|| panic!("{role}: no metrics port"));
        assert_eq!(port["containerPort"], 9100);
        assert_eq!(env_value(c, "ABSA_METRICS__BIND").expect("ABSA_METRICS__BIND")["value"], "0.0.0.0:9100", "{role}: binds the declared port");
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            assert_eq!(c[probe]["httpGet"]["path"], path, "{role}: {probe}");
            assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{role}: {probe}");
            assert!(c[probe]["periodSeconds"].as_u64().is_some_and(|p| p > 0), "{role}: {probe} timings from values");
        }
    }
    let pm = r.get("PodMonitor", "prod-absa-workers");
    assert_eq!(pm["metadata"]["labels"]["release"], "kps", "selected by the same Prometheus as the ServiceMonitor");
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["path"], "/metrics");
    // The selector: name and instance labels, and a component among the three.
    let selector = &pm["spec"]["selector"];
    let expr = &selector["matchExpressions"][0];
    assert_eq!((expr["key"].as_str(), expr["operator"].as_str()), (Some("app.kubernetes.io/component"), Some("In")));
    let components: BTreeSet<&str> = expr["values"].as_array().expect("values").iter().map(|v| v.as_str().expect("component")).collect();
    let wanted = string_map(&selector["matchLabels"], "matchLabels");
    let scraped: BTreeSet<String> = pod_labels(&r)
        .into_iter()
        .filter(|(_, labels)| subset(&wanted, labels) && labels.get("app.kubernetes.io/component").is_some_and(|c| components.contains(c.as_str())))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(scraped, ["prod-absa-scheduler", "prod-absa-scorer", "prod-absa-trainer"].map(String::from).into_iter().collect::<BTreeSet<_>>());
    assert!(render_ok("").find("PodMonitor", "prod-absa-workers").is_none(), "off by default: it needs the Prometheus Operator");
}

#[tokio::test]
async fn keda_scales_trainers_on_the_training_jobs_their_gpus_can_take() {
    assert!(render_ok("").find("ScaledObject", "prod-absa-trainer").is_none(), "off by default: it needs KEDA");
    let r = render_ok("trainer: {keda: {enabled: true, maxReplicas: 6}}");
    check_pods(&r);
    let trainer = r.get("Deployment", "prod-absa-trainer");
    assert!(trainer["spec"].get("replicas").is_none(), "KEDA owns the replica count");
    let so = &r.get("ScaledObject", "prod-absa-trainer")["spec"];
    assert_eq!(so["scaleTargetRef"]["name"], "prod-absa-trainer");
    assert_eq!((so["minReplicaCount"].as_u64(), so["maxReplicaCount"].as_u64()), (Some(0), Some(6)), "to zero, and up to the maximum");
    let trigger = &so["triggers"][0];
    assert_eq!(trigger["type"], "postgresql");
    let env = trigger["metadata"]["connectionFromEnv"].as_str().expect("connectionFromEnv");
    assert!(env_value(container(trainer, "trainer"), env).is_some(), "KEDA reads {env} from the trainer's container, which has it");
    assert_eq!(trigger["metadata"]["targetQueryValue"], "1", "one job per pod");
    let query = trigger["metadata"]["query"].as_str().expect("query").to_owned();
    assert!(query.ends_with("<= 1"), "a one-GPU pod takes jobs of at most one GPU: {query}");

    // The query, run on a migrated database: it counts the training jobs waiting or
    // running that a one-GPU trainer can take, and nothing else.
    let admin = absa_e2e::service::admin_url();
    let name = format!("absa_keda_{}", uuid::Uuid::new_v4().simple());
    let url = absa_platform::db::create_database(&admin, &name).await.expect("create database");
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    absa_platform::db::migrate(&pool).await.expect("migrate");
    let team = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO teams (id, name) VALUES ($1, 'keda')").bind(team).execute(&pool).await.unwrap();
    let jobs = [
        ("train", "queued", r#"{"gpus": 1}"#, true),
        ("train", "dispatched", "{}", true),
        ("train", "running", r#"{"gpus": 0}"#, true),
        ("train", "queued", r#"{"gpus": 2}"#, false),
        ("train", "succeeded", r#"{"gpus": 1}"#, false),
        ("train", "failed", "{}", false),
        ("score", "queued", "{}", false),
        ("score_shard", "running", "{}", false),
    ];
    for (kind, state, parameters, _) in jobs {
        sqlx::query("INSERT INTO jobs (id, team_id, kind, state, parameters) VALUES ($1, $2, $3, $4, $5::jsonb)")
            .bind(uuid::Uuid::new_v4())
            .bind(team)
            .bind(kind)
            .bind(state)
            .bind(parameters)
            .execute(&pool)
            .await
            .unwrap();
    }
    let expected = jobs.iter().filter(|j| j.3).count() as i64;
    let count: i64 = sqlx::query_scalar(&query).fetch_one(&pool).await.unwrap_or_else(|e| panic!("{query}: {e}"));
    assert_eq!(count, expected, "queued 1-GPU, dispatched and running CPU jobs: {query}");
    pool.close().await;
    absa_platform::db::drop_database(&admin, &name).await.expect("drop database");
    // A CPU trainer (no GPU limit) takes only jobs asking for no GPU.
    let r = render_ok("trainer: {keda: {enabled: true}, resources: {limits: {nvidia.com/gpu: null}}}");
    let query = r.get("ScaledObject", "prod-absa-trainer")["spec"]["triggers"][0]["metadata"]["query"].as_str().expect("query").to_owned();
    assert!(query.ends_with("<= 0"), "{query}");
}
