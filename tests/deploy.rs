//! The examples under `deploy/` agree with the proxy they deploy: the
//! Grafana dashboard is JSON with its data source as a variable; the
//! dashboard and the alert rules query only metrics the proxy exposes (or
//! the few a later version adds, listed in [`PENDING`]); every alert has a
//! promtool test; the Kubernetes example parses, probes the admin port,
//! mounts the secret where its `proxy.toml` reads it, and that `proxy.toml`
//! is a valid config; the Dockerfile runs the binary as a non-root user;
//! the systemd unit is the documented one and reloads by SIGHUP.
//! promtool itself checks and tests the rules in `.ci/run`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fitbit_proxy::ops::metrics::{Metrics, Origin};
use fitbit_proxy::Config;
use yaml_rust2::{Yaml, YamlLoader};

/// Metrics the dashboard and the alerts use that the proxy does not expose
/// yet: none now that config reloads are counted.
const PENDING: &[&str] = &[];

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every sample name the proxy's exposition declares, plus Prometheus's
/// own `up`. A family is left out until it has a sample, so the families
/// by labels that start empty get one first.
fn exposed() -> BTreeSet<String> {
    let metrics = Metrics::new();
    metrics.request(Origin::Upstream, 200, Duration::from_millis(1));
    metrics.task_restarts("token_refresher");
    let text = metrics.render(None);
    let mut names = BTreeSet::from(["up".to_owned()]);
    for line in text.lines() {
        let Some(declared) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (family, kind) = declared.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
    }
    names
}

/// The metric names a PromQL expression uses (ours and the process ones).
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut found = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find(|c: char| c.is_ascii_alphabetic()) {
        rest = &rest[at..];
        let end = rest.find(|c| !is_name(c)).unwrap_or(rest.len());
        let word = &rest[..end];
        if word.starts_with("fitbit_proxy_") || word.starts_with("process_") || word == "up" {
            found.insert(word.to_owned());
        }
        rest = &rest[end..];
    }
    found
}

/// Names in `used` that neither exist nor are [`PENDING`].
fn unknown(used: &BTreeSet<String>) -> Vec<String> {
    let exposed = exposed();
    used.iter()
        .filter(|m| !exposed.contains(*m) && !PENDING.contains(&m.as_str()))
        .cloned()
        .collect()
}

#[test]
fn the_dashboard_is_json_with_a_datasource_variable_and_known_metrics() {
    let dash: serde_json::Value =
        serde_json::from_str(&read("grafana/fitbit-proxy.json")).expect("valid JSON");
    let vars = dash["templating"]["list"].as_array().expect("variables");
    assert!(
        vars.iter().any(|v| v["type"] == "datasource"
            && v["name"] == "datasource"
            && v["query"] == "prometheus"),
        "a Prometheus data source variable: {vars:?}"
    );
    let panels: Vec<&serde_json::Value> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .collect();
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for p in &panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate id: {p}");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            let expr = t["expr"].as_str().unwrap();
            let metrics = metrics_in(expr);
            assert!(!metrics.is_empty(), "{}: {expr}", p["title"]);
            used.extend(metrics);
        }
    }
    assert_eq!(
        unknown(&used),
        Vec::<String>::new(),
        "metrics that do not exist"
    );
    // What the dashboard is for: quota use, refusals, latency, token
    // state, reloads, shared state.
    for needed in [
        "fitbit_proxy_rate_limit_remaining",
        "fitbit_proxy_paced_rejections_total",
        "fitbit_proxy_requests_total",
        "fitbit_proxy_request_duration_seconds_bucket",
        "fitbit_proxy_token_expires_in_seconds",
        "fitbit_proxy_config_reloads_total",
        "fitbit_proxy_shared_state_up",
        "fitbit_proxy_open_connections",
    ] {
        assert!(used.contains(needed), "no panel shows {needed}");
    }
}

fn yaml(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_alert_queries_known_metrics_and_has_a_promtool_test() {
    let rules = &yaml("prometheus/alerts.yml")[0]["groups"][0]["rules"];
    let tests = read("prometheus/alerts_test.yml");
    let mut alerts = 0;
    for rule in rules.as_vec().expect("rules") {
        let name = rule["alert"].as_str().expect("an alert name");
        let expr = rule["expr"].as_str().expect("an expression");
        let used = metrics_in(expr);
        assert!(!used.is_empty(), "{name}: {expr}");
        assert_eq!(unknown(&used), Vec::<String>::new(), "{name}: {expr}");
        assert!(
            rule["labels"]["severity"].as_str().is_some()
                && rule["annotations"]["summary"].as_str().is_some(),
            "{name}: severity and summary"
        );
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "{name} has no promtool test"
        );
        alerts += 1;
    }
    assert!(alerts >= 10, "{alerts}");
}

/// Every document of every file in deploy/kubernetes.
fn manifests() -> Vec<Yaml> {
    let dir = deploy("kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|p| {
            yaml(&format!(
                "kubernetes/{}",
                p.file_name().unwrap().to_string_lossy()
            ))
        })
        .collect()
}

fn of_kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    let found: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

