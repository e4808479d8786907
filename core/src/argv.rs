//! Rendering typed flags back into a command line, the inverse of parsing them with clap: the
//! launcher and the benchmarks build each component's arguments as the component's own args
//! type and render them here, so no flag name is spelled twice.

use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

/// A command line under construction (`--flag value` pairs and bare switches, in order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Argv(Vec<String>);

impl Argv {
    /// A command line starting with `words` (a subcommand, or nothing).
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(words: I) -> Self {
        Self(words.into_iter().map(Into::into).collect())
    }

    /// `--name value`.
    pub fn flag(&mut self, name: &str, value: impl Display) -> &mut Self {
        self.0.push(format!("--{name}"));
        self.0.push(value.to_string());
        self
    }

    /// `--name value` when there is a value.
    pub fn opt(&mut self, name: &str, value: Option<impl Display>) -> &mut Self {
        if let Some(value) = value {
            self.flag(name, value);
        }
        self
    }

    /// `--name path`. Paths are rendered as text, so they must be UTF-8 to round-trip (every
    /// path the launcher builds is).
    pub fn path(&mut self, name: &str, path: &Path) -> &mut Self {
        self.flag(name, path.display())
    }

    /// `--name path` when there is a path.
    pub fn opt_path(&mut self, name: &str, path: Option<&Path>) -> &mut Self {
        self.opt(name, path.map(Path::display))
    }

    /// `--name 1s 500ms`, in the form humantime parses back.
    pub fn duration(&mut self, name: &str, value: Duration) -> &mut Self {
        self.flag(name, humantime::format_duration(value))
    }

    /// `--name a,b,c` when the list is not empty (a `value_delimiter = ','` flag).
    pub fn list(&mut self, name: &str, values: &[String]) -> &mut Self {
        if !values.is_empty() {
            self.flag(name, values.join(","));
        }
        self
    }

    /// A bare `--name` when `on`.
    pub fn switch(&mut self, name: &str, on: bool) -> &mut Self {
        if on {
            self.0.push(format!("--{name}"));
        }
        self
    }

    /// Appends another rendered command line (a flattened group of flags).
    pub fn extend(&mut self, other: Argv) -> &mut Self {
        self.0.extend(other.0);
        self
    }

    /// The words, ready for `Command::args`.
    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

/// Parses flags (no subcommand, no program name) as the args type `A`: the inverse of an args
/// type's `to_argv`, and the way to get clap's own defaults for every flag not given.
pub fn parse_flags<A: clap::Args + clap::FromArgMatches>(argv: Argv) -> Result<A, clap::Error> {
    let command = A::augment_args(clap::Command::new("mesh").no_binary_name(true));
    A::from_arg_matches(&command.try_get_matches_from(argv.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_flags_in_the_forms_clap_reads() {
        let mut argv = Argv::new(["sidecar"]);
        argv.flag("cluster", "us-east")
            .opt("app", None::<&str>)
            .opt("service", Some("echo.demo"))
            .path("ca-file", Path::new("/s/ca.crt"))
            .duration("request-timeout", Duration::from_millis(1500))
            .list("region-priority", &["eu".into(), "ap".into()])
            .list("empty", &[])
            .switch("no-latency-weighting", true)
            .switch("off", false);
        assert_eq!(
            argv.into_vec().join(" "),
            "sidecar --cluster us-east --service echo.demo --ca-file /s/ca.crt \
             --request-timeout 1s 500ms --region-priority eu,ap --no-latency-weighting"
        );
    }
}
