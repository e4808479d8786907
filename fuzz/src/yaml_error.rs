//! What every refusal of a file must say: which file, and where in it (a line, or the field
//! when the parser knows no position: serde-saphyr reports a duplicate key written with a
//! custom tag, `!x clusters:`, without one).

/// The name the fuzz targets give their input file.
pub(crate) const FILE: &str = "fuzz.yaml";

/// Panics unless `message` names [`FILE`] and a line or a field (a name in backquotes).
pub(crate) fn assert_locates(message: &str) {
    assert!(
        message.contains(FILE),
        "an error that does not name the file: {message}"
    );
    assert!(
        message.contains("line ") || message.matches('`').count() >= 2,
        "an error that names neither a line nor a field: {message}"
    );
}
