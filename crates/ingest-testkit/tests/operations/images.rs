//! The container image: deploy/Dockerfile passes hadolint and copies every workspace
//! member's manifest.

use std::process::Command;

use super::{check_or_reject, must_pass, mutate, read, repo, tool, TempDir};

#[test]
fn dockerfile_passes_hadolint_and_copies_every_workspace_manifest() {
    let hadolint = tool("HADOLINT", "hadolint");
    let config = repo().join("deploy/hadolint.yaml");
    must_pass(
        "hadolint",
        Command::new(&hadolint)
            .arg("--config")
            .arg(&config)
            .arg(repo().join("deploy/Dockerfile")),
    );
    let dockerfile = read("deploy/Dockerfile");
    // The dependency layer needs every workspace member's manifest.
    let cargo = read("Cargo.toml");
    let members = cargo
        .lines()
        .find(|l| l.starts_with("members"))
        .expect("workspace members");
    let members: Vec<&str> = members
        .split('"')
        .filter(|s| s.starts_with("crates/"))
        .collect();
    assert!(
        members.len() >= 6,
        "could not read the workspace members from Cargo.toml: {members:?}"
    );
    for member in members {
        let copy = format!("COPY {member}/Cargo.toml {member}/Cargo.toml");
        assert!(
            dockerfile.contains(&copy),
            "deploy/Dockerfile lacks `{copy}`"
        );
    }
    let temp = TempDir::new();
    for (what, from, to) in [
        ("unmodified copy: must pass", "", ""),
        ("root user", "USER 10001:10001", "USER root"),
        (
            "unpinned base image",
            "FROM debian:${DEBIAN_RELEASE}-slim",
            "FROM debian:latest",
        ),
        (
            "cd instead of WORKDIR",
            "RUN find crates",
            "RUN cd /src && find crates",
        ),
    ] {
        let broken = temp.write("Dockerfile", &mutate(&dockerfile, from, to));
        let mut command = Command::new(&hadolint);
        command.arg("--config").arg(&config).arg(&broken);
        check_or_reject(&format!("hadolint ({what})"), from, &mut command);
    }
}
