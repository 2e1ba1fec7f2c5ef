//! The VM boot path, rehearsed (issue 11): the real boot templates in
//! terraform/modules are rendered by Terraform itself (`templatefile`), and
//! what they set up runs in local containers that mimic what matters on the
//! VMs (scripts/rehearsal/): Debian 12 booted by systemd for etcd, whose
//! startup script formats and mounts its data disk (a loop device at
//! /dev/disk/by-id/google-etcd-data) and installs etcd-server with apt (from
//! a local repository); a Container-Optimized OS stand-in for the worker,
//! with /var noexec, an INPUT firewall that drops all but SSH, no package
//! manager, Docker, and cloud-init applying the rendered user-data. A
//! metadata-server and Secret Manager stand-in (scripts/rehearsal/standin.py)
//! and a real registry (Debian's docker-registry) answer what the scripts ask.
//!
//! Asserted: the three members form one cluster from their rendered scripts,
//! over TLS for clients and peers with the certificates from their secrets,
//! and the first one sets up etcd's users and roles and turns authentication
//! on (a client without a certificate, or speaking plaintext, is refused; the
//! worker's user cannot read `auth/`);
//! the worker started by its rendered unit fetches the MongoDB URI from the
//! secret, pulls its image, registers in that etcd, and answers the
//! autohealing check on its port through the firewall (another port stays
//! dropped); stopping the VM as a scale-in does (systemd stops the unit,
//! `docker stop -t 85`) leaves no claimed tick without its run record.
//! MongoDB's own VMs are not rehearsed: no `mongo` image can be had here
//! (README, "Boot rehearsal").

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use etcd_client::{Certificate, ConnectOptions, GetOptions, Identity, TlsOptions};
use gdts_tests::gdts_common::keys::Keys;
use gdts_tests::gdts_common::values::ClaimRecord;
use gdts_tests::pki::{Issued, Pki};
use gdts_tests::{
    binary, docker_or_skip, free_port, now_ms, record_key, wait_until, workspace_root, Mongo, Proc,
};
use mongodb::bson::Document;

const PROJECT: &str = "rehearsal-project";
const REGISTRY_HOST: &str = "rehearsal-docker.pkg.dev";
const URI_SECRET: &str = "gdts-mongodb-uri";
const HEALTH_PORT: u16 = 8081;
const WORKER_VM: &str = "gdts-worker-rehearsal";
const MONGO_VM: &str = "gdts-mongodb-0";
/// The MongoDB members' secrets (terraform/modules/mongodb: `NAME-mongodb-*`).
const MONGO_SECRETS: [(&str, &str); 3] = [
    ("gdts-mongodb-keyfile", "rehearsal-keyfile-0123456789abcdef"),
    ("gdts-mongodb-admin-password", "rehearsal-admin-password"),
    ("gdts-mongodb-app-password", "rehearsal-app-password"),
];

/// etcd's certificates, as terraform/modules/etcd makes them (tls.tf): a
/// secret per PEM file, named as the module names them.
const ETCD_CA_SECRET: &str = "gdts-etcd-ca";

/// Options to reach the rehearsed etcd over TLS, as `client` if given.
fn etcd_options(pki: &Pki, client: Option<&Issued>) -> anyhow::Result<ConnectOptions> {
    let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(std::fs::read(pki.ca())?));
    if let Some(c) = client {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&c.cert)?,
            std::fs::read(&c.key)?,
        ));
    }
    Ok(ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(5))
        .with_tls(tls))
}

/// Runs a command; its stdout on success, an error with its output otherwise.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn docker(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("docker").args(args))
}

/// What the rehearsal created, removed on drop: containers (by id, their
/// journals saved first), the network, loop devices.
struct Created {
    containers: Vec<(String, String)>,
    network: Option<String>,
    loops: Vec<String>,
    log_dir: PathBuf,
    /// Each VM's /var/log/journal, kept on the host so it outlives the VM.
    journal_dir: PathBuf,
}

