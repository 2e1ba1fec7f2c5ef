//! etcd over TLS with client certificates and etcd authentication: a
//! manager (user and password) and a worker (its certificate's CN as its
//! user) run a job through an etcd that takes nothing else; a client
//! without a certificate, one speaking plaintext, and one with a wrong
//! password are refused; the worker's etcd role cannot read the manager's
//! tokens.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, Permission, TlsOptions};
use gdts_tests::gdts_common::keys::{prefix_range_end, Keys};
use gdts_tests::pki::{Issued, Pki};
use gdts_tests::{free_port, once_soon, wait_until, Mongo, Proc};
use serde_json::json;

const PREFIX: &str = "/gdts-tls/";

fn tls(pki: &Pki, client: Option<&Issued>) -> anyhow::Result<TlsOptions> {
    let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(std::fs::read(pki.ca())?));
    if let Some(c) = client {
        t = t.identity(Identity::from_pem(
            std::fs::read(&c.cert)?,
            std::fs::read(&c.key)?,
        ));
    }
    Ok(t)
}

async fn client(
    endpoint: &str,
    tls: Option<TlsOptions>,
    user: Option<(&str, &str)>,
) -> Result<etcd_client::Client, etcd_client::Error> {
    let mut o = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(5));
    if let Some(t) = tls {
        o = o.with_tls(t);
    }
    if let Some((u, p)) = user {
        o = o.with_user(u, p);
    }
    let mut c = etcd_client::Client::connect([endpoint], Some(o)).await?;
    // Connecting is lazy: a request shows whether etcd takes this client.
    let probe = gdts_tests::gdts_common::JobName::parse("probe").expect("a valid name");
    c.get(Keys::new(PREFIX).job(&probe), None).await?;
    Ok(c)
}

