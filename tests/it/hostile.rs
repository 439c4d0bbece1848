//! Issue 14, item 1: a hostile corpus. Shell metacharacters, newlines and option-like
//! words in every recipe and inventory field that reaches a command, an argv or a file;
//! YAML anchor bombs, deep nesting, huge, non-UTF-8 and duplicate-key documents;
//! hostile FDL files and Ansible inventories. Each case must end in a positioned
//! diagnostic or a typed error, or load with the value kept exactly (to be quoted where
//! it is used): never a panic, never a hang.

use std::path::{Path, PathBuf};

use continuum::files::load_recipe;
use continuum::recipe::{LoadError, Severity};

/// Values a shell, an option parser or a line-based file would read as more than data.
const PAYLOADS: [&str; 6] = [
    "x;touch /tmp/pwned",
    "$(id)",
    "`id`",
    "a\nb",
    "x' y",
    "-oProxyCommand=sh",
];

const INVENTORY: &str = "hosts:\n  - name: srv-1\n    address: 10.0.0.1\n    role: server\n  - name: agent-1\n    address: 10.0.0.11\n";

/// Builds an inventory host entry (or recipe lines) around one payload.
type Entry = fn(&str) -> String;
type RecipeCase = fn(&str) -> (String, String);

/// A YAML double-quoted scalar for any payload.
fn yq(s: &str) -> String {
    serde_json::to_string(s).expect("json string")
}

fn write(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write fixture");
    p
}

fn recipe_with(inv: &str, k3s_extra: &str, top_extra: &str) -> String {
    format!(
        "name: hostile\ninventory: {inv}\nk3s:\n  version: v1.31.4+k3s1\n  servers: [srv-1]\n{k3s_extra}{top_extra}"
    )
}

/// Load and demand a refusal with a diagnostic positioned in one of the files.
fn refused(what: &str, recipe: &Path) {
    let outcome = std::panic::catch_unwind(|| load_recipe(recipe));
    let Ok(result) = outcome else {
        panic!("{what}: panicked");
    };
    match result {
        Err(LoadError::Invalid(diags)) => {
            let d = diags
                .iter()
                .find(|d| d.severity == Severity::Error)
                .unwrap_or_else(|| panic!("{what}: no error among {diags:?}"));
            assert!(
                d.pos.line >= 1 && d.pos.col >= 1,
                "{what}: unpositioned {d}"
            );
        }
        Err(e) => assert!(!e.to_string().is_empty(), "{what}: empty error"),
        Ok(_) => panic!("{what}: accepted"),
    }
}

/// Fields of an inventory host that reach ssh, sudo, k3s or known_hosts: every
/// payload is refused there.
#[test]
fn hostile_inventory_fields_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let fields: [(&str, Entry); 10] = [
        ("name", |p| {
            format!("  - name: {}\n    address: 10.0.0.2\n", yq(p))
        }),
        ("address", |p| {
            format!("  - name: h2\n    address: {}\n", yq(p))
        }),
        ("user", |p| {
            format!("  - name: h2\n    address: 10.0.0.2\n    user: {}\n", yq(p))
        }),
        ("bastion", |p| {
            format!(
                "  - name: h2\n    address: 10.0.0.2\n    bastion: {}\n",
                yq(&format!("{p}@gw.example.org"))
            )
        }),
        ("host_key", |p| {
            format!(
                "  - name: h2\n    address: 10.0.0.2\n    host_key: {}\n",
                yq(&format!("ssh-ed25519 {p}"))
            )
        }),
        ("label key", |p| {
            format!(
                "  - name: h2\n    address: 10.0.0.2\n    labels: {{{}: v}}\n",
                yq(p)
            )
        }),
        ("label value", |p| {
            format!(
                "  - name: h2\n    address: 10.0.0.2\n    labels: {{k: {}}}\n",
                yq(p)
            )
        }),
        ("taint", |p| {
            format!(
                "  - name: h2\n    address: 10.0.0.2\n    taints: [{}]\n",
                yq(&format!("k={p}:NoSchedule"))
            )
        }),
        ("node_ip", |p| {
            format!(
                "  - name: h2\n    address: 10.0.0.2\n    node_ip: {}\n",
                yq(p)
            )
        }),
        ("external_ip", |p| {
            format!(
                "  - name: h2\n    address: 10.0.0.2\n    external_ip: {}\n",
                yq(p)
            )
        }),
    ];
    let mut n = 0;
    for (field, entry) in fields {
        for p in PAYLOADS {
            let inv = write(
                dir.path(),
                "inv.yaml",
                format!("{INVENTORY}{}", entry(p)).as_bytes(),
            );
            let recipe = write(
                dir.path(),
                "recipe.yaml",
                recipe_with(&inv.display().to_string(), "", "").as_bytes(),
            );
            refused(&format!("inventory {field} = {p:?}"), &recipe);
            n += 1;
        }
    }
    assert_eq!(n, 60);
}

