//! A decorator that reuses credentials until 80% of their lifetime has passed, with at most one
//! refresh in flight per target (`spec/clouds.md`: "cached to 80% of expiry, refreshed
//! single-flight").

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};

use crate::clock::{Clock, SystemClock};
use crate::credentials::Credentials;
use crate::error::ImpersonationError;
use crate::impersonator::Impersonator;
use crate::target::ImpersonationTarget;

/// Caches the credentials of any [`Impersonator`] per target (identity and duration).
///
/// - Credentials are served from the cache until 80% of their lifetime has passed, the
///   lifetime running from just before they were asked for to their `expires_at`; the next call
///   then refreshes them. Credentials without an expiry (ambient) or already expired are not
///   cached.
/// - At most one refresh per target is in flight: callers that arrive during it wait and get its
///   outcome, error included. Targets never wait for each other.
/// - Errors are not cached: the first call after a failed refresh tries again.
/// - A cancelled refresh (its caller dropped) leaves the next waiter to refresh.
/// - Entries of targets nobody asked for since their refresh point are dropped when a new target
///   is added, so the cache does not grow with deployments that are gone.
pub struct CachingImpersonator<I> {
    inner: I,
    clock: Arc<dyn Clock>,
    slots: Mutex<HashMap<ImpersonationTarget, Arc<Slot>>>,
}

/// One target's cache entry and refresh lock.
#[derive(Default)]
struct Slot {
    /// Refreshes completed; read before waiting for `state`, it tells a waiter whether a refresh
    /// finished while it waited.
    flights: AtomicU64,
    /// Held for the duration of a refresh.
    state: tokio::sync::Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// Outcome of the latest refresh, shared with the callers that waited for it.
    latest: Option<Result<Credentials, ImpersonationError>>,
    /// Until when `latest` (successful and expiring) is served to new callers.
    refresh_at: Option<DateTime<Utc>>,
}

impl Slot {
    /// Whether the slot is busy or still serves cached credentials at `now`.
    fn in_use(&self, now: DateTime<Utc>) -> bool {
        match self.state.try_lock() {
            Ok(state) => state.refresh_at.is_some_and(|refresh_at| now < refresh_at),
            Err(_) => true,
        }
    }
}

/// When credentials asked for at `obtained_at` stop being served: after 80% of their lifetime.
/// `None` (not cached) when they do not expire or are already expired.
fn refresh_point(
    obtained_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let lifetime = expires_at?.signed_duration_since(obtained_at);
    if lifetime <= TimeDelta::zero() {
        return None;
    }
    let served_for = lifetime.checked_mul(4)?.checked_div(5)?;
    obtained_at.checked_add_signed(served_for)
}

impl<I: Impersonator> CachingImpersonator<I> {
    /// Caches `inner` on the system clock.
    pub fn new(inner: I) -> CachingImpersonator<I> {
        CachingImpersonator::with_clock(inner, Arc::new(SystemClock))
    }

    /// Caches `inner`, reading the time from `clock`.
    pub fn with_clock(inner: I, clock: Arc<dyn Clock>) -> CachingImpersonator<I> {
        CachingImpersonator { inner, clock, slots: Mutex::new(HashMap::new()) }
    }

    /// The wrapped impersonator.
    pub fn inner(&self) -> &I {
        &self.inner
    }

    /// The slot of `target`, created (and idle slots dropped) when it has none.
    fn slot(&self, target: &ImpersonationTarget) -> Arc<Slot> {
        // The map is only touched in short synchronous sections; a panic there leaves it whole.
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(target) {
            return Arc::clone(slot);
        }
        let now = self.clock.now();
        slots.retain(|_, slot| Arc::strong_count(slot) > 1 || slot.in_use(now));
        let slot = Arc::new(Slot::default());
        slots.insert(target.clone(), Arc::clone(&slot));
        slot
    }
}

impl<I: fmt::Debug> fmt::Debug for CachingImpersonator<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let targets = self.slots.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("CachingImpersonator")
            .field("inner", &self.inner)
            .field("clock", &self.clock)
            .field("targets", &targets)
            .finish()
    }
}

