//! Per-uid cap on admitted (network, UA) pairs (SPEC §9, §6): every admission of a
//! uid (`/api/whitelist`, `/api/static-whitelist`) is recorded in
//! `uid_ua_ip_pairs:{uid}` → `[{pair_id: "{network}:{ua_hash}", ip_pattern, ua_hash,
//! created_at, last_updated}]` (TTL reset on each admission). Re-admitting a pair
//! refreshes its `last_updated`; a new pair beyond `max_pairs_per_uid` evicts the
//! least recently admitted pair, whose whitelist entries (`ip_cidr_access` and
//! `static_file_access` of that network and UA hash) are deleted — only those that
//! still belong to this uid (SPEC §10: an entry belongs to its latest admission's uid).

use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::compat;
use super::network::whitelist_key;
use super::static_file::static_key;
use crate::store::{update_json, Store, StoreError};

/// `uid_ua_ip_pairs:{uid}`.
pub fn pairs_key(uid: &str) -> String {
    format!("uid_ua_ip_pairs:{uid}")
}

/// One admitted (network, UA) pair of a uid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairRecord {
    /// `"{network}:{ua_hash}"`.
    #[serde(default, deserialize_with = "compat::string")]
    pub pair_id: String,
    /// The admitted network (`180.98.66.0/24`).
    #[serde(default, deserialize_with = "compat::string")]
    pub ip_pattern: String,
    /// First 8 hex chars of MD5(User-Agent).
    #[serde(default, deserialize_with = "compat::string")]
    pub ua_hash: String,
    /// First admission (Unix seconds).
    #[serde(default, deserialize_with = "compat::int")]
    pub created_at: i64,
    /// Last admission (Unix seconds).
    #[serde(default, deserialize_with = "compat::int")]
    pub last_updated: i64,
    /// Fields we do not know, kept as written.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl PairRecord {
    /// The store keys of the whitelist entries this pair admitted.
    pub fn entry_keys(&self) -> Vec<String> {
        match parse_pattern(&self.ip_pattern) {
            Some(net) => vec![
                whitelist_key(&net, &self.ua_hash),
                static_key(&net, &self.ua_hash),
            ],
            None => Vec::new(),
        }
    }
}

fn parse_pattern(s: &str) -> Option<IpNet> {
    // Written as "a.b.c.0/24"; tolerate the key form "a.b.c.0_24".
    s.trim().replace('_', "/").parse::<IpNet>().ok()
}

/// The pair id `"{network}:{ua_hash}"`.
pub fn pair_id(net: &IpNet, ua_hash: &str) -> String {
    format!("{net}:{ua_hash}")
}

/// Parses a stored pair list leniently (junk items are skipped; not an array → empty).
pub fn parse_pairs(raw: &str) -> Vec<PairRecord> {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Array(items)) => items
            .into_iter()
            .filter_map(|v| serde_json::from_value::<PairRecord>(v).ok())
            .filter(|p| !p.pair_id.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

/// Adds or refreshes the pair (net, ua_hash) and evicts the least recently admitted
/// pairs beyond `max` (`0` = no cap). Returns the new list (least recent first) and the
/// evicted pairs.
pub fn merge_pair(
    mut pairs: Vec<PairRecord>,
    net: &IpNet,
    ua_hash: &str,
    now: i64,
    max: usize,
) -> (Vec<PairRecord>, Vec<PairRecord>) {
    let id = pair_id(net, ua_hash);
    let mut rec = pairs
        .iter()
        .position(|p| p.pair_id == id)
        .map(|i| pairs.remove(i))
        .unwrap_or_else(|| PairRecord {
            pair_id: id,
            ip_pattern: net.to_string(),
            ua_hash: ua_hash.to_string(),
            created_at: now,
            last_updated: now,
            extra: Map::new(),
        });
    rec.last_updated = now;
    // Stable sort: equal timestamps keep their admission order; the new pair is last.
    pairs.sort_by_key(|p| p.last_updated.max(p.created_at));
    pairs.push(rec);
    let mut evicted = Vec::new();
    if max > 0 {
        while pairs.len() > max {
            evicted.push(pairs.remove(0));
        }
    }
    (pairs, evicted)
}

/// What recording a pair did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PairInfo {
    /// Pairs the uid has now.
    pub count: usize,
    /// The cap (`0` = none).
    pub max: usize,
    /// Pair ids evicted by this admission (their entries were deleted).
    pub evicted: Vec<String>,
}

