//! What the control task writes to and reads from the dataplane's maps, as a trait: the decision code runs
//! against the real [`Dataplane`] in lbd and against an in-memory table in unit tests, which need no root.

use crate::dataplane::{Dataplane, DataplaneError};
use lb_common::{Counters, RealDef, ServiceCfg, VipKey};

pub trait Maps {
    /// Service slots the dataplane was created with.
    fn max_services(&self) -> u32;
    /// Size of the connection table.
    fn conn_table_size(&self) -> u32;
    fn set_service(&mut self, key: VipKey, slot: u32) -> Result<(), DataplaneError>;
    fn del_service(&mut self, key: VipKey, slot: u32) -> Result<(), DataplaneError>;
    /// Writes a service's Maglev table; returns how many slots changed.
    fn write_ring(&mut self, slot: u32, table: &[u32]) -> Result<usize, DataplaneError>;
    fn set_real(&mut self, id: u32, def: RealDef) -> Result<(), DataplaneError>;
    fn set_service_cfg(&mut self, slot: u32, cfg: ServiceCfg) -> Result<(), DataplaneError>;
    /// Gives (service slot, real id) its counters at `dest` (0: none), zeroed.
    fn set_dest(&mut self, slot: u32, id: u32, dest: u32) -> Result<(), DataplaneError>;
    /// Counters are for display: an unreadable one shows as zero rather than failing a whole view.
    fn service_counters(&self, slot: u32) -> Counters;
    fn dest_counters(&self, dest: u32) -> Counters;
    /// GLOBAL_STATS by lb_common::global index.
    fn global_counters(&self) -> Vec<Counters>;
}

impl Maps for Dataplane {
    fn max_services(&self) -> u32 {
        self.limits().max_services
    }
    fn conn_table_size(&self) -> u32 {
        self.limits().conn_table_size
    }
    fn set_service(&mut self, key: VipKey, slot: u32) -> Result<(), DataplaneError> {
        Dataplane::set_service(self, key, slot)
    }
    fn del_service(&mut self, key: VipKey, slot: u32) -> Result<(), DataplaneError> {
        Dataplane::del_service(self, key, slot)
    }
    fn write_ring(&mut self, slot: u32, table: &[u32]) -> Result<usize, DataplaneError> {
        Dataplane::write_ring(self, slot, table)
    }
    fn set_real(&mut self, id: u32, def: RealDef) -> Result<(), DataplaneError> {
        Dataplane::set_real(self, id, def)
    }
    fn set_service_cfg(&mut self, slot: u32, cfg: ServiceCfg) -> Result<(), DataplaneError> {
        Dataplane::set_service_cfg(self, slot, cfg)
    }
    fn set_dest(&mut self, slot: u32, id: u32, dest: u32) -> Result<(), DataplaneError> {
        Dataplane::set_dest(self, slot, id, dest)
    }
    fn service_counters(&self, slot: u32) -> Counters {
        Dataplane::service_counters(self, slot).unwrap_or_default()
    }
    fn dest_counters(&self, dest: u32) -> Counters {
        Dataplane::dest_counters(self, dest).unwrap_or_default()
    }
    fn global_counters(&self) -> Vec<Counters> {
        Dataplane::global_counters(self).unwrap_or_default()
    }
}

/// The maps as plain Rust collections, for unit tests of the decisions.
#[cfg(test)]
#[derive(Default)]
pub struct MemMaps {
    pub max_services: u32,
    pub services: std::collections::HashMap<VipKey, u32>,
    pub rings: std::collections::HashMap<u32, Vec<u32>>,
    pub reals: std::collections::HashMap<u32, RealDef>,
    pub cfg: std::collections::HashMap<u32, ServiceCfg>,
    pub dests: std::collections::HashMap<(u32, u32), u32>,
}

#[cfg(test)]
impl MemMaps {
    pub fn new(max_services: u32) -> Self {
        MemMaps { max_services, ..Default::default() }
    }

    /// Distinct real ids in a slot's ring (0 = no real).
    pub fn ring_ids(&self, slot: u32) -> std::collections::BTreeSet<u32> {
        self.rings.get(&slot).map(|r| r.iter().copied().filter(|id| *id != 0).collect()).unwrap_or_default()
    }
}

#[cfg(test)]
impl Maps for MemMaps {
    fn max_services(&self) -> u32 {
        self.max_services
    }
    fn conn_table_size(&self) -> u32 {
        1000
    }
    fn set_service(&mut self, key: VipKey, slot: u32) -> Result<(), DataplaneError> {
        self.services.insert(key, slot);
        Ok(())
    }
    fn del_service(&mut self, key: VipKey, slot: u32) -> Result<(), DataplaneError> {
        self.services.remove(&key);
        self.rings.remove(&slot);
        Ok(())
    }
    fn write_ring(&mut self, slot: u32, table: &[u32]) -> Result<usize, DataplaneError> {
        let old = self.rings.insert(slot, table.to_vec()).unwrap_or_default();
        Ok(table.iter().enumerate().filter(|(i, v)| old.get(*i) != Some(v)).count())
    }
    fn set_real(&mut self, id: u32, def: RealDef) -> Result<(), DataplaneError> {
        self.reals.insert(id, def);
        Ok(())
    }
    fn set_service_cfg(&mut self, slot: u32, cfg: ServiceCfg) -> Result<(), DataplaneError> {
        self.cfg.insert(slot, cfg);
        Ok(())
    }
    fn set_dest(&mut self, slot: u32, id: u32, dest: u32) -> Result<(), DataplaneError> {
        match dest {
            0 => self.dests.remove(&(slot, id)),
            d => self.dests.insert((slot, id), d),
        };
        Ok(())
    }
    fn service_counters(&self, _slot: u32) -> Counters {
        Counters::default()
    }
    fn dest_counters(&self, _dest: u32) -> Counters {
        Counters::default()
    }
    fn global_counters(&self) -> Vec<Counters> {
        vec![Counters::default(); lb_common::global::COUNT as usize]
    }
}
