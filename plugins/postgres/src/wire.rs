//! One PostgreSQL connection over `std::net::TcpStream` (which a
//! `wasm32-wasip2` plugin gets through `wasi:sockets`, granted by
//! `capabilities.tcp`): startup, authentication (SCRAM-SHA-256, MD5 or
//! cleartext, as the server asks), and statements with parameters over the
//! extended query protocol. The messages are encoded and decoded by
//! `postgres-protocol`, the wire-format crate under the `postgres` and
//! `tokio-postgres` clients, which does no I/O of its own and so builds for
//! `wasm32-wasip2`; those clients need tokio's networking, which does not.
//! With `sslmode: verify-full` the stream is TLS over that socket (see [`crate::tls`]).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::IsNull;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::{DataRowBody, ErrorResponseBody, Message};
use postgres_protocol::message::frontend;

use crate::tls::Stream;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    pub timeout: Duration,
    /// TLS, verified against this config's roots (none: plain TCP).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Why a statement failed.
#[derive(Debug)]
pub enum Error {
    /// The connection broke or timed out: it is unusable now, and a write in
    /// flight may or may not have committed.
    Io(String),
    /// The server refused the statement (its SQLSTATE and message); the
    /// connection is still usable.
    Server { code: String, message: String },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(m) => f.write_str(m),
            Error::Server { code, message } => write!(f, "{message} (SQLSTATE {code})"),
        }
    }
}

/// A parameter in binary format: PostgreSQL's `text`, `bytea` or `int8`.
pub enum Param<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
    Int(i64),
}

impl Param<'_> {
    fn oid(&self) -> u32 {
        match self {
            Param::Text(_) => 25,
            Param::Bytes(_) => 17,
            Param::Int(_) => 20,
        }
    }
}

/// One result row, columns in binary format (none: SQL NULL).
pub type Row = Vec<Option<Vec<u8>>>;

/// A column as `int8`.
pub fn int(col: &Option<Vec<u8>>) -> Option<i64> {
    let b: [u8; 8] = col.as_deref()?.try_into().ok()?;
    Some(i64::from_be_bytes(b))
}

pub struct Connection {
    stream: Stream,
    inbox: BytesMut,
}

fn io_err(what: &str, target: &Target, e: impl std::fmt::Display) -> Error {
    Error::Io(format!("{what} {}:{}: {e}", target.host, target.port))
}

impl Connection {
    /// Connects and authenticates with `password`.
    pub fn open(target: &Target, password: &str) -> Result<Self, Error> {
        let stream = TcpStream::connect((target.host.as_str(), target.port)).map_err(|e| {
            if e.kind() == io::ErrorKind::PermissionDenied {
                io_err(
                    "the sidecar refused a connection to",
                    target,
                    "the address is not listed in capabilities.tcp.endpoints",
                )
            } else {
                io_err("cannot connect to", target, e)
            }
        })?;
        // Bounded reads and writes, so a server that stops answering fails
        // the plugin call instead of holding it.
        let _ = stream.set_read_timeout(Some(target.timeout));
        let _ = stream.set_write_timeout(Some(target.timeout));
        let _ = stream.set_nodelay(true);
        let stream = match &target.tls {
            Some(config) => Stream::upgrade(stream, config.clone(), &target.host)
                .map_err(|e| io_err("TLS to", target, e))?,
            None => Stream::Plain(stream),
        };
        let mut c = Self {
            stream,
            inbox: BytesMut::with_capacity(8192),
        };
        c.startup(target, password)?;
        Ok(c)
    }

    fn send(&mut self, buf: &[u8]) -> Result<(), Error> {
        self.stream
            .write_all(buf)
            .map_err(|e| Error::Io(format!("writing to PostgreSQL: {e}")))
    }

