//! The whole system as containers from the project's images: etcd, a manager
//! and three workers on a Docker network (the Mongo-protocol server on the
//! host, on the network's gateway). Jobs fire every second; one worker
//! container is killed, another is cut off the network for 15 s and
//! reconnected. No tick runs twice; a tick is missed only if the killed
//! worker had claimed it when it died.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkConnectRequest, NetworkCreateRequest,
    NetworkDisconnectRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use etcd_client::GetOptions;
use gdts_tests::gdts_common::keys::Keys;
use gdts_tests::gdts_common::values::ClaimRecord;
use gdts_tests::{docker_or_skip, every_second_shell_job, now_ms, wait_until, Mongo, TickReport};
use serde_json::Value;

/// Containers and the network this test created, removed by id on drop.
struct Created {
    docker: Docker,
    network: String,
    containers: Vec<String>,
    /// Where container logs are saved before the containers are removed.
    log_dir: std::path::PathBuf,
}

impl Drop for Created {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let containers = std::mem::take(&mut self.containers);
        let network = self.network.clone();
        let log_dir = self.log_dir.clone();
        // Drop cannot be async: clean up on a separate runtime thread.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    for id in containers {
                        save_logs(&docker, &id, &log_dir).await;
                        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
                        let _ = docker.remove_container(&id, Some(opts)).await;
                    }
                    let _ = docker.remove_network(&network).await;
                })
        })
        .join();
    }
}

async fn save_logs(docker: &Docker, id: &str, dir: &std::path::Path) {
    use futures::StreamExt;
    let name = docker
        .inspect_container(id, None)
        .await
        .ok()
        .and_then(|i| i.name)
        .unwrap_or_else(|| id.to_string());
    let opts = bollard::query_parameters::LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .build();
    let mut text = Vec::new();
    let mut logs = docker.logs(id, Some(opts));
    while let Some(Ok(chunk)) = logs.next().await {
        text.extend_from_slice(&chunk.into_bytes());
    }
    let _ = std::fs::write(
        dir.join(format!("{}.log", name.trim_start_matches('/'))),
        text,
    );
}

