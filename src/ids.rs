//! Typed values that cross layers and rooms, so one cannot be passed where another is meant: a dialog's
//! [`CallId`], an orbit's index in its lot ([`OrbitIdx`]) and the number a phone dials for it
//! ([`OrbitNumber`]). (The handles the core mints for its own things, legs and calls, are in
//! [`crate::core::ids`]; the RTP values, SSRC, payload type and sequence number, in `media::rtp`.)
//!
//! Each is serde-transparent: in JSON (events, the HTTP API) and in the journal it is the bare string or
//! number it wraps, so the shapes applications see do not change. The string ones share their text
//! (`Arc<str>`): a Call-ID or an orbit number is made once and then handed between rooms, events and indexes
//! without copying.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A string newtype: serde as a plain string, `Display`, borrowed as `str`, compared with `str`, cheap to clone.
macro_rules! str_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(s: &str) -> $name {
                $name(Arc::from(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl Default for $name {
            fn default() -> $name {
                $name(Arc::from(""))
            }
        }
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                String::deserialize(d).map($name::from)
            }
        }
        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
        impl From<String> for $name {
            fn from(s: String) -> $name {
                $name(Arc::from(s))
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> $name {
                $name(Arc::from(s))
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0.to_string()
            }
        }
        impl From<$name> for crate::sip::SipStr {
            fn from(v: $name) -> crate::sip::SipStr {
                crate::sip::SipStr::from(&*v.0)
            }
        }
        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

str_id!(
    /// A dialog's Call-ID (RFC 3261 §8.1.1.4), as parkd stores and reports it.
    CallId
);

str_id!(
    /// The number of an orbit as a phone dials it ("701").
    OrbitNumber
);

/// An orbit inside its lot, by index (0 = the first number of the lot's range).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct OrbitIdx(pub usize);

impl fmt::Display for OrbitIdx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newtypes_are_transparent_in_json_and_compare_with_str() {
        let c = CallId::from("a84b4c76e66710@pc33");
        assert_eq!(serde_json::to_string(&c).unwrap(), r#""a84b4c76e66710@pc33""#);
        assert_eq!(serde_json::from_str::<CallId>(r#""x@y""#).unwrap(), "x@y");
        assert_eq!(serde_json::to_string(&OrbitIdx(3)).unwrap(), "3");
        let o = OrbitNumber::from("701");
        assert!(o == "701" && o.len() == 3 && format!("{o}/{o:?}") == r#"701/"701""#);
        let back: OrbitNumber = postcard::from_bytes(&postcard::to_allocvec(&o).unwrap()).unwrap();
        assert_eq!(back, o);
    }
}
