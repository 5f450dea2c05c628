//! Waiting on a condition with a deadline: the one polling loop of the labs, the benches and every test crate, so
//! no test sleeps a fixed time and hopes that what it waits for has happened by then.
use anyhow::{bail, Result};
use std::time::{Duration, Instant};

/// The shortest pause between two checks.
const MIN_PAUSE: Duration = Duration::from_millis(25);
/// The longest pause between two checks.
const MAX_PAUSE: Duration = Duration::from_millis(250);

/// The pause after a check that took `took`: as long as the check itself (within bounds), so a check that runs
/// commands in namespaces does not keep a shared core busy, and a cheap one answers within 25 ms.
fn pause(took: Duration) -> Duration {
    took.clamp(MIN_PAUSE, MAX_PAUSE)
}

/// Polls `f` until it returns a value or `limit` passes; the value and how long it took. `f` is called once more
/// after the deadline, so a slow check still gets its last word.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<(T, Duration)> {
    let start = Instant::now();
    loop {
        let t = Instant::now();
        if let Some(v) = f() {
            return Ok((v, start.elapsed()));
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(pause(t.elapsed()));
    }
}

/// Polls `f` until it holds or `limit` passes; how long it took.
pub fn wait_within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Result<Duration> {
    wait_for(limit, what, || f().then_some(())).map(|(_, took)| took)
}

/// A negative check: `f` must hold at every check for the whole of `span` (checked at the start and at the end
/// too); fails at the first check where it does not, saying after how long.
pub fn holds_for(span: Duration, what: &str, mut f: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    loop {
        let t = Instant::now();
        let done = start.elapsed() >= span;
        if !f() {
            bail!("{what} stopped holding after {:?} (it must hold for {span:?})", start.elapsed());
        }
        if done {
            return Ok(());
        }
        std::thread::sleep(pause(t.elapsed()).min(span.saturating_sub(start.elapsed())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_until_the_condition_holds_and_fails_with_what_it_waited_for() {
        let start = Instant::now();
        let took = wait_within(Duration::from_secs(2), "100 ms", || start.elapsed() >= Duration::from_millis(100));
        let took = took.unwrap();
        assert!(took >= Duration::from_millis(100) && took < Duration::from_secs(1), "{took:?}");
        let (v, _) = wait_for(Duration::from_secs(1), "a value", || Some(7)).unwrap();
        assert_eq!(v, 7);
        let err = wait_within(Duration::from_millis(60), "never", || false).unwrap_err().to_string();
        assert_eq!(err, "timed out after 60ms waiting for never");
    }

    #[test]
    fn holds_for_watches_the_whole_span_and_stops_at_the_first_failure() {
        let start = Instant::now();
        let mut checks = 0;
        holds_for(Duration::from_millis(100), "always", || {
            checks += 1;
            true
        })
        .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(100) && checks >= 3, "{checks} checks");
        let start = Instant::now();
        let err = holds_for(Duration::from_secs(5), "the first 50 ms", || start.elapsed() < Duration::from_millis(50));
        assert!(err.unwrap_err().to_string().starts_with("the first 50 ms stopped holding after"));
        assert!(start.elapsed() < Duration::from_secs(1), "a failure ends the watch at once");
    }
}
