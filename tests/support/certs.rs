// Certificates for the secure test servers, made with the `openssl` command
// line (Debian's openssl package): a CA, a server certificate for 127.0.0.1
// (usable as a client certificate too: etcd's gateway dials its own server
// with it), a client certificate, and a second CA that signed none of them.
// All P-256, valid two days. Include with
// `#[path = "support/certs.rs"] mod certs;` (plain comments: an included
// file cannot carry inner doc comments).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
    /// A CA that signed nothing here: trusting it must fail the handshake.
    pub fn other_ca(&self) -> PathBuf {
        self.dir.join("other-ca.pem")
    }

    /// The base64 body lines of the client's private key: what a log must
    /// never hold.
    pub fn client_key_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.client_key())
            .expect("read client.key")
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 16)
            .map(str::to_string)
            .collect()
    }

    /// Makes them all in `dir` (which must exist).
    pub fn make(dir: &Path) -> Certs {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("run openssl (install Debian's openssl package)");
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        for (key, pem, cn) in [
            ("ca.key", "ca.pem", "/CN=ha-sidecar test CA"),
            ("other-ca.key", "other-ca.pem", "/CN=another test CA"),
        ] {
            openssl(
                &[
                    &["req", "-x509"],
                    &ec[..],
                    &[
                        "-keyout",
                        key,
                        "-out",
                        pem,
                        "-days",
                        "2",
                        "-subj",
                        cn,
                        "-addext",
                        "basicConstraints=critical,CA:TRUE",
                        "-addext",
                        "keyUsage=critical,keyCertSign,cRLSign",
                    ],
                ]
                .concat(),
            );
        }
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
        )
        .expect("write server.ext");
        std::fs::write(
            dir.join("client.ext"),
            "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
        )
        .expect("write client.ext");
        for (name, cn) in [("server", "/CN=127.0.0.1"), ("client", "/CN=sidecar")] {
            let (key, csr, pem, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            openssl(
                &[
                    &["req"],
                    &ec[..],
                    &["-keyout", &key, "-out", &csr, "-subj", cn],
                ]
                .concat(),
            );
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        Certs { dir: dir.into() }
    }
}
