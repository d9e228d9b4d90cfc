//! `autoglm serve` as the edge worker of joint inference: the flags, and the environment a
//! KubeEdge Sedna `JointInferenceService` gives its edge worker (`BIG_MODEL_IP`,
//! `BIG_MODEL_PORT`, `HEM_NAME`, `HEM_PARAMETERS`, `LC_SERVER`, `WORKER_NAME`, `SERVICE_NAME`,
//! `NAMESPACE`, `LC_PERIOD`). A flag wins over the Sedna variable it replaces.

use autoglm_serve::{HardExampleRule, JointConfig, SednaEnv, ServeError};
use clap::{value_parser, Args};
use std::time::Duration;

/// Joint inference: hard examples go to a cloud `autoglm serve`.
#[derive(Args, Debug, Clone, Default)]
pub struct JointArgs {
    /// Send hard examples to this cloud service (`http://host:port`, another `autoglm serve`;
    /// its /v1/classify). Under Sedna: `http://$BIG_MODEL_IP:$BIG_MODEL_PORT`.
    #[arg(long, env = "AUTOGLM_ESCALATE_TO", value_name = "URL")]
    pub escalate_to: Option<String>,
    /// Hard example: the top score is below P (Sedna's ThresholdFilter).
    #[arg(long, env = "AUTOGLM_ESCALATE_BELOW", value_name = "P",
          value_parser = parse_probability, conflicts_with = "escalate_entropy_above")]
    pub escalate_below: Option<f32>,
    /// Hard example: the normalised entropy (0 = certain, 1 = uniform) is above E (Sedna's
    /// CrossEntropyFilter with threshold_cross_entropy = 1 - E).
    #[arg(long, env = "AUTOGLM_ESCALATE_ENTROPY_ABOVE", value_name = "E",
          value_parser = parse_probability)]
    pub escalate_entropy_above: Option<f32>,
    /// The cloud model to ask (its default model if not given).
    #[arg(long, env = "AUTOGLM_ESCALATE_MODEL", value_name = "NAME")]
    pub escalate_model: Option<String>,
    /// Deadline of one cloud call, connecting included (ms); past it the local answer stands.
    #[arg(long, env = "AUTOGLM_ESCALATE_TIMEOUT_MS", default_value_t = 1000,
          value_parser = value_parser!(u64).range(1..=600_000))]
    pub escalate_timeout_ms: u64,
    /// Cloud calls in flight at most; hard examples past it are answered locally.
    #[arg(long, env = "AUTOGLM_ESCALATE_MAX_IN_FLIGHT", default_value_t = 16,
          value_parser = value_parser!(u64).range(1..=4096))]
    pub escalate_max_in_flight: u64,
    /// Consecutive failed cloud calls that open the circuit breaker.
    #[arg(long, env = "AUTOGLM_ESCALATE_BREAKER_FAILURES", default_value_t = 5,
          value_parser = value_parser!(u32).range(1..))]
    pub escalate_breaker_failures: u32,
    /// How long an open circuit sends nothing to the cloud before one trial call (ms).
    #[arg(
        long,
        env = "AUTOGLM_ESCALATE_BREAKER_COOLDOWN_MS",
        default_value_t = 10_000
    )]
    pub escalate_breaker_cooldown_ms: u64,
    /// File holding the cloud's bearer token (its --auth-token-file), sent with each call.
    #[arg(long, env = "AUTOGLM_ESCALATE_TOKEN_FILE", value_name = "PATH")]
    pub escalate_token_file: Option<std::path::PathBuf>,
}

fn parse_probability(s: &str) -> Result<f32, String> {
    autoglm_serve::joint_probability(s)
}

