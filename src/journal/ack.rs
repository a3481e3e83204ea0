//! The "acknowledge only when durable" handshake, as plain data (pure).

use std::collections::HashMap;
use std::sync::Arc;

use super::StoreError;

/// Names one submitted group of records; chosen by the engine, handed back when the group is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JournalToken(pub u64);

/// What the writer thread reports after each commit: the tokens of every group in it, and whether the commit
/// held. On `Err` none of these groups is known to be durable.
#[derive(Clone, Debug)]
pub struct Durable {
    pub tokens: Vec<JournalToken>,
    pub result: Result<(), Arc<StoreError>>,
}

/// Outputs held back until their records are durable (a park's `200 OK`, a REFER's final NOTIFY), by token.
/// The engine's side of the handshake: `hold` when emitting the records, `release` on
/// `handle_journal_durable`, `fail` when the store could not make them durable.
#[derive(Debug)]
pub struct AckGate<T> {
    next: u64,
    held: HashMap<JournalToken, Vec<T>>,
}

impl<T> Default for AckGate<T> {
    fn default() -> Self {
        AckGate { next: 0, held: HashMap::new() }
    }
}

impl<T> AckGate<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh token for a group of records; `outputs` (possibly none) wait for it.
    pub fn hold(&mut self, outputs: Vec<T>) -> JournalToken {
        let token = JournalToken(self.next);
        self.next += 1;
        if !outputs.is_empty() {
            self.held.insert(token, outputs);
        }
        token
    }

    /// The group is durable: its outputs may go now. An unknown or already released token gives nothing.
    pub fn release(&mut self, token: JournalToken) -> Vec<T> {
        self.held.remove(&token).unwrap_or_default()
    }

    /// The group could not be made durable: its outputs are handed back for the engine to replace (a `500`
    /// instead of the `200`).
    pub fn fail(&mut self, token: JournalToken) -> Vec<T> {
        self.release(token)
    }

    /// Groups whose outputs still wait.
    pub fn waiting(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_wait_for_their_own_token_only() {
        let mut gate = AckGate::new();
        let a = gate.hold(vec!["200 OK to park A", "event parked A"]);
        let none = gate.hold(vec![]);
        let b = gate.hold(vec!["200 OK to park B"]);
        assert_ne!(a, b);
        assert_eq!(gate.waiting(), 2, "a group with nothing to hold is not waiting");
        assert_eq!(gate.release(b), ["200 OK to park B"]);
        assert!(gate.release(none).is_empty());
        assert!(gate.release(b).is_empty(), "released once");
        assert_eq!(gate.fail(a), ["200 OK to park A", "event parked A"]);
        assert_eq!(gate.waiting(), 0);
        assert!(gate.release(JournalToken(99)).is_empty(), "unknown tokens are ignored");
    }
}
