//! Request decoding: header first, then the body at the version the header names, refusing
//! versions Skiff does not advertise before the body is touched.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;

use crate::api_versions::{supported_versions, MIN_DECODED_PRODUCE_VERSION};
use crate::messages::RequestBody;

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub header: RequestHeader,
    pub body: RequestBody,
}

impl Request {
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }

    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("request frame of {0} bytes is too short for a request header")]
    Truncated(usize),
    #[error("unknown API key {api_key}")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    #[error("{api_key:?} v{version} is not supported")]
    UnsupportedVersion {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
    },
    /// A request that is refused with a prepared response rather than by closing the
    /// connection (Produce v0-v2).
    #[error("{api_key:?} v{version} is refused")]
    Refused {
        api_key: ApiKey,
        version: i16,
        response: Bytes,
    },
    #[error("malformed {api_key:?} v{version} request: {reason}")]
    Malformed {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        reason: String,
    },
}

/// Decodes one request frame (without its size prefix).
pub fn decode_request(mut frame: Bytes) -> Result<Request, RequestError> {
    // api_key (2) + api_version (2) + correlation_id (4) are read by hand so that even a request
    // whose header cannot be decoded can be named in the error.
    if frame.len() < 8 {
        return Err(RequestError::Truncated(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|_| RequestError::UnknownApiKey {
        api_key: raw_key,
        correlation_id,
    })?;
    let unsupported = RequestError::UnsupportedVersion {
        api_key,
        version,
        correlation_id,
    };
    let (min, max) = supported_versions(api_key).ok_or(unsupported.clone())?;
    let decodable_min = if api_key == ApiKey::Produce {
        MIN_DECODED_PRODUCE_VERSION
    } else {
        min
    };
    if api_key == ApiKey::Produce && (min..decodable_min).contains(&version) {
        return Err(match crate::old_produce::refuse_old_produce(frame) {
            Some(response) => RequestError::Refused {
                api_key,
                version,
                response,
            },
            None => unsupported,
        });
    }
    if version < decodable_min || version > max {
        return Err(unsupported);
    }
    let malformed = |reason: String| RequestError::Malformed {
        api_key,
        version,
        correlation_id,
        reason,
    };
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(|e| malformed(format!("header: {e}")))?;
    let body = RequestBody::decode(api_key, &mut frame, version)
        .ok_or_else(|| unsupported.clone())?
        .map_err(|e| malformed(format!("body: {e}")))?;
    Ok(Request {
        api_key,
        header,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(key: i16, version: i16, correlation: i32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&key.to_be_bytes());
        v.extend_from_slice(&version.to_be_bytes());
        v.extend_from_slice(&correlation.to_be_bytes());
        v
    }

    #[test]
    fn unknown_key_and_version_are_named() {
        assert!(matches!(
            decode_request(Bytes::from(header_bytes(999, 0, 7))),
            Err(RequestError::UnknownApiKey {
                api_key: 999,
                correlation_id: 7
            })
        ));
        assert!(matches!(
            decode_request(Bytes::from(header_bytes(ApiKey::Fetch as i16, 99, 8))),
            Err(RequestError::UnsupportedVersion {
                version: 99,
                correlation_id: 8,
                ..
            })
        ));
        assert!(matches!(
            decode_request(Bytes::from(header_bytes(ApiKey::Produce as i16, 2, 9))),
            Err(RequestError::UnsupportedVersion { version: 2, .. })
        ));
        let mut old_produce = header_bytes(ApiKey::Produce as i16, 2, 9);
        old_produce.extend_from_slice(&[0xff, 0xff, 0, 1, 0, 0, 0, 10, 0, 0, 0, 0]);
        assert!(matches!(
            decode_request(Bytes::from(old_produce)),
            Err(RequestError::Refused { version: 2, .. })
        ));
        assert_eq!(
            decode_request(Bytes::from_static(&[0, 1])).unwrap_err(),
            RequestError::Truncated(2)
        );
    }

    #[test]
    fn huge_array_count_is_an_error_not_an_abort() {
        // Metadata v1: header (client id null) then a topics array claiming i32::MAX entries.
        let mut frame = header_bytes(ApiKey::Metadata as i16, 1, 1);
        frame.extend_from_slice(&(-1i16).to_be_bytes());
        frame.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            decode_request(Bytes::from(frame)),
            Err(RequestError::Malformed { .. })
        ));
    }
}
