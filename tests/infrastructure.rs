//! The shipped deployment files, validated with the real tools: pod.sh's key
//! generation and nats.conf rendering, nats-server accepting that nats.conf,
//! the pod's config.toml, and the whole chain working with those files.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `pod.sh render` with the built binary instead of the image.
fn render(state: &Path) {
    let out = Command::new("bash")
        .arg(root().join("infrastructure/pod.sh"))
        .arg("render")
        .env("STATE", state)
        .env(
            "NATS_OIDC_CALLOUT_BIN",
            env!("CARGO_BIN_EXE_nats-oidc-callout"),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap().trim().to_string()
}

#[test]
fn pod_script_is_valid_bash() {
    let status = Command::new("bash")
        .arg("-n")
        .arg(root().join("infrastructure/pod.sh"))
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn rendered_nats_conf_is_accepted_by_nats_server_and_keys_match() {
    let state = tempfile::tempdir().unwrap();
    render(state.path());
    let out = Command::new(nats_server_bin())
        .arg("-c")
        .arg(state.path().join("nats.conf"))
        .arg("-t")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let conf = read(&state.path().join("nats.conf"));
    let issuer = nkeys::KeyPair::from_seed(&read(&state.path().join("issuer.nk"))).unwrap();
    let xkey = nkeys::XKey::from_seed(&read(&state.path().join("xkey.nk"))).unwrap();
    assert!(conf.contains(&format!("issuer: {}", issuer.public_key())));
    assert!(conf.contains(&format!("xkey: {}", xkey.public_key())));
    assert!(conf.contains("max_control_line: 64KB"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state.path().join("issuer.nk"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "seed files are private: {mode:o}");
    }

    // Rendering again keeps the keys (they are generated once).
    render(state.path());
    assert_eq!(
        read(&state.path().join("issuer.nk")),
        issuer.seed().unwrap()
    );
}

#[test]
fn pod_config_passes_check_with_the_generated_seeds() {
    let state = tempfile::tempdir().unwrap();
    render(state.path());
    let out = Command::new(env!("CARGO_BIN_EXE_nats-oidc-callout"))
        .args(["check", "--config"])
        .arg(root().join("infrastructure/config.toml"))
        .env(
            "NATS_OIDC_CALLOUT_ISSUER_SEED",
            read(&state.path().join("issuer.nk")),
        )
        .env(
            "NATS_OIDC_CALLOUT_XKEY_SEED",
            read(&state.path().join("xkey.nk")),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("xkey_seed is not set"),
        "the pod uses xkey: {text}"
    );
}

#[test]
fn containerfile_matches_what_the_pod_and_docs_expect() {
    let c = std::fs::read_to_string(root().join("Containerfile")).unwrap();
    assert!(c.contains("COPY --from=build /nats-oidc-callout /usr/local/bin/nats-oidc-callout"));
    assert!(
        c.contains("USER 65532:65532"),
        "non-root, the uid pod.sh mounts the seeds for"
    );
    assert!(c.contains(&format!(
        "NATS_OIDC_CALLOUT_CONFIG={}",
        nats_oidc_callout::config::DEFAULT_CONFIG_PATH
    )));
    assert!(c.contains("CMD [\"/usr/local/bin/nats-oidc-callout\", \"health\"]"));
    let pod = std::fs::read_to_string(root().join("infrastructure/pod.sh")).unwrap();
    assert!(pod.contains("uid=65532,gid=65532,mode=0400"));
    assert!(pod.contains("/usr/local/bin/nats-oidc-callout health"));
}

/// The pod's files working together: the rendered nats.conf, the pod's
/// config.toml and the generated seeds, with only ports moved for the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_files_work_end_to_end() {
    let state = tempfile::tempdir().unwrap();
    render(state.path());
    let (nats_port, monitor_port, http_port) = (free_port(), free_port(), free_port());
    let nats_log = state.path().join("nats.log");
    let mut nats = Command::new(nats_server_bin())
        .arg("-c")
        .arg(state.path().join("nats.conf"))
        .args([
            "-p",
            &nats_port.to_string(),
            "-m",
            &monitor_port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&nats_log).unwrap())
        .spawn()
        .unwrap();
    wait_for_log(&nats_log, "Server is ready", Duration::from_secs(10)).await;

    let issuer = DevIssuer::start(0).await.unwrap();
    let config = read(&root().join("infrastructure/config.toml"))
        .replace(
            "nats://127.0.0.1:4222",
            &format!("nats://127.0.0.1:{nats_port}"),
        )
        .replace("http://127.0.0.1:8081", &issuer.issuer())
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{http_port}"));
    let config_path = state.path().join("config.toml");
    std::fs::write(&config_path, config).unwrap();
    let service_log = state.path().join("service.log");
    let mut service = Command::new(env!("CARGO_BIN_EXE_nats-oidc-callout"))
        .arg("--config")
        .arg(&config_path)
        .env(
            "NATS_OIDC_CALLOUT_ISSUER_SEED",
            read(&state.path().join("issuer.nk")),
        )
        .env(
            "NATS_OIDC_CALLOUT_XKEY_SEED",
            read(&state.path().join("xkey.nk")),
        )
        .stderr(std::fs::File::create(&service_log).unwrap())
        .spawn()
        .unwrap();
    wait_for_log(&service_log, "issuer keys loaded", Duration::from_secs(20)).await;
    wait_for_log(&service_log, "connected to NATS", Duration::from_secs(20)).await;

    let url = format!("nats://127.0.0.1:{nats_port}");
    let result = async {
        let admin = connect(&url, &issuer.token("ana", "nats", &["admin"], 300))
            .await
            .map_err(|e| format!("admin: {e}"))?;
        let reader = connect(&url, &issuer.token("rita", "nats", &["reader"], 300))
            .await
            .map_err(|e| format!("reader: {e}"))?;
        if not_delivered(&admin.client, &reader.client, "orders.new").await {
            return Err("orders.new did not reach the reader".to_string());
        }
        if delivered(&reader.client, &admin.client, "orders.new").await {
            return Err("the reader could publish".to_string());
        }
        let config_path = config_path.clone();
        let (seed, xseed) = (
            read(&state.path().join("issuer.nk")),
            read(&state.path().join("xkey.nk")),
        );
        let health = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_nats-oidc-callout"))
                .args(["health", "--config"])
                .arg(&config_path)
                .env("NATS_OIDC_CALLOUT_ISSUER_SEED", seed)
                .env("NATS_OIDC_CALLOUT_XKEY_SEED", xseed)
                .status()
                .unwrap()
        })
        .await
        .unwrap();
        if !health.success() {
            return Err("health failed against the pod config".to_string());
        }
        Ok(())
    }
    .await;
    for child in [&mut service, &mut nats] {
        let _ = child.kill();
        let _ = child.wait();
    }
    if let Err(e) = result {
        panic!(
            "{e}\n---- service ----\n{}\n---- nats ----\n{}",
            read(&service_log),
            read(&nats_log)
        );
    }
}
