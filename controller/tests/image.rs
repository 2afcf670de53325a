//! The image `scripts/build-image.sh` builds from `Containerfile` is the one
//! the manifests run: it carries every binary a manifest's container runs
//! from it, its entrypoint is the controller, it runs as the non-root user
//! the Deployment asks for, and the overlays' `images:` name what the script
//! tags. The image itself is not built here (too slow for CI); see README
//! "Operating it" for building and checking it.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The image name the base manifests use before an overlay renames it.
const IMAGE_NAME: &str = "vpc-eni-controller";
const BIN_DIR: &str = "/usr/local/bin";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    let p = repo().join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// Containerfile instructions: (INSTRUCTION, arguments), continuation lines
/// joined, comments left out.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                let (op, args) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((op.to_ascii_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

/// The binaries the script puts in the image: (package, binary, guarded),
/// from its `build_bin PACKAGE BINARY` lines; guarded ones are built only
/// when `has_package PACKAGE` says the package exists.
fn scripted_binaries(script: &str) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let mut guarded = None;
    for line in script.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("if has_package ") {
            guarded = rest.split(';').next().map(|p| p.trim().to_owned());
            continue;
        }
        if line == "fi" {
            guarded = None;
            continue;
        }
        let Some(rest) = line.strip_prefix("build_bin ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(package), Some(binary)) = (words.next(), words.next()) else {
            panic!("build_bin without package and binary: {line}");
        };
        let is_guarded = guarded.as_deref() == Some(package);
        out.push((package.to_owned(), binary.to_owned(), is_guarded));
    }
    out
}

/// `NAME="${NAME:-default}"` in the script.
fn script_default(script: &str, name: &str) -> String {
    let prefix = format!("{name}=\"${{{name}:-");
    script
        .lines()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .and_then(|rest| rest.strip_suffix("}\""))
        .unwrap_or_else(|| panic!("no {name} default in build-image.sh"))
        .to_owned()
}

fn toml_of(path: &str) -> toml_edit::DocumentMut {
    read(path)
        .parse()
        .unwrap_or_else(|e| panic!("{path}: not TOML: {e}"))
}

/// Workspace packages and the binaries each builds.
fn workspace_binaries() -> BTreeMap<String, Vec<String>> {
    let root = toml_of("Cargo.toml");
    let members = root["workspace"]["members"]
        .as_array()
        .expect("workspace.members");
    let mut out = BTreeMap::new();
    for member in members.iter().filter_map(|m| m.as_str()) {
        let m = toml_of(&format!("{member}/Cargo.toml"));
        let name = m["package"]["name"]
            .as_str()
            .expect("package.name")
            .to_owned();
        let mut bins: Vec<String> = m
            .get("bin")
            .and_then(|b| b.as_array_of_tables())
            .into_iter()
            .flatten()
            .filter_map(|b| b.get("name").and_then(|n| n.as_str()).map(str::to_owned))
            .collect();
        if bins.is_empty() && repo().join(member).join("src/main.rs").exists() {
            bins.push(name.clone());
        }
        out.insert(name, bins);
    }
    out
}

fn workspace_version() -> String {
    toml_of("Cargo.toml")["workspace"]["package"]["version"]
        .as_str()
        .expect("workspace.package.version")
        .to_owned()
}

/// Every YAML document under manifests/.
fn manifest_docs() -> Vec<(PathBuf, Value)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo().join("manifests"), &mut files);
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let yaml = serde_yaml::Value::deserialize(doc).unwrap();
            if !yaml.is_null() {
                docs.push((file.clone(), serde_json::to_value(yaml).unwrap()));
            }
        }
    }
    docs
}

/// Containers and init containers of a workload's pod template.
fn containers(doc: &Value) -> Vec<&Value> {
    let spec = &doc["spec"]["template"]["spec"];
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[*k].as_array())
        .flatten()
        .collect()
}

fn image_name(image: &str) -> &str {
    let without_tag = match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => image,
    };
    without_tag.rsplit('/').next().unwrap_or(without_tag)
}

