//! Who owns a tick: rendezvous (highest-random-weight) hashing of the
//! (job, tick) pair over the ids of the live workers.
//!
//! Every worker computes the same ranking from the same worker set, with no
//! coordination; a worker joining or leaving moves only the ticks it wins or
//! held, and the ticks of one job spread over the whole fleet. The hash is
//! part of the protocol: workers of different versions must agree on it, so
//! it is spelled out here (FNV-1a, then the SplitMix64 finalizer) rather than
//! taken from a library whose output may change.

/// The weight of `worker` for the tick `(job, tick_ms)`. Highest wins.
pub fn weight(worker: &str, job: &str, tick_ms: i64) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    };
    eat(worker.as_bytes());
    // Ids and names never contain 0xff (they are ASCII), so the separator
    // keeps ("ab","c") and ("a","bc") apart.
    eat(&[0xff]);
    eat(job.as_bytes());
    eat(&[0xff]);
    eat(&tick_ms.to_le_bytes());
    splitmix64(h)
}

fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A fingerprint of a fleet as ownership sees it: one entry per worker that
/// takes ticks (its id, and whatever else decides who owns what, such as
/// its labels), in any order. Never 0. Spelled out, as `weight` is: workers
/// of different versions compare these.
pub fn fleet_fingerprint<S: AsRef<str>>(entries: &[S]) -> u64 {
    let mut sorted: Vec<&str> = entries.iter().map(AsRef::as_ref).collect();
    sorted.sort_unstable();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for e in sorted {
        for b in e.as_bytes().iter().chain([0xffu8].iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    splitmix64(h).max(1)
}

/// Orders two workers for a tick: higher weight first, ties by id.
fn beats(a: (u64, &str), b: (u64, &str)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// The workers ranked for the tick, best first: index 0 owns it, 1 and 2
/// are its backups.
pub fn ranking<'a>(workers: &'a [String], job: &str, tick_ms: i64) -> Vec<&'a str> {
    let mut ranked: Vec<(u64, &str)> = workers
        .iter()
        .map(|w| (weight(w, job, tick_ms), w.as_str()))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    ranked.into_iter().map(|(_, w)| w).collect()
}

/// The owner of the tick and `me`'s rank (0 = owner), if `me` is in the set.
/// One pass over the workers, without sorting.
pub fn owner_and_rank<'a>(
    workers: &'a [String],
    me: &str,
    job: &str,
    tick_ms: i64,
) -> Option<(&'a str, Option<usize>)> {
    let mine = workers
        .iter()
        .any(|w| w == me)
        .then(|| (weight(me, job, tick_ms), me));
    let mut best: Option<(u64, &'a str)> = None;
    let mut ahead_of_me = 0;
    for w in workers {
        let candidate = (weight(w, job, tick_ms), w.as_str());
        if best.is_none_or(|b| beats(candidate, b)) {
            best = Some(candidate);
        }
        if let Some(m) = mine {
            if beats(candidate, m) {
                ahead_of_me += 1;
            }
        }
    }
    best.map(|(_, owner)| (owner, mine.map(|_| ahead_of_me)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("worker-{i}")).collect()
    }

    #[test]
    fn the_weight_is_fixed_forever() {
        // Workers of different versions must agree: this value never changes.
        assert_eq!(
            weight("w1", "job", 1_700_000_000_000),
            0xd7a7_e450_e277_190f
        );
    }

    #[test]
    fn owner_and_rank_agree_with_the_full_ranking() {
        let workers = ids(7);
        for tick in 0..200 {
            let ranked = ranking(&workers, "j", tick * 1000);
            for (rank, me) in ranked.iter().enumerate() {
                let (owner, r) = owner_and_rank(&workers, me, "j", tick * 1000).unwrap();
                assert_eq!(owner, ranked[0]);
                assert_eq!(r, Some(rank));
            }
            let (_, r) = owner_and_rank(&workers, "stranger", "j", tick * 1000).unwrap();
            assert_eq!(r, None);
        }
        assert!(owner_and_rank(&[], "w", "j", 0).is_none());
    }

    #[test]
    fn ticks_spread_evenly_and_a_departure_moves_only_its_own() {
        let workers = ids(4);
        let mut count = std::collections::HashMap::new();
        let mut moved = 0;
        let without_last: Vec<String> = workers[..3].to_vec();
        for job in 0..100 {
            for tick in 0..100 {
                let name = format!("job-{job}");
                let owner = ranking(&workers, &name, tick * 1000)[0];
                *count.entry(owner).or_insert(0) += 1;
                let after = ranking(&without_last, &name, tick * 1000)[0];
                if after != owner {
                    assert_eq!(owner, "worker-3", "only the leaver's ticks move");
                    moved += 1;
                }
            }
        }
        for (w, n) in &count {
            assert!((2200..=2800).contains(n), "{w} owns {n} of 10000");
        }
        assert_eq!(moved, count["worker-3"]);
    }
}
