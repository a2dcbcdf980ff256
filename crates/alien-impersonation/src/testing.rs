//! Test doubles shared by this crate's unit tests: a scripted impersonator, a manual clock, and a
//! way to poll a future once so that concurrency is arranged without sleeping.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use tokio::sync::Semaphore;

use crate::clock::Clock;
use crate::credentials::Credentials;
use crate::error::ImpersonationError;
use crate::impersonator::Impersonator;
use crate::target::{Identity, ImpersonationTarget, SessionName};

/// Polls `future` once with a waker that does nothing; the caller polls again (or awaits) later.
pub(crate) fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// A clock that moves only when told to; starts at 2030-01-01T00:00:00Z.
#[derive(Debug)]
pub(crate) struct ManualClock(Mutex<DateTime<Utc>>);

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock(Mutex::new(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()))
    }
}

impl ManualClock {
    pub(crate) fn advance(&self, by: TimeDelta) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// Answers cloud targets with the next scripted result, in call order, and counts the calls.
/// Ambient targets get [`Credentials::Ambient`] without using the script (the trait's rule).
/// Calls for the gated identity take their result, then wait until [`Self::open_gate`]; once open,
/// the gate stays open (so a broken cache fails an assertion rather than hanging).
#[derive(Debug, Default)]
pub(crate) struct ScriptedImpersonator {
    script: Mutex<VecDeque<Result<Credentials, ImpersonationError>>>,
    calls: Mutex<Vec<ImpersonationTarget>>,
    gate: Option<(Identity, Semaphore)>,
    opened: AtomicBool,
}

impl ScriptedImpersonator {
    pub(crate) fn new(
        script: impl IntoIterator<Item = Result<Credentials, ImpersonationError>>,
    ) -> Self {
        ScriptedImpersonator { script: Mutex::new(script.into_iter().collect()), ..Self::default() }
    }

    /// Calls for `identity` wait for [`Self::open_gate`].
    pub(crate) fn gated(mut self, identity: Identity) -> Self {
        self.gate = Some((identity, Semaphore::new(0)));
        self
    }

    /// Lets every gated call through, now and later.
    pub(crate) fn open_gate(&self) {
        if let Some((_, gate)) = &self.gate
            && !self.opened.swap(true, Ordering::SeqCst)
        {
            // One permit, taken and given back by each call.
            gate.add_permits(1);
        }
    }

    /// Calls for cloud targets so far.
    pub(crate) fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl Impersonator for ScriptedImpersonator {
    async fn credentials(
        &self,
        target: &ImpersonationTarget,
    ) -> Result<Credentials, ImpersonationError> {
        if target.identity() == &Identity::Ambient {
            return Ok(Credentials::Ambient);
        }
        self.calls.lock().unwrap().push(target.clone());
        let result = self.script.lock().unwrap().pop_front().unwrap_or_else(|| {
            Err(ImpersonationError::Backend { message: "the script is exhausted".into() })
        });
        if let Some((identity, gate)) = &self.gate
            && identity == target.identity()
        {
            drop(gate.acquire().await.unwrap());
        }
        result
    }
}

/// AWS credentials whose secrets contain `SECRET` and `TOKEN` (for redaction checks).
pub(crate) fn aws_credentials(name: &str, expires_at: DateTime<Utc>) -> Credentials {
    Credentials::Aws {
        access_key_id: format!("ASIA{}", name.to_uppercase().replace(' ', "")),
        secret_access_key: format!("SECRET-{name}"),
        session_token: format!("TOKEN-{name}"),
        expires_at,
    }
}

/// An AWS role target named `role`.
pub(crate) fn aws_target(role: &str) -> ImpersonationTarget {
    let identity = Identity::Aws {
        role_arn: format!("arn:aws:iam::123456789012:role/{role}"),
        external_id: None,
        session_name: SessionName::new("test", role),
    };
    ImpersonationTarget::new(identity, None)
}
