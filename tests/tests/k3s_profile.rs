//! The bundled k3s profile (`k3s/`): every manifest through `kubernetes-validate --strict`,
//! and the custom resources it has no schema for checked field by field here.
//!
//! kubernetes-validate knows only the built-in kinds: for a custom resource (k3s's HelmChart,
//! cert-manager's ClusterIssuer) it prints "WARN ... Couldn't find schema" and still exits 0.
//! So the tests check that only those two kinds are skipped (an apiVersion typo on a built-in
//! kind would be skipped the same way), and check those two against the fields their CRDs
//! define. The YAML is read with PyYAML, which kubernetes-validate brings along.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use aegird::cli::k3s::{plan, EMAIL_PLACEHOLDER};
use serde_json::{json, Value};

/// The release the tests were written against: its messages are what they read.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";
const PIP_INSTALL: &str = "python3 -m pip install kubernetes-validate==1.37.0";
/// The oldest Kubernetes the profile is meant for, and the newest the pinned cert-manager
/// supports.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.36.0"];

/// Kinds kubernetes-validate has no schema for, checked by the tests below instead.
const CUSTOM_KINDS: [(&str, &str); 2] = [
    ("helm.cattle.io/v1", "HelmChart"),
    ("cert-manager.io/v1", "ClusterIssuer"),
];

fn profile() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../k3s")
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(profile().join("manifests"))
        .expect("k3s/manifests")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in k3s/manifests");
    files
}

fn run(cmd: &mut Command, what: &str) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {what} ({e}); the k3s profile tests need it: `{PIP_INSTALL}`")
    })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `kubernetes-validate --strict` against every version in KUBERNETES_VERSIONS.
fn kubernetes_validate(files: &[PathBuf]) -> Output {
    let mut cmd = Command::new("kubernetes-validate");
    cmd.arg("--strict");
    for version in KUBERNETES_VERSIONS {
        cmd.args(["-k", version]);
    }
    run(cmd.args(files), "kubernetes-validate")
}

/// Every document of a YAML file, as JSON.
fn yaml_docs(path: &Path) -> Vec<Value> {
    let out = run(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
             json.dump(docs, sys.stdout)",
            )
            .arg(path),
        "python3 with PyYAML",
    );
    assert!(
        out.status.success(),
        "{} is not readable YAML (PyYAML comes with `{PIP_INSTALL}`): {}",
        path.display(),
        text(&out)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python3")
}

/// One YAML document given as text (a HelmChart's valuesContent, say), as JSON.
fn yaml_value(yaml: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("value.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut docs = yaml_docs(&path);
    assert_eq!(docs.len(), 1, "{yaml}");
    docs.remove(0)
}

/// Like --strict: `v` is an object with no key outside `allowed`.
fn only_keys(v: &Value, allowed: &[&str], at: &str) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{at} is not a mapping: {v}"));
    for key in obj.keys() {
        assert!(
            allowed.contains(&key.as_str()),
            "{at}.{key} is not a field of this kind (known: {allowed:?})"
        );
    }
}

fn metadata(doc: &Value, at: &str) {
    only_keys(
        &doc["metadata"],
        &["name", "namespace", "labels", "annotations"],
        &format!("{at}.metadata"),
    );
    assert!(doc["metadata"]["name"].is_string(), "{at} has no name");
}

#[test]
fn kubernetes_validate_is_the_pinned_release() {
    let out = run(
        Command::new("kubernetes-validate").arg("--version"),
        "kubernetes-validate",
    );
    let version = text(&out).trim().to_string();
    assert_eq!(
        version, KUBERNETES_VALIDATE_VERSION,
        "these tests read kubernetes-validate {KUBERNETES_VALIDATE_VERSION}'s messages: \
         `{PIP_INSTALL}`"
    );
}

