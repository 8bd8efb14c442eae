pub fn f() { let _ = postgres_protocol::authentication::sasl::ScramSha256::new(b"x", postgres_protocol::authentication::sasl::ChannelBinding::unsupported()); }
