//! Malformed recipes and inventories (tests/fixtures/bad): each must be rejected with a
//! `file:line:col` diagnostic pointing at the offending key or value, never a panic.
//!
//! Recipe fixtures name `../good/inventory.yaml`. Inventory fixtures (`inv_*.yaml`) are
//! loaded through a recipe generated in a temporary directory that names them by
//! absolute path, so their diagnostics still carry the fixture's own file name.

use std::path::{Path, PathBuf};

use continuum::files::load_recipe;
use continuum::recipe::{Diagnostic, LoadError, Severity};

use crate::harness::{Workspace, assert_ok, root};

fn fixtures() -> PathBuf {
    root().join("tests/fixtures")
}

/// A recipe that uses the inventory at `inventory` and lets role hints pick servers.
fn recipe_for_inventory(inventory: &Path) -> String {
    let quoted = inventory.display().to_string().replace('\'', "''");
    format!("name: inventory-check\ninventory: '{quoted}'\nk3s:\n  version: v1.31.4+k3s1\n")
}

/// Load `bad/<fixture>` the way `continuum validate` does and return its diagnostics.
fn diagnostics(fixture: &str) -> Vec<Diagnostic> {
    let path = fixtures().join("bad").join(fixture);
    assert!(path.is_file(), "missing fixture {}", path.display());
    let tmp = tempfile::tempdir().expect("create a temporary directory");
    let recipe = if fixture.starts_with("inv_") {
        let recipe = tmp.path().join("recipe.yaml");
        std::fs::write(&recipe, recipe_for_inventory(&path)).expect("write the generated recipe");
        recipe
    } else {
        path
    };
    match load_recipe(&recipe) {
        Ok(loaded) => panic!("{fixture} loaded, with warnings {:#?}", loaded.warnings),
        Err(LoadError::Invalid(diags)) => diags,
        Err(e) => panic!("{fixture}: expected diagnostics, got {e:?}"),
    }
}

fn listing(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("  {d}\n")).collect()
}

/// Assert that loading `fixture` reports an error at `bad/<fixture>:line:col` whose
/// message contains `fragment`; return that diagnostic for further checks.
fn expect_error_in(fixture: &str, file: &str, line: u64, col: u64, fragment: &str) -> Diagnostic {
    let diags = diagnostics(fixture);
    for d in &diags {
        assert!(
            d.pos.line >= 1 && d.pos.col >= 1,
            "{fixture}: unpositioned diagnostic {d}"
        );
    }
    let at = diags.iter().find(|d| {
        d.severity == Severity::Error
            && d.file.ends_with(Path::new("bad").join(file))
            && (d.pos.line, d.pos.col) == (line, col)
    });
    let Some(d) = at else {
        panic!(
            "{fixture}: no error at bad/{file}:{line}:{col}; got:\n{}",
            listing(&diags)
        );
    };
    assert!(
        d.message.contains(fragment),
        "{fixture}: error at {line}:{col} does not mention {fragment:?}:\n  {d}"
    );
    d.clone()
}

fn expect_error(fixture: &str, line: u64, col: u64, fragment: &str) -> Diagnostic {
    expect_error_in(fixture, fixture, line, col, fragment)
}

fn expect_help(d: &Diagnostic, fragment: &str) {
    let help = d.help.as_deref().unwrap_or_default();
    assert!(
        help.contains(fragment),
        "help of `{d}` does not mention {fragment:?}"
    );
}

// --- YAML syntax and types -------------------------------------------------------------

#[test]
fn yaml_syntax_error_is_positioned() {
    // The flow sequence on line 5 is never closed; the parser notices on line 6.
    let d = expect_error("yaml_syntax.yaml", 6, 9, "illegal placement of ':'");
    assert!(
        !d.message.contains("at line"),
        "position repeated in message: {d}"
    );
}

#[test]
fn empty_file_is_rejected() {
    expect_error("empty.yaml", 1, 1, "unexpected end of input");
}

#[test]
fn top_level_list_is_rejected() {
    expect_error("top_level_list.yaml", 1, 1, "expected mapping");
}

#[test]
fn k3s_as_string_is_rejected() {
    expect_error("k3s_string.yaml", 3, 6, "expected mapping");
}

#[test]
fn string_where_list_expected() {
    expect_error("servers_string.yaml", 5, 12, "expected sequence");
}

#[test]
fn number_where_string_expected_is_checked_as_text() {
    // `version: 1.31` is read as the string "1.31", then refused as a version pin.
    expect_error("version_number.yaml", 4, 12, "invalid k3s version `1.31`");
}

#[test]
fn mapping_where_string_expected() {
    expect_error("name_mapping.yaml", 2, 3, "expected string");
}

#[test]
fn non_boolean_ha_is_rejected() {
    expect_error("ha_not_bool.yaml", 6, 7, "invalid boolean");
}

#[test]
fn duplicate_yaml_key_is_rejected() {
    expect_error("duplicate_key.yaml", 6, 1, "duplicate mapping key: name");
}

#[test]
fn port_out_of_range_is_rejected() {
    expect_error("inv_port_too_big.yaml", 5, 11, "invalid u16");
}

#[test]
fn port_zero_is_rejected() {
    expect_error("inv_port_zero.yaml", 3, 9, "port 0 is not a valid SSH port");
}

// --- unknown and missing keys ----------------------------------------------------------

