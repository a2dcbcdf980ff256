//! The commands this app answers, through the receiver library: `echo` (returns its params),
//! `sleep` (params: milliseconds as text; answers `slept`) and `fail` (always a handler error).
//! The receiver runs only when the deployer injected `ALIEN_COMMANDS_URL` and its companions.

use std::time::Duration;

use alien_commands::receiver::{CommandContext, HandlerError, Receiver, ReceiverConfig, env};

/// What `sleep` answers once it has slept.
pub const SLEPT: &[u8] = b"slept";

/// The receiver's configuration from the environment: `None` when `ALIEN_COMMANDS_URL` is not
/// set (the app then only serves HTTP), an error when it is set but a companion is missing.
pub fn config_from_env() -> Option<Result<ReceiverConfig, String>> {
    let url = std::env::var(env::COMMANDS_URL).ok().filter(|v| !v.trim().is_empty())?;
    Some(ReceiverConfig::from_env().map_err(|e| format!("{e} (with {}={url})", env::COMMANDS_URL)))
}

/// A receiver with this app's handlers.
pub fn receiver(config: ReceiverConfig) -> Receiver {
    Receiver::new(config)
        .handle("echo", |ctx: CommandContext| async move { Ok(echo(ctx.into_params())) })
        .handle("sleep", |ctx: CommandContext| async move { sleep(ctx.params()).await })
        .handle("fail", |ctx: CommandContext| async move { Err(fail(ctx.params())) })
}

/// `echo`: the params, unchanged.
pub fn echo(params: Vec<u8>) -> Vec<u8> {
    params
}

/// `sleep`: sleeps for the number of milliseconds in the params, then answers `slept`. The
/// receiver drops it when its budget ends (the command then fails with `HANDLER_TIMEOUT`).
pub async fn sleep(params: &[u8]) -> Result<Vec<u8>, HandlerError> {
    tokio::time::sleep(sleep_duration(params)?).await;
    Ok(SLEPT.to_vec())
}

/// How long `sleep` sleeps: its params, milliseconds as decimal text.
fn sleep_duration(params: &[u8]) -> Result<Duration, HandlerError> {
    let text = String::from_utf8_lossy(params);
    let millis: u64 = text.trim().parse().map_err(|_| {
        HandlerError::new(format!(
            "sleep: params must be a number of milliseconds, like 250; got {:?}",
            truncated(&text)
        ))
    })?;
    Ok(Duration::from_millis(millis))
}

/// `fail`: the error every call returns; its message carries the params when there are some.
pub fn fail(params: &[u8]) -> HandlerError {
    let text = String::from_utf8_lossy(params);
    let text = text.trim();
    let message = if text.is_empty() {
        "fail: this command always fails".to_owned()
    } else {
        format!("fail: {}", truncated(text))
    };
    HandlerError::new(message).with_details(serde_json::json!({ "command": "fail" }))
}

/// At most 200 characters of `text`, so an error message stays readable.
fn truncated(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use alien_commands::receiver::ReceiverConfig;
    use alien_commands::wire::CommandTarget;

    use super::*;

    #[test]
    fn echo_returns_the_params_byte_for_byte() {
        assert_eq!(echo(b"{\"a\":1}".to_vec()), b"{\"a\":1}");
        assert_eq!(echo(vec![0, 255, 10]), vec![0, 255, 10]);
        assert!(echo(Vec::new()).is_empty());
    }

    #[tokio::test]
    async fn sleep_sleeps_the_given_milliseconds_then_says_slept() {
        let started = Instant::now();
        assert_eq!(sleep(b" 120\n").await.unwrap(), b"slept");
        assert!(started.elapsed() >= Duration::from_millis(120), "{:?}", started.elapsed());
        assert_eq!(sleep(b"0").await.unwrap(), b"slept");
    }

    #[tokio::test]
    async fn sleep_rejects_params_that_are_not_milliseconds() {
        for bad in [&b""[..], b"1s", b"-5", b"\xff"] {
            let err = sleep(bad).await.unwrap_err();
            assert!(err.message().starts_with("sleep: params must be"), "{}", err.message());
        }
    }

    #[test]
    fn fail_always_fails_and_says_why() {
        assert_eq!(fail(b"").message(), "fail: this command always fails");
        let err = fail(b"disk full\n");
        assert_eq!(err.message(), "fail: disk full");
        assert_eq!(err.details(), Some(&serde_json::json!({ "command": "fail" })));
        let long = fail("x".repeat(1000).as_bytes());
        assert_eq!(long.message().len(), "fail: ".len() + 200 + 3);
    }

    #[test]
    fn the_receiver_handles_exactly_echo_sleep_and_fail() {
        let target =
            CommandTarget { resource_id: "hello".into(), resource_type: "container".into() };
        let config = ReceiverConfig::new("http://127.0.0.1:1/v1", "token", "dep_1", target);
        let shown = format!("{:?}", receiver(config));
        assert!(shown.contains(r#"handlers: ["echo", "fail", "sleep"]"#), "{shown}");
    }
}