/// The uid an entry (`ip_cidr_access`, `static_file_access`) belongs to: the uid of
/// its latest admission (a JSON string or number, as either version writes it).
fn entry_uid(raw: &str) -> Option<String> {
    match serde_json::from_str::<Value>(raw).ok()?.get("uid")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Removes those of `keys` whose entry still belongs to `uid` (SPEC §10): another uid
/// admitted behind the same NAT and UA since then owns the entry now, and keeps it.
/// Each removal is conditional and atomic — a compare-and-set of the value read to an
/// empty tombstone (no entry parses from it) with a 1 ms TTL — so an admission landing
/// in between is never lost. Returns how many.
async fn remove_owned_entries(
    store: &dyn Store,
    uid: &str,
    keys: &[String],
) -> Result<usize, StoreError> {
    let values = store.get_many(keys).await?;
    let mut removed = 0;
    for (key, value) in keys.iter().zip(values) {
        let Some(raw) = value else { continue };
        if entry_uid(&raw).as_deref() != Some(uid) {
            tracing::debug!(key, "evicted pair's entry belongs to another uid now: kept");
            continue;
        }
        if store
            .compare_and_set(key, Some(&raw), "", EXPIRE_NOW)
            .await?
        {
            removed += 1;
        }
    }
    Ok(removed)
}

/// The TTL of the tombstone that retires an entry (the trait has no conditional
/// delete; both backends drop it 1 ms later, and it reads as no entry until then).
const EXPIRE_NOW: Duration = Duration::from_millis(1);

/// Records an admission of (net, ua_hash) for `uid` (compare-and-set loop, so
/// concurrent admissions all land), then removes the entries of evicted pairs that
/// still belong to `uid`.
pub async fn record_pair(
    store: &dyn Store,
    uid: &str,
    net: &IpNet,
    ua_hash: &str,
    now: i64,
    max: usize,
    ttl: Duration,
) -> Result<PairInfo, StoreError> {
    let mut outcome: Option<(usize, Vec<PairRecord>)> = None;
    update_json(store, &pairs_key(uid), ttl, |cur| {
        let existing = cur.map(parse_pairs).unwrap_or_default();
        let (pairs, evicted) = merge_pair(existing, net, ua_hash, now, max);
        let raw = serde_json::to_string(&pairs).ok()?;
        outcome = Some((pairs.len(), evicted));
        Some(raw)
    })
    .await?;
    let (count, evicted) =
        outcome.ok_or_else(|| StoreError::Malformed("pair list not serialisable".into()))?;
    let keys: Vec<String> = evicted.iter().flat_map(PairRecord::entry_keys).collect();
    if !keys.is_empty() {
        let removed = remove_owned_entries(store, uid, &keys).await?;
        tracing::info!(
            uid,
            evicted = ?evicted.iter().map(|p| p.pair_id.as_str()).collect::<Vec<_>>(),
            removed,
            "per-uid pair cap: evicted the least recently admitted pairs"
        );
    }
    Ok(PairInfo {
        count,
        max,
        evicted: evicted.into_iter().map(|p| p.pair_id).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn refresh_and_evict_least_recent() {
        let mut pairs = Vec::new();
        for (t, n) in [(1, "10.0.1.0/24"), (2, "10.0.2.0/24"), (3, "10.0.3.0/24")] {
            let (p, ev) = merge_pair(pairs, &net(n), "aaaa0000", t, 3);
            assert!(ev.is_empty());
            pairs = p;
        }
        // Re-admitting the first refreshes it; a fourth pair then evicts the second.
        let (p, ev) = merge_pair(pairs, &net("10.0.1.0/24"), "aaaa0000", 4, 3);
        assert!(ev.is_empty());
        assert_eq!(p.last().unwrap().created_at, 1);
        let (p, ev) = merge_pair(p, &net("10.0.4.0/24"), "aaaa0000", 5, 3);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].pair_id, "10.0.2.0/24:aaaa0000");
        assert_eq!(
            ev[0].entry_keys(),
            [
                "ip_cidr_access:10.0.2.0_24:aaaa0000",
                "static_file_access:10.0.2.0_24:aaaa0000"
            ]
        );
        let ids: Vec<&str> = p.iter().map(|x| x.pair_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "10.0.3.0/24:aaaa0000",
                "10.0.1.0/24:aaaa0000",
                "10.0.4.0/24:aaaa0000"
            ]
        );
        // A different UA on the same network is another pair; no cap keeps all.
        let (p, ev) = merge_pair(p, &net("10.0.4.0/24"), "bbbb0000", 6, 0);
        assert!(ev.is_empty());
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn python_lists_are_read() {
        let raw = r#"[{"pair_id": "1.2.3.0/24:abcd0123", "ip_pattern": "1.2.3.0/24", "ua_hash": "abcd0123", "created_at": 1.5, "last_updated": "7", "x": 1}, 3, {"pair_id": ""}]"#;
        let p = parse_pairs(raw);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].created_at, p[0].last_updated), (1, 7));
        assert_eq!(serde_json::to_value(&p[0]).unwrap()["x"], 1);
        assert!(parse_pairs("{}").is_empty());
        assert!(parse_pairs("junk").is_empty());
    }

    #[tokio::test]
    async fn eviction_deletes_entries() {
        let store = MemoryStore::new();
        let ttl = Duration::from_secs(60);
        let old = net("10.0.1.0/24");
        let keys = [
            whitelist_key(&old, "aaaa0000"),
            static_key(&old, "aaaa0000"),
        ];
        for k in &keys {
            store.set(k, r#"{"uid": "u"}"#, ttl).await.unwrap();
        }
        let a = record_pair(&store, "u", &old, "aaaa0000", 1, 2, ttl)
            .await
            .unwrap();
        assert_eq!((a.count, a.max), (1, 2));
        record_pair(&store, "u", &net("10.0.2.0/24"), "aaaa0000", 2, 2, ttl)
            .await
            .unwrap();
        let c = record_pair(&store, "u", &net("10.0.3.0/24"), "aaaa0000", 3, 2, ttl)
            .await
            .unwrap();
        assert_eq!(c.evicted, ["10.0.1.0/24:aaaa0000"]);
        assert_eq!(c.count, 2);
        for k in &keys {
            let v = store.get(k).await.unwrap();
            assert!(v.is_none() || v.as_deref() == Some(""), "{k}: {v:?}");
        }
        let raw = store.get(&pairs_key("u")).await.unwrap().unwrap();
        assert_eq!(parse_pairs(&raw).len(), 2);
        assert!(store.ttl(&pairs_key("u")).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn eviction_keeps_entries_another_uid_owns_now() {
        let store = MemoryStore::new();
        let ttl = Duration::from_secs(60);
        let nat = net("10.0.1.0/24");
        let wl = whitelist_key(&nat, "aaaa0000");
        let st = static_key(&nat, "aaaa0000");
        record_pair(&store, "u", &nat, "aaaa0000", 1, 1, ttl)
            .await
            .unwrap();
        // Behind the same NAT and UA, uid w is admitted later: the entries are w's.
        store
            .set(&wl, r#"{"uid": "w", "paths": []}"#, ttl)
            .await
            .unwrap();
        store.set(&st, r#"{"uid": 7}"#, ttl).await.unwrap();
        let c = record_pair(&store, "u", &net("10.0.2.0/24"), "aaaa0000", 2, 1, ttl)
            .await
            .unwrap();
        assert_eq!(c.evicted, ["10.0.1.0/24:aaaa0000"]);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            store.get(&wl).await.unwrap().is_some(),
            "w's entry was deleted"
        );
        assert!(store.get(&st).await.unwrap().is_some());
        assert_eq!(entry_uid(r#"{"uid": 7}"#).as_deref(), Some("7"));
        assert_eq!(entry_uid("junk"), None);
    }

    proptest! {
        #[test]
        fn cap_holds_and_newest_kept(ops in proptest::collection::vec(0u8..8, 1..40), max in 0usize..5) {
            let mut pairs = Vec::new();
            for (t, o) in ops.iter().enumerate() {
                let n = net(&format!("10.0.{o}.0/24"));
                let (p, ev) = merge_pair(pairs, &n, "aaaa0000", t as i64, max);
                if max > 0 {
                    prop_assert!(p.len() <= max);
                }
                prop_assert_eq!(&p.last().unwrap().pair_id, &pair_id(&n, "aaaa0000"));
                prop_assert!(ev.iter().all(|e| e.pair_id != pair_id(&n, "aaaa0000")));
                let mut ids: Vec<&str> = p.iter().map(|x| x.pair_id.as_str()).collect();
                ids.sort_unstable();
                ids.dedup();
                prop_assert_eq!(ids.len(), p.len());
                pairs = p;
            }
        }
    }
}
