//! The SIP method (RFC 3261 §7.1, §25.1 `Method`): read from a token, written back as it came.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Refer,
    Notify,
    Subscribe,
    Message,
    Info,
    Update,
    Prack,
    Publish,
    /// Any other token, kept as written (methods are case-sensitive).
    Other(String),
}

impl Method {
    /// The method a token names; the caller has checked it is a `token`.
    pub fn from_token(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "MESSAGE" => Method::Message,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other.to_string()),
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Message => "MESSAGE",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_case_sensitive_and_round_trip() {
        assert_eq!(Method::from_token("INVITE"), Method::Invite);
        assert_eq!(Method::from_token("invite"), Method::Other("invite".into()));
        for m in ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "REFER", "NOTIFY", "SUBSCRIBE", "MESSAGE", "INFO", "UPDATE", "PRACK", "PUBLISH", "NEWMETHOD"] {
            assert_eq!(Method::from_token(m).to_string(), m);
        }
    }
}
