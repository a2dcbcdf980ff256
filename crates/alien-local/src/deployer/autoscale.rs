//! Autoscaling on the local platform: how many replicas a container with `autoscaling` should
//! run, from what was measured (requests in flight at its front, CPU and memory from the
//! engine's stats), as a cloud's autoscaler decides it:
//!
//! - each metric with a target recommends `ceil(current * value / target)` replicas (for
//!   requests in flight: `ceil(in flight / target per replica)`; a p95 latency above
//!   `maxHttpP95LatencyMs`: one more), the highest one wins, within `min..=max`;
//! - a higher recommendation is followed at once; a lower one only once it has been the highest
//!   of the whole cool-down window (no flapping while load comes and goes).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use alien_core::stack::Autoscaling;

/// A scaling step, for the deployment's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalingEvent {
    /// The deployment.
    pub deployment: String,
    /// The container resource.
    pub container: String,
    /// Replicas before.
    pub from: u32,
    /// Replicas after.
    pub to: u32,
    /// What was measured, in words.
    pub reason: String,
}

impl ScalingEvent {
    /// The reason scaling steps are recorded under in the deployment's events.
    pub const REASON: &'static str = "autoscale";

    /// The event's detail in the deployment's events: `{container, from, to, reason}`.
    pub fn detail(&self) -> serde_json::Value {
        serde_json::json!({
            "container": self.container, "from": self.from, "to": self.to, "reason": self.reason,
        })
    }
}

/// Where the deployer reports its scaling steps (the manager records them in the deployment's
/// events; an agent passes them on with its next sync).
pub type ScalingSink = std::sync::Arc<dyn Fn(ScalingEvent) + Send + Sync>;

/// What one look at a container measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Requests in flight at its front (an exposed `http` port), when it has one.
    pub in_flight: Option<usize>,
    /// Mean CPU use of its replicas, in percent of the CPU each requested.
    pub cpu_percent: Option<f64>,
    /// Mean memory use of its replicas, in percent of their limit.
    pub memory_percent: Option<f64>,
    /// The 95th percentile of the latency of the requests its front answered lately, in ms.
    pub p95_ms: Option<f64>,
}

/// The replicas `policy` asks for with `current` replicas serving and `sample` measured, and
/// why (`None` without any metric to go by: keep `current`).
pub fn recommend(policy: &Autoscaling, current: u32, sample: &Sample) -> (u32, Option<String>) {
    let current_f = f64::from(current.max(1));
    let mut best: Option<(u32, String)> = None;
    let mut consider = |wanted: f64, why: String| {
        let wanted = if wanted.is_finite() { wanted.ceil().max(0.0) as u32 } else { u32::MAX };
        if best.as_ref().is_none_or(|(n, _)| wanted > *n) {
            best = Some((wanted, why));
        }
    };
    if let (Some(target), Some(in_flight)) =
        (policy.target_http_in_flight_per_replica, sample.in_flight)
        && target > 0
    {
        consider(
            in_flight as f64 / f64::from(target),
            format!("{in_flight} requests in flight, target {target} per replica"),
        );
    }
    if let (Some(target), Some(cpu)) = (
        policy.target_cpu_percent.as_ref().and_then(serde_json::Number::as_f64),
        sample.cpu_percent,
    ) && target > 0.0
    {
        consider(current_f * cpu / target, format!("CPU at {cpu:.0} %, target {target} %"));
    }
    if let (Some(target), Some(memory)) = (
        policy.target_memory_percent.as_ref().and_then(serde_json::Number::as_f64),
        sample.memory_percent,
    ) && target > 0.0
    {
        consider(
            current_f * memory / target,
            format!("memory at {memory:.0} %, target {target} %"),
        );
    }
    if let (Some(limit), Some(p95)) = (
        policy.max_http_p95_latency_ms.as_ref().and_then(serde_json::Number::as_f64),
        sample.p95_ms,
    ) && p95 > limit
    {
        consider(current_f + 1.0, format!("p95 latency {p95:.0} ms above {limit} ms"));
    }
    match best {
        Some((wanted, why)) => (wanted.clamp(policy.min.max(1), policy.max.max(1)), Some(why)),
        None => (current.clamp(policy.min.max(1), policy.max.max(1)), None),
    }
}

/// Scale-down stabilization: the recommendations of the last `window`.
#[derive(Debug)]
pub struct Stabilizer {
    window: Duration,
    history: VecDeque<(Instant, u32)>,
}

impl Stabilizer {
    /// A stabilizer over `window`.
    pub fn new(window: Duration) -> Self {
        Self { window, history: VecDeque::new() }
    }

