//! The etcd store of an HA deployment: the election key on a lease, the state document and the event history under
//! one key prefix, every write a transaction that lands only while the writer still holds the election key.
//!
//! Keys (PREFIX is `[store] prefix`):
//! - `PREFIX/leader`: the leader's name and API, attached to its lease; its create revision is the leader's term.
//! - `PREFIX/members/NAME`: every running smd, attached to its lease (the console and providers list them).
//! - `PREFIX/state`: [`StateDoc`] (active members, maintenance, registered and started edges, alarms).
//! - `PREFIX/events/SEQ` (20 digits): one event each, the newest `events_kept`.

use std::time::Duration;

use api_types::manager::ManagerMember;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse,
};
use serde::{Deserialize, Serialize};

use crate::cluster::Persisted;
use crate::config::EtcdConfig;
use crate::events::{Event, StoredAlarms};

/// What the leader writes at `PREFIX/state`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateDoc {
    #[serde(default)]
    pub persisted: Persisted,
    #[serde(default)]
    pub alarms: StoredAlarms,
}

/// A campaign's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Campaign {
    /// This smd holds the election key from now on; its term.
    Won(u64),
    /// Another holds it (or none: a race lost to a key that has just gone); the state's revision rides along so a
    /// follower reads the state only when it changed.
    Lost { leader: Option<(ManagerMember, u64)>, state_rev: i64 },
}

/// Why a write did not land.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteError {
    /// The election key is no longer this term's: a newer leader acts, this smd must stop.
    Fenced,
    /// etcd did not answer.
    Store(String),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Fenced => f.write_str("this smd no longer leads (a newer leader holds the election key)"),
            WriteError::Store(e) => write!(f, "etcd: {e}"),
        }
    }
}

/// etcd refuses transactions of more operations than this (`--max-txn-ops`, 128 by default).
const MAX_OPS: usize = 100;

/// A connection to etcd (made on first use, again after a failure) and the deployment's keys.
pub struct Store {
    cfg: EtcdConfig,
    client: tokio::sync::Mutex<Option<Client>>,
    /// The member the client talks to: one at a time, the next after a failure. (A client balanced over every
    /// member keeps sending some requests to a dead one, each lost for a connect timeout: enough to cost a leader
    /// its lease when a member's machine is gone.)
    member: std::sync::atomic::AtomicUsize,
    /// Every request's deadline: a store that does not answer within it is unreachable for this attempt.
    pub timeout: Duration,
}

fn err(e: etcd_client::Error) -> String {
    e.to_string()
}

impl Store {
    pub fn new(cfg: EtcdConfig) -> Self {
        // A request must fail well inside the lease, so a leader notices in time that it cannot renew.
        let timeout = (cfg.lease_ttl / 4).clamp(Duration::from_millis(500), Duration::from_secs(2));
        Self { cfg, client: tokio::sync::Mutex::new(None), member: Default::default(), timeout }
    }

    pub fn lease_ttl(&self) -> Duration {
        self.cfg.lease_ttl
    }

    fn key(&self, k: &str) -> String {
        format!("{}/{k}", self.cfg.prefix)
    }

    fn event_key(&self, seq: u64) -> String {
        self.key(&format!("events/{seq:020}"))
    }

