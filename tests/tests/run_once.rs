//! Three workers, fifty jobs firing every second, twenty-odd seconds: every
//! (job, tick) in the window has exactly one run record.

use gdts_tests::gdts_common::timing::CLAIM_LEASE_TTL;
use gdts_tests::{every_second_scenario, every_second_shell_job, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tick_runs_exactly_once_across_three_workers() -> anyhow::Result<()> {
    let mut c = Cluster::with_workers("run_once", &["w1", "w2", "w3"]).await?;
    let report = every_second_scenario(&mut c, 50, 24, every_second_shell_job).await?;
    report.assert_exactly_once(50 * 18);

    // Claims do not pile up: every one hangs on a lease that is never
    // renewed, so etcd deletes it within CLAIM_LEASE_TTL.
    let mut etcd = c.etcd.client().await;
    let claims = etcd
        .get(
            gdts_tests::gdts_common::keys::Keys::new(&c.prefix).claims_prefix(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await?;
    assert!(claims.kvs().len() >= report.expected);
    assert!(
        claims.kvs().iter().all(|kv| kv.lease() != 0),
        "a claim without a lease"
    );
    let limit = CLAIM_LEASE_TTL.as_secs() as i64;
    let mut leases: Vec<i64> = claims.kvs().iter().map(|kv| kv.lease()).collect();
    leases.sort();
    leases.dedup();
    for lease in leases {
        // -1: it expired since the claims were read (bounded, as wanted).
        let ttl = etcd.lease_time_to_live(lease, None).await?.ttl();
        assert!(
            (ttl > 0 || ttl == -1) && ttl <= limit,
            "claim lease {lease:x} has {ttl} s left"
        );
    }
    Ok(())
}