impl JointArgs {
    /// The joint-inference configuration from the flags and the Sedna variables read through
    /// `get`; `None` when neither names a cloud. A cloud without a hard-example rule, or a rule
    /// without a cloud, is an error (it would silently never escalate).
    pub fn config(
        &self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<JointConfig>, ServeError> {
        let sedna = SednaEnv::read(get)?;
        let cloud = self.escalate_to.clone().or(sedna.cloud);
        let flag_rule = match (self.escalate_below, self.escalate_entropy_above) {
            (Some(p), _) => Some(HardExampleRule::TopScoreBelow(p)),
            (None, Some(e)) => Some(HardExampleRule::ConfidenceBelow(1.0 - e)),
            (None, None) => None,
        };
        let rule = flag_rule.or(sedna.rule);
        let Some(cloud) = cloud else {
            if rule.is_some() || sedna.report.is_some() {
                return Err(ServeError::Config(
                    "a hard-example rule or LC_SERVER is set but no cloud: give --escalate-to \
                     (or BIG_MODEL_IP)"
                        .into(),
                ));
            }
            return Ok(None);
        };
        let Some(rule) = rule else {
            return Err(ServeError::Config(
                "a cloud is set but no hard-example rule: give --escalate-below P or \
                 --escalate-entropy-above E (or HEM_NAME)"
                    .into(),
            ));
        };
        let mut config = JointConfig::new(cloud, rule);
        config.cloud_model = self.escalate_model.clone();
        config.timeout = Duration::from_millis(self.escalate_timeout_ms);
        config.max_in_flight = self.escalate_max_in_flight as usize;
        config.breaker_failures = self.escalate_breaker_failures;
        config.breaker_cooldown = Duration::from_millis(self.escalate_breaker_cooldown_ms);
        config.report = sedna.report;
        config.cloud_token = self
            .escalate_token_file
            .as_deref()
            .map(autoglm_serve::read_cloud_token_file)
            .transpose()?;
        Ok(Some(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        joint: JointArgs,
    }

    fn config(args: &[&str], env: &[(&str, &str)]) -> Result<Option<JointConfig>, String> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        cli.joint
            .config(|k| env.get(k).cloned())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn flags_and_sedna_variables_make_the_joint_configuration() {
        assert_eq!(config(&[], &[]), Ok(None));
        let c = config(
            &[
                "--escalate-to",
                "http://cloud:8080",
                "--escalate-below",
                "0.8",
            ],
            &[],
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.cloud, "http://cloud:8080");
        assert_eq!(c.rule, HardExampleRule::TopScoreBelow(0.8));
        assert_eq!(c.timeout, Duration::from_millis(1000));
        assert!(c.report.is_none());
        let c = config(
            &[
                "--escalate-to",
                "http://c",
                "--escalate-entropy-above",
                "0.25",
            ],
            &[],
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.rule, HardExampleRule::ConfidenceBelow(0.75));
        // Sedna alone.
        let sedna = [
            ("BIG_MODEL_IP", "10.1.2.3"),
            ("HEM_NAME", "ThresholdFilter"),
            ("HEM_PARAMETERS", r#"[{"key":"threshold","value":"0.9"}]"#),
            ("LC_SERVER", "http://127.0.0.1:9100"),
            ("WORKER_NAME", "edgeworker-x1"),
        ];
        let c = config(&[], &sedna).unwrap().unwrap();
        assert_eq!(c.cloud, "http://10.1.2.3:5000");
        assert_eq!(c.rule, HardExampleRule::TopScoreBelow(0.9));
        assert_eq!(c.report.unwrap().worker_name, "edgeworker-x1");
        // Flags win.
        let c = config(
            &["--escalate-to", "http://other:1", "--escalate-below", "0.6"],
            &sedna,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.cloud.as_str(), c.rule),
            ("http://other:1", HardExampleRule::TopScoreBelow(0.6))
        );
    }

    #[test]
    fn half_configurations_and_bad_values_are_refused() {
        for (args, env, expect) in [
            (
                &["--escalate-to", "http://c"][..],
                &[][..],
                "no hard-example rule",
            ),
            (&["--escalate-below", "0.5"][..], &[][..], "no cloud"),
            (&[][..], &[("HEM_NAME", "Threshold")][..], "no cloud"),
            (&["--escalate-below", "1.5"][..], &[][..], "between 0 and 1"),
            (&["--escalate-below", "x"][..], &[][..], "not a number"),
            (
                &["--escalate-below", "0.5", "--escalate-entropy-above", "0.5"][..],
                &[][..],
                "cannot be used with",
            ),
            (&["--escalate-timeout-ms", "0"][..], &[][..], "0"),
            (
                &[
                    "--escalate-to",
                    "http://c",
                    "--escalate-below",
                    "0.5",
                    "--escalate-token-file",
                    "/nonexistent/token",
                ][..],
                &[][..],
                "cloud token file /nonexistent/token",
            ),
            (
                &["--escalate-below", "0.5"][..],
                &[("BIG_MODEL_IP", "c"), ("BIG_MODEL_PORT", "http")][..],
                "BIG_MODEL_PORT",
            ),
        ] {
            let e = config(args, env).unwrap_err();
            assert!(e.contains(expect), "{args:?} {env:?}: {e}");
        }
    }
}
