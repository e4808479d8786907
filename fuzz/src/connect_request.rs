//! The gateway's tunnel port: a sidecar's HTTP/2 `CONNECT` parsed into a target
//! (`mesh_gateway::parse_connect`). The input is a request head as text: the first line is
//! `METHOD URI`, each further line `name: value` (bytes that the `http` crate refuses, as hyper
//! would, end the input there).

use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use mesh_core::names::{ServiceKey, check_label};
use mesh_core::wire::StreamHeader;
use mesh_gateway::parse_connect;

/// Parses `data` as a tunnel request; an accepted target must make a stream header that the
/// peer gateway decodes to the same target, and a refusal must become an HTTP answer.
pub fn connect_request(data: &[u8]) {
    let Some(req) = request(data) else { return };
    match parse_connect(&req) {
        Ok(target) => {
            assert!(check_label(&target.cluster).is_ok(), "{target:?}");
            assert!(target.trace.len() <= 255, "{target:?}");
            let service = target.service.to_string();
            assert_eq!(
                service.parse::<ServiceKey>().ok(),
                Some(target.service.clone())
            );
            let mut header = StreamHeader::tunnel(&target.cluster, &service, target.endpoint);
            header.trace = target.trace.clone();
            let bytes = header
                .encode()
                .expect("an accepted CONNECT fits a stream header");
            assert_eq!(StreamHeader::decode(&bytes), Ok(header));
        }
        Err(e) => {
            let rsp = e.response();
            assert!(rsp.status().is_client_error(), "{e}: {}", rsp.status());
        }
    }
}

fn request(data: &[u8]) -> Option<Request<()>> {
    let mut lines = data.split(|&b| b == b'\n');
    let first = lines.next()?;
    let space = first.iter().position(|&b| b == b' ')?;
    let method = Method::from_bytes(&first[..space]).ok()?;
    let uri = Uri::try_from(&first[space + 1..]).ok()?;
    let mut req = Request::builder().method(method).uri(uri);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            break;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            break;
        };
        req = req.header(name, value);
    }
    req.body(()).ok()
}