#[test]
fn state_section_is_checked_with_positions() {
    let d = expect_error("state_bad_url.yaml", 7, 8, "bucket name");
    expect_help(&d, "s3://BUCKET/PREFIX");
    expect_error("state_bad_endpoint.yaml", 8, 13, "not an http(s) URL");
    expect_error("state_unknown_key.yaml", 8, 3, "unknown field `bucket`");
}

#[test]
fn unknown_top_level_key() {
    let d = expect_error("unknown_top_key.yaml", 6, 1, "unknown field `kubeconfg`");
    expect_help(&d, "check its spelling");
}

#[test]
fn unknown_k3s_key() {
    let d = expect_error("unknown_k3s_key.yaml", 5, 3, "unknown field `servres`");
    expect_help(&d, "check its spelling");
}

#[test]
fn unknown_install_key() {
    let d = expect_error("unknown_install_key.yaml", 7, 5, "unknown field `script`");
    assert!(
        d.message.contains("script_url"),
        "expected keys not listed: {d}"
    );
    expect_help(&d, "check its spelling");
}

#[test]
fn unknown_inventory_host_key() {
    let d = expect_error("inv_unknown_host_key.yaml", 5, 5, "unknown field `adress`");
    expect_help(&d, "remove the key or check its spelling");
}

#[test]
fn unknown_inventory_defaults_key() {
    let d = expect_error(
        "inv_unknown_defaults_key.yaml",
        3,
        3,
        "unknown field `identity`",
    );
    expect_help(&d, "check its spelling");
}

// serde reports a missing field at the last key read in the mapping that lacks it
// (serde_saphyr's fallback location), not at the mapping's first line.

#[test]
fn missing_name() {
    expect_error("missing_name.yaml", 2, 1, "missing field `name`");
}

#[test]
fn missing_k3s_version() {
    expect_error("missing_version.yaml", 4, 3, "missing field `version`");
}

#[test]
fn missing_host_address() {
    expect_error("inv_missing_address.yaml", 6, 5, "missing field `address`");
}

// --- names and versions ----------------------------------------------------------------

#[test]
fn invalid_environment_name() {
    let d = expect_error(
        "bad_env_name.yaml",
        1,
        7,
        "invalid environment name `Farm_Edge`",
    );
    expect_help(&d, "lowercase");
}

#[test]
fn reserved_environment_name() {
    // Its state file would be the state directory's endpoint catalog (endpoints.json).
    let d = expect_error(
        "reserved_env_name.yaml",
        1,
        7,
        "environment name `endpoints` is reserved",
    );
    expect_help(&d, "catalog of OSCAR endpoints");
}

#[test]
fn k3s_version_without_v_and_build() {
    let d = expect_error("version_no_v.yaml", 4, 12, "invalid k3s version `1.31.4`");
    expect_help(&d, "v1.31.4+k3s1");
}

#[test]
fn k3s_version_without_patch() {
    expect_error("version_short.yaml", 4, 12, "invalid k3s version `v1.31`");
}

#[test]
fn k3s_version_latest() {
    expect_error("version_latest.yaml", 4, 12, "invalid k3s version `latest`");
}

// --- servers, agents and HA --------------------------------------------------------------

#[test]
fn dangling_server_suggests_a_host() {
    let d = expect_error(
        "dangling_server.yaml",
        5,
        20,
        "server `srv-9x` is not a host of the inventory",
    );
    expect_help(&d, "did you mean `srv-");
}

#[test]
fn dangling_agent_suggests_a_host() {
    let d = expect_error("dangling_agent.yaml", 8, 7, "agent `agnet-2` is not a host");
    expect_help(&d, "did you mean `agent-2`?");
}

#[test]
fn host_listed_as_server_and_agent() {
    let d = expect_error(
        "host_listed_twice.yaml",
        8,
        7,
        "host `srv-1` is listed twice",
    );
    expect_help(&d, "first listed at line 5");
}

#[test]
fn duplicate_host_name_in_inventory() {
    let d = expect_error(
        "inv_duplicate_name.yaml",
        7,
        11,
        "duplicate host name `srv-1`",
    );
    expect_help(&d, "first defined at line 2");
}

#[test]
fn duplicate_address_and_port_in_inventory() {
    expect_error(
        "inv_duplicate_address.yaml",
        8,
        14,
        "same address and port as `srv-1` (10.0.0.1:2222)",
    );
}

#[test]
fn two_servers_without_ha() {
    let d = expect_error(
        "two_servers.yaml",
        5,
        12,
        "2 servers cannot keep etcd quorum",
    );
    expect_help(&d, "ha: true");
}

#[test]
fn ha_with_one_server() {
    expect_error("ha_one_server.yaml", 6, 7, "HA needs at least 3 servers");
}

#[test]
fn ha_false_with_three_servers() {
    expect_error("ha_false_three.yaml", 6, 7, "several servers need HA");
}

#[test]
fn even_number_of_ha_servers_is_only_a_warning() {
    let loaded = load_recipe(&fixtures().join("good/even_ha.yaml")).expect("4 HA servers load");
    assert_eq!(loaded.env.cluster.servers.len(), 4);
    assert!(loaded.env.cluster.ha);
    let [w] = loaded.warnings.as_slice() else {
        panic!("expected one warning, got:\n{}", listing(&loaded.warnings));
    };
    assert_eq!(w.severity, Severity::Warning);
    assert!(w.file.ends_with("good/even_ha.yaml"), "{w}");
    assert_eq!((w.pos.line, w.pos.col), (6, 7), "{w}");
    assert!(
        w.message.contains("an even number adds no fault tolerance"),
        "{w}"
    );
}

