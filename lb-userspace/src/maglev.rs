//! Weighted Maglev lookup tables, computed in userspace and written flat into the dataplane's CH_RINGS map.
//!
//! Each real's permutation of the table depends only on its address, so every LB node with the same real set builds
//! the same table (flows keep their real across ECMP nodes), and adding or removing one real of N moves about 1/N of
//! the slots. Weights shape how many slots a real claims: per round a real earns credit equal to its weight and claims
//! one slot per `max_weight` of credit, so shares are proportional to weights.

use std::net::IpAddr;

/// One real as Maglev sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Dataplane id written into the table's slots.
    pub id: u32,
    /// Address: the seed of this real's permutation.
    pub addr: IpAddr,
    /// Relative weight; 0 keeps the real out of the table (drain).
    pub weight: u32,
}

/// Builds a table of `size` slots (size must be prime). Slots are 0 when no entry has a weight.
pub fn build(entries: &[Entry], size: u32) -> Vec<u32> {
    let m = size as u64;
    let mut table = vec![0u32; size as usize];
    // Sorting by address makes the table independent of the order the caller holds reals in.
    let mut live: Vec<&Entry> = entries.iter().filter(|e| e.weight > 0).collect();
    if live.is_empty() || size < 2 {
        return table;
    }
    live.sort_by_key(|e| e.addr);
    let max_weight = live.iter().map(|e| e.weight as u64).max().unwrap_or(1);
    let perms: Vec<(u64, u64)> = live
        .iter()
        .map(|e| {
            let bytes = addr_bytes(e.addr);
            let offset = hash64(&bytes, 0x6d61_676c_6576_3031) % m;
            let skip = hash64(&bytes, 0x736b_6970_5f73_6565) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; live.len()];
    let mut credit = vec![0u64; live.len()];
    let mut filled = vec![false; size as usize];
    let mut count = 0u64;
    'rounds: loop {
        for (i, e) in live.iter().enumerate() {
            credit[i] += e.weight as u64;
            while credit[i] >= max_weight {
                credit[i] -= max_weight;
                let (offset, skip) = perms[i];
                let mut slot = ((offset + next[i] * skip) % m) as usize;
                while filled[slot] {
                    next[i] += 1;
                    slot = ((offset + next[i] * skip) % m) as usize;
                }
                filled[slot] = true;
                table[slot] = e.id;
                next[i] += 1;
                count += 1;
                if count == m {
                    break 'rounds;
                }
            }
        }
    }
    table
}

/// Slots that differ between two tables of the same size: what must be written to the map.
pub fn diff<'a>(old: &'a [u32], new: &'a [u32]) -> impl Iterator<Item = (u32, u32)> + 'a {
    old.iter().zip(new.iter()).enumerate().filter(|(_, (a, b))| a != b).map(|(i, (_, b))| (i as u32, *b))
}

fn addr_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// FNV-1a over the bytes from a seed, then a splitmix64 finalizer so nearby addresses spread apart.
fn hash64(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::RING_SIZE;
    use std::net::Ipv4Addr;

    fn reals(n: u32, weight: u32) -> Vec<Entry> {
        (1..=n)
            .map(|i| Entry { id: i, addr: IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8)), weight })
            .collect()
    }

    fn counts(table: &[u32], max_id: u32) -> Vec<u64> {
        let mut c = vec![0u64; max_id as usize + 1];
        for id in table {
            c[*id as usize] += 1;
        }
        c
    }

    #[test]
    fn equal_weights_spread_within_one_percent_of_fair() {
        for n in [2u32, 3, 5, 10, 50, 100] {
            let t = build(&reals(n, 1), RING_SIZE);
            let c = counts(&t, n);
            assert_eq!(c[0], 0, "every slot is filled");
            let fair = RING_SIZE as f64 / n as f64;
            for id in 1..=n {
                let dev = (c[id as usize] as f64 - fair).abs() / fair;
                assert!(
                    dev <= 0.01,
                    "n={n} real {id}: {} slots vs fair {fair:.1} ({:.3}%)",
                    c[id as usize],
                    dev * 100.0
                );
            }
        }
    }

    #[test]
    fn removing_one_of_n_moves_at_most_one_nth_plus_one_percent() {
        for n in [3u32, 5, 10, 20] {
            let all = reals(n, 1);
            let before = build(&all, RING_SIZE);
            for removed in [1u32, n / 2 + 1, n] {
                let rest: Vec<Entry> = all.iter().copied().filter(|e| e.id != removed).collect();
                let after = build(&rest, RING_SIZE);
                let moved = diff(&before, &after).count() as f64 / RING_SIZE as f64;
                let bound = 1.0 / n as f64 + 0.01;
                assert!(moved <= bound, "n={n} removing {removed}: moved {moved:.4} > {bound:.4}");
                assert!(after.iter().all(|id| *id != removed && *id != 0));
            }
        }
    }

    #[test]
    fn adding_one_moves_about_its_share() {
        let all = reals(6, 1);
        let before = build(&all[..5], RING_SIZE);
        let after = build(&all, RING_SIZE);
        let moved = diff(&before, &after).count() as f64 / RING_SIZE as f64;
        assert!(moved <= 1.0 / 6.0 + 0.01, "moved {moved}");
    }

    #[test]
    fn weights_shape_shares() {
        let mut r = reals(2, 1);
        r[0].weight = 3;
        let c = counts(&build(&r, RING_SIZE), 2);
        let share = c[1] as f64 / RING_SIZE as f64;
        assert!((share - 0.75).abs() < 0.01, "3:1 gives {share}");
    }

    #[test]
    fn zero_weight_is_out_and_empty_set_gives_empty_table() {
        let mut r = reals(3, 1);
        r[1].weight = 0;
        let t = build(&r, RING_SIZE);
        assert!(t.iter().all(|id| *id == 1 || *id == 3));
        assert!(build(&[], RING_SIZE).iter().all(|id| *id == 0));
        r.iter_mut().for_each(|e| e.weight = 0);
        assert!(build(&r, RING_SIZE).iter().all(|id| *id == 0));
    }

    #[test]
    fn table_depends_on_addresses_not_order_or_ids_order() {
        let r = reals(5, 1);
        let mut rev = r.clone();
        rev.reverse();
        assert_eq!(build(&r, RING_SIZE), build(&rev, RING_SIZE));
    }

    #[test]
    fn diff_lists_only_changed_slots() {
        let old = vec![1, 2, 3, 4];
        let new = vec![1, 5, 3, 6];
        assert_eq!(diff(&old, &new).collect::<Vec<_>>(), vec![(1, 5), (3, 6)]);
        assert_eq!(diff(&old, &old).count(), 0);
    }
}
