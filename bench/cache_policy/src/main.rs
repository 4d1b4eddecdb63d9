//! Replays HLS-like request traces against byte-bounded caches and prints, per trace
//! and cache size, the object and byte hit ratios and the operations per second
//! (lookup, plus an insert on a miss) on one thread and on two sharing the cache.
//!
//! Policies: FileProxy's own LRU (`fileproxy::cache::lru::Lru`, the code the server
//! runs, behind a `Mutex` as in the server), `moka` (sync, W-TinyLFU), `TinyUFO`
//! (Pingora's, TinyLFU admission over S3-FIFO queues), `quick_cache` (CLOCK-Pro-like)
//! and the `lru` crate (a hash-linked list, bounded by bytes here).
//!
//! Traces (seeded, so every run replays the same requests):
//! * `hls`: `--videos` × `--segments` objects of 512–2048 KiB; viewer sessions pick a
//!   video by Zipf(`--zipf`) popularity and walk its segments from the first, leaving
//!   after each with probability `--abandon`; `--concurrent` sessions interleave.
//! * `hls+scan`: the same with a crawler mixed in: one request in five walks every
//!   segment of the least popular videos once (a one-off scan).
//!
//! Sizes are counted in KiB (TinyUFO weighs in `u16`); cache sizes are 1, 5 and 20 %
//! of the trace's working set (the bytes of its distinct objects).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Instant;

use fileproxy::cache::lru::Lru;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// One request: object id and its size in KiB.
#[derive(Clone, Copy)]
struct Req {
    /// video × segments + segment.
    key: u64,
    /// Object size in KiB.
    kib: u32,
}

/// Trace parameters.
struct Shape {
    videos: u64,
    segments: u64,
    zipf: f64,
    abandon: f64,
    concurrent: usize,
    requests: usize,
}

/// A segment's size: 512–2048 KiB, fixed per key.
fn size_of(key: u64) -> u32 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    512 + (h.finish() % 1537) as u32
}

/// The request trace; `scan` mixes in the one-off crawler.
fn trace(shape: &Shape, scan: bool, seed: u64) -> Vec<Req> {
    let mut rng = StdRng::seed_from_u64(seed);
    let zipf = Zipf::new(shape.videos, shape.zipf).expect("zipf");
    let new_session = |rng: &mut StdRng| ((zipf.sample(rng) as u64) - 1, 0u64);
    let mut sessions: Vec<(u64, u64)> = (0..shape.concurrent)
        .map(|_| new_session(&mut rng))
        .collect();
    // The crawler walks the catalogue from the least popular video down, once.
    let mut crawl = (0..shape.videos)
        .rev()
        .flat_map(|v| (0..shape.segments).map(move |s| v * shape.segments + s));
    let mut out = Vec::with_capacity(shape.requests);
    while out.len() < shape.requests {
        if scan && rng.gen_bool(0.2) {
            if let Some(key) = crawl.next() {
                out.push(Req {
                    key,
                    kib: size_of(key),
                });
                continue;
            }
        }
        let i = rng.gen_range(0..sessions.len());
        let (video, seg) = sessions[i];
        let key = video * shape.segments + seg;
        out.push(Req {
            key,
            kib: size_of(key),
        });
        if seg + 1 >= shape.segments || rng.gen_bool(shape.abandon) {
            sessions[i] = new_session(&mut rng);
        } else {
            sessions[i].1 += 1;
        }
    }
    out
}

/// A cache under test: shared by reference between threads.
trait Policy: Sync {
    /// Looks `key` up; `true` on a hit.
    fn get(&self, key: u64) -> bool;
    /// Inserts after a miss.
    fn insert(&self, key: u64, kib: u32);
    /// The moka cache, if this is it.
    fn as_moka(&self) -> Option<&moka::sync::Cache<u64, u32>> {
        None
    }
}

/// Key → (size in KiB, LRU position), as the server's index keeps them.
type Entries = HashMap<u64, (u32, u64)>;

/// FileProxy's LRU as the server uses it: key → (size, position) map plus [`Lru`],
/// under one mutex.
struct FileProxyLru {
    inner: Mutex<(Entries, Lru<u64>)>,
    max: u64,
}

impl Policy for FileProxyLru {
    fn get(&self, key: u64) -> bool {
        let mut g = self.inner.lock().expect("lock");
        let (map, lru) = &mut *g;
        match map.get_mut(&key) {
            Some((_, pos)) => {
                *pos = lru.touch(*pos);
                true
            }
            None => false,
        }
    }

