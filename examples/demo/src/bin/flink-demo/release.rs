//! Which Flink the demo runs: each release line the plugin has a jar for
//! names its distribution's variable, its `flink-dist` jar, the plugin's jar
//! and the counting job built against it. Everything else (the
//! configuration keys, the scripts, the REST API the demo asks) is the same
//! in 1.20 and 2.3, so the rest of the demo does not branch on the version.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Release {
    /// Flink 2.3.0, `FLINK_HOME` (the default).
    V2_3,
    /// Flink 1.20.3, the 1.x LTS, `FLINK_1_20_HOME`.
    V1_20,
}

impl Release {
    pub fn parse(v: &str) -> anyhow::Result<Release> {
        match v {
            "2.3" => Ok(Release::V2_3),
            "1.20" => Ok(Release::V1_20),
            _ => bail!("--flink {v:?}: the plugin has jars for Flink 2.3 and 1.20"),
        }
    }

    /// The release line, as in the plugin's jar name.
    pub fn line(self) -> &'static str {
        match self {
            Release::V2_3 => "2.3",
            Release::V1_20 => "1.20",
        }
    }

    /// The exact release the demo is built and tested with.
    pub fn version(self) -> &'static str {
        match self {
            Release::V2_3 => "2.3.0",
            Release::V1_20 => "1.20.3",
        }
    }

    /// The variable that names this release's distribution.
    pub fn home_var(self) -> &'static str {
        match self {
            Release::V2_3 => "FLINK_HOME",
            Release::V1_20 => "FLINK_1_20_HOME",
        }
    }

    /// The plugin's jar for this release (`clients/flink/build.sh`).
    pub fn plugin_jar(self, root: &Path) -> PathBuf {
        root.join(format!(
            "clients/flink/build/ha-sidecar-flink-{}.jar",
            self.line()
        ))
    }

    /// The counting job built against this release (`examples/flink/job/build.sh`).
    pub fn job_jar(self, root: &Path) -> PathBuf {
        root.join(match self {
            Release::V2_3 => "examples/flink/job/build/count-forever.jar".to_string(),
            Release::V1_20 => format!("examples/flink/job/build/count-forever-{}.jar", self.line()),
        })
    }

    /// The distribution from the environment, checked to be this release.
    pub fn home(self) -> anyhow::Result<PathBuf> {
        let var = self.home_var();
        let home = PathBuf::from(std::env::var_os(var).with_context(|| {
            format!(
                "{var} is not set: point it at a Flink {} distribution ({})",
                self.version(),
                self.install_hint()
            )
        })?);
        let dist = format!("flink-dist-{}.jar", self.version());
        if !home.join("lib").join(&dist).is_file() {
            bail!(
                "{var}={} holds no lib/{dist}: it must be a Flink {} distribution ({})",
                home.display(),
                self.version(),
                self.install_hint()
            );
        }
        Ok(home)
    }

    fn install_hint(self) -> String {
        format!("{} installs one from PyPI", self.demo_command())
    }

    /// The README's command that builds and runs the demo on this release.
    pub fn demo_command(self) -> &'static str {
        match self {
            Release::V2_3 => "./scripts/demo.sh",
            Release::V1_20 => "./scripts/demo.sh --flink 1.20",
        }
    }
}