// --- networking, labels, taints, extra_config --------------------------------------------

#[test]
fn unknown_flannel_backend() {
    let d = expect_error(
        "flannel_unknown.yaml",
        6,
        20,
        "unknown flannel backend `geneve`",
    );
    expect_help(&d, "vxlan");
}

#[test]
fn flannel_wireguard_suggests_wireguard_native() {
    let d = expect_error(
        "flannel_wireguard.yaml",
        6,
        20,
        "unknown flannel backend `wireguard`",
    );
    expect_help(&d, "wireguard-native");
}

#[test]
fn unknown_disable_item_suggests_a_component() {
    let d = expect_error(
        "disable_typo.yaml",
        6,
        22,
        "no packaged component `servicelbb`",
    );
    expect_help(&d, "did you mean `servicelb`?");
}

#[test]
fn invalid_cluster_cidr() {
    expect_error("bad_cidr.yaml", 6, 17, "invalid CIDR `10.42.0.0/33`");
}

#[test]
fn overlapping_cluster_and_service_cidrs() {
    expect_error(
        "overlapping_cidrs.yaml",
        7,
        17,
        "overlaps the cluster CIDR 10.42.0.0/16",
    );
}

#[test]
fn invalid_tls_san() {
    expect_error(
        "bad_tls_san.yaml",
        6,
        30,
        "invalid tls_san entry `https://k3s.example.org`",
    );
}

// Label errors point at the offending entry's value.

#[test]
fn invalid_node_label_key() {
    expect_error(
        "bad_label_key.yaml",
        8,
        15,
        "invalid node label key `-bad-key`",
    );
}

#[test]
fn invalid_node_label_value() {
    expect_error(
        "bad_label_value.yaml",
        8,
        11,
        "invalid value `field a` for node label `zone`",
    );
}

#[test]
fn invalid_host_label_value() {
    expect_error(
        "inv_bad_label.yaml",
        7,
        13,
        "invalid value `-field-a` for node label `zone`",
    );
}

#[test]
fn invalid_taint_effect() {
    let d = expect_error("bad_taint.yaml", 8, 7, "invalid taint `gpu=true:Sometimes`");
    expect_help(&d, "NoSchedule");
}

#[test]
fn extra_config_managed_token() {
    let d = expect_error("extra_token.yaml", 7, 12, "`token` is managed by continuum");
    expect_help(&d, "generated");
}

#[test]
fn extra_config_managed_cluster_init() {
    let d = expect_error(
        "extra_cluster_init.yaml",
        8,
        19,
        "`cluster-init` is managed by continuum",
    );
    expect_help(&d, "k3s.ha: true");
}

#[test]
fn extra_config_unknown_key_suggests_a_flag() {
    let d = expect_error(
        "extra_unknown.yaml",
        7,
        19,
        "`kubelet-args` is not a k3s configuration key",
    );
    expect_help(&d, "did you mean `kubelet-arg`?");
}

// --- issue 10: configuration keys -------------------------------------------------------

/// Item 6: every key continuum writes itself is refused at its value, and the hint
/// names the recipe or inventory field to use instead (or why there is none).
#[test]
fn extra_config_refuses_every_managed_key() {
    let fixture = "extra_managed_keys.yaml";
    for (line, col, key, hint) in [
        (9, 16, "node-name", "inventory host's `name`"),
        (10, 19, "with-node-id", "inventory host's `name`"),
        (11, 14, "node-ip", "`node_ip` on the host in the inventory"),
        (
            12,
            23,
            "node-external-ip",
            "`external_ip` on the host in the inventory",
        ),
        (13, 15, "data-dir", "another data-dir is refused"),
        (14, 23, "write-kubeconfig", "`kubeconfig.path`"),
        (15, 28, "write-kubeconfig-mode", "`kubeconfig.path`"),
        (16, 24, "https-listen-port", "port 6443"),
        (17, 12, "token", "generated by continuum"),
        (18, 17, "token-file", "generated by continuum"),
        (19, 18, "agent-token", "generated by continuum"),
        (20, 13, "server", "first server of `k3s.servers`"),
        (21, 19, "cluster-init", "`k3s.ha: true`"),
        (
            22,
            22,
            "default-runtime",
            "`k3s.nvidia_default_runtime: true`",
        ),
        (23, 22, "flannel-backend", "`k3s.flannel_backend`"),
        (24, 26, "flannel-external-ip", "inventory `external_ip`"),
        (25, 14, "tls-san", "`k3s.tls_san`"),
    ] {
        let d = expect_error(
            fixture,
            line,
            col,
            &format!("`{key}` is managed by continuum"),
        );
        expect_help(&d, hint);
    }
    let errors = diagnostics(fixture)
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    assert_eq!(errors, 17, "one error per managed key");
}

/// Item 6: the reasons for refusing data-dir and https-listen-port name the defaults
/// continuum relies on.
#[test]
fn data_dir_and_listen_port_are_refused_with_the_reason() {
    let d = expect_error("extra_managed_keys.yaml", 13, 15, "`data-dir` is managed");
    expect_help(&d, "/var/lib/rancher/k3s");
    let d = expect_error(
        "extra_managed_keys.yaml",
        16,
        24,
        "`https-listen-port` is managed",
    );
    expect_help(&d, "6443");
}