/// Recipe fields that reach k3s flags, file names or the API: refused.
#[test]
fn hostile_recipe_fields_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let inv = write(dir.path(), "inv.yaml", INVENTORY.as_bytes());
    let inv = inv.display().to_string();
    let cases: [(&str, RecipeCase); 6] = [
        ("env name", |p| {
            (
                String::new(),
                format!("# {}\n", p.replace('\n', " ")) + &format!("name_override: {}\n", yq(p)),
            )
        }),
        ("version", |p| {
            (format!("  extra_version: {}\n", yq(p)), String::new())
        }),
        ("tls_san", |p| {
            (format!("  tls_san: [{}]\n", yq(p)), String::new())
        }),
        ("cluster_cidr", |p| {
            (format!("  cluster_cidr: {}\n", yq(p)), String::new())
        }),
        ("node label", |p| {
            (format!("  node_labels: {{k: {}}}\n", yq(p)), String::new())
        }),
        ("node taint", |p| {
            (
                format!("  node_taints: [{}]\n", yq(&format!("k={p}:NoSchedule"))),
                String::new(),
            )
        }),
    ];
    for (field, make) in cases {
        for p in PAYLOADS {
            let (k3s, top) = make(p);
            let recipe = write(
                dir.path(),
                "recipe.yaml",
                recipe_with(&inv, &k3s, &top).as_bytes(),
            );
            refused(&format!("recipe {field} = {p:?}"), &recipe);
        }
    }
    // The environment name itself, which names files and kube contexts.
    for p in PAYLOADS {
        let text =
            recipe_with(&inv, "", "").replacen("name: hostile", &format!("name: {}", yq(p)), 1);
        let recipe = write(dir.path(), "recipe.yaml", text.as_bytes());
        refused(&format!("env name = {p:?}"), &recipe);
    }
}

/// `extra_config` values are data for config.yaml: kept exactly, and written as YAML
/// that reads back to the same value (the renderer quotes, nothing is interpolated).
#[test]
fn hostile_extra_config_values_round_trip_through_config_yaml() {
    let dir = tempfile::tempdir().expect("tmp");
    let inv = write(dir.path(), "inv.yaml", INVENTORY.as_bytes());
    for p in PAYLOADS {
        let recipe = write(
            dir.path(),
            "recipe.yaml",
            recipe_with(
                &inv.display().to_string(),
                &format!(
                    "  extra_config:\n    kubelet-arg: [{}]\n",
                    yq(&format!("v={p}"))
                ),
                "",
            )
            .as_bytes(),
        );
        let env = match load_recipe(&recipe) {
            Ok(l) => l.env,
            Err(LoadError::Invalid(d)) => {
                // Refusing is as good as keeping: but it must say where.
                assert!(d.iter().all(|d| d.pos.line >= 1), "{d:?}");
                continue;
            }
            Err(e) => panic!("{p:?}: {e}"),
        };
        let rg = continuum::graph::build(&env).expect("graph");
        let server = rg
            .graph
            .node_weights()
            .find(|r| r.id == "k3s-server/srv-1")
            .expect("server node");
        let text = continuum::k3s::render_config(
            "hostile",
            "srv-1",
            continuum::recipe::Role::Server,
            &server.attrs,
            &[("token", "t")],
        )
        .expect("render");
        let back: serde_json::Value = serde_saphyr::from_str(&text).expect("config.yaml is YAML");
        assert_eq!(
            back["kubelet-arg"][0].as_str(),
            Some(format!("v={p}").as_str()),
            "{text}"
        );
    }
}

/// Documents built to exhaust a parser: refused with a position, quickly.
#[test]
fn hostile_documents_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let inv = write(dir.path(), "inv.yaml", INVENTORY.as_bytes());
    let inv = inv.display().to_string();
    let base = recipe_with(&inv, "", "");
    let mut bomb = String::from(
        "  extra_config:\n    x0: &x0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..10 {
        bomb.push_str(&format!(
            "    x{i}: &x{i} [{}]\n",
            vec![format!("*x{}", i - 1); 9].join(",")
        ));
    }
    let deep = |d: usize| {
        format!(
            "serverless:\n  values:\n    oscar: {}{}\n",
            "[".repeat(d),
            "]".repeat(d)
        )
    };
    let huge_line = format!("# {}\n", "x".repeat(4 << 20));
    let many_keys: String = (0..200_000).map(|i| format!("  k{i}: v\n")).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("anchor bomb", recipe_with(&inv, &bomb, "").into_bytes()),
        (
            "deep flow nesting",
            recipe_with(&inv, "", &deep(100_000)).into_bytes(),
        ),
        ("deep block nesting", {
            let mut t = base.clone();
            t.push_str("serverless:\n  values:\n");
            for i in 0..3000 {
                t.push_str(&format!("{}k:\n", "  ".repeat(i + 2)));
            }
            t.into_bytes()
        }),
        (
            "a 4 MiB comment line then a bad key",
            format!("{base}{huge_line}bogus: 1\n").into_bytes(),
        ),
        (
            "200000 unknown keys",
            format!("{base}extra:\n{many_keys}").into_bytes(),
        ),
        ("non-UTF-8", {
            let mut b = base.clone().into_bytes();
            b.extend_from_slice(b"description: \xff\xfe\xfd\n");
            b
        }),
        (
            "a NUL byte",
            format!("{base}description: \"a\0b\"\n").into_bytes(),
        ),
        (
            "duplicate keys",
            format!("{base}name: again\n").into_bytes(),
        ),
        (
            "a tab-indented block",
            format!("{base}kubeconfig:\n\tpath: x\n").into_bytes(),
        ),
        (
            "an unterminated quote",
            format!("{base}name: \"open\n").into_bytes(),
        ),
        (
            "a YAML tag",
            format!("{base}x: !!binary aGk=\n").into_bytes(),
        ),
        ("an empty document", Vec::new()),
        ("only a BOM", b"\xef\xbb\xbf".to_vec()),
    ];
    for (what, text) in cases {
        let recipe = write(dir.path(), "recipe.yaml", &text);
        refused(what, &recipe);
    }
}

