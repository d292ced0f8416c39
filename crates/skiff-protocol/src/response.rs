//! Response framing: size prefix, response header at the version the API requires, body.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Encodable;

use crate::messages::ResponseBody;

/// Encodes a whole response frame, size prefix included. ApiVersions always gets a v0 header
/// (the codec's header table already says so), whatever the body version.
pub fn encode_response(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: &ResponseBody,
) -> anyhow::Result<Bytes> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api_key.response_header_version(version);
    let mut buf = BytesMut::with_capacity(
        4 + header.compute_size(header_version)? + body.compute_size(version)?,
    );
    buf.put_i32(0);
    header.encode(&mut buf, header_version)?;
    body.encode(&mut buf, version)?;
    let size = i32::try_from(buf.len() - 4)?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_versions::api_versions_response;

    #[test]
    fn api_versions_v3_uses_a_v0_header() {
        let frame = encode_response(
            42,
            ApiKey::ApiVersions,
            3,
            &ResponseBody::ApiVersions(api_versions_response(0)),
        )
        .unwrap();
        assert_eq!(&frame[4..8], &42i32.to_be_bytes());
        // A v1 header would put a tagged-field count (0) here; the v0 header goes straight to the
        // body, whose first field is error_code 0 (two zero bytes) and then a compact array length.
        assert_eq!(&frame[8..10], &[0, 0]);
        assert_ne!(frame[10], 0);
    }
}