/// Item 6: per-host addresses are IP addresses, positioned in the inventory.
#[test]
fn inventory_node_addresses_must_be_ip_addresses() {
    let d = expect_error(
        "inv_bad_node_ip.yaml",
        6,
        14,
        "invalid node_ip `srv-1.lan` for host `srv-1`",
    );
    expect_help(&d, "IPv4 or IPv6 address");
    expect_error(
        "inv_bad_node_ip.yaml",
        9,
        18,
        "invalid external_ip `203.0.113.300` for host `agent-1`",
    );
}

/// Item 15: a flag the pinned k3s does not have is unknown, with the nearest real one.
#[test]
fn extra_config_flag_k3s_does_not_have() {
    let d = expect_error(
        "extra_removed_flag.yaml",
        8,
        28,
        "`flannel-cni-conf-file` is not a k3s configuration key (k3s v1.31.4+k3s1)",
    );
    expect_help(&d, "did you mean `flannel-cni-conf`?");
}

/// Item 15: a flag k3s hides is refused with the reason, not passed through.
#[test]
fn extra_config_hidden_flag() {
    let d = expect_error(
        "extra_hidden_flag.yaml",
        9,
        22,
        "`supervisor-port` is a hidden k3s flag",
    );
    expect_help(&d, "port 6443");
}

/// Item 16: Gateway values need Traefik v3, packaged from k3s v1.32.2.
#[test]
fn gateway_ingress_needs_traefik_v3() {
    let d = expect_error(
        "gateway_old_k3s.yaml",
        10,
        12,
        "`ingress: gateway` needs k3s v1.32.2 or later (Traefik v3)",
    );
    expect_help(&d, "`ingress: nginx`");
    expect_help(&d, "v1.32.2+k3s1");
}

/// Item 16: the boundary: v1.32.1 still packages Traefik v2, v1.32.2 and v1.33 are v3.
#[test]
fn gateway_ingress_version_boundary() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let inv = fixtures().join("good/inventory.yaml");
    // Gateway mode also needs the certificate its HTTPS listener references.
    write_pem_pair(tmp.path());
    for (version, ok) in [
        ("v1.31.4+k3s1", false),
        ("v1.32.1+k3s1", false),
        ("v1.32.2-rc1+k3s1", true),
        ("v1.32.2+k3s1", true),
        ("v1.33.0+k3s1", true),
    ] {
        let recipe = tmp.path().join("r.yaml");
        std::fs::write(
            &recipe,
            format!(
                "name: gw\ninventory: '{}'\nk3s:\n  version: {version}\n  servers: [srv-1]\nserverless:\n  profile: cloud\n  ingress: gateway\n  tls: {{cert: tls.crt, key: tls.key}}\n",
                inv.display()
            ),
        )
        .expect("write recipe");
        match load_recipe(&recipe) {
            Ok(_) => assert!(ok, "{version}: gateway must be refused"),
            Err(LoadError::Invalid(diags)) => {
                assert!(!ok, "{version}: refused:\n{}", listing(&diags));
                assert!(
                    diags.iter().any(|d| (d.pos.line, d.pos.col) == (8, 12)
                        && d.message.contains("needs k3s v1.32.2")),
                    "{version}: {}",
                    listing(&diags)
                );
            }
            Err(e) => panic!("{version}: {e:?}"),
        }
    }
}

/// Gateway mode needs servicelb (Traefik's Gateway sits behind a LoadBalancer Service).
#[test]
fn gateway_ingress_needs_servicelb() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let inv = fixtures().join("good/inventory.yaml");
    write_pem_pair(tmp.path());
    let recipe = tmp.path().join("r.yaml");
    std::fs::write(
        &recipe,
        format!(
            "name: gw
inventory: '{}'
k3s:
  version: v1.32.4+k3s1
  servers: [srv-1]
  disable: [servicelb]
serverless:
  profile: cloud
  ingress: gateway
  tls: {{cert: tls.crt, key: tls.key}}
",
            inv.display()
        ),
    )
    .expect("write recipe");
    match load_recipe(&recipe) {
        Err(LoadError::Invalid(diags)) => assert!(
            diags.iter().any(|d| (d.pos.line, d.pos.col) == (9, 12)
                && d.message
                    .contains("cannot be reached with servicelb disabled")),
            "{}",
            listing(&diags)
        ),
        other => panic!("accepted or wrong error: {other:?}"),
    }
}

