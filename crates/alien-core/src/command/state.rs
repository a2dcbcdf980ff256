//! Command states and the one transition table (`spec/commands.md` "States"). Terminal states
//! never change; every write of a state is conditional on the state it was read in.

use serde::{Deserialize, Serialize};

/// Where a command is, SCREAMING_SNAKE on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommandState {
    /// Waiting for its large parameters to be uploaded.
    PendingUpload,
    /// Waiting for a receiver to lease it.
    Pending,
    /// Leased by a receiver.
    Dispatched,
    /// Answered with success.
    Succeeded,
    /// Answered with an error, or failed.
    Failed,
    /// Its deadline passed first.
    Expired,
}

/// What happens to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandEvent {
    /// Its parameters finished uploading.
    UploadComplete,
    /// A receiver leased it.
    Lease,
    /// The lease ran out without a response (redelivered with attempt + 1).
    LeaseExpired,
    /// The receiver gave it back.
    Release,
    /// A success response arrived.
    Succeed,
    /// An error response arrived, or it failed.
    Fail,
    /// Its deadline passed.
    DeadlinePassed,
}

impl CommandState {
    /// Every state.
    pub const ALL: [CommandState; 6] = [
        Self::PendingUpload,
        Self::Pending,
        Self::Dispatched,
        Self::Succeeded,
        Self::Failed,
        Self::Expired,
    ];

    /// Whether the state is final.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Expired)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingUpload => "PENDING_UPLOAD",
            Self::Pending => "PENDING",
            Self::Dispatched => "DISPATCHED",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Expired => "EXPIRED",
        }
    }

    /// The state after `event`, or `None` when the event does not apply.
    pub fn next(self, event: CommandEvent) -> Option<CommandState> {
        use CommandEvent as E;
        use CommandState as S;
        match (self, event) {
            (S::PendingUpload, E::UploadComplete) => Some(S::Pending),
            (S::Pending, E::Lease) => Some(S::Dispatched),
            (S::Dispatched, E::LeaseExpired | E::Release) => Some(S::Pending),
            // A response may arrive after its lease ran out and the command went back to PENDING.
            (S::Dispatched | S::Pending, E::Succeed) => Some(S::Succeeded),
            (s, E::Fail) if !s.is_terminal() => Some(S::Failed),
            (s, E::DeadlinePassed) if !s.is_terminal() => Some(S::Expired),
            _ => None,
        }
    }
}

impl std::fmt::Display for CommandState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::CommandEvent as E;
    use super::CommandState as S;

    const EVENTS: [E; 7] = [
        E::UploadComplete,
        E::Lease,
        E::LeaseExpired,
        E::Release,
        E::Succeed,
        E::Fail,
        E::DeadlinePassed,
    ];

    /// Every (state, event) pair, written out: rows are states, columns follow `EVENTS`.
    #[rustfmt::skip]
    const TABLE: [(S, [Option<S>; 7]); 6] = [
        (S::PendingUpload, [Some(S::Pending), None, None, None, None, Some(S::Failed), Some(S::Expired)]),
        (S::Pending,       [None, Some(S::Dispatched), None, None, Some(S::Succeeded), Some(S::Failed), Some(S::Expired)]),
        (S::Dispatched,    [None, None, Some(S::Pending), Some(S::Pending), Some(S::Succeeded), Some(S::Failed), Some(S::Expired)]),
        (S::Succeeded,     [None; 7]),
        (S::Failed,        [None; 7]),
        (S::Expired,       [None; 7]),
    ];

    #[test]
    fn the_transition_table_is_exhaustive_and_terminal_states_are_final() {
        assert_eq!(TABLE.len(), S::ALL.len());
        for (state, row) in TABLE {
            for (event, expected) in EVENTS.iter().zip(row) {
                assert_eq!(state.next(*event), expected, "{state:?} + {event:?}");
            }
            if state.is_terminal() {
                assert!(row.iter().all(Option::is_none));
            }
        }
    }

    #[test]
    fn wire_names_are_screaming_snake() {
        for state in S::ALL {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }
}