    /// The replica count to run now, given `recommended` at `now` and `current`: up at once,
    /// down to the highest recommendation of the window.
    pub fn next(&mut self, now: Instant, recommended: u32, current: u32) -> u32 {
        self.history.push_back((now, recommended));
        while self.history.front().is_some_and(|(at, _)| now.duration_since(*at) > self.window) {
            self.history.pop_front();
        }
        if recommended >= current {
            return recommended;
        }
        let highest = self.history.iter().map(|(_, n)| *n).max().unwrap_or(recommended);
        highest.min(current)
    }
}

/// Reads `{{.Name}}\t{{.CPUPerc}}\t{{.MemPerc}}` lines of `podman stats` / `docker stats`:
/// (name, CPU percent of one core, memory percent of the limit); unreadable lines are skipped.
pub fn parse_stats(text: &str) -> Vec<(String, f64, f64)> {
    let percent = |s: &str| s.trim().trim_end_matches('%').trim().parse::<f64>().ok();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let name = fields.next()?.trim().trim_start_matches('/').to_owned();
            let cpu = percent(fields.next()?)?;
            let memory = percent(fields.next()?)?;
            Some((name, cpu, memory))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(extra: serde_json::Value) -> Autoscaling {
        let mut value = serde_json::json!({"min": 1, "desired": 1, "max": 4});
        for (k, v) in extra.as_object().unwrap() {
            value[k] = v.clone();
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn each_metric_recommends_and_the_highest_wins_within_bounds() {
        let p =
            policy(serde_json::json!({"targetHttpInFlightPerReplica": 2, "targetCpuPercent": 50}));
        let busy = Sample { in_flight: Some(8), cpu_percent: Some(10.0), ..Sample::default() };
        let (n, why) = recommend(&p, 1, &busy);
        assert_eq!(n, 4);
        assert!(why.unwrap().contains("8 requests in flight"));
        let (n, _) = recommend(&p, 1, &Sample { in_flight: Some(50), ..Sample::default() });
        assert_eq!(n, 4, "at most max");
        let (n, why) = recommend(
            &p,
            2,
            &Sample { in_flight: Some(0), cpu_percent: Some(90.0), ..Sample::default() },
        );
        assert_eq!(n, 4, "2 replicas at 90 % of a 50 % target: 3.6 -> 4");
        assert!(why.unwrap().starts_with("CPU at 90"));
        let (n, _) = recommend(
            &p,
            3,
            &Sample { in_flight: Some(0), cpu_percent: Some(0.0), ..Sample::default() },
        );
        assert_eq!(n, 1, "at least min");
        let (n, why) = recommend(&p, 3, &Sample::default());
        assert_eq!((n, why), (3, None), "nothing measured: keep");
        let l = policy(serde_json::json!({"maxHttpP95LatencyMs": 200}));
        let slow = Sample { p95_ms: Some(450.0), ..Sample::default() };
        assert_eq!(recommend(&l, 2, &slow).0, 3, "one more while p95 is above the limit");
        let fast = Sample { p95_ms: Some(20.0), ..Sample::default() };
        assert_eq!(recommend(&l, 2, &fast), (2, None), "below the limit it asks nothing");
        let m = policy(serde_json::json!({"targetMemoryPercent": 80}));
        let (n, _) = recommend(&m, 2, &Sample { memory_percent: Some(100.0), ..Sample::default() });
        assert_eq!(n, 3);
    }

    #[test]
    fn scale_up_is_immediate_and_scale_down_waits_out_the_window() {
        let mut s = Stabilizer::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(s.next(t0, 4, 1), 4, "up at once");
        assert_eq!(s.next(t0 + Duration::from_secs(2), 1, 4), 4, "4 was asked within the window");
        assert_eq!(s.next(t0 + Duration::from_secs(9), 2, 4), 4);
        assert_eq!(s.next(t0 + Duration::from_secs(11), 1, 4), 2, "the 4 left the window");
        assert_eq!(s.next(t0 + Duration::from_secs(20), 1, 2), 1);
    }

    #[test]
    fn stats_lines_of_both_engines_are_read() {
        let text = "alien-d-web-0\t12.50%\t3.25%\n/alien-d-web-1\t0.00%\t1.00%\nbroken line\n";
        assert_eq!(
            parse_stats(text),
            vec![("alien-d-web-0".to_owned(), 12.5, 3.25), ("alien-d-web-1".to_owned(), 0.0, 1.0)]
        );
    }
}
