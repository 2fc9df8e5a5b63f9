//! The fake servers' shared part: reading one HTTP/1.1 request from a connection.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;

/// The request line and the body of the next request on `stream` (by its Content-Length);
/// `None` when the client closed the connection first.
pub fn read_request(stream: &TcpStream) -> Option<(String, Vec<u8>)> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() || first.is_empty() {
        return None;
    }
    let mut len = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((first, body))
}
