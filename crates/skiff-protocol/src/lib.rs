//! Kafka wire protocol for Skiff: length-prefixed framing, the table of API versions the broker
//! advertises, request decoding and response encoding.
//!
//! Message bodies are decoded and encoded by the `kafka-protocol` crate; this crate decides which
//! versions are accepted and turns every malformed or unsupported input into a precise error
//! instead of a panic or an unbounded allocation.

pub mod api_versions;
pub mod frame;
pub mod messages;
pub mod old_produce;
pub mod request;
pub mod response;

pub use api_versions::{api_versions_response, supported_versions, SUPPORTED_APIS};
pub use frame::{FrameDecoder, FrameError};
pub use messages::{RequestBody, ResponseBody};
pub use old_produce::refuse_old_produce;
pub use request::{decode_request, Request, RequestError};
pub use response::encode_response;
