//! A 5 MiB output lands whole in the (emulated) bucket and comes back
//! byte-identical through the manager; small outputs stay inline.

use std::time::Duration;

use gdts_tests::{
    int_field, once_soon, records_of, save_job_json, wait_until, Cluster, FakeGcs, WorkerOptions,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_outputs_go_to_the_bucket_and_come_back_whole() -> anyhow::Result<()> {
    let mut c = Cluster::start("outputs_gcs").await?;
    let gcs = FakeGcs::start(c.dir.path(), "gdts-test-outputs").await?;
    let bucket_env = [
        ("GDTS_GCS_BUCKET", "gdts-test-outputs"),
        ("GDTS_GCS_ENDPOINT", gcs.endpoint.as_str()),
    ];
    let mut manager_env = bucket_env.to_vec();
    manager_env.push(("GDTS_LOG_RETENTION_DAYS", "7"));
    c.restart_manager_with(&manager_env).await?;
    // Retention: a TTL index on the records' end date (made in the
    // background as the manager starts).
    let runs = c.runs::<mongodb::bson::Document>().await;
    wait_until(
        "the retention TTL index",
        Duration::from_secs(20),
        || async {
            runs.list_index_names()
                .await
                .is_ok_and(|i| i.iter().any(|i| i == "endDate_ttl"))
        },
    )
    .await?;
    c.start_worker(
        "w1",
        WorkerOptions {
            env: bucket_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        },
    )?;
    c.wait_for_workers(&["w1"], Duration::from_secs(20)).await?;

    // 5 MiB of varied bytes: a counter per line, so any reordering or loss shows.
    let file = c.dir.path().join("expected.txt");
    let generate = format!(
        "awk 'BEGIN {{ for (i = 0; i < 80000; i++) printf \"line %07d %s\\n\", i, \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTU\" }}' | head -c 5242880 | tee {}",
        file.display()
    );
    let cron = once_soon(3);
    save_job_json(
        &c,
        &json!({"name": "big", "command": generate, "cronExpr": cron}),
    )
    .await?;
    save_job_json(
        &c,
        &json!({"name": "small", "command": "echo small", "cronExpr": cron}),
    )
    .await?;
    wait_until("both runs logged", Duration::from_secs(30), || async {
        c.run_records()
            .await
            .map(|r| !records_of(&r, "big").is_empty() && !records_of(&r, "small").is_empty())
            .unwrap_or(false)
    })
    .await?;
    let records = c.run_records().await?;
    let big = records_of(&records, "big")[0];
    assert_eq!(
        big.get_str("status")?,
        "succeeded",
        "{}",
        big.get_str("err")?
    );
    assert_eq!(int_field(big, "outputBytes"), 5 * 1024 * 1024);
    assert!(big.get_bool("truncated")?);
    let uri = big.get_str("outputUri")?;
    assert!(
        uri.starts_with("gs://gdts-test-outputs/outputs/big/"),
        "{uri}"
    );
    let inline = big.get_str("output")?;
    assert!(
        inline.len() < 70 * 1024,
        "inline output is {} bytes",
        inline.len()
    );
    assert!(inline.starts_with("line 0000000 ") && inline.contains("bytes omitted"));

    let expected = std::fs::read(&file)?;
    assert_eq!(expected.len(), 5 * 1024 * 1024);
    let run_id = big.get_str("runId")?;
    let resp = reqwest::Client::new()
        .get(format!("{}/job/output", c.manager_url))
        .query(&[("name", "big"), ("runId", run_id)])
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let served = resp.bytes().await?;
    assert!(
        served.as_ref() == expected.as_slice(),
        "served {} bytes, not the same as written",
        served.len()
    );

    let small = records_of(&records, "small")[0];
    assert_eq!(small.get_str("output")?, "small\n");
    assert!(small.get("outputUri").is_none());
    let resp = reqwest::Client::new()
        .get(format!("{}/job/output", c.manager_url))
        .query(&[("name", "small"), ("runId", small.get_str("runId")?)])
        .send()
        .await?;
    assert_eq!(resp.text().await?, "small\n");

    // Unknown runs and bad input are client errors with a message.
    for (query, status) in [
        (vec![("name", "big"), ("runId", "nope")], 404),
        (vec![("name", "big")], 400),
        (vec![("name", "a/b"), ("runId", "x")], 400),
    ] {
        let resp = reqwest::Client::new()
            .get(format!("{}/job/output", c.manager_url))
            .query(&query)
            .send()
            .await?;
        assert_eq!(resp.status(), status, "{query:?}");
        let body: serde_json::Value = resp.json().await?;
        assert_eq!(body["errno"], -1);
    }
    Ok(())
}