/// Item 6 (good path): `node_ip` / `external_ip` reach the node's config.yaml, and
/// item 15: extra keys reach only the roles whose k3s subcommand has them.
#[test]
fn node_addresses_and_extra_keys_reach_the_node_config() {
    use continuum::graph::node_config;
    use continuum::recipe::Role;
    let tmp = tempfile::tempdir().expect("tempdir");
    let inventory = tmp.path().join("inventory.yaml");
    std::fs::write(
        &inventory,
        "hosts:\n  - name: srv-1\n    address: 192.0.2.1\n    node_ip: 10.8.0.1\n    external_ip: 203.0.113.1\n  - name: agent-1\n    address: 192.0.2.11\n    node_ip: \"fd00::11\"\n  - name: agent-2\n    address: 192.0.2.12\n",
    )
    .expect("write inventory");
    let recipe = tmp.path().join("r.yaml");
    std::fs::write(
        &recipe,
        "name: addr\ninventory: inventory.yaml\nk3s:\n  version: v1.31.4+k3s1\n  servers: [srv-1]\n  extra_config:\n    system-default-registry: registry.lan\n    etcd-s3-bucket: snapshots\n    disable-apiserver-lb: true\n    bind-address: 0.0.0.0\n    nonroot-devices: true\n",
    )
    .expect("write recipe");
    let loaded = load_recipe(&recipe).expect("valid recipe");
    let env = &loaded.env;
    let server = node_config(env, "srv-1", Role::Server);
    assert_eq!(server["node-ip"], "10.8.0.1");
    assert_eq!(server["node-external-ip"], "203.0.113.1");
    assert_eq!(server["system-default-registry"], "registry.lan");
    assert_eq!(server["etcd-s3-bucket"], "snapshots");
    assert_eq!(server["bind-address"], "0.0.0.0");
    assert!(!server.contains_key("disable-apiserver-lb"), "agent-only");
    let agent = node_config(env, "agent-1", Role::Agent);
    assert_eq!(agent["node-ip"], "fd00::11");
    assert!(!agent.contains_key("node-external-ip"));
    assert_eq!(agent["disable-apiserver-lb"], true);
    assert_eq!(agent["bind-address"], "0.0.0.0");
    assert_eq!(agent["nonroot-devices"], true);
    for key in ["system-default-registry", "etcd-s3-bucket"] {
        assert!(!agent.contains_key(key), "{key} is server-only");
    }
    let plain = node_config(env, "agent-2", Role::Agent);
    assert!(!plain.contains_key("node-ip") && !plain.contains_key("node-external-ip"));
}

#[test]
fn cli_validate_reports_a_managed_key() {
    validate_rejects("extra_managed_keys.yaml", 11, 14);
}

#[test]
fn cli_validate_reports_gateway_on_old_k3s() {
    validate_rejects("gateway_old_k3s.yaml", 10, 12);
}

#[test]
fn readiness_timeout_zero() {
    expect_error(
        "readiness_zero.yaml",
        6,
        22,
        "readiness_timeout must be at least 1 second",
    );
}

// --- issue 11: the OSCAR layer's versions, gateway, secrets and TLS -----------------------

/// A syntactically valid certificate and key pair of files in `dir` (`tls.crt`,
/// `tls.key`): only their PEM framing is checked at load time.
fn write_pem_pair(dir: &Path) {
    std::fs::write(
        dir.join("tls.crt"),
        "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n",
    )
    .expect("write tls.crt");
    std::fs::write(
        dir.join("tls.key"),
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEtest\n-----END EC PRIVATE KEY-----\n",
    )
    .expect("write tls.key");
}

/// Load `name: t` with a k3s `version` and this `serverless:` body (in a directory that
/// holds `tls.crt` and `tls.key`).
fn load_serverless(
    dir: &Path,
    version: &str,
    body: &str,
) -> Result<continuum::recipe::Loaded, LoadError> {
    let recipe = dir.join("r.yaml");
    std::fs::write(
        &recipe,
        format!(
            "name: t\ninventory: '{}'\nk3s:\n  version: {version}\n  servers: [srv-1]\nserverless:\n{body}",
            fixtures().join("good/inventory.yaml").display()
        ),
    )
    .expect("write recipe");
    load_recipe(&recipe)
}

/// Item 4: only pinned OSCAR releases are installed.
#[test]
fn oscar_version_must_be_pinned() {
    let d = expect_error(
        "oscar_version_unknown.yaml",
        9,
        18,
        "continuum does not install OSCAR `4.0`",
    );
    expect_help(&d, "4.1.2, 3.6.4");
}

/// Item 8: the chart's HTTPRoute exists from OSCAR 4.0; 3.6 cannot be served by a Gateway.
#[test]
fn gateway_ingress_needs_oscar_4() {
    let d = expect_error(
        "gateway_oscar36.yaml",
        9,
        12,
        "`ingress: gateway` needs OSCAR 4.0 or later",
    );
    expect_help(&d, "`ingress: nginx`");
    expect_help(&d, "line 10");
}

/// Items 8 and 10: a Gateway's HTTPS listener needs the recipe's certificate.
#[test]
fn gateway_ingress_needs_a_certificate() {
    let d = expect_error(
        "gateway_without_tls.yaml",
        9,
        12,
        "`ingress: gateway` needs `serverless.tls`",
    );
    expect_help(&d, "certificateRefs");
}

/// Item 10: Basic auth never crosses the network in clear.
#[test]
fn endpoint_must_be_https() {
    let d = expect_error(
        "endpoint_http.yaml",
        9,
        13,
        "the serverless endpoint `http://oscar.example.org` is plain http",
    );
    expect_help(&d, "https://");
}

/// Item 10: the certificate and key are read, and must be PEM, when the recipe loads.
#[test]
fn tls_files_are_read_at_load() {
    expect_error(
        "tls_missing_file.yaml",
        10,
        11,
        "cannot read the TLS certificate",
    );
    expect_error(
        "tls_missing_file.yaml",
        11,
        10,
        "cannot read the TLS private key",
    );
    expect_error("tls_not_pem.yaml", 9, 15, "holds no PEM certificate");
    expect_error("tls_not_pem.yaml", 9, 42, "holds no PEM private key");
}

/// Item 9: credentials are not chart values.
#[test]
fn credentials_are_refused_in_values() {
    let d = expect_error(
        "values_credentials.yaml",
        11,
        12,
        "`values.oscar` sets `minIO.secretKey`",
    );
    expect_help(&d, "serverless.credentials");
}

#[test]
fn cli_validate_reports_gateway_without_tls() {
    validate_rejects("gateway_without_tls.yaml", 9, 12);
}

