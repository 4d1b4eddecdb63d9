//! The link model of one direction, as pure logic over a caller-supplied clock.
//!
//! A packet offered to a [`Direction`] goes through, in order:
//!
//! 1. **loss** — dropped with probability `loss` (Bernoulli, like netem's `loss random`);
//! 2. **a bounded FIFO serialised at the bit-rate** — the link (the shared one, or the
//!    packet's own per-flow link) transmits one packet after another at `rate_bps`; a packet
//!    that would make the bytes waiting in front of it plus itself exceed `queue_bytes` is
//!    tail-dropped;
//! 3. **propagation delay** — it reaches the far side `delay_ns` (± uniform `jitter_ns`)
//!    after its last bit left the serialiser. Unless reordering is allowed, a packet never
//!    overtakes an earlier packet of the same link (jitter is clamped, as on a real path).
//!
//! The queue is "virtual": a link only remembers when its serialiser becomes idle
//! (`free_at`), so the backlog in bytes is `(free_at - now) * rate / 8`. Every accepted
//! packet is put straight into one time-ordered delivery heap with its final delivery time.
//! Nothing here reads a clock or does I/O; time is whatever `now` the caller passes, in
//! nanoseconds, which is how the unit tests drive it with a virtual clock.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;

use rand::Rng;
use serde::Serialize;

/// Nanoseconds in one second.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// How often (in virtual time) idle per-flow links are forgotten.
const GC_INTERVAL_NS: u64 = NS_PER_SEC;

/// The parameters of one direction of the emulated link.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LinkParams {
    /// Bit-rate in bits per second; 0 means unlimited (no serialisation and no queue).
    pub rate_bps: u64,
    /// One-way propagation delay in nanoseconds.
    pub delay_ns: u64,
    /// Half-width of the uniform jitter added to the delay, in nanoseconds.
    pub jitter_ns: u64,
    /// Probability in `[0, 1]` that a packet is dropped before it is queued.
    pub loss: f64,
    /// Capacity of the FIFO in front of the serialiser, in bytes (ignored when unlimited).
    pub queue_bytes: u64,
    /// Let jitter reorder packets (by default a packet never overtakes an earlier one).
    pub allow_reorder: bool,
}

impl LinkParams {
    /// Time in nanoseconds the serialiser needs for `len` bytes (rounded up; 0 if unlimited).
    pub fn tx_time_ns(&self, len: usize) -> u64 {
        if self.rate_bps == 0 {
            return 0;
        }
        let bits = len as u128 * 8 * NS_PER_SEC as u128;
        let ns = bits.div_ceil(self.rate_bps as u128);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// Bytes the serialiser transmits in `ns` nanoseconds (rounded down).
    pub fn bytes_in_ns(&self, ns: u64) -> u64 {
        let bytes = ns as u128 * self.rate_bps as u128 / (8 * NS_PER_SEC as u128);
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }
}

/// What happened to an offered packet (a dropped packet is handed back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<P> {
    /// Accepted; it will be delivered at this time (ns).
    Queued {
        /// Delivery time in nanoseconds on the caller's clock.
        deliver_at: u64,
    },
    /// Dropped by the random loss.
    DroppedLoss(P),
    /// Dropped because the link's queue was full (tail drop).
    DroppedQueue(P),
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DirStats {
    /// Packets read from the ingress TUN.
    pub rx_packets: u64,
    /// Bytes read from the ingress TUN.
    pub rx_bytes: u64,
    /// Packets written to the egress TUN.
    pub relayed_packets: u64,
    /// Bytes written to the egress TUN.
    pub relayed_bytes: u64,
    /// Packets dropped by the random loss.
    pub dropped_loss: u64,
    /// Packets tail-dropped because the queue was full.
    pub dropped_queue: u64,
    /// Packets whose write to the egress TUN failed.
    pub dropped_write: u64,
    /// Packets accepted but not yet delivered.
    pub in_flight_packets: u64,
    /// Largest backlog (bytes waiting in front of an arriving packet) seen on any link.
    pub max_backlog_bytes: u64,
    /// Per-flow links currently remembered (0 in shared mode).
    pub flows_active: u64,
    /// Most per-flow links remembered at once.
    pub flows_peak: u64,
    /// Largest delay between a packet's due time and its actual write, in microseconds.
    pub late_us_max: u64,
    /// Sum of those delays in microseconds (divide by `relayed_packets` for the mean).
    pub late_us_sum: u64,
}

/// State of one serialiser (the shared link or one flow's link).
#[derive(Debug, Clone, Copy, Default)]
struct LinkState {
    /// When the serialiser has sent everything accepted so far.
    free_at: u64,
    /// Latest delivery time handed out on this link (for order preservation).
    last_deliver: u64,
}

impl LinkState {
    /// True when forgetting this link cannot change any future decision.
    fn idle(&self, now: u64) -> bool {
        self.free_at <= now && self.last_deliver <= now
    }
}

/// An accepted packet waiting in the delivery heap.
struct Scheduled<P> {
    at: u64,
    seq: u64,
    pkt: P,
}

impl<P> PartialEq for Scheduled<P> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<P> Eq for Scheduled<P> {}
impl<P> PartialOrd for Scheduled<P> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<P> Ord for Scheduled<P> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// One direction of the emulated link: loss, queue(s), serialiser(s) and delay line.
///
/// `P` is the packet payload (a buffer in the relay, a plain id in tests) and `K` the flow
/// key used to pick a per-flow link.
pub struct Direction<P, K, R> {
    params: LinkParams,
    rng: R,
    shared: LinkState,
    flows: HashMap<K, LinkState>,
    heap: BinaryHeap<Reverse<Scheduled<P>>>,
    seq: u64,
    last_gc: u64,
    stats: DirStats,
}

impl<P, K: Hash + Eq, R: Rng> Direction<P, K, R> {
    /// A direction with these parameters drawing loss and jitter from `rng`.
    pub fn new(params: LinkParams, rng: R) -> Self {
        Self {
            params,
            rng,
            shared: LinkState::default(),
            flows: HashMap::new(),
            heap: BinaryHeap::new(),
            seq: 0,
            last_gc: 0,
            stats: DirStats::default(),
        }
    }

