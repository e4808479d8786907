//! Traffic and authorization policy documents (`mesh controller --policy`), read by
//! `parse_documents` and compiled by `compile`, as the controller does with each version of
//! its policy files.

use mesh_core::names::ServiceKey;
use mesh_core::policy::compile::compile;
use mesh_core::policy::documents::parse_documents;

use super::yaml_error::{FILE, assert_locates};

/// Parses `data` (when it is text) as policy documents and compiles them, once with every
/// service known and once with none; every refusal names the file and the line, and what is
/// accepted can be published to sidecars (serialized as JSON).
pub fn policy_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let objects = match parse_documents(text, FILE, 0) {
        Ok(objects) => objects,
        Err(e) => return assert_locates(&e.to_string()),
    };
    for known in [true, false] {
        let compiled = compile(&objects, &|_: &ServiceKey| known);
        for e in &compiled.errors {
            assert_locates(&e.to_string());
        }
        for policy in compiled.services.values() {
            serde_json::to_vec(policy).expect("a compiled policy serializes");
        }
        assert_eq!(compiled.statuses.len(), objects.len());
    }
}