/// A VM's journal, read on the host.
fn journal(journal_dir: &Path, vm: &str) -> String {
    Command::new("journalctl")
        .arg("--directory")
        .arg(journal_dir.join(vm))
        .args(["--no-pager", "-o", "short-precise"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

impl Drop for Created {
    fn drop(&mut self) {
        for (name, id) in self.containers.drain(..) {
            if let Ok(out) = Command::new("docker").args(["logs", &id]).output() {
                let mut text = out.stdout;
                text.extend_from_slice(&out.stderr);
                let _ = std::fs::write(self.log_dir.join(format!("{name}.console.log")), text);
            }
            let journal = journal(&self.journal_dir, &name);
            let _ = std::fs::write(self.log_dir.join(format!("{name}.journal.log")), journal);
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v", &id])
                .output();
        }
        if let Some(net) = self.network.take() {
            let _ = Command::new("docker")
                .args(["network", "rm", &net])
                .output();
        }
        for dev in self.loops.drain(..) {
            let _ = Command::new("losetup").args(["-d", &dev]).output();
        }
    }
}

/// A CA and a certificate for the HTTPS stand-ins (Secret Manager, the
/// registry); the VMs trust the CA through their system bundle.
fn make_certificates(dir: &Path) -> anyhow::Result<PathBuf> {
    let ca_key = dir.join("ca.key");
    let ca = dir.join("ca.pem");
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca)
        .args(["-subj", "/CN=GDTS rehearsal CA"]))?;
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        format!("subjectAltName=DNS:secretmanager.googleapis.com,DNS:{REGISTRY_HOST}\n"),
    )?;
    run(Command::new("openssl")
        .args(["req", "-newkey", "rsa:2048", "-nodes"])
        .arg("-keyout")
        .arg(dir.join("server.key"))
        .arg("-out")
        .arg(dir.join("server.csr"))
        .args(["-subj", "/CN=rehearsal"]))?;
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(dir.join("server.csr"))
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(dir.join("server.pem")))?;
    let mut bundle = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    bundle.extend(std::fs::read(&ca)?);
    let path = dir.join("ca-certificates.crt");
    std::fs::write(&path, bundle)?;
    Ok(path)
}

/// Renders the boot templates with Terraform's `templatefile`, with the
/// values the modules pass (the workers module's timeouts are read from it).
fn render(dir: &Path, vars: &[(&str, &str, String)]) -> anyhow::Result<HashMap<String, String>> {
    let root = workspace_root();
    let work = dir.join("render");
    std::fs::create_dir_all(&work)?;
    let mut main = String::new();
    for (name, template, args) in vars {
        let path = root.join("terraform/modules").join(template);
        main.push_str(&format!(
            "output \"{name}\" {{\n  value = templatefile(\"{}\", {args})\n}}\n",
            path.display()
        ));
    }
    std::fs::write(work.join("main.tf"), main)?;
    let tf = |args: &[&str]| {
        run(Command::new(root.join(".venv-tf/bin/python"))
            .arg(root.join("scripts/terraform.py"))
            .arg(format!("-chdir={}", work.display()))
            .args(args)
            .env("TF_CLI_CONFIG_FILE", "/dev/null")
            .env("TF_IN_AUTOMATION", "1"))
    };
    tf(&["apply", "-auto-approve", "-input=false", "-no-color"])?;
    let outputs: serde_json::Value = serde_json::from_str(&tf(&["output", "-json"])?)?;
    Ok(vars
        .iter()
        .map(|(name, _, _)| {
            let text = outputs[*name]["value"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (name.to_string(), text)
        })
        .collect())
}

/// The workers module's value for a template argument (`name = NUMBER`).
fn workers_module_number(name: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(workspace_root().join("terraform/modules/workers/main.tf"))?;
    text.lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix(name)?
                .trim()
                .strip_prefix('=')?
                .trim()
                .parse()
                .ok()
        })
        .next()
        .with_context(|| format!("{name} not found in terraform/modules/workers/main.tf"))
}