    /// The parameters this direction was built with.
    pub fn params(&self) -> &LinkParams {
        &self.params
    }

    /// Offers a packet of `len` bytes arriving at `now`: `flow` `None` uses the shared
    /// link, `Some(key)` that flow's own link (created on first use).
    pub fn offer(&mut self, now: u64, len: usize, flow: Option<K>, pkt: P) -> Verdict<P> {
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += len as u64;
        if now.saturating_sub(self.last_gc) >= GC_INTERVAL_NS {
            self.gc(now);
        }
        let p = self.params;
        if p.loss > 0.0 && self.rng.gen::<f64>() < p.loss {
            self.stats.dropped_loss += 1;
            return Verdict::DroppedLoss(pkt);
        }
        let link = match flow {
            None => &mut self.shared,
            Some(key) => {
                let n = self.flows.len() as u64;
                let link = self.flows.entry(key).or_default();
                // `n` is the count before a possible insert; a new entry makes it n + 1.
                self.stats.flows_peak = self.stats.flows_peak.max(n + 1);
                link
            }
        };
        let sent = if p.rate_bps == 0 {
            now
        } else {
            let start = link.free_at.max(now);
            let backlog = p.bytes_in_ns(start - now);
            if backlog + len as u64 > p.queue_bytes {
                self.stats.dropped_queue += 1;
                return Verdict::DroppedQueue(pkt);
            }
            self.stats.max_backlog_bytes = self.stats.max_backlog_bytes.max(backlog);
            link.free_at = start + p.tx_time_ns(len);
            link.free_at
        };
        let mut at = sent.saturating_add(p.delay_ns);
        if p.jitter_ns > 0 {
            let j = self.rng.gen_range(0..=2 * p.jitter_ns);
            // at + j - jitter, but never before the packet left the serialiser.
            at = (at + j).saturating_sub(p.jitter_ns).max(sent);
        }
        if !p.allow_reorder {
            at = at.max(link.last_deliver);
        }
        link.last_deliver = link.last_deliver.max(at);
        self.heap.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            pkt,
        }));
        self.seq += 1;
        Verdict::Queued { deliver_at: at }
    }

    /// Time of the earliest pending delivery, if any.
    pub fn next_due(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(s)| s.at)
    }

    /// Removes and returns the earliest packet due at or before `now`, with its due time.
    pub fn pop_due(&mut self, now: u64) -> Option<(u64, P)> {
        match self.heap.peek() {
            Some(Reverse(s)) if s.at <= now => {}
            _ => return None,
        }
        self.heap.pop().map(|Reverse(s)| (s.at, s.pkt))
    }

    /// Records that a popped packet of `len` bytes was written, `late_ns` after its due time.
    pub fn record_relayed(&mut self, len: usize, late_ns: u64) {
        self.stats.relayed_packets += 1;
        self.stats.relayed_bytes += len as u64;
        let late_us = late_ns / 1000;
        self.stats.late_us_max = self.stats.late_us_max.max(late_us);
        self.stats.late_us_sum += late_us;
    }

    /// Records that writing a popped packet failed.
    pub fn record_write_failed(&mut self) {
        self.stats.dropped_write += 1;
    }

    /// Forgets per-flow links that are idle at `now` (their state equals a fresh link's).
    pub fn gc(&mut self, now: u64) {
        self.flows.retain(|_, l| !l.idle(now));
        self.last_gc = now;
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DirStats {
        DirStats {
            in_flight_packets: self.heap.len() as u64,
            flows_active: self.flows.len() as u64,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const MS: u64 = 1_000_000;

    fn params(rate_bps: u64, delay_ms: u64, queue_bytes: u64) -> LinkParams {
        LinkParams {
            rate_bps,
            delay_ns: delay_ms * MS,
            jitter_ns: 0,
            loss: 0.0,
            queue_bytes,
            allow_reorder: false,
        }
    }

    type Dir = Direction<u32, u8, StdRng>;

    fn dir(p: LinkParams) -> Dir {
        Direction::new(p, StdRng::seed_from_u64(42))
    }

    /// One packet arrival: time, length, flow (None = shared), id.
    type Arrival = (u64, usize, Option<u8>, u32);

    /// Drives `d` with a virtual clock: at each arrival first delivers everything due, then
    /// offers the packet; finally drains. Returns (delivery time, id) in delivery order and
    /// the verdicts in arrival order.
    fn simulate(d: &mut Dir, arrivals: &[Arrival]) -> (Vec<(u64, u32)>, Vec<Verdict<u32>>) {
        let mut out = Vec::new();
        let mut verdicts = Vec::new();
        for &(t, len, flow, id) in arrivals {
            while let Some((at, pkt)) = d.pop_due(t) {
                assert!(at <= t, "popped a packet before it was due");
                out.push((at, pkt));
            }
            verdicts.push(d.offer(t, len, flow, id));
        }
        while let Some(at) = d.next_due() {
            let (got, pkt) = d.pop_due(at).unwrap();
            assert_eq!(got, at);
            out.push((at, pkt));
        }
        (out, verdicts)
    }

    #[test]
    fn tx_time_is_exact_at_round_rates() {
        let p = params(1_000_000, 0, 0);
        assert_eq!(p.tx_time_ns(1250), 10 * MS);
        assert_eq!(p.bytes_in_ns(10 * MS), 1250);
        assert_eq!(params(0, 0, 0).tx_time_ns(1500), 0);
        // 1 byte at 3 bit/s is 8/3 s, rounded up to the nanosecond.
        assert_eq!(params(3, 0, 0).tx_time_ns(1), 2_666_666_667);
    }

    #[test]
    fn delay_is_applied_exactly_without_rate() {
        let mut d = dir(params(0, 50, 0));
        assert_eq!(
            d.offer(7 * MS, 100, None, 1),
            Verdict::Queued {
                deliver_at: 57 * MS
            }
        );
        assert_eq!(d.next_due(), Some(57 * MS));
        assert!(
            d.pop_due(57 * MS - 1).is_none(),
            "delivered before the delay"
        );
        assert_eq!(d.pop_due(57 * MS), Some((57 * MS, 1)));
        assert!(d.pop_due(u64::MAX).is_none());
    }

    #[test]
    fn serialisation_then_delay() {
        // 1 Mbit/s: 1250 bytes take 10 ms; then 30 ms of propagation.
        let mut d = dir(params(1_000_000, 30, 1_000_000));
        let arrivals: Vec<Arrival> = (0..5).map(|i| (0, 1250, None, i)).collect();
        let (out, _) = simulate(&mut d, &arrivals);
        let want: Vec<(u64, u32)> = (0..5)
            .map(|i| ((10 * (i as u64 + 1) + 30) * MS, i))
            .collect();
        assert_eq!(out, want);
    }

    #[test]
    fn rate_is_respected_under_overload() {
        // Offer 2 Mbit/s of 1000-byte packets for 2 s to a 1 Mbit/s link with a deep queue.
        let rate = 1_000_000;
        let mut d = dir(params(rate, 0, 10_000_000));
        let arrivals: Vec<Arrival> = (0..500u32)
            .map(|i| (i as u64 * 4 * MS, 1000, None, i))
            .collect();
        let (out, verdicts) = simulate(&mut d, &arrivals);
        assert!(verdicts.iter().all(|v| matches!(v, Verdict::Queued { .. })));
        assert_eq!(out.len(), 500);
        // In every window starting at t=0 the link carried at most rate*T bits.
        for (n, &(at, _)) in out.iter().enumerate() {
            let bits = (n as u64 + 1) * 1000 * 8;
            assert!(bits * NS_PER_SEC <= rate * at, "{bits} bits by {at} ns");
        }
        // Back to back: consecutive deliveries are exactly one packet time apart.
        for w in out.windows(2) {
            assert_eq!(w[1].0 - w[0].0, 8 * MS);
        }
    }

    #[test]
    fn underloaded_link_adds_only_serialisation() {
        let mut d = dir(params(10_000_000, 5, 64_000));
        let arrivals: Vec<Arrival> = (0..100u32)
            .map(|i| (i as u64 * 10 * MS, 1250, None, i))
            .collect();
        let (out, _) = simulate(&mut d, &arrivals);
        for (at, id) in out {
            assert_eq!(at, id as u64 * 10 * MS + MS + 5 * MS);
        }
    }

    #[test]
    fn full_queue_tail_drops() {
        // 1250-byte packets at 1 Mbit/s with room for 5000 bytes: the burst's first four fit
        // (backlog 0, 1250, 2500, 3750), everything after is dropped until the link drains.
        let mut d = dir(params(1_000_000, 0, 5000));
        let mut arrivals: Vec<Arrival> = (0..10).map(|i| (0, 1250, None, i)).collect();
        arrivals.push((10 * MS, 1250, None, 10));
        arrivals.push((10 * MS, 1250, None, 11));
        let (out, verdicts) = simulate(&mut d, &arrivals);
        let dropped: Vec<u32> = verdicts
            .iter()
            .zip(&arrivals)
            .filter(|(v, _)| matches!(v, Verdict::DroppedQueue(_)))
            .map(|(_, a)| a.3)
            .collect();
        assert_eq!(dropped, vec![4, 5, 6, 7, 8, 9, 11]);
        let ids: Vec<u32> = out.iter().map(|o| o.1).collect();
        assert_eq!(ids, vec![0, 1, 2, 3, 10]);
        let s = d.stats();
        assert_eq!((s.rx_packets, s.dropped_queue, s.dropped_loss), (12, 7, 0));
        assert_eq!(s.max_backlog_bytes, 3750);
    }

    #[test]
    fn per_flow_links_are_isolated() {
        // Flow 1 floods a 1 Mbit/s link; flow 2 sends one packet after the flood.
        let flood: Vec<Arrival> = (0..100).map(|i| (0, 1250, Some(1), i)).collect();
        let mut arrivals = flood.clone();
        arrivals.push((MS, 1250, Some(2), 1000));

        let mut per_flow = dir(params(1_000_000, 20, 12_500));
        let (out, verdicts) = simulate(&mut per_flow, &arrivals);
        assert_eq!(
            verdicts.last(),
            Some(&Verdict::Queued {
                deliver_at: 31 * MS
            })
        );
        assert!(out.contains(&(31 * MS, 1000)));
        // Flow 1 got exactly its own queue's worth: 10 packets (12500 bytes) plus none more.
        assert_eq!(out.iter().filter(|o| o.1 < 1000).count(), 10);
        assert_eq!(per_flow.stats().flows_peak, 2);

        // The same traffic on one shared link: flow 2's packet finds the queue full.
        let shared: Vec<Arrival> = arrivals.iter().map(|a| (a.0, a.1, None, a.3)).collect();
        let mut one = dir(params(1_000_000, 20, 12_500));
        let (_, verdicts) = simulate(&mut one, &shared);
        assert_eq!(verdicts.last(), Some(&Verdict::DroppedQueue(1000)));
    }

    #[test]
    fn jitter_never_reorders_by_default() {
        let mut p = params(0, 50, 0);
        p.jitter_ns = 40 * MS;
        let mut d = dir(p);
        let arrivals: Vec<Arrival> = (0..2000u32)
            .map(|i| (i as u64 * MS, 100, None, i))
            .collect();
        let (out, _) = simulate(&mut d, &arrivals);
        let ids: Vec<u32> = out.iter().map(|o| o.1).collect();
        assert_eq!(ids, (0..2000).collect::<Vec<_>>(), "reordered");
        for &(at, id) in &out {
            let sent = id as u64 * MS;
            assert!(at >= sent + 10 * MS, "{id} delivered before delay - jitter");
        }
        // The jitter is really applied: delivery delays are not all equal.
        let distinct: std::collections::HashSet<u64> =
            out.iter().map(|&(at, id)| at - id as u64 * MS).collect();
        assert!(distinct.len() > 100);
    }

    #[test]
    fn jitter_reorders_when_allowed() {
        let mut p = params(0, 50, 0);
        p.jitter_ns = 40 * MS;
        p.allow_reorder = true;
        let mut d = dir(p);
        let arrivals: Vec<Arrival> = (0..2000u32)
            .map(|i| (i as u64 * MS, 100, None, i))
            .collect();
        let (out, _) = simulate(&mut d, &arrivals);
        assert_eq!(out.len(), 2000);
        assert!(out.windows(2).any(|w| w[1].1 < w[0].1), "no reordering");
        for &(at, id) in &out {
            let delay = at - id as u64 * MS;
            assert!(
                (10 * MS..=90 * MS).contains(&delay),
                "delay {delay} out of bounds"
            );
        }
    }

    #[test]
    fn per_flow_order_is_kept_with_jitter() {
        let mut p = params(2_000_000, 10, 1_000_000);
        p.jitter_ns = 8 * MS;
        let mut d = dir(p);
        let arrivals: Vec<Arrival> = (0..3000u32)
            .map(|i| {
                (
                    i as u64 * MS / 2,
                    200 + (i as usize % 7) * 150,
                    Some((i % 5) as u8),
                    i,
                )
            })
            .collect();
        let (out, _) = simulate(&mut d, &arrivals);
        for flow in 0..5u32 {
            let ids: Vec<u32> = out
                .iter()
                .map(|o| o.1)
                .filter(|id| id % 5 == flow)
                .collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "flow {flow} reordered");
        }
    }

    #[test]
    fn loss_rate_matches_probability() {
        let mut p = params(0, 0, 0);
        p.loss = 0.1;
        let mut d = dir(p);
        let arrivals: Vec<Arrival> = (0..20_000u32).map(|i| (i as u64, 100, None, i)).collect();
        let (out, _) = simulate(&mut d, &arrivals);
        let s = d.stats();
        assert_eq!(s.dropped_loss + out.len() as u64, 20_000);
        assert!(
            (1800..=2200).contains(&s.dropped_loss),
            "{} lost",
            s.dropped_loss
        );

        p.loss = 1.0;
        let mut all = dir(p);
        assert_eq!(all.offer(0, 1, None, 5), Verdict::DroppedLoss(5));
        p.loss = 0.0;
        let mut none = dir(p);
        let (out, _) = simulate(&mut none, &arrivals);
        assert_eq!(out.len(), 20_000);
    }

    #[test]
    fn same_seed_same_outcome() {
        let mut p = params(1_000_000, 20, 8000);
        p.loss = 0.2;
        p.jitter_ns = 5 * MS;
        let arrivals: Vec<Arrival> = (0..500u32)
            .map(|i| (i as u64 * 3 * MS, 900, None, i))
            .collect();
        let (a, va) = simulate(&mut dir(p), &arrivals);
        let (b, vb) = simulate(&mut dir(p), &arrivals);
        assert_eq!((a, va), (b, vb));
        let (c, _) = simulate(&mut Direction::new(p, StdRng::seed_from_u64(7)), &arrivals);
        let (a, _) = simulate(&mut dir(p), &arrivals);
        assert_ne!(a, c, "the seed has no effect");
    }

    #[test]
    fn idle_flows_are_forgotten_without_changing_behaviour() {
        let mut d = dir(params(1_000_000, 10, 100_000));
        for f in 0..50u8 {
            d.offer(0, 1250, Some(f), f as u32);
        }
        assert_eq!(d.stats().flows_active, 50);
        while d.pop_due(u64::MAX).is_some() {}
        // Long after everything was delivered, the next offer triggers a collection.
        let v = d.offer(5 * NS_PER_SEC, 1250, Some(3), 99);
        assert_eq!(
            v,
            Verdict::Queued {
                deliver_at: 5 * NS_PER_SEC + 20 * MS
            }
        );
        let s = d.stats();
        assert_eq!((s.flows_active, s.flows_peak), (1, 50));
    }

    #[test]
    fn relayed_and_late_counters() {
        let mut d = dir(params(0, 0, 0));
        d.offer(0, 10, None, 0);
        d.record_relayed(10, 3_000);
        d.record_relayed(20, 1_000);
        d.record_write_failed();
        let s = d.stats();
        assert_eq!(
            (
                s.relayed_packets,
                s.relayed_bytes,
                s.late_us_max,
                s.late_us_sum,
                s.dropped_write
            ),
            (2, 30, 3, 4, 1)
        );
        assert_eq!(s.in_flight_packets, 1);
    }
}