fn port_of(addr: &std::net::SocketAddr) -> i64 {
    i64::from(addr.port())
}

#[test]
fn the_kubernetes_example_parses_and_agrees_with_its_config() {
    let docs = manifests();
    let config_map = of_kind(&docs, "ConfigMap");
    let deployment = of_kind(&docs, "Deployment");
    let pdb = of_kind(&docs, "PodDisruptionBudget");
    let service = of_kind(&docs, "Service");
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];

    // The config the container is started with is the ConfigMap's, mounted.
    let args: Vec<&str> = container["args"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let at = args
        .iter()
        .position(|a| *a == "--config")
        .expect("--config");
    let config_path = Path::new(args[at + 1]);
    let mount = |volume: &str| {
        container["volumeMounts"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|m| m["name"].as_str() == Some(volume))
            .unwrap_or_else(|| panic!("no mount of {volume}"))
    };
    assert_eq!(
        Path::new(mount("config")["mountPath"].as_str().unwrap()),
        config_path.parent().unwrap()
    );
    let toml = config_map["data"][config_path.file_name().unwrap().to_str().unwrap()]
        .as_str()
        .expect("the ConfigMap holds the file --config names");

    // The secret is mounted as a directory (so rotations reach it) where
    // client_secret_file points; with a stand-in secret, the config is valid.
    let secret_file = toml
        .lines()
        .find_map(|l| l.trim().strip_prefix("client_secret_file = "))
        .expect("client_secret_file")
        .trim_matches('"');
    let credentials = mount("credentials");
    assert_eq!(
        Path::new(credentials["mountPath"].as_str().unwrap()),
        Path::new(secret_file).parent().unwrap()
    );
    assert!(
        credentials["subPath"].is_badvalue(),
        "a subPath mount never sees a rotated secret"
    );
    let dir = tempfile::tempdir().unwrap();
    let stand_in = dir.path().join("client-secret");
    std::fs::write(&stand_in, "stand-in\n").unwrap();
    let toml = toml.replace(secret_file, stand_in.to_str().unwrap());
    let config = Config::from_toml_str_with_env(&toml, &dir.path().join("proxy.toml"), &|_| None)
        .unwrap_or_else(|e| panic!("the ConfigMap's proxy.toml: {e}"));

    // Ports, probes on the admin port, the drain.
    let port = |name: &str| {
        container["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("no port {name}"))
    };
    assert_eq!(port("http"), port_of(&config.listen.addr));
    assert_eq!(
        port("admin"),
        port_of(&config.admin.addr.expect("admin on"))
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(
            container[probe]["httpGet"]["path"].as_str(),
            Some(path),
            "{probe}"
        );
        assert_eq!(
            container[probe]["httpGet"]["port"].as_str(),
            Some("admin"),
            "{probe}"
        );
    }
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .expect("a preStop sleep");
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap();
    assert!(
        grace > pre_stop + config.listen.shutdown_grace.as_secs() as i64,
        "terminationGracePeriodSeconds {grace} must outlast preStop {pre_stop} s and shutdown_grace"
    );
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"].as_str(),
        Some("http")
    );

    // Not root; as many pods as rate_limit.replicas, even during a rollout.
    assert_eq!(
        pod["spec"]["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    assert_eq!(
        deployment["spec"]["replicas"].as_i64(),
        Some(i64::from(config.rate_limit.replicas))
    );
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"].as_i64(),
        Some(0)
    );

    // The PodDisruptionBudget covers these pods.
    let labels = &pod["metadata"]["labels"];
    for (key, value) in pdb["spec"]["selector"]["matchLabels"].as_hash().unwrap() {
        assert_eq!(&labels[key.as_str().unwrap()], value, "PDB selector");
    }
    assert!(pdb["spec"]["minAvailable"].as_i64().is_some_and(|n| n >= 1));
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_unprivileged_in_another() {
    let text = read("Dockerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let stages = lines.iter().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "multi-stage");
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let user = lines[last_from..]
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the run stage names its user");
    assert!(!["root", "0", "0:0"].contains(&user), "{user}");
    let binary = lines[last_from..]
        .iter()
        .find_map(|l| l.strip_prefix("COPY --from=build "))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("the binary copied from the build stage");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ENTRYPOINT") && l.contains(binary)),
        "the entrypoint is the copied binary {binary}"
    );
}

/// The systemd unit under `deploy/` is the one docs/operations.md shows,
/// and `systemctl reload` sends SIGHUP (a reload, not a restart).
#[test]
fn the_systemd_unit_is_the_documented_one_and_reloads_by_sighup() {
    let unit = read("systemd/fitbit-proxy.service");
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"))
            .unwrap();
    assert!(
        docs.contains(&format!("```ini\n{unit}```")),
        "docs/operations.md shows deploy/systemd/fitbit-proxy.service as it is"
    );
    let service: Vec<&str> = unit.lines().map(str::trim).collect();
    assert!(
        service.contains(&"ExecReload=/bin/kill -HUP $MAINPID"),
        "{unit}"
    );
    assert!(service.contains(&"Restart=on-failure"), "{unit}");
}
