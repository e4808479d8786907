//! The line a field path (`spec.total.requestsPerSecond`, `spec.methods[1]`) is written on in
//! a YAML document, so that a value refused after parsing (by a spec's `validate`) is reported
//! at the line the user must edit, not only at the document's start.
//!
//! The document is read a second time, only when there is an error to place, into a tree that
//! keeps where each mapping key and sequence item starts; the typed specs stay plain serde
//! types. A path that is not in the document (a missing field, an error about a whole object)
//! is placed at its deepest ancestor that is.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A YAML node, with the line of each child.
#[derive(Debug, Default)]
enum Node {
    /// A mapping: each key's text and line, and its value.
    Map(Vec<(Spanned<Key>, Node)>),
    /// A sequence: each item with its line.
    Seq(Vec<Spanned<Node>>),
    /// A scalar or null: nothing below it to find.
    #[default]
    Leaf,
}

/// A mapping key as text (YAML keys may be numbers or booleans too).
#[derive(Debug)]
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyText;
        impl Visitor<'_> for KeyText {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key(String::new()))
            }
        }
        d.deserialize_any(KeyText)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AnyNode;
        impl<'de> Visitor<'de> for AnyNode {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<Key>>()? {
                    entries.push((key, map.next_value::<Node>()?));
                }
                Ok(Node::Map(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<Node>>()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_bytes<E>(self, _: &[u8]) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
        }
        d.deserialize_any(AnyNode)
    }
}

/// One step of a field path: a key or a sequence index.
#[derive(Debug, PartialEq, Eq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `spec.overrides[1].identities[0]` as keys and indices; `None` when it is not such a path.
fn steps(path: &str) -> Option<Vec<Step<'_>>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']')?;
            out.push(Step::Index(inner[..end].parse().ok()?));
            rest = &inner[end + 1..];
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some(out)
}

/// The 1-based line, within `doc`, of the deepest part of `path` that `doc` has; `None` when
/// `doc` is not readable YAML or not even the first step is in it.
pub fn field_line(doc: &str, path: &str) -> Option<u64> {
    let root: Node = serde_saphyr::from_str(doc).ok()?;
    let mut node = &root;
    let mut line = None;
    for step in steps(path)? {
        let (found, at) = match (node, step) {
            (Node::Map(entries), Step::Key(key)) => {
                match entries.iter().find(|(k, _)| k.value.0 == key) {
                    Some((k, child)) => (child, k.referenced.line()),
                    None => break,
                }
            }
            (Node::Seq(items), Step::Index(i)) => match items.get(i) {
                Some(item) => (&item.value, item.referenced.line()),
                None => break,
            },
            _ => break,
        };
        node = found;
        // Unknown locations are 0: keep the ancestor's line then.
        if at > 0 {
            line = Some(at);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
apiVersion: mesh.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: a}
spec:
  targetRef: {group: '', kind: Service, name: echo}
  total:
    requestsPerSecond: 0
  overrides:
  - requestsPerSecond: 5
    identities: [spiffe://a.mesh/x, spiffe://a.mesh/y]
  - {requestsPerSecond: 0, identities: []}
";

    #[test]
    fn paths_are_read_as_keys_and_indices() {
        assert_eq!(
            steps("spec.overrides[1].identities[0]").unwrap(),
            vec![
                Step::Key("spec"),
                Step::Key("overrides"),
                Step::Index(1),
                Step::Key("identities"),
                Step::Index(0)
            ]
        );
        assert_eq!(steps("a[x]"), None);
        assert_eq!(steps("a[1]b"), None);
    }

    #[test]
    fn fields_are_found_at_their_key_or_item() {
        assert_eq!(field_line(DOC, "spec"), Some(4));
        assert_eq!(field_line(DOC, "spec.total.requestsPerSecond"), Some(7));
        assert_eq!(field_line(DOC, "spec.overrides[0].identities[1]"), Some(10));
        assert_eq!(
            field_line(DOC, "spec.overrides[1].requestsPerSecond"),
            Some(11)
        );
        assert_eq!(field_line(DOC, "spec.targetRef.kind"), Some(5));
    }

    #[test]
    fn a_missing_field_is_placed_at_its_deepest_ancestor() {
        assert_eq!(field_line(DOC, "spec.total.burst"), Some(6));
        assert_eq!(field_line(DOC, "spec.overrides[7].identities"), Some(8));
        assert_eq!(field_line(DOC, "status"), None);
        assert_eq!(field_line("a: [", "a"), None, "unreadable YAML");
    }
}
