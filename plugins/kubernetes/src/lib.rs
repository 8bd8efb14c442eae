//! The Kubernetes backend: the leader record on Flink's ConfigMap
//! `<cluster-id>-cluster-config-map` (annotation
//! `control-plane.alpha.kubernetes.io/leader`, leader keys
//! `org.apache.flink.k8s.leader.<component>`), renewed and taken over with
//! resourceVersion compare-and-set, and the state in the same ConfigMap so
//! that fenced writes are atomic with the leadership check. All through the
//! host's `kubernetes` capability.
//!
//! Why a ConfigMap and not a Lease: a Lease holds only the lock fields, so
//! the state would live in another object and a fenced write could not be
//! checked atomically against the record; Flink's own tools (the operator,
//! people reading `kubectl get cm`) also look for this ConfigMap.
//!
//! Before it campaigns or answers who leads, the plugin checks that the API
//! server allows what the recipe needs (`access.rs`): at configure, so a
//! sidecar without them stops at start with the API server's message.
//!
//! Settings: `cluster-id` (Flink's `kubernetes.cluster-id`, default
//! `default`), `components` (leader keys to publish the address under,
//! default `dispatcher,resourcemanager,restserver`).

mod access;
mod lease;
mod members;
mod object;
mod record;
mod store;

use std::time::Duration;

use ha_sidecar_sdk::settings::Settings;
use ha_sidecar_sdk::stateful::StatefulBackend;
use ha_sidecar_sdk::{Result, Setup, Term, Versioned, invalid, log};

use lease::Lease;
use members::Members;
use object::Object;

/// Flink's limit on `kubernetes.cluster-id` (Constants.MAXIMUM_CHARACTERS_OF_CLUSTER_ID).
const MAX_CLUSTER_ID: usize = 45;

struct Plugin {
    object: Object,
    lease: Lease,
    members: Members,
    /// The permission check could not be done at configure (the API server
    /// did not answer): done before the next campaign or leader call.
    unchecked: bool,
}

impl Plugin {
    /// Runs a check still owed; a refusal fails the call.
    fn checked(&mut self) -> Result<()> {
        if !self.unchecked {
            return Ok(());
        }
        let checked = access::check(&self.object);
        self.unchecked = matches!(checked, access::Checked::Unknown(_));
        match access::failure(checked, false) {
            Some(f) => {
                self.unchecked = true;
                Err(f)
            }
            None => Ok(()),
        }
    }
}

fn configure(setup: Setup) -> Result<Plugin> {
    let s = Settings::new("kubernetes", setup.settings, &["cluster-id", "components"])?;
    let cluster_id = s.string_or("cluster-id", "default");
    // The ConfigMap's name must be a DNS subdomain, so unlike Flink we
    // cannot accept upper case or '_'.
    let ok = !cluster_id.is_empty()
        && cluster_id.len() <= MAX_CLUSTER_ID
        && cluster_id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
        && cluster_id.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        return Err(invalid(format!(
            "plugin.settings.cluster-id: {cluster_id:?} must be 1 to {MAX_CLUSTER_ID} lower case letters, digits, '-' and '.', starting with a letter or digit (it names the ConfigMap <cluster-id>-cluster-config-map)"
        )));
    }
    let components: Vec<String> = s
        .string_or("components", "dispatcher,resourcemanager,restserver")
        .split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if let Some(bad) = components.iter().find(|c| {
        !c.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
    }) {
        return Err(invalid(format!(
            "plugin.settings.components: {bad:?} is not a component name (A-Z a-z 0-9 - _ .)"
        )));
    }
    let lease = Duration::from_millis(setup.timing.lease_ms.into());
    let object = Object::new(&cluster_id);
    let checked = access::check(&object);
    let unchecked = match &checked {
        access::Checked::Unknown(why) => {
            log::warn(&format!(
                "cannot check the permissions on configmap {} yet ({why}); checking before campaigning",
                object.name
            ));
            true
        }
        _ => false,
    };
    if let Some(refused) = access::failure(checked, true) {
        return Err(refused);
    }
    Ok(Plugin {
        object,
        members: Members::new(setup.me.clone(), lease),
        lease: Lease::new(setup.me, setup.session, lease, components),
        unchecked,
    })
}

impl StatefulBackend for Plugin {
    fn configure(setup: Setup) -> Result<Self> {
        configure(setup)
    }

    fn campaign(&mut self, wait: Duration) -> Result<Option<Term>> {
        self.checked()?;
        if let Err(e) = self.members.announce(&self.object, false) {
            log::warn(&format!("could not update the member record: {e:?}"));
        }
        self.lease.campaign(&self.object, wait)
    }

    fn keep(&mut self, term: Term) -> Result<()> {
        self.lease.keep(&self.object, &term)?;
        // Member records are for people: failing to write one must not cost
        // the leadership the renewal above just proved.
        if let Err(e) = self.members.announce(&self.object, true) {
            log::warn(&format!("could not update the member records: {e:?}"));
        }
        Ok(())
    }

    fn resign(&mut self, term: Term) -> Result<()> {
        self.lease.resign(&self.object, &term)
    }

    fn leader(&mut self, known: Option<u64>, wait: Duration) -> Result<Option<Term>> {
        self.checked()?;
        self.lease.leader(&self.object, known, wait)
    }

    fn get(&mut self, key: &str) -> Result<Option<Versioned>> {
        store::get(&self.object, key)
    }

    fn put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        expected: Option<u64>,
        fence: Option<u64>,
    ) -> Result<u64> {
        store::write(&self.object, key, Some(&value), expected, fence)
    }

    fn delete(&mut self, key: &str, expected: Option<u64>, fence: Option<u64>) -> Result<()> {
        store::write(&self.object, key, None, expected, fence).map(drop)
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<String>> {
        store::list(&self.object, prefix)
    }

    fn members(&mut self) -> Result<Vec<ha_sidecar_sdk::Candidate>> {
        let cm = self.object.get()?;
        let leader = cm
            .as_ref()
            .and_then(record::Leadership::read)
            .filter(|l| !l.is_released())
            .map(|l| l.holder.id);
        Ok(Members::list(cm.as_ref(), leader.as_deref()))
    }

    fn hand_over(&mut self, term: Term, to: &str) -> Result<()> {
        let members = &self.members;
        self.lease.hand_over(&self.object, &term, to, |cm| {
            members.check_successor(cm, to)
        })
    }
}

ha_sidecar_sdk::export_backend!(Plugin);
