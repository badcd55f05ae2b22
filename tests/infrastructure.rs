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
    // The config is a directory mount; the seeds sit beside it, where
    // config.example.toml (and the .deb's config) expect them.
    assert!(c.contains("NATS_OIDC_CALLOUT_CONFIG=/etc/nats-oidc-callout/config/config.toml"));
    let example = std::fs::read_to_string(root().join("config.example.toml")).unwrap();
    assert!(example.contains("issuer_seed_file = \"/etc/nats-oidc-callout/issuer.nk\""));
    assert!(c.contains("CMD [\"/usr/local/bin/nats-oidc-callout\", \"health\"]"));
    let pod = std::fs::read_to_string(root().join("infrastructure/pod.sh")).unwrap();
    assert!(pod.contains("uid=65532,gid=65532,mode=0400"));
    assert!(pod.contains("/usr/local/bin/nats-oidc-callout health"));
    assert!(pod.contains("target=/etc/nats-oidc-callout/issuer.nk"));
}

/// Every container command the docs show mounts the config directory,
/// never the file (a file bind mount keeps the old inode: a config replaced
/// by rename would never reach the container).
#[test]
fn docs_mount_the_config_directory_not_the_file() {
    for doc in [
        "README.md",
        "docs/src/guides/podman.md",
        "docs/src/guides/replicas.md",
        "Containerfile",
        "infrastructure/README.md",
        "infrastructure/pod.sh",
    ] {
        let text = std::fs::read_to_string(root().join(doc)).unwrap();
        for line in text.lines().filter(|l| l.contains("-v ")) {
            assert!(
                !line.contains("config.toml:/"),
                "{doc} mounts a single config file: {line}"
            );
        }
        assert!(
            !text.contains(":/etc/nats-oidc-callout/config.toml"),
            "{doc} mounts a single config file"
        );
    }
}

