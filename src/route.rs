//! Route: which sinks each event goes to, decided once per event between decoding and
//! encoding, so that an event is decoded and encoded once whatever the number of sinks.
//!
//! A sink's route selects containers (namespace, pod and container globs) and streams,
//! which is known when a file is opened: [`Router::for_container`] gives each stream
//! of a container its [`Mask`] of sinks, one bit per sink in configuration order. Per
//! event only `drop_messages` is left to apply ([`Router::route`]), and only for the
//! sinks in the mask that have any. A container no sink selects is not read at all.
//!
//! Events a sink's route leaves out are counted per sink (`filtered`); the counts are
//! kept by the caller per turn ([`Filtered`]) and added to the shared totals after it,
//! so the hot path touches no atomic. The totals ([`RouteCounters`]) outlive a router:
//! SIGHUP swaps in a router with the new routes and the same counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::{RouteConfig, MAX_SINKS};
use crate::event::{KubeMeta, Stream};

/// A set of sinks: bit `i` is the `i`-th configured sink.
pub type Mask = u16;

const _: () = assert!(MAX_SINKS <= Mask::BITS as usize);

/// Events left out per sink, counted by one thread during one turn.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Filtered(pub [u64; MAX_SINKS]);

impl Filtered {
    /// Counts one event for every sink of `all` that is not in `kept`.
    #[inline]
    pub fn count(&mut self, all: Mask, kept: Mask) {
        let mut left_out = all & !kept;
        while left_out != 0 {
            self.0[left_out.trailing_zeros() as usize] += 1;
            left_out &= left_out - 1;
        }
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&n| n == 0)
    }
}

/// Events per sink: left out by its route, and buffered for it.
#[derive(Debug, Default)]
pub struct RouteCounters {
    filtered: [AtomicU64; MAX_SINKS],
    routed: [AtomicU64; MAX_SINKS],
}