    fn next(&mut self) -> Result<Message, Error> {
        loop {
            if let Some(m) = Message::parse(&mut self.inbox)
                .map_err(|e| Error::Io(format!("a malformed message from PostgreSQL: {e}")))?
            {
                return Ok(m);
            }
            let mut chunk = [0u8; 8192];
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| Error::Io(format!("reading from PostgreSQL: {e}")))?;
            if n == 0 {
                return Err(Error::Io("PostgreSQL closed the connection".into()));
            }
            self.inbox.extend_from_slice(&chunk[..n]);
        }
    }

    fn startup(&mut self, target: &Target, password: &str) -> Result<(), Error> {
        let enc = |e: io::Error| Error::Io(format!("encoding a message: {e}"));
        let mut buf = BytesMut::new();
        frontend::startup_message(
            [
                ("user", target.user.as_str()),
                ("database", target.database.as_str()),
                ("application_name", "ha-sidecar"),
                ("client_encoding", "UTF8"),
            ],
            &mut buf,
        )
        .map_err(enc)?;
        self.send(&buf)?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            buf.clear();
            match self.next()? {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password.as_bytes(), &mut buf).map_err(enc)?;
                    self.send(&buf)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(target.user.as_bytes(), password.as_bytes(), body.salt());
                    frontend::password_message(hash.as_bytes(), &mut buf).map_err(enc)?;
                    self.send(&buf)?;
                }
                Message::AuthenticationSasl(body) => {
                    let offered: Vec<String> = body
                        .mechanisms()
                        .map(|m| Ok(m.to_string()))
                        .collect()
                        .map_err(enc)?;
                    if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                        return Err(Error::Io(format!(
                            "PostgreSQL offers SASL mechanisms {offered:?}; this plugin speaks only {SCRAM_SHA_256} (without channel binding)"
                        )));
                    }
                    let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut buf)
                        .map_err(enc)?;
                    self.send(&buf)?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| Error::Io("SASL continue before SASL start".into()))?;
                    s.update(body.data())
                        .map_err(|e| Error::Io(format!("SCRAM-SHA-256: {e}")))?;
                    frontend::sasl_response(s.message(), &mut buf).map_err(enc)?;
                    self.send(&buf)?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| Error::Io("SASL final before SASL start".into()))?;
                    s.finish(body.data()).map_err(|e| {
                        Error::Io(format!(
                            "SCRAM-SHA-256: the server's proof does not verify ({e})"
                        ))
                    })?;
                }
                Message::ErrorResponse(body) => {
                    let e = server_error(&body);
                    return Err(Error::Io(format!(
                        "PostgreSQL refused the login of {} to database {}: {e}",
                        target.user, target.database
                    )));
                }
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ParameterStatus(_)
                | Message::BackendKeyData(_)
                | Message::NoticeResponse(_) => {}
                _ => {
                    return Err(Error::Io(
                        "PostgreSQL asked for an authentication method this plugin does not speak (it speaks SCRAM-SHA-256, MD5 and password)".into(),
                    ));
                }
            }
        }
    }

    /// Runs one statement with `params` and returns its rows (all columns
    /// in binary format).
    pub fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, Error> {
        let enc = |e: &dyn std::fmt::Display| Error::Io(format!("encoding a message: {e}"));
        let mut buf = BytesMut::new();
        frontend::parse("", sql, params.iter().map(Param::oid), &mut buf).map_err(|e| enc(&e))?;
        frontend::bind(
            "",
            "",
            params.iter().map(|_| 1i16),
            params,
            |p, out| {
                match p {
                    Param::Text(s) => out.extend_from_slice(s.as_bytes()),
                    Param::Bytes(b) => out.extend_from_slice(b),
                    Param::Int(i) => out.extend_from_slice(&i.to_be_bytes()),
                }
                Ok(IsNull::No)
            },
            [1i16],
            &mut buf,
        )
        .map_err(|e| match e {
            frontend::BindError::Conversion(e) => enc(&e),
            frontend::BindError::Serialization(e) => enc(&e),
        })?;
        frontend::execute("", 0, &mut buf).map_err(|e| enc(&e))?;
        frontend::sync(&mut buf);
        self.send(&buf)?;
        let mut rows = Vec::new();
        let mut failed = None;
        loop {
            match self.next()? {
                Message::DataRow(body) => rows.push(row(&body)?),
                Message::ErrorResponse(body) => failed = Some(server_error(&body)),
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// Runs statements without parameters (simple query protocol).
    pub fn batch(&mut self, sql: &str) -> Result<(), Error> {
        let mut buf = BytesMut::new();
        frontend::query(sql, &mut buf).map_err(|e| Error::Io(format!("encoding a query: {e}")))?;
        self.send(&buf)?;
        let mut failed = None;
        loop {
            match self.next()? {
                Message::ErrorResponse(body) => failed = Some(server_error(&body)),
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut buf = BytesMut::new();
        frontend::terminate(&mut buf);
        let _ = self.stream.write_all(&buf);
    }
}

fn row(body: &DataRowBody) -> Result<Row, Error> {
    let buffer = body.buffer();
    body.ranges()
        .map(|r| Ok(r.map(|r| buffer[r].to_vec())))
        .collect()
        .map_err(|e| Error::Io(format!("a malformed row from PostgreSQL: {e}")))
}

fn server_error(body: &ErrorResponseBody) -> Error {
    let mut code = String::new();
    let mut message = String::new();
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        match f.type_() {
            b'C' => code = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            _ => {}
        }
    }
    Error::Server { code, message }
}