/// The secret names of the book's container commands and pod.sh's
/// differ, so following both never makes one overwrite the other.
#[test]
fn the_book_and_pod_use_distinct_secret_names() {
    let readme = std::fs::read_to_string(root().join("docs/src/guides/podman.md")).unwrap();
    let readme_names: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.trim().strip_prefix("podman secret create "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert!(
        !readme_names.is_empty(),
        "docs/src/guides/podman.md shows a podman secret"
    );
    let state = tempfile::tempdir().unwrap();
    let fake = tempfile::tempdir().unwrap();
    let out = pod_sh(state.path(), fake.path(), &["up"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let pod_names: Vec<String> = std::fs::read_dir(fake.path().join("secrets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(pod_names.len(), 2, "{pod_names:?}");
    for name in &readme_names {
        assert!(
            !pod_names.iter().any(|p| p == name),
            "docs/src/guides/podman.md and pod.sh both use the secret {name}"
        );
    }
}

/// Runs pod.sh against the podman stand-in in tests/podman-shim (which
/// prints a warning on stderr for every command, as podman does on hosts
/// without systemd, and runs the built binary as the image).
fn pod_sh(state: &Path, fake: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let path = format!(
        "{}:{}",
        root().join("tests/podman-shim").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.arg(root().join("infrastructure/pod.sh"))
        .args(args)
        .env("PATH", path)
        .env("STATE", state)
        .env("FAKE_PODMAN_STATE", fake)
        .env("FAKE_PODMAN_BIN", env!("CARGO_BIN_EXE_nats-oidc-callout"))
        .env_remove("NATS_OIDC_CALLOUT_BIN")
        .env_remove("POD")
        .env_remove("SECRET_PREFIX")
        .env_remove("CONFIG_DIR")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn pod_up_keeps_podman_stderr_out_of_key_files_and_can_be_run_again() {
    let state = tempfile::tempdir().unwrap();
    let fake = tempfile::tempdir().unwrap();
    let out = pod_sh(state.path(), fake.path(), &["up"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("no systemd user session"),
        "the stand-in printed podman's warning: {}",
        text(&out)
    );
    let issuer = read(&state.path().join("issuer.pub"));
    let xkey = read(&state.path().join("xkey.pub"));
    let key = |k: &str, p: char| {
        k.len() == 56
            && k.starts_with(p)
            && k.chars()
                .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))
    };
    assert!(key(&issuer, 'A'), "issuer.pub: {issuer}");
    assert!(key(&xkey, 'X'), "xkey.pub: {xkey}");
    let seed = read(&state.path().join("issuer.nk"));
    assert_eq!(
        nkeys::KeyPair::from_seed(&seed).unwrap().public_key(),
        issuer
    );
    let conf = read(&state.path().join("nats.conf"));
    assert!(conf.contains(&format!("issuer: {issuer}")));

    // The callout mounts its config directory; the issuer container has no
    // health check (the image's is the callout's).
    let containers = fake.path().join("containers");
    let mounts = lines(&containers.join("nats-oidc-callout-callout/mounts"));
    let config_dir = state.path().join("config");
    assert!(
        mounts.contains(&format!(
            "{}:/etc/nats-oidc-callout/config:ro,Z",
            config_dir.display()
        )),
        "{mounts:?}"
    );
    assert!(config_dir.join("config.toml").is_file());
    let calls = lines(&fake.path().join("calls"));
    let issuer_run = calls
        .iter()
        .find(|c| c.contains("--name nats-oidc-callout-issuer"))
        .unwrap();
    assert!(issuer_run.contains("--no-healthcheck"), "{issuer_run}");

    // Again, with everything in place: nothing is created twice, nothing
    // fails, the keys stay.
    let out = pod_sh(state.path(), fake.path(), &["up"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let runs = |calls: &[String]| calls.iter().filter(|c| c.starts_with("run -d")).count();
    assert_eq!(runs(&lines(&fake.path().join("calls"))), 3);
    assert_eq!(read(&state.path().join("issuer.nk")), seed);

    // A stopped container is started, a removed one created again.
    std::fs::remove_file(containers.join("nats-oidc-callout-nats/running")).unwrap();
    std::fs::remove_dir_all(containers.join("nats-oidc-callout-issuer")).unwrap();
    let out = pod_sh(state.path(), fake.path(), &["up"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(containers.join("nats-oidc-callout-nats/running").exists());
    assert!(containers.join("nats-oidc-callout-issuer/running").exists());
    assert_eq!(runs(&lines(&fake.path().join("calls"))), 4);

    // A .pub spoiled by an older pod.sh (podman's stderr in it) is mended.
    std::fs::write(
        state.path().join("issuer.pub"),
        "WARN[0000] no systemd
A...
",
    )
    .unwrap();
    let out = pod_sh(state.path(), fake.path(), &["up"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(read(&state.path().join("issuer.pub")), issuer);
}

#[test]
fn a_failed_keygen_leaves_nothing_that_breaks_the_next_up() {
    let state = tempfile::tempdir().unwrap();
    let fake = tempfile::tempdir().unwrap();
    let out = pod_sh(
        state.path(),
        fake.path(),
        &["up"],
        &[("FAKE_PODMAN_FAIL_RUN", "1")],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("error: keygen account failed"),
        "{}",
        text(&out)
    );
    let left: Vec<_> = std::fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "a failed run left {left:?}");
    let out = pod_sh(state.path(), fake.path(), &["up"], &[]);
    assert!(out.status.success(), "{}", text(&out));

    // A seed file that is not a seed is reported, not used.
    std::fs::write(
        state.path().join("xkey.nk"),
        "Error: something
",
    )
    .unwrap();
    let out = pod_sh(state.path(), fake.path(), &["up"], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("does not hold a curve seed"),
        "{}",
        text(&out)
    );
}

#[test]
fn pod_sh_never_replaces_or_removes_a_secret_it_did_not_create() {
    let state = tempfile::tempdir().unwrap();
    let fake = tempfile::tempdir().unwrap();
    let secrets = fake.path().join("secrets");
    let id = |name: &str| read(&secrets.join(name).join("id"));
    // Someone's own secret under pod.sh's name.
    let theirs = state.path().join("theirs.nk");
    std::fs::write(
        &theirs,
        "SAtheirs
",
    )
    .unwrap();
    let shim = root().join("tests/podman-shim/podman");
    let create = |name: &str| {
        let out = Command::new("bash")
            .arg(&shim)
            .args(["secret", "create", name])
            .arg(&theirs)
            .env("FAKE_PODMAN_STATE", fake.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    };
    create("nats-oidc-callout-pod-xkey");
    create("nats-oidc-callout-issuer"); // the README's name
    let (xkey_id, readme_id) = (
        id("nats-oidc-callout-pod-xkey"),
        id("nats-oidc-callout-issuer"),
    );
    let out = pod_sh(state.path(), fake.path(), &["up"], &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(
            "podman secret nats-oidc-callout-pod-xkey exists and was not created by pod.sh"
        ),
        "{}",
        text(&out)
    );
    assert_eq!(id("nats-oidc-callout-pod-xkey"), xkey_id);
    assert_eq!(
        read(&secrets.join("nats-oidc-callout-pod-xkey/data")),
        "SAtheirs"
    );
    // purge leaves it too.
    let out = pod_sh(state.path(), fake.path(), &["purge"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(id("nats-oidc-callout-pod-xkey"), xkey_id);

    // With other names (or once it is removed) pod.sh goes ahead, and purge
    // removes only what it created.
    let out = pod_sh(
        state.path(),
        fake.path(),
        &["up"],
        &[("SECRET_PREFIX", "mine")],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        read(&secrets.join("mine-issuer/data")),
        read(&state.path().join("issuer.nk"))
    );
    let out = pod_sh(
        state.path(),
        fake.path(),
        &["purge"],
        &[("SECRET_PREFIX", "mine")],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!secrets.join("mine-issuer").exists());
    assert!(!secrets.join("mine-xkey").exists());
    assert_eq!(id("nats-oidc-callout-pod-xkey"), xkey_id);
    assert_eq!(id("nats-oidc-callout-issuer"), readme_id);
}

/// A seed pod.sh regenerates (its file was removed) replaces pod.sh's own
/// secret, so the callout never signs with a key nats.conf no longer names.
#[test]
fn a_regenerated_seed_replaces_pod_shs_own_secret() {
    let state = tempfile::tempdir().unwrap();
    let fake = tempfile::tempdir().unwrap();
    assert!(pod_sh(state.path(), fake.path(), &["up"], &[])
        .status
        .success());
    std::fs::remove_file(state.path().join("issuer.nk")).unwrap();
    let out = pod_sh(state.path(), fake.path(), &["up"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        read(
            &fake
                .path()
                .join("secrets/nats-oidc-callout-pod-issuer/data")
        ),
        read(&state.path().join("issuer.nk"))
    );
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

fn deploy(file: &str) -> String {
    std::fs::read_to_string(root().join("deploy").join(file)).unwrap()
}

/// The ConfigMap's config.toml, as the block scalar under `config.toml: |`.
fn configmap_config() -> String {
    config_in(&deploy("kubernetes/configmap.yaml"))
}

/// The config.toml of a ConfigMap in `yaml`.
fn config_in(yaml: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "config.toml: |");
    lines.next().expect("a ConfigMap with data.config.toml");
    lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The Kubernetes ConfigMap's config passes `check` with seeds where the
/// Secret mounts them, and the Deployment mounts both as directories where
/// the config and the image expect them.
/// `check` of a config from the ConfigMap, with seeds (mode 0440) where
/// the Secret mounts them.
fn check_with_seeds(dir: &std::path::Path, config: &str) -> std::process::Output {
    let seeds = dir.join("secrets");
    std::fs::create_dir(&seeds).unwrap();
    let write = |name: &str, seed: String| {
        use std::os::unix::fs::PermissionsExt;
        let p = seeds.join(name);
        std::fs::write(&p, seed).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o440)).unwrap();
    };
    write("issuer.nk", nkeys::KeyPair::new_account().seed().unwrap());
    write("xkey.nk", nkeys::XKey::new().seed().unwrap());
    write("nats.nk", nkeys::KeyPair::new_user().seed().unwrap());
    let config = config.replace(
        "/etc/nats-oidc-callout/secrets/",
        &format!("{}/", seeds.display()),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_nats-oidc-callout"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap()
}

#[test]
fn kubernetes_config_passes_check_and_is_mounted_as_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = configmap_config();
    assert!(
        config.contains("listen = \"0.0.0.0:8080\""),
        "probes come from outside the pod"
    );
    let out = check_with_seeds(dir.path(), &config);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains("exposed"),
        "0440 seeds are not exposed: {}",
        text(&out)
    );

    let d = deploy("kubernetes/deployment.yaml");
    assert!(
        !d.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.contains("subPath")),
        "a subPath mount is never updated"
    );
    for needle in [
        "mountPath: /etc/nats-oidc-callout/config\n",
        "mountPath: /etc/nats-oidc-callout/secrets\n",
        "value: /etc/nats-oidc-callout/config/config.toml",
        "name: nats-oidc-callout-config",
        "secretName: nats-oidc-callout-seeds",
        "path: /healthz",
        "path: /readyz",
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
        "runAsUser: 65532",
        "drop: [\"ALL\"]",
        "allowPrivilegeEscalation: false",
        "replicas: 2",
        "serviceAccountName: nats-oidc-callout\n",
        "mountPath: /var/run/secrets/nats-oidc-callout/kubernetes\n",
        "path: token\n",
        "name: kube-root-ca.crt\n",
    ] {
        assert!(d.contains(needle), "deployment.yaml lacks {needle:?}");
    }
    let account = deploy("kubernetes/serviceaccount.yaml");
    assert!(
        account.contains("name: system:service-account-issuer-discovery")
            && account.contains("kind: ServiceAccount\n    name: nats-oidc-callout"),
        "{account}"
    );
    assert!(deploy("kubernetes/secret.yaml").contains("name: nats-oidc-callout-seeds"));
    assert!(deploy("kubernetes/pdb.yaml").contains("kind: PodDisruptionBudget"));
    assert!(deploy("kubernetes/service.yaml").contains("port: 8080"));
}

/// The podman form (deploy/podman/nats-oidc-callout.yaml, played by
/// infrastructure/image-check.sh): its config passes `check` with seeds
/// where the volume mounts them, and it is the Deployment's pod in the form
/// podman runs: the host network without port mappings, the image's own
/// health check, the seeds from a volume, the same security context.
#[test]
fn the_podman_kube_file_passes_check_and_keeps_the_deployments_pod() {
    let dir = tempfile::tempdir().unwrap();
    let file = deploy("podman/nats-oidc-callout.yaml");
    let config = config_in(&file);
    for needle in [
        "url = \"nats://127.0.0.1:4222\"",
        "listen = \"127.0.0.1:8080\"",
    ] {
        assert!(
            config.contains(needle),
            "the podman config lacks {needle:?}"
        );
    }
    let out = check_with_seeds(dir.path(), &config);
    assert!(out.status.success(), "{}", text(&out));
    let live: Vec<&str> = file
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let live = live.join("\n");
    for absent in [
        "containerPort",
        "Probe:",
        "secret:",
        "subPath",
        "kind: Deployment",
    ] {
        assert!(!live.contains(absent), "the podman file has {absent:?}");
    }
    for needle in [
        "kind: Pod\n",
        "hostNetwork: true",
        "claimName: nats-oidc-callout-keys",
        "image: localhost/nats-oidc-callout:latest",
        "mountPath: /etc/nats-oidc-callout/config\n",
        "mountPath: /etc/nats-oidc-callout/secrets\n",
        "mountPath: /tmp\n",
        "value: /etc/nats-oidc-callout/config/config.toml",
    ] {
        assert!(live.contains(needle), "the podman file lacks {needle:?}");
    }
    // The container's security context, as the Deployment's.
    let block = |yaml: &str, header: &str| -> Vec<String> {
        let indent = header.len() - header.trim_start().len();
        let mut lines = yaml.lines().skip_while(|l| *l != header);
        assert!(lines.next().is_some(), "no {header:?}");
        lines
            .take_while(|l| l.len() - l.trim_start().len() > indent)
            .map(|l| l.trim().to_string())
            .collect()
    };
    assert_eq!(
        block(&file, "      securityContext:"),
        block(
            &deploy("kubernetes/deployment.yaml"),
            "          securityContext:"
        )
    );
    // The roles are the Kubernetes config's.
    let roles = |config: &str| {
        config
            .split_once("\n[roles.admin]\n")
            .map(|(_, r)| r.to_string())
    };
    assert_eq!(roles(&config), roles(&configmap_config()));
}

/// The ConfigMap's commented block for the cluster's own issuer, switched
/// on as its comment says: `check` accepts it with the cluster's CA and the
/// service's token where the Deployment mounts them.
#[test]
fn the_kubernetes_in_cluster_issuer_recipe_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = dir.path().join("kubernetes");
    std::fs::create_dir(&mounted).unwrap();
    let ca = nats_oidc_callout::dev::Pki::new(&mounted, "cluster").unwrap();
    std::fs::rename(ca.ca_file(), mounted.join("ca.crt")).unwrap();
    std::fs::write(mounted.join("token"), "eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n").unwrap();
    let shipped = configmap_config();
    let block = shipped
        .split_once("# [[oidc]]")
        .map(|(_, rest)| format!("# [[oidc]]{rest}"))
        .expect("the ConfigMap has the cluster issuer's block, commented");
    let on: String = block
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.strip_prefix("# ").or(l.strip_prefix('#')).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        on.contains("bearer_token_file") && on.contains("[[bindings]]"),
        "{on}"
    );
    let config = format!("{shipped}\n{on}\n").replace(
        "/var/run/secrets/nats-oidc-callout/kubernetes/",
        &format!("{}/", mounted.display()),
    );
    let out = check_with_seeds(dir.path(), &config);
    assert!(out.status.success(), "{}", text(&out));
}

/// The systemd unit runs the binary the .deb installs with the config the
/// .deb installs, and reloads with SIGHUP (the service's reload signal).
#[test]
fn systemd_unit_matches_the_package() {
    let unit = deploy("systemd/nats-oidc-callout.service");
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(cargo.contains("[\"target/release/nats-oidc-callout\", \"usr/bin/\", \"755\"]"));
    assert!(
        cargo.contains("[\"config.example.toml\", \"etc/nats-oidc-callout/config.toml\", \"644\"]")
    );
    assert!(unit.contains(
        "ExecStart=/usr/bin/nats-oidc-callout run --config /etc/nats-oidc-callout/config.toml"
    ));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    for option in [
        "User=nats-oidc-callout",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(option), "the unit lacks {option:?}");
    }
    let postinst = deploy("debian/postinst");
    assert!(
        postinst.contains("adduser --system --group") && postinst.contains("nats-oidc-callout")
    );
}

/// The book's nats-server block is a config nats-server accepts, once
/// its placeholder key is a real one (and with the xkey line switched on,
/// as the book says to do together with callout.xkey_seed_file).
#[test]
fn the_book_nats_server_block_is_a_valid_config() {
    let page = std::fs::read_to_string(root().join("docs/src/guides/nats-server.md")).unwrap();
    let block = page
        .split("```")
        .nth(1)
        .expect("docs/src/guides/nats-server.md has a nats-server block");
    let issuer = nkeys::KeyPair::new_account().public_key();
    let xkey = nkeys::XKey::new().public_key();
    assert!(block.contains("issuer: ABC..."), "{block}");
    assert!(block.contains("# xkey: XYZ..."), "{block}");
    for (name, text) in [
        ("without xkey", block.replace("ABC...", &issuer)),
        (
            "with xkey",
            block
                .replace("ABC...", &issuer)
                .replace("# xkey: XYZ...", &format!("xkey: {xkey}")),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("nats.conf");
        std::fs::write(&conf, &text).unwrap();
        let out = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&conf)
            .arg("-t")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: nats-server -t refused the block of docs/src/guides/nats-server.md:\n{text}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
