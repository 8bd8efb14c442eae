//! Reads the principals a Kerberos keytab holds (MIT's file format, version
//! 0x502, and the older 0x501), so that a keytab without a key for the
//! configured principal is a config error at start, naming both, rather
//! than a GSSAPI failure at the first connect.
//!
//! Only the names are read; the keys are skipped and never kept.

use std::collections::BTreeSet;

/// The principals (`primary/instance@REALM`) of the keytab `bytes`, in the
/// order of their first entry.
pub fn principals(bytes: &[u8]) -> Result<Vec<String>, String> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.u16_be()?;
    let (big_endian, v1) = match version {
        0x0502 => (true, false),
        0x0501 => (cfg!(target_endian = "big"), true),
        other => {
            return Err(format!(
                "not a keytab (starts with {other:#06x}, a keytab with 0x0502); make one with kadmin's ktadd or ktutil"
            ));
        }
    };
    let mut seen = BTreeSet::new();
    let mut names = Vec::new();
    while r.at < bytes.len() {
        let size = r.u32(big_endian)? as i32;
        if size < 0 {
            // A hole left by a removed entry.
            r.skip(size.unsigned_abs() as usize)?;
            continue;
        }
        let end = r.at + size as usize;
        let mut e = Reader {
            bytes: r.take(size as usize)?,
            at: 0,
        };
        let mut count = e.u16(big_endian)?;
        if v1 {
            // Version 1 counts the realm among the components.
            count = count.saturating_sub(1);
        }
        let realm = e.string(big_endian)?;
        let components = (0..count)
            .map(|_| e.string(big_endian))
            .collect::<Result<Vec<_>, _>>()?;
        let name = format!("{}@{realm}", components.join("/"));
        if seen.insert(name.clone()) {
            names.push(name);
        }
        r.at = end;
    }
    Ok(names)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "truncated keytab (an entry runs past byte {})",
                    self.bytes.len()
                )
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        self.take(n).map(|_| ())
    }

    fn u16_be(&mut self) -> Result<u16, String> {
        self.u16(true)
    }

    fn u16(&mut self, big_endian: bool) -> Result<u16, String> {
        let b: [u8; 2] = self.take(2)?.try_into().expect("two bytes");
        Ok(if big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32(&mut self, big_endian: bool) -> Result<u32, String> {
        let b: [u8; 4] = self.take(4)?.try_into().expect("four bytes");
        Ok(if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn string(&mut self, big_endian: bool) -> Result<String, String> {
        let n = self.u16(big_endian)? as usize;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One version-2 entry for `components@realm` with a 16-byte key.
    fn entry(realm: &str, components: &[&str]) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend((components.len() as u16).to_be_bytes());
        let counted = |e: &mut Vec<u8>, s: &str| {
            e.extend((s.len() as u16).to_be_bytes());
            e.extend(s.as_bytes());
        };
        counted(&mut e, realm);
        for c in components {
            counted(&mut e, c);
        }
        e.extend(1u32.to_be_bytes()); // name type: principal
        e.extend(0u32.to_be_bytes()); // timestamp
        e.push(2); // key version
        e.extend(17u16.to_be_bytes()); // aes128-cts
        e.extend(16u16.to_be_bytes());
        e.extend([7u8; 16]);
        let mut framed = (e.len() as u32).to_be_bytes().to_vec();
        framed.extend(e);
        framed
    }

    #[test]
    fn lists_each_principal_once_and_skips_holes() {
        let mut kt = vec![0x05, 0x02];
        kt.extend(entry("EXAMPLE.TEST", &["ha-sidecar", "jm-1"]));
        kt.extend((-6i32).to_be_bytes());
        kt.extend([0u8; 6]);
        kt.extend(entry("EXAMPLE.TEST", &["ha-sidecar", "jm-1"]));
        kt.extend(entry("EXAMPLE.TEST", &["other"]));
        assert_eq!(
            principals(&kt).unwrap(),
            ["ha-sidecar/jm-1@EXAMPLE.TEST", "other@EXAMPLE.TEST"]
        );
    }

    #[test]
    fn refuses_what_is_not_a_keytab_and_a_truncated_one() {
        let err = principals(b"-----BEGIN").unwrap_err();
        assert!(err.contains("not a keytab"), "{err}");
        let mut kt = vec![0x05, 0x02];
        let e = entry("R", &["p"]);
        kt.extend(&e[..e.len() - 3]);
        assert!(principals(&kt).unwrap_err().contains("truncated"));
    }
}