/// Hostile oscar-cli FDL files: refused with a typed error naming the file.
#[test]
fn hostile_fdl_files_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let svc = |name: &str| {
        format!(
            "functions:\n  oscar:\n  - edge:\n      name: {}\n      image: img\n      script: s.sh\n",
            yq(name)
        )
    };
    std::fs::write(dir.path().join("s.sh"), "#!/bin/sh\n").expect("script");
    let mut cases: Vec<(String, Vec<u8>)> = PAYLOADS
        .iter()
        .map(|p| (format!("service name {p:?}"), svc(p).into_bytes()))
        .collect();
    cases.push((
        "a name of 40 characters".into(),
        svc(&"a".repeat(40)).into_bytes(),
    ));
    cases.push(("non-UTF-8".into(), b"functions:\n  oscar: \xff\n".to_vec()));
    cases.push(("a list at the top".into(), b"- a\n- b\n".to_vec()));
    cases.push(("an anchor bomb".into(), {
        let mut t = String::from("x0: &x0 [1,1,1,1,1,1,1,1,1]\n");
        for i in 1..10 {
            t.push_str(&format!(
                "x{i}: &x{i} [{}]\n",
                vec![format!("*x{}", i - 1); 9].join(",")
            ));
        }
        t.push_str("functions: {oscar: []}\n");
        t.into_bytes()
    }));
    cases.push(("a script outside the FDL's directory that does not exist".into(),
        "functions:\n  oscar:\n  - edge:\n      name: ok\n      image: img\n      script: ../../../../nonexistent/s.sh\n".as_bytes().to_vec()));
    for (what, text) in cases {
        let p = write(dir.path(), "fdl.yaml", &text);
        let outcome = std::panic::catch_unwind(|| continuum::oscar::fdl::load(&p));
        let Ok(result) = outcome else {
            panic!("FDL {what}: panicked")
        };
        let refused_here = match result {
            Err(e) => !e.to_string().is_empty(),
            // A name that loads must be one OSCAR accepts; continuum checks it again
            // before any request (functions.rs), so only a clean one may pass here.
            Ok(services) => services.iter().all(|s| {
                let n = &s.name;
                !n.is_empty()
                    && n.len() <= 39
                    && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }),
        };
        assert!(refused_here, "FDL {what}: accepted");
    }
}

/// Hostile Ansible inventories: refused, or imported into hosts that the inventory
/// loader then refuses; never a panic.
#[test]
fn hostile_ansible_inventories_never_reach_a_host_entry() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut n = 0;
    for p in PAYLOADS {
        let one_line = p.replace('\n', " ");
        for (fmt, text) in [
            (
                "ini host",
                format!("[server]\n{} ansible_host=10.0.0.1\n", yq(&one_line)),
            ),
            (
                "ini user",
                format!(
                    "[server]\nh1 ansible_host=10.0.0.1 ansible_user={}\n",
                    yq(&one_line)
                ),
            ),
            (
                "ini address",
                format!("[server]\nh1 ansible_host={}\n", yq(&one_line)),
            ),
            (
                "yaml user",
                format!(
                    "all:\n  hosts:\n    h1:\n      ansible_host: 10.0.0.1\n      ansible_user: {}\n",
                    yq(p)
                ),
            ),
            (
                "yaml address",
                format!("all:\n  hosts:\n    h1:\n      ansible_host: {}\n", yq(p)),
            ),
        ] {
            let file = if fmt.starts_with("ini") {
                "hosts.ini"
            } else {
                "hosts.yml"
            };
            let src = write(dir.path(), file, text.as_bytes());
            let target = dir.path().join("inv.yaml");
            let _ = std::fs::remove_file(&target);
            let outcome =
                std::panic::catch_unwind(|| continuum::files::inventory::import(&src, &target));
            let Ok(result) = outcome else {
                panic!("{fmt} {p:?}: panicked")
            };
            match result {
                Err(e) => assert!(!e.to_string().is_empty()),
                // Written only after the inventory loader accepted it: then the value
                // was normalised into a clean one (a host name derived from an IP).
                Ok(_) => {
                    let text = std::fs::read_to_string(&target).expect("written");
                    assert!(
                        !text.contains("$(id)") && !text.contains("touch /tmp"),
                        "{fmt} {p:?}: {text}"
                    );
                }
            }
            n += 1;
        }
    }
    assert_eq!(n, 30);
}
