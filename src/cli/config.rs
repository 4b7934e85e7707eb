//! The effective configuration of `vipd run` (what `/v1/config` shows): every flag's value and
//! where it came from, secrets redacted.
//!
//! Must not: show a credential: values of flags named like secrets are redacted, and
//! `user:pass@` is stripped from every URL.

use super::Cli;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};
use serde_json::{json, Value};

/// True for flag names whose values are secrets.
fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["password", "token", "secret", "credential"]
        .iter()
        .any(|s| n.contains(s))
}

/// Removes `user:pass@` from every URL in a comma-separated list.
pub fn strip_userinfo(value: &str) -> String {
    value
        .split(',')
        .map(|url| match (url.find("://"), url.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                format!("{}<redacted>@{}", &url[..scheme_end + 3], &url[at + 1..])
            }
            _ => url.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The effective value of every flag of `vipd run`, keyed by its id (`connect_timeout`): each
/// `{"value": …, "source": "command_line" | "environment" | "default" | "unset"}`. A flag that
/// was neither given nor defaulted has `"value": null`; secrets are `"<redacted>"` and URLs lose
/// their `user:pass@`. Argument groups (one per flattened options struct) are not flags and do
/// not appear.
pub fn effective_run_config(matches: &ArgMatches) -> Value {
    let cli = Cli::command();
    let run = cli
        .find_subcommand("run")
        .expect("`vipd run` is a subcommand");
    let mut out = serde_json::Map::new();
    for arg in cli
        .get_arguments()
        .filter(|a| a.is_global_set())
        .chain(run.get_arguments())
    {
        let name = arg.get_id().as_str();
        if matches!(name, "help" | "version") {
            continue;
        }
        let raw = matches.try_get_raw(name).ok().flatten();
        let (value, source) = match raw {
            None => (Value::Null, "unset"),
            Some(raw) => {
                let values: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
                let value = if is_secret(name) {
                    Value::String("<redacted>".into())
                } else {
                    let cleaned: Vec<String> = values.iter().map(|v| strip_userinfo(v)).collect();
                    match cleaned.as_slice() {
                        [one] => Value::String(one.clone()),
                        many => json!(many),
                    }
                };
                let source = match matches.value_source(name) {
                    Some(ValueSource::CommandLine) => "command_line",
                    Some(ValueSource::EnvVariable) => "environment",
                    Some(ValueSource::DefaultValue) => "default",
                    _ => "unknown",
                };
                (value, source)
            }
        };
        out.insert(name.to_string(), json!({"value": value, "source": source}));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches;

    #[test]
    fn userinfo_is_stripped_from_every_url() {
        assert_eq!(
            strip_userinfo("http://u:p@m1:8080,https://m2:8443"),
            "http://<redacted>@m1:8080,https://m2:8443"
        );
        assert_eq!(strip_userinfo("/etc/apps.json"), "/etc/apps.json");
    }

    #[test]
    fn secret_names_are_recognised() {
        assert!(is_secret("marathon_password"));
        assert!(is_secret("marathon_token_file"));
        assert!(!is_secret("marathon"));
    }

    fn config_of(argv: &[&str]) -> Value {
        let matches = Cli::command().try_get_matches_from(argv).unwrap();
        Cli::from_arg_matches(&matches).unwrap();
        effective_run_config(matches.subcommand_matches("run").unwrap())
    }

    #[test]
    fn every_flag_appears_with_its_source_and_no_group_does() {
        let v = config_of(&[
            "vipd",
            "run",
            "--apps",
            "/a.json",
            "--connect-timeout",
            "750ms",
            "--log-level",
            "debug",
        ]);
        assert_eq!(
            v["connect_timeout"],
            json!({"value": "750ms", "source": "command_line"})
        );
        assert_eq!(
            v["vip_cidr"],
            json!({"value": "11.0.0.0/8", "source": "default"})
        );
        assert_eq!(
            v["log_level"],
            json!({"value": "debug", "source": "command_line"})
        );
        // Unset flags are listed, with a null value.
        assert_eq!(v["max_lifetime"], json!({"value": null, "source": "unset"}));
        assert_eq!(v["marathon_password"]["source"], "unset");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        for internal in ["AdminArgs", "DnsArgs", "TableOptionArgs", "RunArgs", "help"] {
            assert!(
                !keys.iter().any(|k| *k == internal),
                "{internal} in {keys:?}"
            );
        }
        assert!(
            keys.iter().all(|k| k
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')),
            "{keys:?}"
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let v = config_of(&[
            "vipd",
            "run",
            "--marathon",
            "http://bob:urlpass@m1:8080",
            "--marathon-user",
            "u",
            "--marathon-password",
            "flagpass",
        ]);
        let text = v.to_string();
        assert!(
            !text.contains("urlpass") && !text.contains("flagpass"),
            "{text}"
        );
        assert_eq!(v["marathon_password"]["value"], "<redacted>");
    }
}
