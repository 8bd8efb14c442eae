//! `capabilities.kubernetes`: how the sidecar reaches the API server. The
//! credentials come from the pod's service account (no `kubeconfig`) or a
//! kubeconfig file; the plugin never sees them.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::api::KubeSettings;
use crate::capabilities::SectionContext;
use crate::section::{ConfigError, Dur};

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawKubernetes {
    /// A kubeconfig file; absent: the pod's service account.
    kubeconfig: Option<PathBuf>,
    /// A context of that file other than its current one.
    context: Option<String>,
    /// Absent: the kubeconfig context's namespace, or the pod's own.
    namespace: Option<String>,
    /// Bound of every request (default: half the renew deadline).
    request_timeout: Option<Dur>,
}

/// Checks the section; the credentials themselves are read when the plugin
/// is loaded (see `api::KubeApi::new`).
pub(super) fn validate(
    k: RawKubernetes,
    cx: &SectionContext<'_>,
) -> Result<KubeSettings, ConfigError> {
    let (keys, timing) = (cx.keys, cx.timing);
    let kubeconfig = k.kubeconfig.map(|p| keys.resolve(&p));
    if let Some(p) = &kubeconfig
        && !p.is_file()
    {
        return Err(keys.err(
            "capabilities.kubernetes.kubeconfig",
            p.display(),
            "no such file; leave the key out inside a pod (the service account is used), or fix the path (relative paths start at the config file's directory)",
        ));
    }
    if k.context.is_some() && kubeconfig.is_none() {
        return Err(keys.err(
            "capabilities.kubernetes.context",
            format!("{:?}", k.context.unwrap_or_default()),
            "needs capabilities.kubernetes.kubeconfig: a context names a part of a kubeconfig file",
        ));
    }
    if let Some(ns) = &k.namespace {
        let ok = !ns.is_empty()
            && ns.len() <= 63
            && ns
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !ns.starts_with('-')
            && !ns.ends_with('-');
        if !ok {
            return Err(keys.err(
                "capabilities.kubernetes.namespace",
                format!("{ns:?}"),
                "must be a namespace name: 1 to 63 lower case letters, digits and '-'",
            ));
        }
    }
    // client-go bounds requests by half the renew deadline for the same
    // reason: a leader needs more than one try before it must step down.
    let request_timeout = k.request_timeout.map_or(timing.renew_deadline / 2, |d| d.0);
    if request_timeout < Duration::from_millis(10) || request_timeout >= timing.renew_deadline {
        return Err(keys.err(
            "capabilities.kubernetes.request-timeout",
            Dur(request_timeout),
            format!(
                "must be at least 10ms and shorter than timing.renew-deadline ({}), so that one request that hangs cannot by itself cost the leadership; half the renew deadline is a good value",
                Dur(timing.renew_deadline)
            ),
        ));
    }
    Ok(KubeSettings {
        kubeconfig,
        context: k.context,
        namespace: k.namespace,
        request_timeout,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::capabilities::Capability;
    use crate::capabilities::kubernetes::Kubernetes;
    use crate::section::{Keys, Timing};

    fn parse(dir: &Path, kubernetes: &str) -> Result<KubeSettings, ConfigError> {
        let path = dir.join("c.yaml");
        let text = format!("capabilities: {{kubernetes: {kubernetes}}}\n");
        let keys = Keys {
            path: &path,
            text: &text,
            base: dir,
        };
        let timing = Timing {
            lease: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            resign_holdoff: Duration::from_secs(15),
        };
        let cx = SectionContext {
            keys: &keys,
            timing: &timing,
            flink: None,
        };
        let settings = Kubernetes.parse(&cx)?.expect("granted");
        let any: &dyn std::any::Any = &*settings;
        Ok(any.downcast_ref::<KubeSettings>().unwrap().clone())
    }

    #[test]
    fn defaults_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let k = parse(dir.path(), "{}").unwrap();
        assert_eq!(k.kubeconfig, None, "in-cluster by default");
        assert_eq!(
            k.request_timeout,
            Duration::from_secs(5),
            "half the renew deadline"
        );

        std::fs::write(dir.path().join("kc"), "apiVersion: v1\nkind: Config\n").unwrap();
        let k = parse(
            dir.path(),
            "{kubeconfig: kc, namespace: flink, request-timeout: 3s}",
        )
        .unwrap();
        assert_eq!(
            k.kubeconfig.as_deref(),
            Some(dir.path().join("kc").as_path())
        );
        assert_eq!(k.namespace.as_deref(), Some("flink"));

        for (bad, key) in [
            ("{kubeconfig: nope}", "capabilities.kubernetes.kubeconfig"),
            ("{namespace: Flink_1}", "capabilities.kubernetes.namespace"),
            (
                "{request-timeout: 10s}",
                "capabilities.kubernetes.request-timeout",
            ),
            ("{context: other}", "capabilities.kubernetes.context"),
            ("{server: x}", "server"),
        ] {
            let e = parse(dir.path(), bad).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }
}
