//! A chaos scenario file (`chaos/scenarios/*.yaml`), read by `mesh_chaos::scenario::parse`.

use std::path::Path;

use mesh_chaos::scenario;

use super::yaml_error::{FILE, assert_locates};

/// Parses `data` (when it is text) as a scenario; a refusal names the file and the line.
pub fn scenario_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = scenario::parse(text, Path::new(FILE)) {
        assert_locates(&e.to_string());
    }
}
