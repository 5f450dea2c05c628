//! When a count of the connection table can be reused and who waits for the next one. Walks take up to a second
//! at millions of flows and run on the connection-table worker; `list`, `stats` and scrapes park here until a walk
//! fresh enough for them arrives. A purge makes every earlier count stale (it would show purged flows).

use crate::dataplane::conntable::Census;
use std::time::Instant;

pub struct CensusCache<W> {
    /// The last census, with when it was asked for (its walk started at or after that).
    last: Option<(Instant, Census)>,
    /// When the walk under way was asked for, if one is.
    walking: Option<Instant>,
    /// Requests waiting for a census asked at or after their instant.
    waiting: Vec<(Instant, W)>,
    /// When the last purge was asked for: a census asked before it is not used afterwards.
    purged: Option<Instant>,
}

impl<W> Default for CensusCache<W> {
    fn default() -> Self {
        CensusCache { last: None, walking: None, waiting: Vec::new(), purged: None }
    }
}

impl<W> CensusCache<W> {
    /// A census asked for at or after `need` (and after the last purge), if there is one; otherwise `w` waits.
    pub fn want(&mut self, need: Instant, w: W) -> Result<(W, &Census), ()> {
        let need = self.purged.map_or(need, |p| need.max(p));
        match &self.last {
            Some((at, c)) if *at >= need => Ok((w, c)),
            _ => {
                self.waiting.push((need, w));
                Err(())
            }
        }
    }

    /// True when someone waits and no walk is under way: the caller should start one and call `walking`.
    pub fn needs_walk(&self) -> bool {
        !self.waiting.is_empty() && self.walking.is_none()
    }

    pub fn walking(&mut self, asked: Instant) {
        self.walking = Some(asked);
    }

    /// A purge was asked for at `at`: counts from before it are stale.
    pub fn purging(&mut self, at: Instant) {
        self.last = None;
        self.purged = Some(at);
    }

    /// A purge finished: the flows it removed must not show in a count taken before.
    pub fn purge_done(&mut self) {
        self.last = None;
    }

    /// A walk asked for at `asked` finished. Returns the census to answer with (empty when the walk failed) and the
    /// waiters it serves; later waiters stay for the next walk.
    pub fn walked(&mut self, asked: Instant, census: Option<Census>) -> (Census, Vec<W>) {
        self.walking = None;
        let census = match census {
            Some(c) => {
                if self.purged.is_none_or(|p| asked >= p) {
                    self.last = Some((asked, c.clone()));
                }
                c
            }
            None => Census::default(),
        };
        let (ready, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.waiting).into_iter().partition(|(need, _)| *need <= asked);
        self.waiting = later;
        (census, ready.into_iter().map(|(_, w)| w).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn census(n: u64) -> Census {
        Census { entries: n, ..Census::default() }
    }

    #[test]
    fn a_fresh_census_is_reused_and_an_old_one_is_not() {
        let mut c: CensusCache<&str> = CensusCache::default();
        let t0 = Instant::now();
        assert!(c.want(t0, "list").is_err());
        assert!(c.needs_walk());
        c.walking(t0);
        assert!(!c.needs_walk(), "one walk at a time");
        let (got, ready) = c.walked(t0, Some(census(5)));
        assert_eq!((got.entries, ready), (5, vec!["list"]));
        // A scrape that accepts a census from t0 gets the cached one at once.
        assert_eq!(c.want(t0, "scrape").map(|(w, c)| (w, c.entries)), Ok(("scrape", 5)));
        // `list` always wants a count from after it was asked.
        assert!(c.want(t0 + Duration::from_millis(1), "list2").is_err());
    }

    #[test]
    fn no_count_from_before_a_purge_is_used_after_it() {
        let mut c: CensusCache<&str> = CensusCache::default();
        let t0 = Instant::now();
        c.walking(t0);
        let t1 = t0 + Duration::from_millis(10);
        c.purging(t1);
        // The walk that started before the purge finishes after it: it still answers nobody who came later...
        assert!(c.want(t0, "stats").is_err(), "the count from before the purge is gone");
        let (_, ready) = c.walked(t0, Some(census(9)));
        assert!(ready.is_empty(), "stats needs a census asked after the purge");
        assert!(c.needs_walk());
        // ...and is not cached.
        assert!(c.want(t0, "scrape").is_err());
        let t2 = t1 + Duration::from_millis(1);
        c.walking(t2);
        let (got, ready) = c.walked(t2, Some(census(4)));
        assert_eq!((got.entries, ready.len()), (4, 2));
        c.purge_done();
        assert!(c.want(t2, "again").is_err(), "the purge's end invalidates the count too");
    }

    #[test]
    fn a_failed_walk_answers_with_an_empty_count() {
        let mut c: CensusCache<u8> = CensusCache::default();
        let t0 = Instant::now();
        let _ = c.want(t0, 1);
        c.walking(t0);
        let (got, ready) = c.walked(t0, None);
        assert_eq!((got.entries, ready), (0, vec![1]));
        assert!(c.want(t0, 2).is_err(), "a failed walk is not cached");
    }
}
