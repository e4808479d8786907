//! What every refusal of a file must say: which file, and where in it.

/// The name the fuzz targets give their input file.
pub(crate) const FILE: &str = "fuzz.yaml";

/// Panics unless `message` names [`FILE`] and a line.
pub(crate) fn assert_locates(message: &str) {
    assert!(
        message.contains(FILE),
        "an error that does not name the file: {message}"
    );
    assert!(
        message.contains("line "),
        "an error that does not name a line: {message}"
    );
}
