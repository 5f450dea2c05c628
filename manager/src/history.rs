//! The console's time series: round-robin rings in two tiers, as RRDtool and Munin keep them (every sample for
//! a day, then five-minute averages for a month), in memory and in one small file that is rewritten whole every
//! minute and on shutdown, so the graphs survive a restart.
//!
//! Why our own rings instead of an embedded database: the data is a few fixed-size arrays of floats per series,
//! written by one task; a bounded file of them needs no dependency, no compaction and no schema, and its size is
//! known in advance (about 60 KB per series).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// One tier: `len` slots of `step` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    pub step: u64,
    pub len: usize,
}

/// Fine samples for a day at `history_sample` (5 s by default), and five-minute averages for 30 days.
pub fn tiers(sample: Duration) -> [Tier; 2] {
    let step = sample.as_secs().max(1);
    [Tier { step, len: (86_400 / step) as usize }, Tier { step: 300, len: 8_640 }]
}

/// A ring of one tier: slot `t / step % len` holds the value of the step that began at `t` (NaN: no value).
#[derive(Debug, Clone, PartialEq)]
struct Ring {
    /// Start time (unix seconds) of the newest slot written.
    newest: u64,
    values: Vec<f32>,
    /// Coarse tiers average what falls into a slot: the running sum and count of the newest one.
    sum: f64,
    count: u32,
}

impl Ring {
    fn new(len: usize) -> Self {
        Ring { newest: 0, values: vec![f32::NAN; len], sum: 0.0, count: 0 }
    }

    fn put(&mut self, tier: Tier, t: u64, v: f64) {
        let slot_start = t - t % tier.step;
        let len = self.values.len() as u64;
        if slot_start > self.newest {
            // Slots skipped since the newest hold nothing (the manager was down): clear them, at most one lap.
            let gap = ((slot_start - self.newest) / tier.step).min(len);
            for k in 1..=gap {
                let s = self.newest / tier.step + k;
                self.values[(s % len) as usize] = f32::NAN;
            }
            self.newest = slot_start;
            self.sum = 0.0;
            self.count = 0;
        } else if slot_start < self.newest {
            return; // out of order (clock stepped back): dropped
        }
        self.sum += v;
        self.count += 1;
        self.values[((slot_start / tier.step) % len) as usize] = (self.sum / self.count as f64) as f32;
    }

    /// (time, value) of the slots within `span` seconds before the newest, oldest first, skipping empty ones.
    fn points(&self, tier: Tier, span: u64) -> Vec<(u64, f64)> {
        let len = self.values.len() as u64;
        let n = (span / tier.step).min(len);
        let mut out = Vec::new();
        for k in (0..n).rev() {
            let Some(t) = self.newest.checked_sub(k * tier.step) else { continue };
            let v = self.values[((t / tier.step) % len) as usize];
            if !v.is_nan() {
                out.push((t, v as f64));
            }
        }
        out
    }
}

/// Every series of the console, by name (`edge/e1/out_bps`, `pool/edges/players`, `service/VIP:PORT/flows`...).
pub struct History {
    tiers: [Tier; 2],
    series: BTreeMap<String, [Ring; 2]>,
}

const MAGIC: &[u8; 8] = b"smhist01";

impl History {
    pub fn new(sample: Duration) -> Self {
        History { tiers: tiers(sample), series: BTreeMap::new() }
    }

    pub fn record(&mut self, name: &str, t: u64, v: f64) {
        if !v.is_finite() {
            return;
        }
        let tiers = self.tiers;
        let rings =
            self.series.entry(name.to_string()).or_insert_with(|| [Ring::new(tiers[0].len), Ring::new(tiers[1].len)]);
        for (r, tier) in rings.iter_mut().zip(tiers) {
            r.put(tier, t, v);
        }
    }

    /// Points of `name` over the last `span`: the fine tier while it covers the span, else the coarse one.
    pub fn points(&self, name: &str, span: Duration) -> Vec<(u64, f64)> {
        let Some(rings) = self.series.get(name) else { return Vec::new() };
        let span = span.as_secs();
        let fine = self.tiers[0];
        if span <= fine.step * fine.len as u64 {
            rings[0].points(fine, span)
        } else {
            rings[1].points(self.tiers[1], span)
        }
    }