    fn insert(&self, key: u64, kib: u32) {
        let mut g = self.inner.lock().expect("lock");
        let (map, lru) = &mut *g;
        if map.contains_key(&key) {
            return;
        }
        let fits = lru.make_room(u64::from(kib), self.max, |victim| {
            map.remove(&victim).map_or(0, |(n, _)| u64::from(n))
        });
        if fits {
            let pos = lru.push(key);
            map.insert(key, (kib, pos));
        }
    }
}

/// The `lru` crate, bounded by bytes the same way.
struct LruCrate {
    inner: Mutex<(lru::LruCache<u64, u32>, u64)>,
    max: u64,
}

impl Policy for LruCrate {
    fn get(&self, key: u64) -> bool {
        self.inner.lock().expect("lock").0.get(&key).is_some()
    }

    fn insert(&self, key: u64, kib: u32) {
        let mut g = self.inner.lock().expect("lock");
        let (cache, held) = &mut *g;
        if u64::from(kib) > self.max || cache.contains(&key) {
            return;
        }
        while *held + u64::from(kib) > self.max {
            match cache.pop_lru() {
                Some((_, n)) => *held -= u64::from(n),
                None => break,
            }
        }
        cache.put(key, kib);
        *held += u64::from(kib);
    }
}

/// moka's sync cache, weighed in KiB.
struct Moka(moka::sync::Cache<u64, u32>);

impl Policy for Moka {
    fn get(&self, key: u64) -> bool {
        self.0.get(&key).is_some()
    }

    fn insert(&self, key: u64, kib: u32) {
        self.0.insert(key, kib);
    }

    fn as_moka(&self) -> Option<&moka::sync::Cache<u64, u32>> {
        Some(&self.0)
    }
}

/// Pingora's TinyUFO, weighed in KiB.
struct TinyUfo(tinyufo::TinyUfo<u64, u32>);

impl Policy for TinyUfo {
    fn get(&self, key: u64) -> bool {
        self.0.get(&key).is_some()
    }

    fn insert(&self, key: u64, kib: u32) {
        let weight = u16::try_from(kib).unwrap_or(u16::MAX);
        let _evicted = self.0.put(key, kib, weight);
    }
}

/// Weighs quick_cache entries by their size.
#[derive(Clone)]
struct ByKib;

impl quick_cache::Weighter<u64, u32> for ByKib {
    fn weight(&self, _key: &u64, kib: &u32) -> u64 {
        u64::from(*kib)
    }
}

/// quick_cache's sync cache, weighed in KiB.
struct QuickCache(quick_cache::sync::Cache<u64, u32, ByKib>);

impl Policy for QuickCache {
    fn get(&self, key: u64) -> bool {
        self.0.get(&key).is_some()
    }

    fn insert(&self, key: u64, kib: u32) {
        self.0.insert(key, kib);
    }
}

/// The policy names, in report order.
const POLICIES: &[&str] = &[
    "fileproxy-lru",
    "lru-crate",
    "moka",
    "tinyufo",
    "quick_cache",
];

/// A fresh cache of `name` holding `cap` KiB; `avg` is the mean object size.
fn build(name: &str, cap: u64, avg: u64) -> Box<dyn Policy> {
    let items = (cap / avg.max(1)).max(16) as usize;
    match name {
        "fileproxy-lru" => Box::new(FileProxyLru {
            inner: Mutex::new((HashMap::new(), Lru::new())),
            max: cap,
        }),
        "lru-crate" => Box::new(LruCrate {
            inner: Mutex::new((lru::LruCache::unbounded(), 0)),
            max: cap,
        }),
        "moka" => Box::new(Moka(
            moka::sync::Cache::builder()
                .max_capacity(cap)
                .weigher(|_k: &u64, v: &u32| *v)
                .build(),
        )),
        "tinyufo" => Box::new(TinyUfo(tinyufo::TinyUfo::new(cap as usize, items))),
        "quick_cache" => Box::new(QuickCache(quick_cache::sync::Cache::with_weighter(
            items, cap, ByKib,
        ))),
        other => panic!("unknown policy {other}"),
    }
}

/// Hit counts of one replay.
#[derive(Default)]
struct Tally {
    hits: u64,
    hit_kib: u64,
    requests: u64,
    kib: u64,
}