#[async_trait::async_trait]
impl<I: Impersonator> Impersonator for CachingImpersonator<I> {
    async fn credentials(
        &self,
        target: &ImpersonationTarget,
    ) -> Result<Credentials, ImpersonationError> {
        let slot = self.slot(target);
        let seen = slot.flights.load(Ordering::Acquire);
        let mut state = slot.state.lock().await;
        if slot.flights.load(Ordering::Acquire) != seen
            && let Some(latest) = &state.latest
        {
            // A refresh finished while this call waited for it: share its outcome.
            return latest.clone();
        }
        let now = self.clock.now();
        if let (Some(Ok(credentials)), Some(refresh_at)) = (&state.latest, state.refresh_at)
            && now < refresh_at
        {
            return Ok(credentials.clone());
        }

        let result = self.inner.credentials(target).await;
        state.refresh_at = match &result {
            Ok(credentials) => refresh_point(now, credentials.expires_at()),
            Err(_) => None,
        };
        match &result {
            Ok(credentials) => tracing::debug!(
                identity = %target.identity(),
                kind = credentials.kind(),
                expires_at = ?credentials.expires_at(),
                refresh_at = ?state.refresh_at,
                "impersonation credentials refreshed"
            ),
            Err(error) => tracing::debug!(
                identity = %target.identity(),
                %error,
                "impersonation refresh failed"
            ),
        }
        state.latest = Some(result.clone());
        slot.flights.fetch_add(1, Ordering::Release);
        result
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::time::Duration;

    use chrono::TimeDelta;

    use super::*;
    use crate::target::Identity;
    use crate::testing::{
        ManualClock, ScriptedImpersonator, aws_credentials, aws_target, poll_once,
    };

    const N: usize = 16;

    type Call<'a> =
        Pin<Box<dyn Future<Output = Result<Credentials, ImpersonationError>> + Send + 'a>>;

    fn unavailable() -> ImpersonationError {
        ImpersonationError::Unavailable { message: "sts throttled".into() }
    }

    fn caching(
        inner: ScriptedImpersonator,
    ) -> (CachingImpersonator<ScriptedImpersonator>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        (CachingImpersonator::with_clock(inner, clock.clone()), clock)
    }

    #[tokio::test]
    async fn serves_cached_credentials_before_80_percent_of_their_lifetime() {
        let t0 = ManualClock::default().now();
        let first = aws_credentials("first", t0 + TimeDelta::seconds(1000));
        let (cache, clock) = caching(ScriptedImpersonator::new([Ok(first.clone())]));
        let target = aws_target("customer");

        assert_eq!(cache.credentials(&target).await.unwrap(), first);
        clock.advance(TimeDelta::seconds(799));
        assert_eq!(cache.credentials(&target).await.unwrap(), first, "79.9% of the lifetime");
        assert_eq!(cache.credentials(&target).await.unwrap(), first);
        assert_eq!(cache.inner().calls(), 1, "one call to the provider");
    }

    #[tokio::test]
    async fn refreshes_once_80_percent_of_the_lifetime_has_passed() {
        let t0 = ManualClock::default().now();
        let first = aws_credentials("first", t0 + TimeDelta::seconds(1000));
        let second = aws_credentials("second", t0 + TimeDelta::seconds(2000));
        let (cache, clock) =
            caching(ScriptedImpersonator::new([Ok(first.clone()), Ok(second.clone())]));
        let target = aws_target("customer");

        assert_eq!(cache.credentials(&target).await.unwrap(), first);
        clock.advance(TimeDelta::seconds(800));
        assert_eq!(cache.credentials(&target).await.unwrap(), second, "80%: refreshed");
        assert_eq!(cache.inner().calls(), 2);

        // The second lifetime runs from t0+800s to t0+2000s: served until t0+1760s.
        clock.advance(TimeDelta::seconds(959));
        assert_eq!(cache.credentials(&target).await.unwrap(), second);
        assert_eq!(cache.inner().calls(), 2);
        clock.advance(TimeDelta::seconds(1));
        let third = cache.credentials(&target).await;
        assert!(third.is_err(), "refresh due at t0+1760s: the (exhausted) script is asked");
        assert_eq!(cache.inner().calls(), 3);
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let t0 = ManualClock::default().now();
        let first = aws_credentials("first", t0 + TimeDelta::seconds(1000));
        let second = aws_credentials("second", t0 + TimeDelta::seconds(3000));
        let (cache, clock) = caching(ScriptedImpersonator::new([
            Err(unavailable()),
            Ok(first.clone()),
            Err(unavailable()),
            Ok(second.clone()),
        ]));
        let target = aws_target("customer");

        assert_eq!(cache.credentials(&target).await, Err(unavailable()));
        assert_eq!(cache.credentials(&target).await, Ok(first), "the next call tries again");
        clock.advance(TimeDelta::seconds(900));
        assert_eq!(cache.credentials(&target).await, Err(unavailable()), "a failed refresh");
        assert_eq!(cache.credentials(&target).await, Ok(second.clone()), "tried again");
        assert_eq!(cache.credentials(&target).await, Ok(second), "and cached");
        assert_eq!(cache.inner().calls(), 4);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_refresh() {
        let t0 = ManualClock::default().now();
        let credentials = aws_credentials("shared", t0 + TimeDelta::seconds(3600));
        let target = aws_target("customer");
        let inner =
            ScriptedImpersonator::new([Ok(credentials.clone())]).gated(target.identity().clone());
        let (cache, _clock) = caching(inner);

        let mut calls: Vec<Call<'_>> = (0..N).map(|_| cache.credentials(&target)).collect();
        for call in &mut calls {
            assert!(poll_once(call.as_mut()).is_pending(), "every caller waits for the refresh");
        }
        assert_eq!(cache.inner().calls(), 1, "one refresh in flight");

        cache.inner().open_gate();
        for call in calls {
            assert_eq!(call.await, Ok(credentials.clone()));
        }
        assert_eq!(cache.inner().calls(), 1, "{N} callers, one provider call");
    }

    #[tokio::test]
    async fn concurrent_callers_share_a_failed_refresh_and_the_next_call_retries() {
        let t0 = ManualClock::default().now();
        let credentials = aws_credentials("later", t0 + TimeDelta::seconds(3600));
        let target = aws_target("customer");
        let inner = ScriptedImpersonator::new([Err(unavailable()), Ok(credentials.clone())])
            .gated(target.identity().clone());
        let (cache, _clock) = caching(inner);

        let mut calls: Vec<Call<'_>> = (0..N).map(|_| cache.credentials(&target)).collect();
        for call in &mut calls {
            assert!(poll_once(call.as_mut()).is_pending());
        }
        cache.inner().open_gate();
        for call in calls {
            assert_eq!(call.await, Err(unavailable()), "waiters get the refresh's error");
        }
        assert_eq!(cache.inner().calls(), 1, "the error was not fetched once per waiter");

        assert_eq!(cache.credentials(&target).await, Ok(credentials), "a later call retries");
        assert_eq!(cache.inner().calls(), 2);
    }

    #[tokio::test]
    async fn different_targets_do_not_wait_for_each_other() {
        let t0 = ManualClock::default().now();
        let slow = aws_credentials("slow", t0 + TimeDelta::seconds(3600));
        let fast = aws_credentials("fast", t0 + TimeDelta::seconds(3600));
        let (a, b) = (aws_target("slow"), aws_target("fast"));
        let inner = ScriptedImpersonator::new([Ok(slow.clone()), Ok(fast.clone())])
            .gated(a.identity().clone());
        let (cache, _clock) = caching(inner);

        let mut slow_call = cache.credentials(&a);
        assert!(poll_once(slow_call.as_mut()).is_pending(), "a's refresh is in flight");
        let mut fast_call = cache.credentials(&b);
        assert_eq!(
            poll_once(fast_call.as_mut()),
            std::task::Poll::Ready(Ok(fast.clone())),
            "b does not wait for a's refresh"
        );
        assert_eq!(cache.credentials(&b).await, Ok(fast), "b is cached on its own");

        cache.inner().open_gate();
        assert_eq!(slow_call.await, Ok(slow));
        assert_eq!(cache.inner().calls(), 2);
    }

    #[tokio::test]
    async fn targets_are_cached_apart_and_a_duration_is_part_of_the_target() {
        let t0 = ManualClock::default().now();
        let expires = t0 + TimeDelta::seconds(3600);
        let (one, two, three) = (
            aws_credentials("one", expires),
            aws_credentials("two", expires),
            aws_credentials("three", expires),
        );
        let (cache, _clock) = caching(ScriptedImpersonator::new([
            Ok(one.clone()),
            Ok(two.clone()),
            Ok(three.clone()),
        ]));
        let a = aws_target("a");
        let b = aws_target("b");
        let short_a =
            ImpersonationTarget::new(a.identity().clone(), Some(Duration::from_secs(900)));

        assert_eq!(cache.credentials(&a).await, Ok(one.clone()));
        assert_eq!(cache.credentials(&b).await, Ok(two.clone()));
        assert_eq!(cache.credentials(&short_a).await, Ok(three.clone()));
        assert_eq!(cache.credentials(&a).await, Ok(one));
        assert_eq!(cache.credentials(&b).await, Ok(two));
        assert_eq!(cache.credentials(&short_a).await, Ok(three));
        assert_eq!(cache.inner().calls(), 3);
    }

    #[tokio::test]
    async fn credentials_without_expiry_or_already_expired_are_not_cached() {
        let t0 = ManualClock::default().now();
        let expired = aws_credentials("expired", t0 - TimeDelta::seconds(1));
        let (cache, _clock) = caching(ScriptedImpersonator::new([
            Ok(Credentials::Ambient),
            Ok(Credentials::Ambient),
            Ok(expired.clone()),
            Ok(expired.clone()),
        ]));
        let target = aws_target("customer");

        assert_eq!(cache.credentials(&target).await, Ok(Credentials::Ambient));
        assert_eq!(cache.credentials(&target).await, Ok(Credentials::Ambient));
        assert_eq!(cache.credentials(&target).await, Ok(expired.clone()));
        assert_eq!(cache.credentials(&target).await, Ok(expired));
        assert_eq!(cache.inner().calls(), 4, "each call asked the provider");
    }

    #[tokio::test]
    async fn a_cancelled_refresh_lets_the_next_caller_refresh() {
        let t0 = ManualClock::default().now();
        let credentials = aws_credentials("second try", t0 + TimeDelta::seconds(3600));
        let target = aws_target("customer");
        let inner = ScriptedImpersonator::new([Err(unavailable()), Ok(credentials.clone())])
            .gated(target.identity().clone());
        let (cache, _clock) = caching(inner);

        let mut abandoned = cache.credentials(&target);
        let mut waiting = cache.credentials(&target);
        assert!(poll_once(abandoned.as_mut()).is_pending());
        assert!(poll_once(waiting.as_mut()).is_pending());
        drop(abandoned);

        cache.inner().open_gate();
        assert_eq!(waiting.await, Ok(credentials), "the waiter refreshed itself");
        assert_eq!(cache.inner().calls(), 2);
    }

    #[tokio::test]
    async fn idle_targets_past_their_refresh_point_are_dropped() {
        let t0 = ManualClock::default().now();
        let (cache, clock) = caching(ScriptedImpersonator::new([
            Ok(aws_credentials("old", t0 + TimeDelta::seconds(1000))),
            Ok(Credentials::Ambient),
            Ok(aws_credentials("new", t0 + TimeDelta::seconds(5000))),
        ]));
        cache.credentials(&aws_target("gone")).await.unwrap();
        cache.credentials(&aws_target("ambient")).await.unwrap();
        assert_eq!(cache.slots.lock().unwrap().len(), 2);

        clock.advance(TimeDelta::seconds(800));
        cache.credentials(&aws_target("new")).await.unwrap();
        let slots = cache.slots.lock().unwrap();
        let kept: Vec<&Identity> = slots.keys().map(ImpersonationTarget::identity).collect();
        assert_eq!(kept, [aws_target("new").identity()], "expired and uncached entries dropped");
    }

    #[test]
    fn refresh_point_is_80_percent_of_the_lifetime() {
        let t0 = ManualClock::default().now();
        let at = |s| t0 + TimeDelta::seconds(s);
        assert_eq!(refresh_point(t0, Some(at(1000))), Some(at(800)));
        assert_eq!(refresh_point(t0, Some(at(3600))), Some(at(2880)));
        assert_eq!(refresh_point(t0, Some(at(0))), None, "expires now");
        assert_eq!(refresh_point(t0, Some(at(-5))), None, "already expired");
        assert_eq!(refresh_point(t0, None), None, "never expires");
    }

    #[tokio::test]
    async fn debug_shows_no_cached_secret() {
        let t0 = ManualClock::default().now();
        let (cache, _clock) = caching(ScriptedImpersonator::new([Ok(aws_credentials(
            "debug",
            t0 + TimeDelta::seconds(3600),
        ))]));
        cache.credentials(&aws_target("customer")).await.unwrap();
        let debug = format!("{cache:?}");
        assert!(debug.contains("targets: 1"), "{debug}");
        assert!(!debug.contains("SECRET") && !debug.contains("TOKEN"), "{debug}");
    }
}