/// Items 4, 6, 10, 11: what a section without the new keys means, and with them.
#[test]
fn serverless_defaults_and_switches() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_pem_pair(tmp.path());
    for profile in ["edge", "cloud"] {
        let loaded = load_serverless(
            tmp.path(),
            "v1.31.4+k3s1",
            &format!("  profile: {profile}\n"),
        )
        .expect("loads");
        let s = loaded.env.serverless.as_ref().expect("serverless");
        assert_eq!(
            s.endpoint, "https://10.0.0.1",
            "{profile}: https by default"
        );
        assert_eq!(s.minio_url(), "http://10.0.0.1:30300");
        assert!(
            !s.oscar_cli.ssl_verify,
            "{profile}: the ingress's own certificate is not verifiable"
        );
        assert_eq!(s.oscar.version, "4.1.2");
        assert_eq!(s.oscar.image_tag, "4.1.2");
        assert!(s.resource_manager, "{profile}: resource manager on");
        assert!(!s.rescheduler);
        assert!(s.tls.is_none());
        assert!(
            !s.values_secrets,
            "v1.31.4's helm-controller has no valuesSecrets"
        );
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w.severity == Severity::Warning
                    && w.message.contains("cannot read chart values from Secrets")
                    && (w.pos.line, w.pos.col) == (7, 12)),
            "{profile}: {}",
            listing(&loaded.warnings)
        );
    }
    let loaded = load_serverless(
        tmp.path(),
        "v1.32.4+k3s1",
        "  profile: edge\n  oscar_version: v3.6\n  resource_manager: false\n  rescheduler: true\n  tls: {cert: tls.crt, key: tls.key}\n  endpoint: https://oscar.example.org/\n",
    )
    .expect("loads");
    assert!(
        !loaded
            .warnings
            .iter()
            .any(|w| w.message.contains("from Secrets")),
        "{}",
        listing(&loaded.warnings)
    );
    let s = loaded.env.serverless.as_ref().expect("serverless");
    assert_eq!((s.oscar.version, s.oscar.chart), ("3.6.4", "3.6.4"));
    assert!(!s.resource_manager && s.rescheduler);
    assert!(s.values_secrets);
    assert_eq!(s.endpoint, "https://oscar.example.org");
    assert_eq!(s.minio_url(), "http://oscar.example.org:30300");
    assert!(s.oscar_cli.ssl_verify, "a given certificate is verified");
    let tls = s.tls.as_ref().expect("tls");
    assert_eq!(tls.cert_path, tmp.path().join("tls.crt"));
    assert!(tls.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(tls.key_pem.expose().contains("MHcCAQEEtest"));
    assert!(
        !format!("{s:?}").contains("MHcCAQEEtest"),
        "the key never shows in Debug"
    );

    // ssl_verify given explicitly wins; `true` without a certificate is warned about.
    let loaded = load_serverless(
        tmp.path(),
        "v1.33.0+k3s1",
        "  profile: cloud\n  oscar_cli:\n    ssl_verify: true\n",
    )
    .expect("loads");
    assert!(
        loaded
            .env
            .serverless
            .as_ref()
            .expect("s")
            .oscar_cli
            .ssl_verify
    );
    assert!(
        loaded.warnings.iter().any(|w| w
            .message
            .contains("`ssl_verify: true` without `serverless.tls`")
            && (w.pos.line, w.pos.col) == (9, 17)),
        "{}",
        listing(&loaded.warnings)
    );
}

/// Item 9: `valuesSecrets` arrived with helm-controller v0.16.7, in k3s v1.30.12,
/// v1.31.8 and v1.32.4 (docs/oscar.md, "Secrets").
#[test]
fn values_secrets_follow_the_k3s_version() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (version, has) in [
        ("v1.29.15+k3s1", false),
        ("v1.30.11+k3s1", false),
        ("v1.30.12+k3s1", true),
        ("v1.31.4+k3s1", false),
        ("v1.31.7+k3s1", false),
        ("v1.31.8-rc1+k3s1", true),
        ("v1.31.8+k3s1", true),
        ("v1.32.3+k3s1", false),
        ("v1.32.4+k3s1", true),
        ("v1.33.0+k3s1", true),
        ("v1.36.4+k3s1", true),
    ] {
        let loaded = load_serverless(tmp.path(), version, "  profile: edge\n").expect(version);
        assert_eq!(
            loaded.env.serverless.as_ref().expect("s").values_secrets,
            has,
            "{version}"
        );
    }
}

// --- install source ----------------------------------------------------------------------

#[test]
fn bundle_source_without_bundle() {
    let d = expect_error(
        "bundle_without_dir.yaml",
        6,
        13,
        "`source: bundle` needs a `bundle` directory",
    );
    expect_help(&d, "install.sh");
}

#[test]
fn bundle_directory_missing() {
    expect_error(
        "bundle_dir_missing.yaml",
        7,
        13,
        "no-such-bundle does not exist",
    );
}

#[test]
fn bundle_with_online_source() {
    expect_error(
        "bundle_with_online.yaml",
        7,
        13,
        "`bundle` is only used with `source: bundle`",
    );
}

#[test]
fn script_url_must_be_https() {
    expect_error("script_url_http.yaml", 7, 17, "must be fetched over https");
}

// --- inventory ---------------------------------------------------------------------------