    /// Drops the series `keep` refuses (those of nodes that are gone), so the file stays the size of the cluster.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.series.retain(|name, _| keep(name));
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.series.keys()
    }

    /// Writes every ring to `path` (through a temporary file, so a crash leaves the old file whole).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        w.write_all(MAGIC)?;
        for t in self.tiers {
            w.write_all(&t.step.to_le_bytes())?;
            w.write_all(&(t.len as u64).to_le_bytes())?;
        }
        w.write_all(&(self.series.len() as u64).to_le_bytes())?;
        for (name, rings) in &self.series {
            w.write_all(&(name.len() as u32).to_le_bytes())?;
            w.write_all(name.as_bytes())?;
            for r in rings {
                w.write_all(&r.newest.to_le_bytes())?;
                w.write_all(&r.sum.to_le_bytes())?;
                w.write_all(&r.count.to_le_bytes())?;
                for v in &r.values {
                    w.write_all(&v.to_le_bytes())?;
                }
            }
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// Reads a file [`History::save`] wrote. A file of other tiers (the sample interval changed) starts empty;
    /// a damaged one is an error, so nothing is silently lost.
    pub fn load(path: &Path, sample: Duration) -> std::io::Result<History> {
        let mut h = History::new(sample);
        let mut f = match std::fs::File::open(path) {
            Ok(f) => std::io::BufReader::new(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(h),
            Err(e) => return Err(e),
        };
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {what}", path.display()));
        let mut magic = [0u8; 8];
        f.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(bad("not a history file"));
        }
        let u64s = |f: &mut std::io::BufReader<std::fs::File>| -> std::io::Result<u64> {
            let mut b = [0u8; 8];
            f.read_exact(&mut b)?;
            Ok(u64::from_le_bytes(b))
        };
        let mut stored = [Tier { step: 0, len: 0 }; 2];
        for t in &mut stored {
            t.step = u64s(&mut f)?;
            t.len = u64s(&mut f)? as usize;
        }
        if stored != h.tiers {
            tracing::warn!(path = %path.display(), "history of another sample interval: starting empty");
            return Ok(h);
        }
        let n = u64s(&mut f)?;
        if n > 100_000 {
            return Err(bad("implausible series count"));
        }
        for _ in 0..n {
            let mut b4 = [0u8; 4];
            f.read_exact(&mut b4)?;
            let len = u32::from_le_bytes(b4) as usize;
            if len > 1024 {
                return Err(bad("implausible series name"));
            }
            let mut name = vec![0u8; len];
            f.read_exact(&mut name)?;
            let name = String::from_utf8(name).map_err(|_| bad("series name is not UTF-8"))?;
            let mut rings = [Ring::new(h.tiers[0].len), Ring::new(h.tiers[1].len)];
            for r in &mut rings {
                r.newest = u64s(&mut f)?;
                r.sum = f64::from_bits(u64s(&mut f)?);
                f.read_exact(&mut b4)?;
                r.count = u32::from_le_bytes(b4);
                for v in r.values.iter_mut() {
                    f.read_exact(&mut b4)?;
                    *v = f32::from_le_bytes(b4);
                }
            }
            h.series.insert(name, rings);
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fine_and_coarse_tiers_and_gaps() {
        let mut h = History::new(Duration::from_secs(15));
        let t0 = 1_800_000_100 - 1_800_000_100 % 300;
        for i in 0..40u64 {
            h.record("edge/e1/players", t0 + i * 15, i as f64);
        }
        let p = h.points("edge/e1/players", Duration::from_secs(600));
        assert_eq!(p.len(), 40);
        assert_eq!(p.first(), Some(&(t0, 0.0)));
        assert_eq!(p.last(), Some(&(t0 + 39 * 15, 39.0)));
        // Two days back reads the 5-minute tier: averages of 20 samples each.
        let c = h.points("edge/e1/players", Duration::from_secs(2 * 86_400));
        assert_eq!(c, vec![(t0, 9.5), (t0 + 300, 29.5)]);
        // A gap (the manager was down an hour) leaves no stale values behind.
        h.record("edge/e1/players", t0 + 3600, 7.0);
        let p = h.points("edge/e1/players", Duration::from_secs(3600));
        assert_eq!(p.last(), Some(&(t0 + 3600, 7.0)));
        assert!(p.iter().all(|(t, _)| *t == t0 + 3600 || *t <= t0 + 39 * 15));
        // A day later, slots are reused and old values are gone.
        h.record("edge/e1/players", t0 + 86_400 + 3600, 1.0);
        assert_eq!(h.points("edge/e1/players", Duration::from_secs(86_400)).len(), 1);
        assert!(h.points("nope", Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn survives_a_restart_and_refuses_a_damaged_file() {
        let dir = std::env::temp_dir().join(format!("sm-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.bin");
        let mut h = History::new(Duration::from_secs(15));
        for i in 0..10u64 {
            h.record("pool/edges/out_bps", 1_800_000_000 + i * 15, 1e6 * i as f64);
            h.record("service/10.0.0.100:1935/flows", 1_800_000_000 + i * 15, 5.0);
        }
        h.save(&path).unwrap();
        let back = History::load(&path, Duration::from_secs(15)).unwrap();
        for name in h.names() {
            assert_eq!(back.points(name, Duration::from_secs(86_400)), h.points(name, Duration::from_secs(86_400)));
        }
        assert_eq!(back.names().count(), 2);
        // Another sample interval: empty, not misread.
        assert_eq!(History::load(&path, Duration::from_secs(10)).unwrap().names().count(), 0);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len / 2).unwrap();
        assert!(History::load(&path, Duration::from_secs(15)).is_err(), "a truncated file is an error");
        std::fs::write(&path, b"garbage!").unwrap();
        assert!(History::load(&path, Duration::from_secs(15)).is_err());
        assert_eq!(History::load(&dir.join("none"), Duration::from_secs(15)).unwrap().names().count(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
