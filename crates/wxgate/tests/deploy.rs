//! The deploy kit in `deploy/`: the systemd unit passes `systemd-analyze verify` and its
//! security review (when systemd-analyze is installed), and every file keeps the
//! properties the README promises (hardening, TLS on 443, a non-root multi-stage image).

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn systemd_analyze() -> Option<PathBuf> {
    ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[test]
fn the_systemd_unit_is_hardened_and_verifies() {
    let unit = deploy("wxgate.service");
    for directive in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "StateDirectory=wxgate",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "EnvironmentFile=-/etc/wxgate/secrets.env",
        "LimitNOFILE=",
    ] {
        assert!(
            unit.contains(directive),
            "{directive} missing from deploy/wxgate.service"
        );
    }
    let Some(analyze) = systemd_analyze() else {
        // Without systemd the lint above is the check.
        return;
    };
    // Verify against the binary this test run built (the unit names the installed path).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("wxgate.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/wxgate", env!("CARGO_BIN_EXE_wxgate")),
    )
    .unwrap();
    let verify = Command::new(&analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // The security review's exposure (0-10, shown as 0.0-10.0) must stay at "OK" (<= 2.0).
    let security = Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        security.status.success(),
        "exposure too high:\n{}",
        String::from_utf8_lossy(&security.stdout)
    );
}

#[test]
fn the_proxy_examples_terminate_tls_on_443_in_front_of_the_default_listen() {
    let nginx = deploy("nginx.conf");
    assert!(nginx.contains("listen 443 ssl;"));
    assert!(nginx.contains("proxy_pass http://127.0.0.1:8080;"));
    assert!(nginx.contains("X-Forwarded-For $proxy_add_x_forwarded_for"));
    let caddy = deploy("Caddyfile");
    assert!(caddy.contains("reverse_proxy 127.0.0.1:8080"));
    // Both say to trust the proxy, or allow_ips would see only 127.0.0.1.
    assert!(nginx.contains("trusted_proxies") && caddy.contains("trusted_proxies"));
}

#[test]
fn the_dockerfile_is_multi_stage_and_runs_as_non_root() {
    let docker = deploy("Dockerfile");
    assert_eq!(docker.lines().filter(|l| l.starts_with("FROM ")).count(), 2);
    assert!(docker.contains("cargo build --release --locked -p wxgate"));
    let user = docker
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "{user}"
    );
    assert!(docker.contains("WXGATE_LISTEN=0.0.0.0:8080"));
}