#[test]
fn missing_inventory_points_at_recipe_inventory_line() {
    let d = expect_error("inventory_missing.yaml", 2, 12, "cannot read inventory");
    assert!(d.message.contains("no-such-inventory.yaml"), "{d}");
    expect_help(&d, "relative to the recipe file");
}

#[test]
fn empty_hosts_list() {
    expect_error("inv_empty_hosts.yaml", 3, 8, "the inventory lists no hosts");
}

#[test]
fn invalid_bastion_port() {
    let d = expect_error(
        "inv_bad_bastion.yaml",
        2,
        12,
        "invalid bastion `ops@gateway.example.org:99999`",
    );
    expect_help(&d, "[user@]host[:port]");
}

#[test]
fn invalid_host_key() {
    let d = expect_error("inv_bad_host_key.yaml", 5, 15, "invalid host_key");
    expect_help(&d, "ssh-ed25519");
}

// --- values that reach a shell, an argv or a file (issue 14) -------------------------------

#[test]
fn bastion_with_shell_metacharacters_is_refused() {
    // OpenSSH builds a command line from a `-J` value: nothing before `@` may be other
    // than a user name.
    let d = expect_error(
        "inv_bastion_injection.yaml",
        2,
        12,
        "invalid bastion `x;touch /tmp/pwned;@gw.example.org`",
    );
    assert!(d.message.contains("is not a user name"), "{d}");
    let d = expect_error(
        "aws_bastion_injection.yaml",
        13,
        14,
        "invalid bastion `ops@gw.example.org;id`",
    );
    assert!(
        d.message.contains("not a port") || d.message.contains("not a DNS name"),
        "{d}"
    );
}

#[test]
fn ssh_user_with_an_option_is_refused() {
    let d = expect_error(
        "inv_user_injection.yaml",
        4,
        11,
        "invalid SSH user `ops -oProxyCommand=sh`",
    );
    expect_help(&d, "POSIX user name");
}

#[test]
fn host_key_with_a_second_known_hosts_line_is_refused() {
    // Appended verbatim, the newline would pin the attacker's key for every host.
    let d = expect_error("inv_host_key_injection.yaml", 5, 15, "invalid host_key");
    assert!(d.message.contains("one line"), "{d}");
}

#[test]
fn taint_value_is_checked_as_kubernetes_does() {
    expect_error(
        "inv_taint_injection.yaml",
        5,
        14,
        "invalid taint `gpu=$(id):NoSchedule`",
    );
}

// --- good fixtures and examples ----------------------------------------------------------

#[test]
fn minimal_recipe_loads_without_warnings() {
    let loaded = load_recipe(&fixtures().join("good/minimal.yaml")).expect("minimal recipe loads");
    assert!(loaded.warnings.is_empty(), "{}", listing(&loaded.warnings));
    assert_eq!(loaded.env.name, "minimal");
    assert_eq!(loaded.env.cluster.servers, ["srv-1"]);
    assert_eq!(loaded.env.cluster.agents, ["agent-1", "agent-2"]);
}

// --- the binary ----------------------------------------------------------------------------

/// `continuum validate bad/<fixture>` exits 2 and prints `<path>:line:col: error:`.
fn validate_rejects(fixture: &str, line: u64, col: u64) {
    let path = fixtures().join("bad").join(fixture);
    let out = Workspace::new("validate")
        .cmd()
        .arg("validate")
        .arg(&path)
        .output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{fixture}: stderr:\n{stderr}");
    let expected = format!("{}:{line}:{col}: error:", path.display());
    assert!(
        stderr.contains(&expected),
        "{fixture}: no {expected:?} in stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "{fixture}: panic in stderr:\n{stderr}"
    );
}

#[test]
fn cli_validate_reports_yaml_syntax_error() {
    validate_rejects("yaml_syntax.yaml", 6, 9);
}

#[test]
fn cli_validate_reports_unknown_key() {
    validate_rejects("unknown_k3s_key.yaml", 5, 3);
}

#[test]
fn cli_validate_reports_dangling_server() {
    validate_rejects("dangling_server.yaml", 5, 20);
}

#[test]
fn cli_validate_reports_empty_file() {
    validate_rejects("empty.yaml", 1, 1);
}

#[test]
fn cli_validate_reports_missing_inventory() {
    validate_rejects("inventory_missing.yaml", 2, 12);
}

#[test]
fn cli_validate_accepts_a_good_recipe() {
    let out = Workspace::new("validate")
        .cmd()
        .arg("validate")
        .arg(fixtures().join("good/minimal.yaml"))
        .output();
    assert_ok(&out, "continuum validate good/minimal.yaml");
}