    /// The client, connected if need be.
    pub async fn client(&self) -> Result<Client, String> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let mut opts = ConnectOptions::new()
            .with_timeout(self.timeout)
            .with_connect_timeout(self.timeout)
            .with_keep_alive(Duration::from_secs(1), self.timeout);
        if let Some((u, p)) = &self.cfg.user {
            opts = opts.with_user(u.clone(), p.clone());
        }
        if let Some(tls) = &self.cfg.tls {
            let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca));
            if let Some((cert, key)) = &tls.identity {
                t = t.identity(Identity::from_pem(cert, key));
            }
            opts = opts.with_tls(t);
        }
        let n = self.member.load(std::sync::atomic::Ordering::Relaxed) % self.cfg.endpoints.len();
        let member = &self.cfg.endpoints[n];
        let c = tokio::time::timeout(self.timeout * 2, Client::connect([member], Some(opts)))
            .await
            .map_err(|_| format!("etcd member {member} did not answer within {:?}", self.timeout * 2))?
            .map_err(|e| format!("etcd member {member}: {}", err(e)))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Forgets the connection after a failure: the next call connects to the next member.
    pub async fn reset(&self) {
        *self.client.lock().await = None;
        self.member.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn endpoints(&self) -> String {
        self.cfg.endpoints.join(", ")
    }

    async fn timed<T>(&self, f: impl std::future::Future<Output = Result<T, etcd_client::Error>>) -> Result<T, String> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r.map_err(err),
            Err(_) => Err(format!("etcd did not answer within {:?} ({})", self.timeout, self.endpoints())),
        }
    }

    /// A new lease of `lease_ttl`: (its id, the TTL etcd granted, which may be longer than asked).
    pub async fn grant(&self) -> Result<(i64, Duration), String> {
        let mut c = self.client().await?;
        let r = self.timed(c.lease_grant(self.cfg.lease_ttl.as_secs() as i64, None)).await?;
        Ok((r.id(), Duration::from_secs(r.ttl().max(0) as u64)))
    }

    /// Renews the lease once (opening the keep-alive stream renews it and reads the answer): Ok(false) when the
    /// lease is gone (expired or revoked).
    pub async fn renew(&self, lease: i64) -> Result<bool, String> {
        let mut c = self.client().await?;
        match tokio::time::timeout(self.timeout, c.lease_keep_alive(lease)).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(e))) if e.contains("not found") => Ok(false),
            Ok(Err(e)) => Err(err(e)),
            Err(_) => Err(format!("etcd did not renew the lease within {:?} ({})", self.timeout, self.endpoints())),
        }
    }

    /// Says this smd runs (its member key on its lease).
    pub async fn announce(&self, lease: i64, me: &ManagerMember) -> Result<(), String> {
        let mut c = self.client().await?;
        let v = serde_json::to_vec(me).map_err(|e| e.to_string())?;
        self.timed(c.put(self.key(&format!("members/{}", me.name)), v, Some(PutOptions::new().with_lease(lease))))
            .await?;
        Ok(())
    }

    /// Tries to take the election key on `lease`; if another holds it, says who (and the state's revision).
    pub async fn campaign(&self, lease: i64, me: &ManagerMember) -> Result<Campaign, String> {
        let mut c = self.client().await?;
        let key = self.key("leader");
        let v = serde_json::to_vec(me).map_err(|e| e.to_string())?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), v, Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(key, None), TxnOp::get(self.key("state"), None)]);
        let r = self.timed(c.txn(txn)).await?;
        if r.succeeded() {
            let rev = r.header().map_or(0, |h| h.revision());
            return Ok(Campaign::Won(rev as u64));
        }
        let mut leader = None;
        let mut state_rev = 0;
        for (i, op) in r.op_responses().into_iter().enumerate() {
            if let TxnOpResponse::Get(g) = op {
                if let Some(kv) = g.kvs().first() {
                    if i == 0 {
                        if let Ok(m) = serde_json::from_slice::<ManagerMember>(kv.value()) {
                            leader = Some((m, kv.create_revision() as u64));
                        }
                    } else {
                        state_rev = kv.mod_revision();
                    }
                }
            }
        }
        Ok(Campaign::Lost { leader, state_rev })
    }

    /// Whether the election key is still this term's.
    pub async fn holds(&self, term: u64) -> Result<bool, String> {
        let mut c = self.client().await?;
        let r = self.timed(c.get(self.key("leader"), None)).await?;
        Ok(r.kvs().first().is_some_and(|kv| kv.create_revision() as u64 == term))
    }

    /// The smd that run now.
    pub async fn members(&self) -> Result<Vec<ManagerMember>, String> {
        let mut c = self.client().await?;
        let r = self.timed(c.get(self.key("members/"), Some(GetOptions::new().with_prefix()))).await?;
        Ok(r.kvs().iter().filter_map(|kv| serde_json::from_slice(kv.value()).ok()).collect())
    }

    /// The state document (default when none was written yet) with its revision.
    pub async fn state(&self) -> Result<(StateDoc, i64), String> {
        let mut c = self.client().await?;
        let r = self.timed(c.get(self.key("state"), None)).await?;
        match r.kvs().first() {
            None => Ok((StateDoc::default(), 0)),
            Some(kv) => {
                let doc = serde_json::from_slice(kv.value())
                    .map_err(|e| format!("{} holds no state document smd can read: {e}", self.key("state")))?;
                Ok((doc, kv.mod_revision()))
            }
        }
    }

    /// Events numbered above `seq`, oldest first.
    pub async fn events_after(&self, seq: u64) -> Result<Vec<Event>, String> {
        let mut c = self.client().await?;
        let end = self.key("events0"); // '0' follows '/': the end of the events/ range
        let opts = GetOptions::new().with_range(end);
        let r = self.timed(c.get(self.event_key(seq + 1), Some(opts))).await?;
        Ok(r.kvs().iter().filter_map(|kv| serde_json::from_slice(kv.value()).ok()).collect())
    }

    /// Writes the state document and new events (oldest first), dropping events beyond the newest `kept`, in
    /// transactions that land only while `term` still holds the election key.
    pub async fn write(&self, term: u64, doc: &StateDoc, events: &[Event], kept: usize) -> Result<(), WriteError> {
        let mut c = self.client().await.map_err(WriteError::Store)?;
        let doc = serde_json::to_vec(doc).map_err(|e| WriteError::Store(e.to_string()))?;
        let fence = || Compare::create_revision(self.key("leader"), CompareOp::Equal, term as i64);
        let mut chunks: Vec<&[Event]> = events.chunks(MAX_OPS - 2).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut ops: Vec<TxnOp> = Vec::with_capacity(chunk.len() + 2);
            for e in chunk {
                let v = serde_json::to_vec(e).map_err(|x| WriteError::Store(x.to_string()))?;
                ops.push(TxnOp::put(self.event_key(e.seq), v, None));
            }
            if i == last {
                ops.push(TxnOp::put(self.key("state"), doc.clone(), None));
                if let Some(newest) = events.last() {
                    if newest.seq > kept as u64 {
                        let below = newest.seq - kept as u64 + 1;
                        let opts = DeleteOptions::new().with_range(self.event_key(below));
                        ops.push(TxnOp::delete(self.event_key(0), Some(opts)));
                    }
                }
            }
            let txn = Txn::new().when([fence()]).and_then(ops);
            let r = self.timed(c.txn(txn)).await.map_err(WriteError::Store)?;
            if !r.succeeded() {
                return Err(WriteError::Fenced);
            }
        }
        Ok(())
    }

    /// Gives the election key up (a stopping leader), so another takes over at once instead of after the lease.
    pub async fn resign(&self, term: u64, lease: i64) {
        let Ok(mut c) = self.client().await else { return };
        let key = self.key("leader");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, term as i64)])
            .and_then([TxnOp::delete(key, None)]);
        let _ = self.timed(c.txn(txn)).await;
        let _ = self.timed(c.lease_revoke(lease)).await;
    }

    /// Ends this smd's session (its member key goes with the lease).
    pub async fn revoke(&self, lease: i64) {
        if let Ok(mut c) = self.client().await {
            let _ = self.timed(c.lease_revoke(lease)).await;
        }
    }
}