impl RouteCounters {
    /// Adds one turn's counts to the totals.
    pub fn add_filtered(&self, counts: &Filtered) {
        for (total, &n) in self.filtered.iter().zip(&counts.0) {
            if n > 0 {
                total.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// `events` were buffered for the sinks of `sinks` (once per batch part).
    pub fn add_routed(&self, sinks: Mask, events: u64) {
        let mut left = sinks;
        while left != 0 {
            self.routed[left.trailing_zeros() as usize].fetch_add(events, Ordering::Relaxed);
            left &= left - 1;
        }
    }

    /// Events left out for sink `i` so far.
    pub fn filtered(&self, i: usize) -> u64 {
        self.filtered[i].load(Ordering::Relaxed)
    }

    /// Events buffered for sink `i` so far.
    pub fn routed(&self, i: usize) -> u64 {
        self.routed[i].load(Ordering::Relaxed)
    }
}

/// The routes of every configured sink, in configuration order.
#[derive(Debug)]
pub struct Router {
    routes: Vec<RouteConfig>,
    all: Mask,
    /// Sinks with `drop_messages`.
    dropping: Mask,
    counters: Arc<RouteCounters>,
}

impl Router {
    pub fn new(routes: Vec<RouteConfig>) -> Self {
        Self::with_counters(routes, Arc::default())
    }

    /// Routes that count into `counters` (a reload keeps the totals going).
    pub fn with_counters(routes: Vec<RouteConfig>, counters: Arc<RouteCounters>) -> Self {
        assert!(!routes.is_empty() && routes.len() <= MAX_SINKS, "1 to {MAX_SINKS} sinks");
        let all = (((1u32 << routes.len()) - 1) & u32::from(Mask::MAX)) as Mask;
        let dropping = routes.iter().enumerate().filter(|(_, r)| r.drops_any()).fold(0, |m, (i, _)| m | (1 << i));
        Self { routes, all, dropping, counters }
    }

    /// The totals this router counts into.
    pub fn counters(&self) -> &Arc<RouteCounters> {
        &self.counters
    }

    /// One sink that takes everything (`replay` without a config, tests).
    pub fn everything() -> Self {
        Self::new(vec![RouteConfig::everything()])
    }

    /// Every sink.
    pub fn all(&self) -> Mask {
        self.all
    }

    /// The sinks that take each stream of a container (`None`: a file outside the pod
    /// layout, which only routes without name filters select), indexed by
    /// [`Stream::index`].
    pub fn for_container(&self, kube: Option<&KubeMeta>) -> [Mask; 2] {
        let (ns, pod, container) = kube.map_or(("", "", ""), |k| (k.namespace.as_str(), k.pod.as_str(), k.container.as_str()));
        let mut masks = [0; 2];
        for (i, route) in self.routes.iter().enumerate() {
            if !route.selects(ns, pod, container) {
                continue;
            }
            for stream in [Stream::Stdout, Stream::Stderr] {
                if route.takes(stream) {
                    masks[stream.index()] |= 1 << i;
                }
            }
        }
        masks
    }

    /// Whether some sink takes something of this container: if not, it is not read.
    pub fn selects(&self, kube: Option<&KubeMeta>) -> bool {
        self.for_container(kube) != [0; 2]
    }

    /// Whether some sink of `mask` drops messages by their content: only then must
    /// [`Self::route`] see the message (unescaped).
    #[inline]
    pub fn inspects(&self, mask: Mask) -> bool {
        mask & self.dropping != 0
    }

    /// The sinks of `mask` that keep `message` after their `drop_messages`.
    #[inline]
    pub fn route(&self, mask: Mask, message: &[u8]) -> Mask {
        let mut check = mask & self.dropping;
        let mut kept = mask;
        while check != 0 {
            let i = check.trailing_zeros() as usize;
            if self.routes[i].drops(message) {
                kept &= !(1 << i);
            }
            check &= check - 1;
        }
        kept
    }

    /// Adds one turn's counts to the totals.
    pub fn add_filtered(&self, counts: &Filtered) {
        self.counters.add_filtered(counts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn routes(toml: &str) -> Router {
        let config = Config::from_toml_str_with_env(toml, &Default::default()).unwrap();
        Router::new(config.sinks.into_iter().map(|s| s.route).collect())
    }

    fn kube(ns: &str, pod: &str, container: &str) -> KubeMeta {
        KubeMeta { namespace: ns.into(), pod: pod.into(), pod_uid: None, container: container.into(), restart_count: None }
    }

    #[test]
    fn containers_and_streams_are_routed_by_their_names() {
        let r = routes(
            r#"[sink]
type = "stdout"
[sink.route]
include_namespaces = ["team-*"]
exclude_pods = ["*-canary-*"]
exclude_containers = ["istio-proxy"]
streams = ["stderr"]"#,
        );
        assert_eq!(r.for_container(Some(&kube("team-a", "api-7f9", "app"))), [0, 1]);
        assert_eq!(r.for_container(Some(&kube("team-a", "api-canary-1", "app"))), [0, 0]);
        assert_eq!(r.for_container(Some(&kube("team-a", "api-7f9", "istio-proxy"))), [0, 0]);
        assert_eq!(r.for_container(Some(&kube("kube-system", "coredns", "coredns"))), [0, 0]);
        assert_eq!(r.for_container(None), [0, 0], "no namespace matches an include list");
        assert!(!r.selects(None));
        assert_eq!(Router::everything().for_container(None), [1, 1]);
    }

    #[test]
    fn drop_messages_drops_only_what_matches() {
        let r = routes(
            r#"[sink]
type = "stdout"
[sink.route]
drop_messages = ['^GET /healthz', 'level=debug\b']"#,
        );
        let mask = r.for_container(Some(&kube("a", "b", "c")))[0];
        assert_eq!(r.route(mask, b"GET /healthz HTTP/1.1 200"), 0);
        assert_eq!(r.route(mask, b"ts=1 level=debug msg=x"), 0);
        assert_eq!(r.route(mask, b"ts=1 level=debugging msg=x"), 1);
        assert_eq!(r.route(mask, b"POST /healthz"), 1);
        // Bytes that are not UTF-8 are matched as bytes, not refused.
        assert_eq!(r.route(mask, b"\xff\xfe level=debug"), 0);
    }

    /// The patterns are compiled in groups; each must still mean what it says alone.
    #[test]
    fn grouped_drop_patterns_keep_their_own_meaning() {
        let r = routes(
            r#"[sink]
type = "stdout"
[sink.route]
drop_messages = ['(?i)^debug:', '^INFO x', 'tail$|^head', 'a\bb|café\b', 'x{3}', '\d{4}-\d\d']"#,
        );
        let drops = |m: &str| r.route(1, m.as_bytes()) == 0;
        assert!(drops("DeBuG: x") && !drops("info x: (?i) must not leak") && drops("INFO x"));
        assert!(drops("the tail") && drops("head first") && !drops("tail first") && !drops("ahead"));
        assert!(drops("un café noir") && !drops("cafés"), "a Unicode word boundary");
        assert!(drops("xxx") && !drops("xx") && drops("on 2026-12") && !drops("on 202-12"));
    }

    #[test]
    fn filtered_events_are_counted_per_sink_left_out() {
        let mut f = Filtered::default();
        f.count(0b101, 0b001);
        f.count(0b101, 0b000);
        f.count(0b101, 0b101);
        assert_eq!(&f.0[..3], &[1, 0, 2]);
        let r = Router::everything();
        r.add_filtered(&f);
        r.add_filtered(&f);
        assert_eq!(r.counters().filtered(0), 2);
        // A router with new routes keeps counting into the same totals.
        let again = Router::with_counters(vec![RouteConfig::everything()], r.counters().clone());
        again.add_filtered(&f);
        assert_eq!(r.counters().filtered(0), 3);
    }
}