#[test]
fn every_manifest_passes_strict_validation_but_the_custom_resources() {
    let files = manifests();
    let out = kubernetes_validate(&files);
    let report = text(&out);
    assert!(
        out.status.success(),
        "kubernetes-validate failed:\n{report}"
    );
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.starts_with("INFO ") || line.starts_with("WARN "),
            "unexpected kubernetes-validate output: {line}\n{report}"
        );
    }

    let mut custom = 0;
    for file in &files {
        let shown = file.display().to_string();
        for doc in yaml_docs(file) {
            let (api, kind) = (
                doc["apiVersion"].as_str().unwrap_or_default(),
                doc["kind"].as_str().unwrap_or_default(),
            );
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            for version in KUBERNETES_VERSIONS {
                let minor = &version[..version.rfind('.').unwrap()];
                let line = if CUSTOM_KINDS.contains(&(api, kind)) {
                    format!(
                        "WARN {shown} Couldn't find schema for kind {kind} with api version \
                         {api} for kubernetes version {minor}"
                    )
                } else {
                    format!(
                        "INFO {shown} passed for resource {}/{name} against version {minor}",
                        kind.to_lowercase()
                    )
                };
                assert!(
                    report.lines().any(|l| l == line),
                    "expected `{line}` in:\n{report}"
                );
            }
            custom += usize::from(CUSTOM_KINDS.contains(&(api, kind)));
        }
    }
    // Any other skipped document would be a built-in kind with a wrong apiVersion or kind.
    let warnings = report.lines().filter(|l| l.starts_with("WARN ")).count();
    assert_eq!(
        warnings,
        custom * KUBERNETES_VERSIONS.len(),
        "kubernetes-validate skipped something besides the custom resources:\n{report}"
    );
}

#[test]
fn strict_validation_catches_a_misspelt_field() {
    // Proves the check above has teeth: the same RBAC with one field name wrong.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("aegir.yaml");
    let good = std::fs::read_to_string(profile().join("manifests/aegir.yaml")).unwrap();
    std::fs::write(&bad, good.replacen("    verbs:", "    verb:", 1)).unwrap();
    let out = kubernetes_validate(&[bad]);
    assert!(!out.status.success(), "accepted:\n{}", text(&out));
    assert!(text(&out).contains("ERROR"), "{}", text(&out));
}

#[test]
fn cert_manager_helm_chart_is_a_pinned_k3s_helm_chart() {
    let docs = yaml_docs(&profile().join("manifests/cert-manager.yaml"));
    assert_eq!(docs.len(), 1);
    let chart = &docs[0];
    only_keys(
        chart,
        &["apiVersion", "kind", "metadata", "spec"],
        "HelmChart",
    );
    assert_eq!(chart["apiVersion"], "helm.cattle.io/v1");
    assert_eq!(chart["kind"], "HelmChart");
    metadata(chart, "HelmChart");
    assert_eq!(chart["metadata"]["name"], "cert-manager");
    // k3s's helm controller and its own charts (traefik) keep HelmCharts here.
    assert_eq!(chart["metadata"]["namespace"], "kube-system");

    let spec = &chart["spec"];
    // The spec fields of k3s's HelmChart CRD (helm-controller), as k3s documents them.
    only_keys(
        spec,
        &[
            "chart",
            "chartContent",
            "repo",
            "repoCA",
            "repoCAConfigMap",
            "version",
            "targetNamespace",
            "createNamespace",
            "set",
            "valuesContent",
            "valuesSecrets",
            "helmVersion",
            "bootstrap",
            "jobImage",
            "timeout",
            "failurePolicy",
            "authSecret",
            "authPassCredentials",
            "dockerRegistrySecret",
            "insecureSkipTLSVerify",
            "plainHTTP",
            "backOffLimit",
            "podSecurityContext",
            "securityContext",
        ],
        "HelmChart.spec",
    );
    assert_eq!(spec["repo"], "https://charts.jetstack.io");
    assert_eq!(spec["chart"], "cert-manager");
    let version = spec["version"].as_str().expect("spec.version is pinned");
    let numbers: Vec<&str> = version
        .strip_prefix('v')
        .expect("jetstack's chart versions start with v")
        .split('.')
        .collect();
    assert!(
        numbers.len() == 3
            && numbers
                .iter()
                .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())),
        "spec.version {version} is not one exact release"
    );
    assert_eq!(spec["targetNamespace"], "cert-manager");
    assert_eq!(spec["createNamespace"], true);
    let values = yaml_value(spec["valuesContent"].as_str().expect("valuesContent"));
    assert_eq!(values, json!({ "crds": { "enabled": true } }));
}

