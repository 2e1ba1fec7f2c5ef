//! How many event streams may be open ([`StreamLimits`]), in all and per
//! client; each open stream holds a slot until it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many event streams may be open: in all, and per client (a token, or
/// an address when authentication is off). Each holds an etcd watch.
#[derive(Clone)]
pub struct StreamLimits {
    open: Arc<Mutex<HashMap<String, usize>>>,
    pub max_total: usize,
    pub max_per_client: usize,
    /// How often an open stream checks that its credential still holds
    /// (`GDTS_SSE_RECHECK_SECS`, default 30).
    pub recheck_every: Duration,
}

/// An open stream's place, given back when the stream ends.
pub struct StreamSlot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    client: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("stream count lock");
        if let Some(n) = open.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.client);
            }
        }
    }
}

impl StreamLimits {
    pub fn new(max_total: usize, max_per_client: usize, recheck_every: Duration) -> StreamLimits {
        StreamLimits {
            open: Arc::default(),
            max_total,
            max_per_client,
            recheck_every,
        }
    }

    /// Streams open now, from all clients.
    pub fn open_total(&self) -> usize {
        self.open.lock().expect("stream count lock").values().sum()
    }

    pub fn take(&self, client: &str) -> Result<StreamSlot, String> {
        let mut open = self.open.lock().expect("stream count lock");
        let total: usize = open.values().sum();
        if total >= self.max_total {
            return Err(format!(
                "{total} event streams are open, the most this manager serves \
                 (GDTS_SSE_MAX_STREAMS); try again later"
            ));
        }
        let mine = open.get(client).copied().unwrap_or(0);
        if mine >= self.max_per_client {
            return Err(format!(
                "this client has {mine} event streams open, the most allowed \
                 (GDTS_SSE_MAX_PER_CLIENT); close one first"
            ));
        }
        *open.entry(client.to_string()).or_insert(0) += 1;
        Ok(StreamSlot {
            open: self.open.clone(),
            client: client.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_limited_in_all_and_per_client_until_they_end() {
        let limits = StreamLimits::new(3, 2, Duration::from_secs(30));
        let a1 = limits.take("a").unwrap();
        let _a2 = limits.take("a").unwrap();
        let refused = limits.take("a").err().unwrap();
        assert!(refused.contains("GDTS_SSE_MAX_PER_CLIENT"), "{refused}");
        let _b1 = limits.take("b").unwrap();
        // Three open: nobody gets a fourth, whoever asks.
        let refused = limits.take("c").err().unwrap();
        assert!(refused.contains("GDTS_SSE_MAX_STREAMS"), "{refused}");
        assert_eq!(limits.open_total(), 3);
        // A stream that ends gives its slot back.
        drop(a1);
        assert_eq!(limits.open_total(), 2);
        let _c1 = limits.take("c").unwrap();
        assert!(limits.take("a").is_err());
    }

    #[test]
    fn a_refused_client_leaves_nothing_behind() {
        let limits = StreamLimits::new(10, 0, Duration::from_secs(30));
        for i in 0..100 {
            assert!(limits.take(&format!("client-{i}")).is_err());
        }
        assert!(limits.open.lock().unwrap().is_empty());
    }
}
