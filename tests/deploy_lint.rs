//! The deployment files are well-formed: the Kubernetes manifests pass
//! `kubernetes-validate --strict` (schemas bundled, no cluster needed), the Dockerfile passes
//! hadolint, the compose file passes `docker-compose config`, and every `CORRAL_*` variable
//! they set is one that `corral` reads (a misspelt variable is silently ignored at run time).
//!
//! hadolint and kubernetes-validate come from `scripts/install-test-tools.sh` (`make test` runs
//! it); none of these tests needs a Docker engine.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CORRAL_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("corral-test-tools")
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `name` from $PATH or the test tools' bin directory.
fn find_tool(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(std::iter::once(tools_dir().join("bin")))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// A tool the test tools installer provides, or a failure that says how to get it.
fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed (looked on PATH and in {}).\n\
             Run `scripts/install-test-tools.sh` to install it (`make test` runs it for you).",
            tools_dir().join("bin").display()
        )
    })
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn manifests() -> Vec<PathBuf> {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    files
}

#[test]
fn kubernetes_manifests_pass_strict_validation() {
    let output = run(Command::new(tool("kubernetes-validate"))
        .arg("--strict")
        .args(manifests()));
    assert!(
        output.status.success(),
        "kubernetes-validate --strict failed\n{}",
        text(&output)
    );
    // It passes files it finds nothing in, so check that the resources were seen.
    let out = String::from_utf8_lossy(&output.stdout);
    for resource in [
        "service/corral-peer",
        "service/corral",
        "poddisruptionbudget/corral",
        "statefulset/corral",
        "service/app-corral",
        "poddisruptionbudget/app",
        "statefulset/app",
    ] {
        assert!(
            out.contains(&format!("passed for resource {resource} ")),
            "kubernetes-validate did not report {resource}\n{}",
            text(&output)
        );
    }
}

#[test]
fn dockerfile_passes_hadolint() {
    let output = run(Command::new(tool("hadolint"))
        .arg("--no-color")
        .arg(repo().join("deploy/Dockerfile")));
    assert!(
        output.status.success(),
        "hadolint failed\n{}",
        text(&output)
    );
}

#[test]
fn compose_file_is_valid() {
    let Some(compose) = find_tool("docker-compose") else {
        eprintln!("docker-compose not installed: skipping the deploy/compose.yaml check");
        return;
    };
    let output = run(Command::new(compose)
        .args(["--file", "deploy/compose.yaml", "config", "--quiet"])
        .current_dir(repo()));
    assert!(
        output.status.success(),
        "docker-compose config failed\n{}",
        text(&output)
    );
}

/// The `CORRAL_*` variables a help text lists as `[env: CORRAL_X=...]` / `[env: CORRAL_X]`.
fn env_vars_in_help(args: &[&str]) -> BTreeSet<String> {
    let output = run(Command::new(env!("CARGO_BIN_EXE_corral")).args(args));
    assert!(
        output.status.success(),
        "corral {args:?}\n{}",
        text(&output)
    );
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    help.split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|v| v.starts_with("CORRAL_"))
        .collect()
}

/// `CORRAL_*` names in `text` followed by one of `followed_by` (`=` in a Dockerfile ENV, `:`
/// in a compose environment map) or preceded by `name: ` (Kubernetes env lists).
fn corral_vars_set(text: &str, followed_by: &[char]) -> BTreeSet<String> {
    let mut vars = BTreeSet::new();
    for (start, _) in text.match_indices("CORRAL_") {
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let after = text[start + name.len()..].chars().next();
        let k8s_name = text[..start].ends_with("name: ");
        // `${CORRAL_IMAGE:-...}` is compose's own substitution, not a variable for corral.
        let substitution = text[..start].ends_with("${");
        if !substitution && (k8s_name || after.is_some_and(|c| followed_by.contains(&c))) {
            vars.insert(name);
        }
    }
    vars
}

#[test]
fn deploy_files_set_only_variables_corral_reads() {
    let mut known = env_vars_in_help(&["serve", "--help"]);
    known.extend(env_vars_in_help(&["--help"]));
    assert!(
        known.contains("CORRAL_INITIAL_CLUSTER") && known.contains("CORRAL_ENDPOINTS"),
        "the help texts no longer list [env: ...]; got {known:?}"
    );

    let read = |rel: &str| {
        std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
    };
    let mut sources: Vec<(String, BTreeSet<String>)> = vec![
        (
            "deploy/Dockerfile".into(),
            corral_vars_set(&read("deploy/Dockerfile"), &['=']),
        ),
        (
            "deploy/compose.yaml".into(),
            corral_vars_set(&read("deploy/compose.yaml"), &[':']),
        ),
    ];
    for path in manifests() {
        let rel = path
            .strip_prefix(repo())
            .unwrap_or(&path)
            .display()
            .to_string();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
        sources.push((rel, corral_vars_set(&text, &[])));
    }

    let mut unknown = Vec::new();
    for (file, vars) in &sources {
        assert!(!vars.is_empty(), "{file}: found no CORRAL_* variables");
        for v in vars.difference(&known) {
            unknown.push(format!("{file}: {v}"));
        }
    }
    assert!(
        unknown.is_empty(),
        "variables corral does not read (misspelt, or a flag was renamed):\n  {}\nknown: {known:?}",
        unknown.join("\n  ")
    );
}