impl Created {
    async fn run(
        &mut self,
        name: &str,
        image: &str,
        args: &[&str],
        env: &[(&str, String)],
        alias: &str,
    ) -> anyhow::Result<String> {
        let endpoints = HashMap::from([(
            self.network.clone(),
            EndpointSettings {
                aliases: Some(vec![alias.to_string()]),
                ..Default::default()
            },
        )]);
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(args.iter().map(|s| s.to_string()).collect()),
            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            host_config: Some(HostConfig {
                network_mode: Some(self.network.clone()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(endpoints),
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        let id = self.docker.create_container(Some(opts), body).await?.id;
        self.containers.push(id.clone());
        self.docker.start_container(&id, None).await?;
        Ok(id)
    }

    async fn ip_of(&self, id: &str) -> anyhow::Result<String> {
        let inspect = self.docker.inspect_container(id, None).await?;
        let ip = inspect
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.get(&self.network).cloned())
            .and_then(|e| e.ip_address)
            .filter(|ip| !ip.is_empty());
        ip.ok_or_else(|| anyhow::anyhow!("{id} has no address on {}", self.network))
    }
}

/// The bootstrap admin token the containerised manager gets: the image has
/// authentication on, as Terraform deploys it.
const ADMIN_TOKEN: &str = "ct-admin-0123456789abcdef0123456789abcdef";

async fn http_post(url: &str, form: &[(&str, &str)]) -> anyhow::Result<Value> {
    Ok(reqwest::Client::new()
        .post(url)
        .bearer_auth(ADMIN_TOKEN)
        .form(form)
        .send()
        .await?
        .json()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_in_containers_survives_a_killed_and_a_partitioned_worker() -> anyhow::Result<()> {
    let Some(docker) = docker_or_skip().await? else {
        return Ok(());
    };
    let tag = format!("gdts-ct-{}", std::process::id());
    docker
        .create_network(NetworkCreateRequest {
            name: tag.clone(),
            driver: Some("bridge".into()),
            ..Default::default()
        })
        .await?;
    // Kept when the test fails, with every container's log; removed on success.
    let dir = tempfile::Builder::new()
        .prefix("gdts-cluster-in-containers-")
        .tempdir()?
        .keep();
    let mut created = Created {
        docker: docker.clone(),
        network: tag.clone(),
        containers: Vec::new(),
        log_dir: dir.clone(),
    };
    eprintln!("container logs go to {}", dir.display());
    let net = docker.inspect_network(&tag, None).await?;
    let gateway = net
        .ipam
        .and_then(|i| i.config)
        .and_then(|c| c.into_iter().find_map(|c| c.gateway))
        .ok_or_else(|| anyhow::anyhow!("network {tag} has no gateway"))?;

    let mongo = Mongo::start_on(&dir, &gateway).await?;
    let prefix = "/gdts-ct/";
    let store_env = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("GDTS_ETCD_ENDPOINTS", "http://etcd:2379".to_string()),
            ("GDTS_ETCD_PREFIX", prefix.to_string()),
            ("GDTS_MONGO_URI", mongo.uri.clone()),
            ("GDTS_MONGO_DB", "gdts_ct".to_string()),
            ("GDTS_LOG_FORMAT", "text".to_string()),
        ];
        env.extend(extra.iter().cloned());
        env
    };

    let etcd = created
        .run(
            &format!("{tag}-etcd"),
            "gdts-etcd:local",
            &[
                "--name",
                "n1",
                "--data-dir",
                "/tmp/etcd",
                "--listen-client-urls",
                "http://0.0.0.0:2379",
                "--advertise-client-urls",
                "http://etcd:2379",
                "--listen-peer-urls",
                "http://0.0.0.0:2380",
                "--initial-advertise-peer-urls",
                "http://etcd:2380",
                "--initial-cluster",
                "n1=http://etcd:2380",
            ],
            &[],
            "etcd",
        )
        .await?;
    let etcd_url = format!("http://{}:2379", created.ip_of(&etcd).await?);
    let manager = created
        .run(
            &format!("{tag}-manager"),
            "gdts-manager:local",
            &[],
            &store_env(&[
                ("PORT", "8070".into()),
                ("GDTS_ADMIN_TOKEN", ADMIN_TOKEN.into()),
            ]),
            "manager",
        )
        .await?;
    let manager_url = format!("http://{}:8070", created.ip_of(&manager).await?);
    let mut workers = HashMap::new();
    for id in ["cw1", "cw2", "cw3"] {
        let env = store_env(&[
            ("GDTS_WORKER_ID", id.into()),
            ("GDTS_WORKER_LEASE_TTL_SECS", "5".into()),
            ("GDTS_LOG_BATCH_WAIT_MS", "100".into()),
        ]);
        let cid = created
            .run(&format!("{tag}-{id}"), "gdts-worker:local", &[], &env, id)
            .await?;
        workers.insert(id, cid);
    }
    let http = reqwest::Client::new();
    let worker_list = || async {
        let v: Value = http
            .get(format!("{manager_url}/worker/list"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let mut ids: Vec<String> = serde_json::from_value(v["data"].clone()).ok()?;
        ids.sort();
        Some(ids)
    };
    wait_until(
        "three workers registered",
        Duration::from_secs(60),
        || async { worker_list().await == Some(vec!["cw1".into(), "cw2".into(), "cw3".into()]) },
    )
    .await?;

    // Authentication is on in the image: no token, no answer.
    let anonymous = http
        .get(format!("{manager_url}/worker/list"))
        .send()
        .await?;
    assert_eq!(anonymous.status(), 401, "the image serves without a token");

    // The image serves the web UI and its Bootstrap files.
    for (path, wants) in [
        ("/", "<title>GDTS</title>"),
        (
            "/node_modules/bootstrap/dist/js/bootstrap.bundle.min.js",
            "Bootstrap",
        ),
    ] {
        let resp = http.get(format!("{manager_url}{path}")).send().await?;
        assert_eq!(resp.status(), 200, "GET {path}");
        assert!(resp.text().await?.contains(wants), "GET {path}");
    }

    // Jobs, saved through the containerised manager.
    let names: Vec<String> = (0..10).map(|i| format!("job-{i}")).collect();
    for n in &names {
        let r = http_post(
            &format!("{manager_url}/job/save"),
            &[("job", &every_second_shell_job(n).to_string())],
        )
        .await?;
        assert_eq!(r["errno"], 0, "{r}");
    }
    let start = now_ms() + 2000;
    tokio::time::sleep(Duration::from_secs(6)).await;

    let kill = KillContainerOptionsBuilder::default()
        .signal("SIGKILL")
        .build();
    docker.kill_container(&workers["cw1"], Some(kill)).await?;
    let killed_at = now_ms();
    tokio::time::sleep(Duration::from_secs(3)).await;

    docker
        .disconnect_network(
            &tag,
            NetworkDisconnectRequest {
                container: workers["cw2"].clone(),
                force: Some(true),
            },
        )
        .await?;
    let cut_at = now_ms();
    tokio::time::sleep(Duration::from_secs(15)).await;
    docker
        .connect_network(
            &tag,
            NetworkConnectRequest {
                container: workers["cw2"].clone(),
                endpoint_config: Some(EndpointSettings {
                    aliases: Some(vec!["cw2".into()]),
                    ..Default::default()
                }),
            },
        )
        .await?;
    let reconnected_at = now_ms();
    wait_until("cw2 to register again", Duration::from_secs(30), || async {
        worker_list().await == Some(vec!["cw2".into(), "cw3".into()])
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let end = now_ms() - 2000;
    for n in &names {
        let r = http_post(&format!("{manager_url}/job/delete"), &[("name", n)]).await?;
        assert_eq!(r["errno"], 0, "{r}");
    }
    // A clean stop flushes every record the workers hold.
    for id in ["cw2", "cw3"] {
        let stop = StopContainerOptionsBuilder::default().t(30).build();
        docker.stop_container(&workers[id], Some(stop)).await?;
        let state = docker
            .inspect_container(&workers[id], None)
            .await?
            .state
            .unwrap();
        assert_eq!(state.exit_code, Some(0), "{id} stopped uncleanly");
    }

    // Who claimed what, from etcd (claims outlive this test).
    let mut etcd_client = etcd_client::Client::connect([etcd_url], None).await?;
    let keys = Keys::new(prefix);
    let claims = etcd_client
        .get(keys.claims_prefix(), Some(GetOptions::new().with_prefix()))
        .await?;
    let claimed_by: HashMap<(String, i64), String> = claims
        .kvs()
        .iter()
        .filter_map(|kv| {
            let (job, tick) = keys.parse_claim_key(kv.key())?;
            let rec: ClaimRecord = serde_json::from_slice(kv.value()).ok()?;
            Some(((job.to_string(), tick), rec.worker))
        })
        .collect();

    let records = mongo_records(&mongo).await?;
    let report = TickReport::every_second(&records, &names, start, end);
    let lost_in_flight: HashSet<_> = report
        .missing
        .iter()
        .filter(|(job, tick)| {
            claimed_by.get(&(job.clone(), *tick)).map(String::as_str) == Some("cw1")
                && (*tick - killed_at).abs() < 3000
        })
        .cloned()
        .collect();
    let unexplained: Vec<_> = report
        .missing
        .iter()
        .filter(|m| !lost_in_flight.contains(m))
        .collect();
    let mut by_worker: std::collections::BTreeMap<String, usize> = Default::default();
    for d in &records {
        *by_worker
            .entry(d.get_str("worker").unwrap_or("?").to_string())
            .or_default() += 1;
    }
    println!(
        "cluster in containers: {} records {by_worker:?}; window {} ticks; duplicated {}; missing {} \
         ({} claimed by the killed worker as it died); cw2 cut off for {} ms",
        records.len(),
        report.expected,
        report.duplicated.len(),
        report.missing.len(),
        lost_in_flight.len(),
        reconnected_at - cut_at,
    );
    assert!(
        report.expected >= 10 * 25,
        "window too small: {}",
        report.expected
    );
    assert!(
        report.duplicated.is_empty(),
        "ticks ran twice: {:?}",
        report.duplicated
    );
    assert!(
        unexplained.is_empty(),
        "ticks missed while a worker could reach etcd: {unexplained:?}"
    );
    drop(created);
    drop(mongo);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn mongo_records(mongo: &Mongo) -> anyhow::Result<Vec<mongodb::bson::Document>> {
    use futures::TryStreamExt;
    let client = mongo.client().await;
    let cursor = client
        .database("gdts_ct")
        .collection::<mongodb::bson::Document>("job_logs")
        .find(mongodb::bson::doc! {})
        .await?;
    Ok(cursor.try_collect().await?)
}