/// Replays `reqs[start..]` stepping by `step` against `cache`.
fn replay(cache: &dyn Policy, reqs: &[Req], start: usize, step: usize) -> Tally {
    let mut t = Tally::default();
    for r in reqs.iter().skip(start).step_by(step) {
        t.requests += 1;
        t.kib += u64::from(r.kib);
        if cache.get(r.key) {
            t.hits += 1;
            t.hit_kib += u64::from(r.kib);
        } else {
            cache.insert(r.key, r.kib);
        }
    }
    t
}

/// `--name value` from the command line, or `default`.
fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The LRU-visible check: a bound of three 1000 KiB objects; `a`, `b`, `c` inserted,
/// `a` used again, `d` inserted. LRU keeps `a`, `c`, `d` and evicts `b`. Returns which
/// of them each policy still holds (looked up in the order d, c, a, b).
fn lru_visible(policy: &str) -> String {
    let cache = build(policy, 3000, 1000);
    for k in [1, 2, 3] {
        if !cache.get(k) {
            cache.insert(k, 1000);
        }
    }
    let _ = cache.get(1);
    cache.insert(4, 1000);
    // moka applies evictions in the background; give it its maintenance turn.
    if let Some(m) = cache.as_moka() {
        m.run_pending_tasks();
    }
    let held: Vec<&str> = [(4, "d"), (3, "c"), (1, "a"), (2, "b")]
        .into_iter()
        .filter(|(k, _)| cache.get(*k))
        .map(|(_, n)| n)
        .collect();
    held.join(" ")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    println!("LRU-visible behaviour (bound: 3 objects; insert a b c, use a, insert d; LRU holds d c a):\n");
    println!("| policy | objects held | LRU-visible |");
    println!("|---|---|---|");
    for policy in POLICIES {
        let held = lru_visible(policy);
        let ok = if held == "d c a" { "yes" } else { "no" };
        println!("| {policy} | {held} | {ok} |");
    }
    println!();
    let shape = Shape {
        videos: arg(&args, "--videos", 2000),
        segments: arg(&args, "--segments", 300),
        zipf: arg(&args, "--zipf", 1.0),
        abandon: arg(&args, "--abandon", 0.03),
        concurrent: arg(&args, "--concurrent", 500),
        requests: arg(&args, "--requests", 2_000_000),
    };
    let only: Option<String> = args
        .iter()
        .position(|a| a == "--policy")
        .and_then(|i| args.get(i + 1).cloned());
    println!(
        "videos {} × segments {}, Zipf s = {}, abandon {} per segment, {} concurrent sessions, {} requests per trace\n",
        shape.videos, shape.segments, shape.zipf, shape.abandon, shape.concurrent, shape.requests
    );
    println!("| trace | cache (% of working set) | policy | object hit % | byte hit % | ops/s 1 thread | ops/s 2 threads |");
    println!("|---|---|---|---|---|---|---|");
    for (name, scan) in [("hls", false), ("hls+scan", true)] {
        let reqs = trace(&shape, scan, 42);
        let mut distinct: HashMap<u64, u32> = HashMap::new();
        for r in &reqs {
            distinct.insert(r.key, r.kib);
        }
        let working: u64 = distinct.values().map(|&k| u64::from(k)).sum();
        let avg = working / distinct.len().max(1) as u64;
        eprintln!(
            "{name}: {} requests, {} distinct objects, working set {:.1} GiB",
            reqs.len(),
            distinct.len(),
            working as f64 / 1024.0 / 1024.0
        );
        for pct in [1u64, 5, 20] {
            let cap = working * pct / 100;
            for policy in POLICIES {
                if only.as_deref().is_some_and(|o| o != *policy) {
                    continue;
                }
                let cache = build(policy, cap, avg);
                let t0 = Instant::now();
                let t = replay(cache.as_ref(), &reqs, 0, 1);
                let one = reqs.len() as f64 / t0.elapsed().as_secs_f64();
                drop(cache);
                let cache = build(policy, cap, avg);
                let t0 = Instant::now();
                std::thread::scope(|s| {
                    let c = cache.as_ref();
                    let a = s.spawn(|| replay(c, &reqs, 0, 2));
                    let b = s.spawn(|| replay(c, &reqs, 1, 2));
                    let _ = (a.join(), b.join());
                });
                let two = reqs.len() as f64 / t0.elapsed().as_secs_f64();
                println!(
                    "| {name} | {pct} % | {policy} | {:.1} | {:.1} | {:.2} M | {:.2} M |",
                    100.0 * t.hits as f64 / t.requests as f64,
                    100.0 * t.hit_kib as f64 / t.kib as f64,
                    one / 1e6,
                    two / 1e6,
                );
            }
        }
    }
}