#[test]
fn the_containerfile_makes_a_minimal_non_root_image_of_the_controller() {
    let steps = instructions(&read("Containerfile"));
    let of = |op: &str| -> Vec<&str> {
        steps
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    assert_eq!(of("FROM"), ["scratch"], "{steps:?}");
    assert_eq!(of("USER"), ["65532:65532"]);
    assert_eq!(
        of("ENTRYPOINT"),
        [format!("[\"{BIN_DIR}/vpc-eni-controller\"]").as_str()]
    );
    let copies = of("COPY");
    assert!(
        copies.contains(&format!("bin/ {BIN_DIR}/").as_str()),
        "{copies:?}"
    );
    assert!(copies.contains(&"etc/ /etc/"), "{copies:?}");
    assert!(of("RUN").is_empty(), "a scratch image has nothing to run");
    assert_eq!(
        of("ENV"),
        ["SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"]
    );

    // What the script stages for those COPYs: the CA bundle where
    // SSL_CERT_FILE points, and the user the Deployment runs as.
    let script = read("scripts/build-image.sh");
    assert!(
        script.contains("\"$context/etc/ssl/certs/ca-certificates.crt\""),
        "the script stages the CA bundle"
    );
    assert!(script.contains("nonroot:x:65532:65532:"), "passwd line");
    let deployment = read("manifests/base/deployment.yaml");
    assert!(deployment.contains("runAsUser: 65532"));
}

#[test]
fn the_script_builds_the_production_controller_and_the_cni_once_it_exists() {
    let script = read("scripts/build-image.sh");
    let built = scripted_binaries(&script);
    let workspace = workspace_binaries();
    assert!(
        built.contains(&("controller".into(), "vpc-eni-controller".into(), false)),
        "{built:?}"
    );
    assert!(
        built.contains(&("cni".into(), "vpc-eni-cni".into(), true)),
        "{built:?}"
    );
    for (package, binary, guarded) in &built {
        match workspace.get(package) {
            Some(bins) => assert!(
                bins.contains(binary),
                "package {package} builds {bins:?}, not {binary}"
            ),
            None => assert!(*guarded, "package {package} is not in the workspace"),
        }
    }
    // The production build: no fakes linked.
    assert!(script.contains(
        "build_bin controller vpc-eni-controller --no-default-features ${FEATURES:+--features \"$FEATURES\"}"
    ));
    assert!(script.contains("FEATURES=\"${FEATURES-aws}\""));
    // CI does not build the image.
    assert!(!read(".ci/run").contains("build-image"));
}

#[test]
fn every_container_run_from_the_image_runs_a_binary_the_image_carries() {
    let script = read("scripts/build-image.sh");
    let workspace = workspace_binaries();
    let carried: Vec<String> = scripted_binaries(&script)
        .into_iter()
        .filter(|(package, _, guarded)| !guarded || workspace.contains_key(package))
        .map(|(_, binary, _)| binary)
        .collect();
    let mut checked = 0;
    for (file, doc) in manifest_docs() {
        for c in containers(&doc) {
            let image = c["image"].as_str().unwrap_or_default();
            if image_name(image) != IMAGE_NAME {
                continue;
            }
            checked += 1;
            let name = c["name"].as_str().unwrap_or("?");
            let runs = match c["command"].as_array().and_then(|a| a.first()) {
                Some(cmd) => cmd.as_str().unwrap_or_default().to_owned(),
                None => format!("{BIN_DIR}/vpc-eni-controller"),
            };
            let binary = runs.strip_prefix(&format!("{BIN_DIR}/")).unwrap_or(&runs);
            assert!(
                carried.iter().any(|b| b == binary),
                "{}: container {name} runs {runs}, which the image does not carry ({carried:?})",
                file.display()
            );
        }
    }
    assert!(checked > 0, "no container runs the image");
}

#[test]
fn the_overlays_run_the_name_and_tag_the_script_builds() {
    let script = read("scripts/build-image.sh");
    let image = script_default(&script, "IMAGE");
    let tag = script_default(&script, "TAG");
    assert_eq!(
        tag, "$(workspace_version)",
        "the tag is the workspace version"
    );
    let version = workspace_version();
    let mut overlays = 0;
    for (file, doc) in manifest_docs() {
        if doc["kind"] != "Kustomization" {
            continue;
        }
        for rule in doc["images"].as_array().into_iter().flatten() {
            if rule["name"] != IMAGE_NAME {
                continue;
            }
            overlays += 1;
            assert_eq!(rule["newName"], image.as_str(), "{}", file.display());
            assert_eq!(rule["newTag"], version.as_str(), "{}", file.display());
        }
    }
    assert!(overlays >= 2, "both overlays set the image");
}
