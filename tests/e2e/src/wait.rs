//! Waiting for something that happens in another process: a check run again and again, with a
//! pause between, until it holds or time is up.

use std::time::{Duration, Instant};

use anyhow::Result;

/// Runs `check` every `interval` until it gives a value, and returns it; `Ok(None)` once
/// `timeout` has passed without one. An `Err` from `check` ends the wait with that error.
pub async fn until<T>(
    interval: Duration,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let started = Instant::now();
    loop {
        if let Some(value) = check().await? {
            return Ok(Some(value));
        }
        if started.elapsed() >= timeout {
            return Ok(None);
        }
        tokio::time::sleep(interval).await;
    }
}
