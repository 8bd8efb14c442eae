//! A Kerberos login tried before the ZooKeeper session: the sidecar's own
//! credential (from its keytab, or the ticket cache) and a service ticket
//! for every member (`<service-name>@<host>`, as zookeeper-client's GSSAPI
//! asks for it). zookeeper-client retries a failed SASL start until its
//! connect times out and reports only the timeout; trying first turns a
//! stale keytab, an empty ticket cache or an unknown server principal
//! into an error that names them, at start, without retrying.

use libgssapi::context::{ClientCtx, CtxFlags};
use libgssapi::credential::{Cred, CredUsage};
use libgssapi::name::Name;
use libgssapi::oid::{GSS_MECH_KRB5, GSS_NT_HOSTBASED_SERVICE, OidSet};

/// What became of the trial login.
pub enum Trial {
    Ok,
    /// The KDC could not be reached: worth another try.
    Unreachable(String),
    /// Refused: the credential, the principal or the ticket is wrong.
    Refused(String),
}

/// Tries the login for every host of `quorum` (`host:port,...`). Blocking:
/// it talks to the KDC; run it off the async threads.
pub fn try_login(service: &str, quorum: &str) -> Trial {
    let mut hosts: Vec<&str> = quorum
        .split(',')
        .filter_map(|hp| hp.rsplit_once(':').map(|(h, _)| h))
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    for host in hosts {
        let cred = match credential() {
            Ok(c) => c,
            Err(e) => return classify(format!("cannot get the sidecar's own ticket: {e}")),
        };
        if let Err(e) = service_ticket(cred, service, host) {
            return classify(format!("the login to {service}/{host} failed: {e}"));
        }
    }
    Trial::Ok
}

fn credential() -> Result<Cred, libgssapi::error::Error> {
    let mut mechs = OidSet::new()?;
    mechs.add(&GSS_MECH_KRB5)?;
    Cred::acquire(None, None, CredUsage::Initiate, Some(&mechs))
}

fn service_ticket(cred: Cred, service: &str, host: &str) -> Result<(), libgssapi::error::Error> {
    let target = Name::new(
        format!("{service}@{host}").as_bytes(),
        Some(&GSS_NT_HOSTBASED_SERVICE),
    )?;
    let mut ctx = ClientCtx::new(
        Some(cred),
        target,
        CtxFlags::GSS_C_MUTUAL_FLAG,
        Some(&GSS_MECH_KRB5),
    );
    // The first step asks the KDC for the service ticket; the token it
    // makes is not sent anywhere.
    ctx.step(None, None).map(|_| ())
}

fn classify(message: String) -> Trial {
    let lower = message.to_ascii_lowercase();
    if lower.contains("cannot contact any kdc") || lower.contains("cannot find kdc") {
        Trial::Unreachable(message)
    } else {
        Trial::Refused(message)
    }
}
