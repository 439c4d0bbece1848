//! The OSCAR layer's manifests as a whole: every document parses, HelmCharts are at
//! their pinned versions, credentials stay in the Secrets manifest, and the cloud,
//! edge and gateway renderings match their snapshots (`snapshots/`).

use super::objects::b64;
use super::*;
use crate::recipe::serverless::{GivenCredentials, OscarCliTarget, Profile, Tier, TlsCert};
use base64::Engine as _;
use serde_json::json;
use std::time::Duration;

fn section(profile: Profile) -> Serverless {
    Serverless {
        profile,
        tier: if profile == Profile::Cloud {
            Tier::Cloud
        } else {
            Tier::Edge
        },
        ingress: IngressMode::Nginx,
        endpoint: "https://oscar.example.org".into(),
        cluster_id: "farm".into(),
        knative: profile == Profile::Cloud,
        gpu: None,
        readiness_timeout: Duration::from_secs(60),
        credentials: GivenCredentials::default(),
        values: BTreeMap::new(),
        oscar_cli: OscarCliTarget {
            path: None,
            set_default: false,
            ssl_verify: false,
        },
        servicelb: true,
        oscar: DEFAULT_OSCAR,
        resource_manager: true,
        rescheduler: false,
        tls: None,
        values_secrets: true,
    }
}

fn tls() -> TlsCert {
    TlsCert {
        cert_path: "/etc/oscar/tls.crt".into(),
        key_path: "/etc/oscar/tls.key".into(),
        cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        key_pem: crate::recipe::Secret::new(
            "-----BEGIN PRIVATE KEY-----\nKEY-0123\n-----END PRIVATE KEY-----\n",
        ),
    }
}

fn creds() -> Credentials {
    Credentials {
        oscar_user: "oscar".into(),
        oscar_password: crate::recipe::Secret::new("pw-0123456789"),
        minio_access_key: "minioadmin-key".into(),
        minio_secret_key: crate::recipe::Secret::new("minio-secret-0123"),
    }
}

fn docs(m: &Manifest) -> Vec<Value> {
    serde_saphyr::from_multiple(&m.text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}\n{}", m.file, m.text))
}

fn file<'a>(ms: &'a [Manifest], suffix: &str) -> &'a Manifest {
    ms.iter()
        .find(|m| m.file.ends_with(suffix))
        .unwrap_or_else(|| {
            panic!(
                "no {suffix} in {:?}",
                ms.iter().map(|m| &m.file).collect::<Vec<_>>()
            )
        })
}

/// The parsed `valuesContent` of the HelmChart in `suffix`.
fn chart_values(ms: &[Manifest], suffix: &str) -> Value {
    let d = docs(file(ms, suffix)).remove(0);
    serde_saphyr::from_str(d["spec"]["valuesContent"].as_str().expect("values"))
        .expect("valuesContent is YAML")
}

/// `name` in namespace `ns` from the Secrets manifest, its data decoded.
fn secret_data(ms: &[Manifest], name: &str, ns: &str) -> Option<(Value, BTreeMap<String, String>)> {
    docs(file(ms, "05-secrets.yaml")).into_iter().find_map(|d| {
        (d["metadata"]["name"] == name && d["metadata"]["namespace"] == ns).then(|| {
            let data = d["data"]
                .as_object()
                .expect("data")
                .iter()
                .map(|(k, v)| {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(v.as_str().expect("base64 string"))
                        .expect("base64");
                    (k.clone(), String::from_utf8(raw).expect("utf-8"))
                })
                .collect();
            (d.clone(), data)
        })
    })
}