fn spawn_etcd(dir: &Path, pki: &Pki, server: &Issued) -> anyhow::Result<(Proc, String)> {
    let (port, peer_port) = (free_port(), free_port());
    let url = format!("https://127.0.0.1:{port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut cmd = Command::new(std::env::var("GDTS_ETCD_BIN").unwrap_or_else(|_| "etcd".into()));
    cmd.args(["--name", "tls", "--data-dir"])
        .arg(dir.join("etcd-data"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("tls={peer}")])
        .arg("--cert-file")
        .arg(&server.cert)
        .arg("--key-file")
        .arg(&server.key)
        .arg("--trusted-ca-file")
        .arg(pki.ca())
        .arg("--client-cert-auth");
    let proc = Proc::spawn("etcd", cmd, &dir.join("etcd.log"), None)?;
    Ok((proc, url))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_runs_on_a_tls_etcd_with_authentication_and_refuses_strangers(
) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("gdts-etcd-tls-")
        .tempdir()?;
    let pki = Pki::new(&dir.path().join("pki"))?;
    let server = pki.issue("etcd-server", "etcd")?;
    let root = pki.issue("root", "root")?;
    let manager_cert = pki.issue("manager", "gdts-manager-host")?;
    let worker_cert = pki.issue("worker", "gdts-worker")?;
    let (_etcd, url) = spawn_etcd(dir.path(), &pki, &server)?;

    // Roles: the manager reads and writes the whole prefix; a worker all of
    // it but `auth/` (tokens and sessions), which sorts first.
    wait_until("the TLS etcd to answer", Duration::from_secs(20), || {
        let attempt = tls(&pki, Some(&root)).map(|t| client(&url, Some(t), None));
        async move {
            match attempt {
                Ok(f) => f.await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await?;
    let mut admin = client(&url, Some(tls(&pki, Some(&root))?), None).await?;
    let _ = admin.role_add("root").await;
    admin.user_add("root", "root-password", None).await?;
    admin.user_grant_role("root", "root").await?;
    admin.role_add("gdts-manager").await?;
    admin
        .role_grant_permission("gdts-manager", Permission::read_write(PREFIX).with_prefix())
        .await?;
    admin.role_add("gdts-worker").await?;
    admin
        .role_grant_permission(
            "gdts-worker",
            Permission::read_write(format!("{PREFIX}b")).with_range_end(prefix_range_end(PREFIX)),
        )
        .await?;
    admin
        .user_add("gdts-manager", "manager-password", None)
        .await?;
    admin
        .user_grant_role("gdts-manager", "gdts-manager")
        .await?;
    admin
        .user_add("gdts-worker", "unused-password", None)
        .await?;
    admin.user_grant_role("gdts-worker", "gdts-worker").await?;
    admin.auth_enable().await?;

    // Strangers are refused.
    let no_cert = client(&url, Some(tls(&pki, None)?), None).await;
    assert!(no_cert.is_err(), "a client without a certificate got in");
    let plaintext = client(&url.replace("https://", "http://"), None, None).await;
    assert!(plaintext.is_err(), "a plaintext client got in");
    let wrong = client(
        &url,
        Some(tls(&pki, Some(&manager_cert))?),
        Some(("gdts-manager", "wrong")),
    )
    .await;
    assert!(wrong.is_err(), "a wrong password got in");

    // The worker's role cannot touch the manager's tokens.
    let mut as_worker = client(&url, Some(tls(&pki, Some(&worker_cert))?), None).await?;
    {
        let c = &mut as_worker;
        let keys = Keys::new(PREFIX);
        let denied = c.get(keys.token("0123456789abcdef"), None).await;
        assert!(denied.is_err(), "the worker read auth/: {denied:?}");
        let denied = c.put(keys.token("0123456789abcdef"), "x", None).await;
        assert!(denied.is_err(), "the worker wrote auth/");
        c.get(
            keys.job(&gdts_tests::gdts_common::JobName::parse("j")?),
            None,
        )
        .await?;
    }

    // A manager and a worker work through it.
    let mongo = Mongo::start(dir.path()).await?;
    let manager_port = free_port();
    let mut m = Command::new(gdts_tests::binary("gdts-manager"));
    let store_env = |cmd: &mut Command, cert: &Issued| {
        cmd.env("GDTS_ETCD_ENDPOINTS", &url)
            .env("GDTS_ETCD_PREFIX", PREFIX)
            .env("GDTS_ETCD_CA", pki.ca())
            .env("GDTS_ETCD_CERT", &cert.cert)
            .env("GDTS_ETCD_KEY", &cert.key)
            .env("GDTS_MONGO_URI", &mongo.uri)
            .env("GDTS_MONGO_DB", "gdts_tls");
    };
    store_env(&mut m, &manager_cert);
    m.env("GDTS_ETCD_USER", "gdts-manager")
        .env("GDTS_ETCD_PASSWORD", "manager-password")
        .env("GDTS_AUTH", "off")
        .env("GDTS_BIND", "127.0.0.1")
        .env("PORT", manager_port.to_string());
    let _manager = Proc::spawn("manager", m, &dir.path().join("manager.log"), None)?;
    let mut w = Command::new(gdts_tests::binary("gdts-worker"));
    store_env(&mut w, &worker_cert);
    w.env("GDTS_WORKER_ID", "tls-w1")
        .env("GDTS_WORKER_LEASE_TTL_SECS", "5")
        .env("GDTS_SPOOL_DIR", dir.path().join("spool"));
    let _worker = Proc::spawn("worker", w, &dir.path().join("worker.log"), None)?;

    let base = format!("http://127.0.0.1:{manager_port}");
    let http = reqwest::Client::new();
    let logs = |what: &str| {
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
        format!(
            "{what}\nmanager log:\n{}\nworker log:\n{}",
            read("manager.log"),
            read("worker.log")
        )
    };
    wait_until(
        "the worker to register through TLS",
        Duration::from_secs(30),
        || {
            let r = http.get(format!("{base}/worker/list")).send();
            async move {
                match r.await {
                    Ok(r) => r.text().await.unwrap_or_default().contains("tls-w1"),
                    Err(_) => false,
                }
            }
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}", logs(&e.to_string())))?;
    let job = json!({"name": "over-tls", "command": "echo through tls", "cronExpr": once_soon(2)});
    let saved: serde_json::Value = http
        .post(format!("{base}/job/save"))
        .form(&[("job", job.to_string())])
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(saved["errno"], 0, "{saved}");
    wait_until("the job's run record", Duration::from_secs(30), || {
        let r = http
            .get(format!("{base}/job/log"))
            .query(&[("name", "over-tls")])
            .send();
        async move {
            match r.await {
                Ok(r) => r.text().await.unwrap_or_default().contains("through tls"),
                Err(_) => false,
            }
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{}", logs(&e.to_string())))?;
    Ok(())
}