/// The journal lines of a unit's failures, for an error message.
fn unit_failures(journal: &str, unit: &str) -> String {
    let lines: Vec<&str> = journal
        .lines()
        .filter(|l| l.contains(unit) || l.contains(" docker["))
        .filter(|l| {
            ["Failed", "rror", "panicked", "status="]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect();
    let tail = &lines[lines.len().saturating_sub(8)..];
    format!(
        "{unit} and its container in the VM's journal:\n{}",
        tail.join("\n")
    )
}

fn tcp_open(addr: &str, timeout: Duration) -> bool {
    let addr: SocketAddr = addr.parse().unwrap();
    TcpStream::connect_timeout(&addr, timeout).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_boot_from_their_rendered_templates() -> anyhow::Result<()> {
    if docker_or_skip().await?.is_none() {
        return Ok(());
    }
    let root = workspace_root();
    run(&mut Command::new(
        root.join("scripts/rehearsal/vm-images.sh"),
    ))?;
    docker(&["image", "inspect", "gdts-worker:local"])
        .context("gdts-worker:local is built by scripts/images.sh (make test runs it)")?;
    let registry_bin = root.join("target/rehearsal/registry/usr/bin/docker-registry");

    let tmp = tempfile::Builder::new()
        .prefix("gdts-rehearsal-")
        .tempdir()?;
    let dir = tmp.path();
    let log_dir = root.join("target/test-logs/boot_rehearsal");
    let _ = std::fs::remove_dir_all(&log_dir);
    std::fs::create_dir_all(&log_dir)?;
    let tag = format!("gdts-rehearsal-{}", std::process::id());
    let journal_dir = dir.join("journal");
    let mut created = Created {
        containers: Vec::new(),
        network: None,
        loops: Vec::new(),
        log_dir: log_dir.clone(),
        journal_dir: journal_dir.clone(),
    };

    // The VMs' network: static addresses, as the modules reserve them, and
    // no way out (--internal): only the host's stand-ins on the gateway.
    // Docker picks a free subnet; the network is made again with it given,
    // since only then does Docker accept static addresses.
    docker(&["network", "create", &tag])?;
    created.network = Some(tag.clone());
    let ipam = docker(&[
        "network",
        "inspect",
        &tag,
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}",
    ])?;
    let mut ipam = ipam.split_whitespace().map(str::to_string);
    let subnet = ipam.next().context("no subnet")?;
    let gateway = ipam.next().context("no gateway")?;
    docker(&["network", "rm", &tag])?;
    docker(&[
        "network",
        "create",
        "--subnet",
        &subnet,
        "--gateway",
        &gateway,
        "--internal",
        &tag,
    ])?;
    let net_prefix = gateway
        .rsplit_once('.')
        .context("gateway is not IPv4")?
        .0
        .to_string();
    let addr = |last: u8| format!("{net_prefix}.{last}");
    let members: Vec<(String, String)> = (0..3)
        .map(|i| (format!("gdts-etcd-{i}"), addr(10 + i as u8)))
        .collect();
    let worker_ip = addr(20);
    let mongo_vm_ip = addr(30);

    // etcd's PKI, as terraform/modules/etcd/tls.tf makes it: members for
    // their address, root, gdts-manager and gdts-worker by CN.
    let pki = Pki::new(&dir.join("etcd-pki"))?;
    let mut etcd_secrets: Vec<(String, String)> = vec![(
        ETCD_CA_SECRET.to_string(),
        std::fs::read_to_string(pki.ca())?,
    )];
    let mut issue = |secret: &str, cn: &str, names: &[&str]| -> anyhow::Result<Issued> {
        let issued = pki.issue_for(secret, cn, names)?;
        etcd_secrets.push((
            format!("{secret}-cert"),
            std::fs::read_to_string(&issued.cert)?,
        ));
        etcd_secrets.push((
            format!("{secret}-key"),
            std::fs::read_to_string(&issued.key)?,
        ));
        Ok(issued)
    };
    for (member, ip) in &members {
        issue(member, member, &[ip.as_str(), member.as_str()])?;
    }
    let root_cert = issue("gdts-etcd-root", "root", &[])?;
    let worker_cert = issue("gdts-etcd-worker", "gdts-worker", &[])?;
    let manager_cert = issue("gdts-etcd-manager", "gdts-manager", &[])?;

    // Real pieces on the host, on the network's gateway: the Mongo-protocol
    // server, the registry, the Google stand-ins.
    let bundle = make_certificates(dir)?;
    let standin_address = dir.join("metadata-address");
    std::fs::write(&standin_address, format!("{gateway}\n"))?;
    let mongo = Mongo::start_on(dir, &gateway).await?;
    let registry_port = free_port();
    let registry_addr = format!("{REGISTRY_HOST}:{registry_port}");
    let mut registry_cmd = Command::new(&registry_bin);
    registry_cmd
        .arg("serve")
        .arg(root.join("scripts/rehearsal/registry.yml"))
        .env("REGISTRY_HTTP_ADDR", format!("{gateway}:{registry_port}"))
        .env("REGISTRY_HTTP_TLS_CERTIFICATE", dir.join("server.pem"))
        .env("REGISTRY_HTTP_TLS_KEY", dir.join("server.key"))
        .env(
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
            dir.join("registry"),
        );
    let _registry = Proc::spawn(
        "registry",
        registry_cmd,
        &log_dir.join("registry.log"),
        None,
    )?;

    let image = format!("{registry_addr}/{PROJECT}/gdts/worker:rehearsal");
    let stop_timeout_s = workers_module_number("stop_timeout_s")?;
    let initial_cluster = members
        .iter()
        .map(|(m, ip)| format!("{m}=https://{ip}:2380"))
        .collect::<Vec<_>>()
        .join(",");
    let etcd_endpoints = members
        .iter()
        .map(|(_, ip)| format!("https://{ip}:2379"))
        .collect::<Vec<_>>()
        .join(",");
    let mut templates: Vec<(&str, &str, String)> = members
        .iter()
        .enumerate()
        .map(|(i, (member, ip))| {
            let name = ["etcd_0", "etcd_1", "etcd_2"][i];
            let args = format!(
                "{{ member = \"{member}\", address = \"{ip}\", initial_cluster = \"{initial_cluster}\", \
                 cluster_token = \"gdts-etcd\", project_id = \"{PROJECT}\", ca_secret = \"{ETCD_CA_SECRET}\", \
                 cert_secret = \"{member}-cert\", key_secret = \"{member}-key\", \
                 root_cert_secret = \"gdts-etcd-root-cert\", root_key_secret = \"gdts-etcd-root-key\", \
                 bootstrap = {}, key_prefix = \"/gdts/\", worker_range = [\"/gdts/b\", \"/gdts0\"] }}",
                i == 0
            );
            (name, "etcd/startup.sh.tftpl", args)
        })
        .collect();
    templates.push((
        "worker",
        "workers/cloud-init.yaml.tftpl",
        format!(
            "{{ image = \"{image}\", registry_host = \"{registry_addr}\", project_id = \"{PROJECT}\", \
             uri_secret = \"{URI_SECRET}\", etcd_endpoints = \"{etcd_endpoints}\", \
             etcd_prefix = \"/gdts/\", etcd_ca = \"{ETCD_CA_SECRET}\", \
             etcd_cert = \"gdts-etcd-worker-cert\", etcd_key = \"gdts-etcd-worker-key\", \
             gcs_bucket = \"{PROJECT}-outputs\", health_port = {HEALTH_PORT}, job_uid = 65534, \
             labels = \"pool=rehearsal,zone=a\", \
             shutdown_grace_ms = {}, flush_timeout_ms = {}, stop_timeout_s = {stop_timeout_s} }}",
            workers_module_number("shutdown_grace_ms")?,
            workers_module_number("flush_timeout_ms")?,
        ),
    ));
    templates.push((
        "mongodb_0",
        "mongodb/cloud-init.yaml.tftpl",
        format!(
            "{{ image = \"mongo:7.0\", project_id = \"{PROJECT}\", secret_prefix = \"gdts-mongodb\", \
             initiator = true, members_json = jsonencode([{{ _id = 0, host = \"{mongo_vm_ip}:27017\" }}]), \
             member_address = \"{mongo_vm_ip}\" }}"
        ),
    ));
    let rendered = render(dir, &templates)?;
    for (name, text) in &rendered {
        std::fs::write(log_dir.join(format!("rendered-{name}")), text)?;
    }

    // The metadata each VM reads; the worker's user-data is published only
    // once its image is in the registry.
    let config_path = dir.join("standin.json");
    let write_config = |with_worker: bool| -> anyhow::Result<()> {
        let mut instances = serde_json::Map::new();
        for (i, (member, ip)) in members.iter().enumerate() {
            instances.insert(
                ip.clone(),
                serde_json::json!({"hostname": member,
                    "attributes": {"startup-script": rendered[["etcd_0", "etcd_1", "etcd_2"][i]]}}),
            );
        }
        let mut worker = serde_json::json!({"hostname": WORKER_VM, "attributes": {}});
        if with_worker {
            worker["attributes"]["user-data"] = rendered["worker"].clone().into();
        }
        instances.insert(worker_ip.clone(), worker);
        instances.insert(
            mongo_vm_ip.clone(),
            serde_json::json!({"hostname": MONGO_VM,
                "attributes": {"user-data": rendered["mongodb_0"]}}),
        );
        let mut secrets = serde_json::json!({URI_SECRET: mongo.uri.clone()});
        for (name, value) in MONGO_SECRETS {
            secrets[name] = value.into();
        }
        for (name, value) in &etcd_secrets {
            secrets[name] = value.clone().into();
        }
        let config = serde_json::json!({
            "project": PROJECT,
            "instances": instances,
            "secrets": secrets,
        });
        let tmp = config_path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&config)?)?;
        std::fs::rename(&tmp, &config_path)?;
        Ok(())
    };
    write_config(false)?;
    let mut standin_cmd = Command::new("python3");
    standin_cmd
        .arg(root.join("scripts/rehearsal/standin.py"))
        .args(["--bind", &gateway, "--config"])
        .arg(&config_path)
        .arg("--cert")
        .arg(dir.join("server.pem"))
        .arg("--key")
        .arg(dir.join("server.key"));
    let _standin = Proc::spawn("standin", standin_cmd, &log_dir.join("standin.log"), None)?;
    wait_until(
        "the registry and the stand-ins",
        Duration::from_secs(20),
        || {
            let up = tcp_open(&format!("{gateway}:80"), Duration::from_millis(200))
                && tcp_open(&format!("{gateway}:443"), Duration::from_millis(200))
                && tcp_open(
                    &format!("{gateway}:{registry_port}"),
                    Duration::from_millis(200),
                );
            async move { up }
        },
    )
    .await?;

    let vm = |name: &str, ip: &str, image: &str, extra: &[String]| -> anyhow::Result<String> {
        // Not --privileged: this machine may lack capabilities (e.g.
        // CAP_SYS_RESOURCE) that it would ask for. systemd as PID 1 needs
        // the cgroup tree writable.
        let mut args: Vec<String> = [
            "create",
            "--cap-add",
            "ALL",
            "--cap-drop",
            "SYS_RESOURCE",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "--cgroupns=host",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--name",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("{tag}-{name}"));
        for a in [
            "--hostname".to_string(),
            name.to_string(),
            "--network".into(),
            tag.clone(),
            "--ip".into(),
            ip.to_string(),
            "--add-host".into(),
            "metadata.google.internal:169.254.169.254".into(),
            "--add-host".into(),
            format!("secretmanager.googleapis.com:{gateway}"),
            "--add-host".into(),
            format!("{REGISTRY_HOST}:{gateway}"),
            "--tmpfs".into(),
            "/run".into(),
            "--tmpfs".into(),
            "/run/lock".into(),
            "--tmpfs".into(),
            "/tmp:rw,exec,nosuid,nodev,mode=1777".into(),
            "-v".into(),
            format!("{}:/etc/ssl/certs/ca-certificates.crt:ro", bundle.display()),
            "-v".into(),
            format!("{}:/var/log/journal", journal_dir.join(name).display()),
            "-v".into(),
            format!(
                "{}:/etc/rehearsal/metadata-address:ro",
                standin_address.display()
            ),
        ] {
            args.push(a);
        }
        args.extend(extra.iter().cloned());
        args.push(image.to_string());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&refs)
    };
    let boot = |id: &str| docker(&["start", id]);
    for vm in members
        .iter()
        .map(|(m, _)| m.as_str())
        .chain([WORKER_VM, MONGO_VM])
    {
        std::fs::create_dir_all(journal_dir.join(vm))?;
    }

    // A data disk: a loop device at the path GCE's udev rules give it.
    let mut disk = |name: &str, disk_name: &str| -> anyhow::Result<Vec<String>> {
        let file = dir.join(format!("{name}.img"));
        std::fs::File::create(&file)?.set_len(256 << 20)?;
        let dev = run(Command::new("losetup").args(["-f", "--show"]).arg(&file))?;
        created.loops.push(dev.clone());
        Ok(vec![
            "--device".into(),
            format!("{dev}:/dev/disk/by-id/google-{disk_name}"),
        ])
    };
    // What COS mounts: /var noexec, Docker's storage executable.
    let cos = |mut extra: Vec<String>| {
        extra.extend(
            [
                "--tmpfs",
                "/var:rw,noexec,nosuid,nodev,mode=0755",
                "-v",
                "/var/lib/docker",
                "-v",
                "/var/lib/containerd",
            ]
            .map(String::from),
        );
        extra
    };
    // Three etcd members, each with its data disk, and a MongoDB member.
    let mut vms = Vec::new();
    for (member, ip) in &members {
        let extra = disk(member, "etcd-data")?;
        vms.push((
            member.clone(),
            vm(member, ip, "gdts-rehearsal-debian:12", &extra)?,
        ));
    }
    let extra = cos(disk(MONGO_VM, "mongodb-data")?);
    vms.push((
        MONGO_VM.to_string(),
        vm(MONGO_VM, &mongo_vm_ip, "gdts-rehearsal-cos:local", &extra)?,
    ));
    for (name, id) in vms {
        created.containers.push((name, id.clone()));
        boot(&id)?;
    }
    let endpoints: Vec<String> = members
        .iter()
        .map(|(_, ip)| format!("https://{ip}:2379"))
        .collect();
    let as_root = etcd_options(&pki, Some(&root_cert))?;
    wait_until(
        "the three etcd members to form a cluster",
        Duration::from_secs(240),
        || {
            let endpoints = endpoints.clone();
            let as_root = as_root.clone();
            async move {
                let Ok(mut client) =
                    etcd_client::Client::connect(&endpoints, Some(as_root.clone())).await
                else {
                    return false;
                };
                let mut healthy = 0;
                for e in &endpoints {
                    let Ok(mut one) =
                        etcd_client::Client::connect([e], Some(as_root.clone())).await
                    else {
                        return false;
                    };
                    if one.status().await.is_ok() {
                        healthy += 1;
                    }
                }
                let started = match client.member_list().await {
                    Ok(list) => list
                        .members()
                        .iter()
                        .filter(|m| !m.name().is_empty())
                        .count(),
                    Err(_) => 0,
                };
                healthy == 3 && started == 3
            }
        },
    )
    .await?;
    let mut etcd = etcd_client::Client::connect(&endpoints, Some(as_root.clone())).await?;
    let members_seen = etcd.member_list().await?;
    // The first member turns authentication on: then the worker's user may
    // not read `auth/` (before, anyone may read anything).
    let keys = Keys::new("/gdts/");
    let as_worker = etcd_options(&pki, Some(&worker_cert))?;
    wait_until(
        "the first member to set up users, roles and authentication",
        Duration::from_secs(120),
        || {
            let (endpoints, as_worker) = (endpoints.clone(), as_worker.clone());
            let token_key = keys.token("0123456789abcdef");
            async move {
                match etcd_client::Client::connect(&endpoints, Some(as_worker)).await {
                    Ok(mut c) => matches!(
                        c.get(token_key, None).await,
                        Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("permission denied")
                    ),
                    Err(_) => false,
                }
            }
        },
    )
    .await?;
    {
        // The worker's user reads and writes the rest.
        let mut c = etcd_client::Client::connect(&endpoints, Some(as_worker.clone())).await?;
        let probe = keys.worker("rehearsal-probe");
        c.put(probe.clone(), "x", None).await?;
        c.delete(probe, None).await?;
        // Strangers are refused: no certificate, or plaintext.
        let no_cert = etcd_options(&pki, None)?;
        let refused = match etcd_client::Client::connect(&endpoints, Some(no_cert)).await {
            Ok(mut c) => c.get(keys.jobs_prefix(), None).await.is_err(),
            Err(_) => true,
        };
        assert!(refused, "a client without a certificate got in");
        let plain: Vec<String> = endpoints
            .iter()
            .map(|e| e.replace("https://", "http://"))
            .collect();
        let refused = match etcd_client::Client::connect(
            &plain,
            Some(ConnectOptions::new().with_timeout(Duration::from_secs(3))),
        )
        .await
        {
            Ok(mut c) => c.get(keys.jobs_prefix(), None).await.is_err(),
            Err(_) => true,
        };
        assert!(refused, "a plaintext client got in");
    }
    let mut names: Vec<&str> = members_seen.members().iter().map(|m| m.name()).collect();
    names.sort();
    assert_eq!(names, ["gdts-etcd-0", "gdts-etcd-1", "gdts-etcd-2"]);
    for (member, _) in &members {
        let id = &created
            .containers
            .iter()
            .find(|(n, _)| n == member)
            .unwrap()
            .1;
        let mounts = docker(&[
            "exec",
            id,
            "findmnt",
            "-n",
            "-o",
            "SOURCE,FSTYPE",
            "/var/lib/etcd-data",
        ])?;
        assert!(
            mounts.contains("ext4"),
            "{member}: data disk not mounted as ext4: {mounts}"
        );
    }

    // The worker VM: /var noexec, its Docker's storage on its own volumes
    // (COS keeps /var/lib/docker executable).
    let worker_vm = vm(
        WORKER_VM,
        &worker_ip,
        "gdts-rehearsal-cos:local",
        &cos(Vec::new()),
    )?;
    created
        .containers
        .push((WORKER_VM.to_string(), worker_vm.clone()));
    boot(&worker_vm)?;
    let exec = |args: &[&str]| {
        let mut all = vec!["exec", worker_vm.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    };
    let var_opts = exec(&["findmnt", "-n", "-o", "OPTIONS", "/var"])?;
    assert!(
        var_opts.contains("noexec"),
        "/var is not noexec: {var_opts}"
    );
    wait_until("the worker VM's Docker", Duration::from_secs(60), || {
        let ok = exec(&["docker", "info"]).is_ok();
        async move { ok }
    })
    .await?;
    assert!(exec(&["sh", "-c", "command -v apt-get || command -v dpkg"]).is_err());
    let policy = exec(&["iptables", "-w", "-S", "INPUT"])?;
    assert!(
        policy.contains("-P INPUT DROP"),
        "the VM's firewall: {policy}"
    );
    // The image goes into the registry (pushed from inside the VM, whose
    // Docker trusts the rehearsal CA), then leaves the VM: the boot pulls it.
    let saved = dir.join("worker-image.tar");
    docker(&["save", "-o", saved.to_str().unwrap(), "gdts-worker:local"])?;
    run(Command::new("docker")
        .args(["exec", "-i", &worker_vm, "docker", "load", "-q"])
        .stdin(std::fs::File::open(&saved)?))?;
    exec(&["docker", "tag", "gdts-worker:local", &image])?;
    exec(&["docker", "push", &image])?;
    exec(&["docker", "rmi", &image, "gdts-worker:local"])?;
    write_config(true)?;

    let worker_key = keys.worker(WORKER_VM);
    wait_until(
        "the worker to register in the rehearsed etcd",
        Duration::from_secs(120),
        || {
            let mut etcd = etcd.clone();
            let key = worker_key.clone();
            async move {
                etcd.get(key, None)
                    .await
                    .map(|r| !r.kvs().is_empty())
                    .unwrap_or(false)
            }
        },
    )
    .await
    .map_err(|e| {
        e.context(unit_failures(
            &journal(&journal_dir, WORKER_VM),
            "gdts-worker",
        ))
    })?;
    let health = format!("http://{worker_ip}:{HEALTH_PORT}/healthz");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    wait_until(
        "the autohealing check to pass",
        Duration::from_secs(30),
        || {
            let req = http.get(&health).send();
            async move { req.await.map(|r| r.status().is_success()).unwrap_or(false) }
        },
    )
    .await?;
    // The firewall still drops what the unit did not open.
    assert!(
        !tcp_open(
            &format!("{worker_ip}:{}", HEALTH_PORT + 1),
            Duration::from_secs(2)
        ),
        "a port the unit did not open answers"
    );
    // Jobs run as 65534, which the host firewall keeps from the metadata
    // server, etcd and MongoDB.
    let output_rules = exec(&["iptables", "-w", "-S", "OUTPUT"])?;
    for wanted in ["-d 169.254.169.254/32", "--dport 2379", "--dport 27017"] {
        assert!(
            output_rules.lines().any(|l| l.contains("--uid-owner 65534")
                && l.contains(wanted)
                && l.contains("REJECT")),
            "no rule keeps jobs from {wanted}: {output_rules}"
        );
    }
    // ...and container jobs on a Docker network (forwarded traffic) too.
    let docker_user = exec(&["iptables", "-w", "-S", "DOCKER-USER"])?;
    for wanted in ["-d 169.254.169.254/32", "--dport 2379", "--dport 27017"] {
        assert!(
            docker_user
                .lines()
                .any(|l| l.contains(wanted) && l.contains("REJECT")),
            "no DOCKER-USER rule keeps containers from {wanted}: {docker_user}"
        );
    }
    let env_file = exec(&["cat", "/var/lib/gdts/worker.env"])?;
    assert!(
        env_file.contains(&format!("GDTS_MONGO_URI={}", mongo.uri)),
        "the secret's URI: {env_file}"
    );
    assert!(
        env_file.contains("GDTS_JOB_USER=65534:65534"),
        "jobs run as root: {env_file}"
    );
    assert!(
        env_file.contains("GDTS_ETCD_CERT=/etc/gdts/etcd/cert.pem"),
        "no etcd certificate: {env_file}"
    );
    // Its labels (the group's worker_labels) are in its registration.
    let registered = etcd.get(worker_key.clone(), None).await?;
    let info: serde_json::Value = serde_json::from_slice(
        registered
            .kvs()
            .first()
            .context("the worker's registration")?
            .value(),
    )?;
    assert_eq!(
        info["labels"],
        serde_json::json!({"pool": "rehearsal", "zone": "a"}),
        "{info}"
    );
    assert_eq!(
        exec(&["stat", "-c", "%u %a", "/var/lib/gdts/etcd/key.pem"])?,
        "0 600",
        "the worker's etcd key"
    );
    assert_eq!(
        exec(&["cat", "/var/lib/gdts/etcd/key.pem"])?.trim(),
        std::fs::read_to_string(&worker_cert.key)?.trim()
    );

    // The MongoDB member, up to where the `mongo` image is needed (none can
    // be had here): data disk formatted and mounted, keyfile from Secret
    // Manager with the owner and mode mongod requires, 27017 opened in the
    // host firewall, then the unit runs the image.
    let mongo_vm = &created
        .containers
        .iter()
        .find(|(n, _)| n == MONGO_VM)
        .unwrap()
        .1;
    let mongo_exec = |args: &[&str]| {
        let mut all = vec!["exec", mongo_vm.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    };
    wait_until(
        "the MongoDB member to reach its image",
        Duration::from_secs(120),
        || {
            let tried =
                journal(&journal_dir, MONGO_VM).contains("Unable to find image 'mongo:7.0'");
            async move { tried }
        },
    )
    .await?;
    let mount = mongo_exec(&["findmnt", "-n", "-o", "FSTYPE", "/mnt/disks/mongodb"])?;
    assert_eq!(mount, "ext4", "the MongoDB data disk");
    assert_eq!(
        mongo_exec(&["stat", "-c", "%u %a", "/var/lib/gdts/keyfile"])?,
        "999 400"
    );
    assert_eq!(
        mongo_exec(&["cat", "/var/lib/gdts/keyfile"])?,
        MONGO_SECRETS[0].1
    );
    let mongo_input = mongo_exec(&["iptables", "-w", "-S", "INPUT"])?;
    assert!(
        mongo_input.contains("--dport 27017 -j ACCEPT") && mongo_input.contains("-P INPUT DROP"),
        "the MongoDB member's firewall: {mongo_input}"
    );

    // Jobs running when the VM stops, as a scale-in stops it.
    let manager_port = free_port();
    let mut manager_cmd = Command::new(binary("gdts-manager"));
    manager_cmd
        .env("GDTS_ETCD_ENDPOINTS", &etcd_endpoints)
        .env("GDTS_ETCD_CA", pki.ca())
        .env("GDTS_ETCD_CERT", &manager_cert.cert)
        .env("GDTS_ETCD_KEY", &manager_cert.key)
        .env("GDTS_MONGO_URI", &mongo.uri)
        .env("PORT", manager_port.to_string())
        .env("GDTS_BIND", "127.0.0.1")
        .env("GDTS_AUTH", "off");
    let _manager = Proc::spawn(
        "manager",
        manager_cmd,
        &log_dir.join("manager.log"),
        Some(Duration::from_secs(5)),
    )?;
    let manager = format!("http://127.0.0.1:{manager_port}");
    wait_until("the manager", Duration::from_secs(20), || {
        let req = http.get(format!("{manager}/healthz")).send();
        async move { req.await.map(|r| r.status().is_success()).unwrap_or(false) }
    })
    .await?;
    for (name, command) in [("quick", "echo tick"), ("slow", "sleep 3; echo done")] {
        let job =
            serde_json::json!({"name": name, "command": command, "cronExpr": "* * * * * * *"});
        let resp = http
            .post(format!("{manager}/job/save"))
            .form(&[("job", job.to_string())])
            .send()
            .await?;
        assert!(
            resp.status().is_success(),
            "saving {name}: {}",
            resp.text().await?
        );
    }
    let db = mongo.client().await.database("gdts");
    let logs = db.collection::<Document>(gdts_tests::gdts_common::log_record::LOG_COLLECTION);
    wait_until(
        "runs on the rehearsed worker",
        Duration::from_secs(60),
        || {
            let logs = logs.clone();
            async move {
                logs.count_documents(mongodb::bson::doc! {"jobName": "slow"})
                    .await
                    .unwrap_or(0)
                    >= 3
            }
        },
    )
    .await?;
    let stop_started = now_ms();
    docker(&["stop", "-t", &(stop_timeout_s + 60).to_string(), &worker_vm])?;
    let stop_ms = now_ms() - stop_started;
    // systemd stopped the unit (ExecStop: docker stop) and the worker exited
    // cleanly, before Docker itself went down.
    let worker_journal = journal(&journal_dir, WORKER_VM);
    let at = |what: &str| worker_journal.find(what);
    let (unit_stopped, docker_stopping) = (
        at("Stopped gdts-worker.service"),
        at("Stopping docker.service"),
    );
    assert!(
        worker_journal.contains("worker stopped")
            && unit_stopped.is_some()
            && unit_stopped < docker_stopping,
        "the worker's unit did not stop cleanly before Docker: {}",
        unit_failures(&worker_journal, "gdts-worker")
    );
    for name in ["quick", "slow"] {
        let _ = http
            .post(format!("{manager}/job/delete"))
            .form(&[("name", name)])
            .send()
            .await?;
    }

    // Every tick the worker claimed has its run record.
    let claims = etcd
        .get(keys.claims_prefix(), Some(GetOptions::new().with_prefix()))
        .await?;
    let mut claimed = Vec::new();
    for kv in claims.kvs() {
        let Some((job, tick)) = keys.parse_claim_key(kv.key()) else {
            continue;
        };
        let Ok(rec) = serde_json::from_slice::<ClaimRecord>(kv.value()) else {
            continue;
        };
        if rec.worker == WORKER_VM && !rec.skipped && !rec.missed {
            claimed.push((job.to_string(), tick));
        }
    }
    let mut cursor = logs.find(mongodb::bson::doc! {}).await?;
    let mut recorded = std::collections::HashSet::new();
    use futures::TryStreamExt;
    while let Some(d) = cursor.try_next().await? {
        let (job, tick, _) = record_key(&d);
        recorded.insert((job, tick));
    }
    let unrecorded: Vec<_> = claimed.iter().filter(|c| !recorded.contains(*c)).collect();
    eprintln!(
        "rehearsal: {} ticks claimed by the worker VM, {} recorded, VM stopped in {stop_ms} ms",
        claimed.len(),
        claimed.len() - unrecorded.len()
    );
    assert!(claimed.len() >= 6, "too few claims: {claimed:?}");
    assert!(
        unrecorded.is_empty(),
        "claimed ticks without a record: {unrecorded:?}"
    );
    drop(created);
    Ok(())
}