/// Every document parses; every HelmChart names repo, chart, version (a string)
/// and targetNamespace at the pinned version, with a mapping as values.
fn check(ms: &[Manifest], s: &Serverless) {
    for m in ms {
        assert!(m.file.starts_with(FILE_PREFIX) && m.file.ends_with(".yaml"));
        let docs = docs(m);
        assert!(!docs.is_empty(), "{}", m.file);
        for d in docs {
            if d["kind"] == "HelmChart" {
                let spec = &d["spec"];
                for k in ["repo", "chart", "version", "targetNamespace"] {
                    assert!(
                        spec[k].as_str().is_some_and(|s| !s.is_empty()),
                        "{}: {k}",
                        m.file
                    );
                }
                let pinned = charts(s)
                    .into_iter()
                    .find(|c| c.chart == spec["chart"])
                    .expect("pinned");
                assert_eq!(spec["version"], pinned.version);
                let values: Value =
                    serde_saphyr::from_str(spec["valuesContent"].as_str().expect("values"))
                        .expect("valuesContent is YAML");
                assert!(values.is_object(), "{}", m.file);
            }
        }
    }
}

/// No credential, and no private key, outside the Secrets manifest.
fn secrets_only_in_secret_objects(ms: &[Manifest]) {
    let c = creds();
    for m in ms.iter().filter(|m| !m.file.ends_with("05-secrets.yaml")) {
        for secret in [
            c.oscar_password.expose(),
            c.minio_secret_key.expose(),
            "KEY-0123",
            &b64(c.oscar_password.expose()),
        ] {
            assert!(
                !m.text.contains(secret),
                "{} holds {secret}:\n{}",
                m.file,
                m.text
            );
        }
    }
}