/// Checks the two issuers against cert-manager's ClusterIssuer (ACME, HTTP-01) fields; gives
/// the email of each.
fn check_issuers(docs: &[Value]) -> Vec<String> {
    let mut names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap_or_default())
        .collect();
    names.sort();
    assert_eq!(names, ["letsencrypt-production", "letsencrypt-staging"]);

    let mut emails = Vec::new();
    let mut key_secrets = Vec::new();
    for doc in docs {
        let name = doc["metadata"]["name"].as_str().unwrap();
        let at = format!("ClusterIssuer {name}");
        only_keys(doc, &["apiVersion", "kind", "metadata", "spec"], &at);
        assert_eq!(doc["apiVersion"], "cert-manager.io/v1", "{at}");
        assert_eq!(doc["kind"], "ClusterIssuer", "{at}");
        metadata(doc, &at);
        assert!(
            doc["metadata"].get("namespace").is_none(),
            "{at}: cluster-scoped"
        );
        only_keys(&doc["spec"], &["acme"], &format!("{at}.spec"));

        let acme = &doc["spec"]["acme"];
        only_keys(
            acme,
            &[
                "server",
                "email",
                "privateKeySecretRef",
                "solvers",
                "skipTLSVerify",
                "externalAccountBinding",
                "preferredChain",
                "caBundle",
                "disableAccountKeyGeneration",
                "enableDurationFeature",
                "profile",
            ],
            &format!("{at}.spec.acme"),
        );
        let server = if name.ends_with("staging") {
            "https://acme-staging-v02.api.letsencrypt.org/directory"
        } else {
            "https://acme-v02.api.letsencrypt.org/directory"
        };
        assert_eq!(acme["server"], server, "{at}");
        emails.push(
            acme["email"]
                .as_str()
                .unwrap_or_else(|| panic!("{at}: email is not a string"))
                .to_string(),
        );
        only_keys(
            &acme["privateKeySecretRef"],
            &["name", "key"],
            &format!("{at}.privateKeySecretRef"),
        );
        let secret = acme["privateKeySecretRef"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: privateKeySecretRef.name"));
        key_secrets.push(secret.to_string());

        let solvers = acme["solvers"].as_array().expect("solvers");
        assert_eq!(solvers.len(), 1, "{at}: one HTTP-01 solver");
        let solver = &solvers[0];
        only_keys(
            solver,
            &["http01", "dns01", "selector"],
            &format!("{at} solver"),
        );
        only_keys(
            &solver["http01"],
            &["ingress", "gatewayHTTPRoute"],
            &format!("{at} solver.http01"),
        );
        let ingress = &solver["http01"]["ingress"];
        only_keys(
            ingress,
            &[
                "class",
                "ingressClassName",
                "name",
                "serviceType",
                "podTemplate",
                "ingressTemplate",
            ],
            &format!("{at} solver.http01.ingress"),
        );
        // k3s's bundled ingress controller.
        assert_eq!(ingress["ingressClassName"], "traefik", "{at}");
    }
    key_secrets.dedup();
    assert_eq!(
        key_secrets.len(),
        2,
        "each issuer needs its own ACME account key"
    );
    emails
}

#[test]
fn letsencrypt_issuers_are_acme_http01_through_traefik() {
    let docs = yaml_docs(&profile().join("manifests/letsencrypt.yaml"));
    let emails = check_issuers(&docs);
    // The placeholder bootstrap-k3s replaces with --email.
    assert_eq!(emails, [EMAIL_PLACEHOLDER, EMAIL_PLACEHOLDER]);
}

#[test]
fn issuers_stay_valid_with_the_email_bootstrap_k3s_writes() {
    // An address with YAML-significant characters: it must stay one string.
    let email = "o'brien+certs#1@aegir-hosting.org";
    let root = tempfile::tempdir().unwrap();
    let files = plan(&profile(), root.path(), email).expect("profile plan");
    let issuers = files
        .iter()
        .find(|f| f.dest.ends_with("aegir-letsencrypt.yaml"))
        .expect("aegir-letsencrypt.yaml is installed");
    let path = root.path().join("aegir-letsencrypt.yaml");
    std::fs::write(&path, &issuers.content).unwrap();

    assert_eq!(check_issuers(&yaml_docs(&path)), [email, email]);
    let out = kubernetes_validate(&[path]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn config_drop_in_makes_the_kubeconfig_readable_by_group_aegir() {
    let docs = yaml_docs(&profile().join("config.yaml.d/aegir.yaml"));
    // Strings: an unquoted 0640 is an octal number to YAML 1.1 readers (416).
    assert_eq!(
        docs,
        [json!({ "write-kubeconfig-mode": "0640", "write-kubeconfig-group": "aegir" })]
    );
}

#[test]
fn pyyaml_reads_what_kubernetes_validate_reads() {
    // yaml_docs above uses `python3`; make sure it is the interpreter kubernetes-validate
    // runs on, so a missing PyYAML there means a missing kubernetes-validate.
    let out = run(
        Command::new("python3")
            .args(["-c", "import kubernetes_validate"])
            .stderr(Stdio::piped()),
        "python3",
    );
    assert!(
        out.status.success(),
        "python3 cannot import kubernetes_validate: install it for that interpreter with \
         `{PIP_INSTALL}`\n{}",
        text(&out)
    );
}