// --- robustness ----------------------------------------------------------------------------

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read a fixture directory")
        .map(|e| e.expect("read a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every fixture (and example), cut at every 7th byte, is rejected or loaded, never panics.
#[test]
fn truncated_fixtures_never_panic() {
    let repo = root();
    let root = fixtures();
    let mut sources = yaml_files(&root.join("bad"));
    sources.extend(yaml_files(&root.join("good")));
    sources.extend(yaml_files(&repo.join("recipes")));
    assert!(
        sources.len() > 40,
        "fixtures not found under {}",
        root.display()
    );

    // Mirror the fixture layout so that `../good/inventory.yaml` still resolves.
    let tmp = tempfile::tempdir().expect("create a temporary directory");
    let good = tmp.path().join("good");
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&good).expect("create good/");
    std::fs::create_dir_all(&bad).expect("create bad/");
    for f in yaml_files(&root.join("good")) {
        std::fs::copy(&f, good.join(f.file_name().expect("file name")))
            .expect("copy a good fixture");
    }
    let recipe = bad.join("recipe.yaml");
    let inventory = bad.join("inventory.yaml");
    let mut runs = 0;
    for source in &sources {
        let bytes = std::fs::read(source).expect("read a fixture");
        let is_inventory = source
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("inv_") || n == "inventory.yaml");
        for cut in (0..=bytes.len()).step_by(7) {
            if is_inventory {
                std::fs::write(&inventory, &bytes[..cut]).expect("write a truncated inventory");
                std::fs::write(&recipe, recipe_for_inventory(&inventory)).expect("write a recipe");
            } else {
                std::fs::write(&recipe, &bytes[..cut]).expect("write a truncated recipe");
            }
            let outcome = std::panic::catch_unwind(|| load_recipe(&recipe));
            let Ok(result) = outcome else {
                panic!(
                    "load_recipe panicked on {} cut at byte {cut}",
                    source.display()
                );
            };
            if let Err(LoadError::Invalid(diags)) = result {
                assert!(
                    diags.iter().any(|d| d.severity == Severity::Error),
                    "{} cut at {cut}: rejected without an error",
                    source.display()
                );
            }
            runs += 1;
        }
    }
    assert!(runs > 100, "only {runs} truncations tried");
}

#[test]
fn numeric_address_must_be_a_valid_ip() {
    expect_error(
        "inv_bad_address.yaml",
        3,
        14,
        "invalid address `10.0.0.256` for host `srv-1`",
    );
}

// ---- AWS sites (issue 3): offline checks, positioned like every other error ----

#[test]
fn aws_subnet_outside_vpc() {
    expect_error(
        "aws_subnet_outside_vpc.yaml",
        10,
        18,
        "is not inside the VPC CIDR",
    );
}

#[test]
fn aws_created_vpc_needs_a_subnet() {
    let d = expect_error("aws_vpc_without_subnet.yaml", 9, 15, "needs `subnet_cidr`");
    expect_help(&d, "inside the VPC CIDR");
}

#[test]
fn aws_firewall_without_ssh_source() {
    let d = expect_error(
        "aws_no_ssh_from.yaml",
        14,
        5,
        "`aws.firewall.ssh_from` is empty",
    );
    expect_help(&d, "ssh_from: [");
}

#[test]
fn aws_bad_region() {
    expect_error("aws_bad_region.yaml", 7, 11, "invalid AWS region `europe`");
}

#[test]
fn aws_zero_instances() {
    let d = expect_error(
        "aws_count_zero.yaml",
        17,
        14,
        "instance count 0 is out of range",
    );
    expect_help(&d, "remove the group");
}

#[test]
fn aws_image_that_is_not_an_ami_id() {
    expect_error(
        "aws_bad_image.yaml",
        19,
        14,
        "invalid image id `ubuntu-24.04`",
    );
}

#[test]
fn aws_unknown_group_key() {
    expect_error("aws_unknown_group_key.yaml", 20, 7, "unknown field `disk`");
}

#[test]
fn aws_dangling_server_suggests_the_group() {
    let d = expect_error(
        "aws_dangling_group.yaml",
        5,
        13,
        "`cq` is neither an inventory host",
    );
    expect_help(&d, "did you mean `cp`?");
}

#[test]
fn aws_instance_named_like_an_inventory_host() {
    let d = expect_error(
        "aws_group_name_clash.yaml",
        16,
        13,
        "instance `agent-1` has the name of an inventory host",
    );
    expect_help(&d, "rename the group");
}

/// Issue 9: `k3s.allow_unavailable` is a count or a percentage, positioned when wrong.
#[test]
fn allow_unavailable_must_be_a_count_or_a_percentage() {
    let d = expect_error(
        "allow_unavailable_word.yaml",
        6,
        22,
        "invalid allow_unavailable `some`",
    );
    expect_help(&d, "25%");
    expect_error(
        "allow_unavailable_over.yaml",
        6,
        22,
        "invalid allow_unavailable `150%`",
    );
    let diags = diagnostics("allow_unavailable_negative.yaml");
    assert!(
        diags
            .iter()
            .any(|d| d.severity == Severity::Error && (d.pos.line, d.pos.col) == (6, 22)),
        "{}",
        listing(&diags)
    );
}

/// Issue 9: a percentage of the recipe's agents, rounded down; a count as given.
#[test]
fn allow_unavailable_counts_agents() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let inv = fixtures().join("good/inventory.yaml");
    for (value, agents_allowed) in [("\"50%\"", 2), ("\"40%\"", 2), ("1", 1), ("\"0%\"", 0)] {
        let recipe = tmp.path().join("r.yaml");
        std::fs::write(
            &recipe,
            format!(
                "name: allow\ninventory: '{}'\nk3s:\n  version: v1.31.4+k3s1\n  servers: [srv-1]\n  agents: [srv-2, srv-3, srv-4, agent-1, agent-2]\n  allow_unavailable: {value}\n",
                inv.display()
            ),
        )
        .expect("write recipe");
        let env = load_recipe(&recipe).expect("valid recipe").env;
        assert_eq!(env.cluster.unavailable_allowed(), agents_allowed, "{value}");
    }
}

/// Issue 10: `install.images` only means something for a bundle.
#[test]
fn images_source_needs_a_bundle() {
    let d = expect_error(
        "images_with_online.yaml",
        7,
        13,
        "`images` is only used with `source: bundle`",
    );
    expect_help(&d, "registry");
}