fn snapshot_text(ms: &[Manifest]) -> String {
    ms.iter()
        .map(|m| format!("### {}\n{}", m.file, m.text))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn cloud_profile_snapshot() {
    let s = section(Profile::Cloud);
    let ms = render("farm", &s, &creds()).expect("render");
    check(&ms, &s);
    secrets_only_in_secret_objects(&ms);
    assert!(ms.iter().any(|m| m.file.contains("knative-serving")));
    insta::assert_snapshot!("cloud", snapshot_text(&ms));
}

#[test]
fn edge_profile_snapshot() {
    let mut s = section(Profile::Edge);
    s.values.insert(
        "oscar".into(),
        json!({"resources": {"requests": {"memory": "96Mi"}}, "extra": {"k": "v"}}),
    );
    let ms = render("farm", &s, &creds()).expect("render");
    check(&ms, &s);
    secrets_only_in_secret_objects(&ms);
    assert!(
        !ms.iter().any(|m| m.file.contains("knative")),
        "edge: no Knative by default"
    );
    let oscar = chart_values(&ms, "50-oscar.yaml");
    assert_eq!(
        oscar["resources"]["requests"]["memory"], "96Mi",
        "override applied"
    );
    assert_eq!(
        oscar["resources"]["requests"]["cpu"], "100m",
        "profile value kept next to the override"
    );
    assert_eq!(
        oscar["resourceManager"]["enable"], true,
        "edge clusters offload"
    );
    insta::assert_snapshot!("edge", snapshot_text(&ms));
}

/// OSCAR's services mount a PVC, which Knative admits only with both PVC features
/// enabled (docs/oscar.md, "Knative").
#[test]
fn knative_serving_enables_pvc_features() {
    let s = section(Profile::Cloud);
    let ms = render("farm", &s, &creds()).expect("render");
    let ks = docs(file(&ms, "41-knative-serving.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "KnativeServing")
        .expect("KnativeServing");
    let features = &ks["spec"]["config"]["config-features"];
    assert_eq!(
        features["kubernetes.podspec-persistent-volume-claim"],
        "enabled"
    );
    assert_eq!(
        features["kubernetes.podspec-persistent-volume-write"],
        "enabled"
    );
    assert_eq!(
        ks["spec"]["config"]["network"]["ingress-class"],
        "kourier.ingress.networking.knative.dev"
    );
}

/// Each release installs its chart with its image tag pinned; 3.6's chart
/// gets no values it does not have (httproute, exposedServices; docs/oscar.md,
/// "Installed versions" and "Chart values").
#[test]
fn oscar_release_picks_chart_and_image() {
    for r in OSCAR_RELEASES {
        let mut s = section(Profile::Cloud);
        s.oscar = *r;
        let ms = render("farm", &s, &creds()).expect("render");
        check(&ms, &s);
        let hc = docs(file(&ms, "50-oscar.yaml")).remove(0);
        assert_eq!(hc["spec"]["version"], r.chart);
        let v = chart_values(&ms, "50-oscar.yaml");
        assert_eq!(v["image"]["tag"], r.image_tag, "{}", r.version);
        assert_eq!(
            v.get("httproute").is_some(),
            r.has_httproute(),
            "{}",
            r.version
        );
        assert!(v.get("exposedServices").is_none());
    }
    assert_eq!(DEFAULT_OSCAR.version, "4.1.2");
    let old = OscarRelease::find("3.6").expect("3.6");
    assert_eq!((old.chart, old.image_tag), ("3.6.4", "3.6.4"));
    assert!(!old.has_httproute());
    assert_eq!(OscarRelease::find("v4.1.2"), Some(DEFAULT_OSCAR));
    assert_eq!(OscarRelease::find("4.1"), Some(DEFAULT_OSCAR));
    for bad in ["4", "4.2", "3.6.3", "latest", "", "4.1.x"] {
        assert_eq!(OscarRelease::find(bad), None, "{bad}");
    }
}

/// The resource manager and the rescheduler follow the recipe (docs/oscar.md,
/// "Resource manager").
#[test]
fn resource_manager_and_rescheduler_follow_the_section() {
    let mut s = section(Profile::Edge);
    s.resource_manager = false;
    s.rescheduler = true;
    let v = chart_values(
        &render("farm", &s, &creds()).expect("render"),
        "50-oscar.yaml",
    );
    assert_eq!(v["resourceManager"]["enable"], false);
    assert_eq!(v["reScheduler"]["enable"], true);
}

/// The HTTPRoute's parent is a Gateway in kube-system served by k3s's
/// Traefik, taking routes from every namespace, on HTTPS with the recipe's
/// certificate (docs/oscar.md, "Gateway").
#[test]
fn gateway_mode_uses_traefik_and_httproute() {
    let mut s = section(Profile::Edge);
    s.ingress = IngressMode::Gateway;
    s.tls = Some(tls());
    let ms = render("farm", &s, &creds()).expect("render");
    check(&ms, &s);
    secrets_only_in_secret_objects(&ms);
    assert!(!ms.iter().any(|m| m.file.contains("ingress-nginx")));
    let gw = docs(file(&ms, "30-traefik-gateway.yaml"));
    let hcc = gw
        .iter()
        .find(|d| d["kind"] == "HelmChartConfig")
        .expect("HelmChartConfig");
    assert_eq!(hcc["metadata"]["name"], "traefik");
    assert_eq!(hcc["metadata"]["namespace"], "kube-system");
    let traefik: Value =
        serde_saphyr::from_str(hcc["spec"]["valuesContent"].as_str().expect("values"))
            .expect("yaml");
    assert_eq!(traefik["providers"]["kubernetesGateway"]["enabled"], true);
    let g = gw.iter().find(|d| d["kind"] == "Gateway").expect("Gateway");
    assert_eq!(g["metadata"]["namespace"], "kube-system");
    assert_eq!(g["metadata"]["name"], GATEWAY_NAME);
    assert_eq!(g["spec"]["gatewayClassName"], "traefik");
    let l = &g["spec"]["listeners"][0];
    assert_eq!(l["protocol"], "HTTPS");
    assert_eq!(l["port"], TRAEFIK_WEBSECURE_PORT);
    assert_eq!(l["allowedRoutes"]["namespaces"]["from"], "All");
    assert_eq!(l["tls"]["certificateRefs"][0]["name"], TLS_SECRET);
    assert!(
        g["spec"]["listeners"]
            .as_array()
            .is_some_and(|a| a.len() == 1),
        "no plain http"
    );

    let v = chart_values(&ms, "50-oscar.yaml");
    assert_eq!(v["httproute"]["create"], true);
    assert_eq!(v["httproute"]["gateway"]["name"], GATEWAY_NAME);
    assert_eq!(v["httproute"]["gateway"]["namespace"], "kube-system");
    assert_eq!(v["httproute"]["host"], "oscar.example.org");
    assert_eq!(v["exposedServices"]["routeKind"], "httproute");
    assert_eq!(v["ingress"]["create"], false);
    let (doc, data) = secret_data(&ms, TLS_SECRET, "kube-system").expect("TLS Secret");
    assert_eq!(doc["type"], "kubernetes.io/tls");
    assert!(data["tls.key"].contains("KEY-0123"));
    assert!(data["tls.crt"].starts_with("-----BEGIN CERTIFICATE-----"));
    insta::assert_snapshot!("gateway", snapshot_text(&ms));
}

/// MinIO reads its root credentials from a Secret (`existingSecret`); the
/// OSCAR chart reads its credential values from a Secret through `valuesSecrets`
/// (docs/oscar.md, "Secrets").
#[test]
fn credentials_live_in_secrets() {
    let s = section(Profile::Cloud);
    let c = creds();
    let ms = render("farm", &s, &c).expect("render");
    let minio = chart_values(&ms, "20-minio.yaml");
    assert_eq!(minio["existingSecret"], MINIO_ROOT_SECRET);
    assert!(minio.get("rootPassword").is_none() && minio.get("rootUser").is_none());
    let (_, root) = secret_data(&ms, MINIO_ROOT_SECRET, "minio").expect("MinIO Secret");
    assert_eq!(root["rootUser"], c.minio_access_key);
    assert_eq!(root["rootPassword"], c.minio_secret_key.expose());

    let hc = docs(file(&ms, "50-oscar.yaml")).remove(0);
    let refs = &hc["spec"]["valuesSecrets"];
    assert_eq!(refs[0]["name"], OSCAR_VALUES_SECRET);
    assert_eq!(refs[0]["keys"][0], OSCAR_VALUES_KEY);
    let (_, data) = secret_data(&ms, OSCAR_VALUES_SECRET, "kube-system").expect("values Secret");
    let values: Value = serde_saphyr::from_str(&data[OSCAR_VALUES_KEY]).expect("yaml");
    assert_eq!(values["authPass"], c.oscar_password.expose());
    assert_eq!(values["minIO"]["secretKey"], c.minio_secret_key.expose());
    assert_eq!(values["minIO"]["accessKey"], c.minio_access_key);
    let oscar = chart_values(&ms, "50-oscar.yaml");
    assert!(oscar.get("authPass").is_none());
    assert!(oscar["minIO"].get("secretKey").is_none());
    // The namespaces the Secrets go to exist before the charts create them.
    let ns: Vec<Value> = docs(file(&ms, "00-namespaces.yaml"));
    assert!(ns.iter().any(|d| d["metadata"]["name"] == "minio"));
    // A changed MinIO password rolls MinIO's pod.
    let mut c2 = c.clone();
    c2.minio_secret_key = crate::recipe::Secret::new("another-secret-0123");
    let minio2 = chart_values(&render("farm", &s, &c2).expect("render"), "20-minio.yaml");
    assert_ne!(minio["podAnnotations"], minio2["podAnnotations"]);
}

/// k3s without `valuesSecrets`: only the OSCAR chart falls back to its
/// values; MinIO still reads a Secret.
#[test]
fn without_values_secrets_only_the_oscar_chart_holds_credentials() {
    let mut s = section(Profile::Edge);
    s.values_secrets = false;
    let c = creds();
    let ms = render("farm", &s, &c).expect("render");
    check(&ms, &s);
    let hc = docs(file(&ms, "50-oscar.yaml")).remove(0);
    assert!(hc["spec"].get("valuesSecrets").is_none());
    let oscar = chart_values(&ms, "50-oscar.yaml");
    assert_eq!(oscar["authPass"], c.oscar_password.expose());
    assert_eq!(oscar["minIO"]["secretKey"], c.minio_secret_key.expose());
    assert!(secret_data(&ms, OSCAR_VALUES_SECRET, "kube-system").is_none());
    for m in ms
        .iter()
        .filter(|m| !m.file.ends_with("05-secrets.yaml") && !m.file.ends_with("50-oscar.yaml"))
    {
        assert!(!m.text.contains(c.minio_secret_key.expose()), "{}", m.file);
    }
}

/// With the recipe's certificate, ingress-nginx serves it as its default
/// certificate; without one, no TLS Secret is written; http is redirected always
/// (docs/oscar.md, "TLS").
#[test]
fn nginx_serves_the_recipe_certificate() {
    let mut s = section(Profile::Edge);
    let plain = render("farm", &s, &creds()).expect("render");
    assert!(secret_data(&plain, TLS_SECRET, "ingress-nginx").is_none());
    let v = chart_values(&plain, "30-ingress-nginx.yaml");
    assert!(v["controller"].get("extraArgs").is_none());
    // Redirected to https (the controller's own certificate) all the same.
    assert_eq!(v["controller"]["config"]["force-ssl-redirect"], "true");

    s.tls = Some(tls());
    let ms = render("farm", &s, &creds()).expect("render");
    check(&ms, &s);
    secrets_only_in_secret_objects(&ms);
    let v = chart_values(&ms, "30-ingress-nginx.yaml");
    assert_eq!(
        v["controller"]["extraArgs"]["default-ssl-certificate"],
        format!("ingress-nginx/{TLS_SECRET}")
    );
    assert_eq!(v["controller"]["config"]["force-ssl-redirect"], "true");
    let (doc, _) = secret_data(&ms, TLS_SECRET, "ingress-nginx").expect("TLS Secret");
    assert_eq!(doc["type"], "kubernetes.io/tls");
    let ns: Vec<Value> = docs(file(&ms, "00-namespaces.yaml"));
    assert!(ns.iter().any(|d| d["metadata"]["name"] == "ingress-nginx"));
}

/// OSCAR hands out MinIO's external URL (its NodePort on the endpoint's
/// host), not the in-cluster service (docs/oscar.md, "MinIO").
#[test]
fn minio_endpoint_is_the_external_url() {
    let s = section(Profile::Edge);
    let ms = render("farm", &s, &creds()).expect("render");
    let v = chart_values(&ms, "50-oscar.yaml");
    assert_eq!(v["minIO"]["endpoint"], "http://oscar.example.org:30300");
    assert_eq!(v["minIO"]["endpoint"], s.minio_url());
    let minio = chart_values(&ms, "20-minio.yaml");
    assert_eq!(minio["service"]["nodePort"], MINIO_NODE_PORT);
    assert_eq!(
        minio["environment"]["MINIO_BROWSER_REDIRECT_URL"],
        "http://oscar.example.org:30301"
    );
}

#[test]
fn digests_ignore_real_credentials() {
    // The plan's and state's digests are no function of the passwords.
    // Rendered with two different credential sets the manifests differ (the
    // passwords are in them), yet the digests are those of the placeholder
    // rendering, equal for both.
    let s = section(Profile::Cloud);
    let d = digests("farm", &s).expect("digests");
    assert_eq!(d.len(), 8);
    let real = |pw: &str| Credentials {
        oscar_user: "oscar".into(),
        oscar_password: crate::recipe::Secret::new(pw),
        minio_access_key: "minio".into(),
        minio_secret_key: crate::recipe::Secret::new(format!("{pw}-minio")),
    };
    let sha = |c: &Credentials| -> BTreeMap<String, String> {
        render("farm", &s, c)
            .expect("render")
            .into_iter()
            .map(|m| (m.file, crate::render::sha256_hex(m.text.as_bytes())))
            .collect()
    };
    let (a, b) = (real("pw-aaaaaaaaaa"), real("pw-bbbbbbbbbb"));
    let rendered_a = render("farm", &s, &a).expect("render");
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode("pw-aaaaaaaaaa-minio")
    };
    assert!(
        rendered_a
            .iter()
            .any(|m| m.text.contains("pw-aaaaaaaaaa") || m.text.contains(&b64)),
        "the credentials reach the manifests, so a digest over them would depend on them"
    );
    assert_ne!(sha(&a), sha(&b));
    assert_eq!(d, sha(&placeholder_credentials()));
    assert_ne!(d, sha(&a));
    let mut t = s.clone();
    t.tls = Some(tls());
    let dt = digests("farm", &t).expect("digests");
    assert_ne!(d, dt, "a certificate changes the layer's hash");
}
