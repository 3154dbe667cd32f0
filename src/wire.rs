//! What both plan codecs share (`promql::plan::codec` for PromQL operators,
//! `sql::codec` for SQL's): reading an operator's message from its bytes, and the round
//! trip a test or a distributed engine puts a whole physical plan through.

use std::sync::Arc;

use datafusion::common::{internal_datafusion_err, internal_err};
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion_proto::physical_plan::PhysicalExtensionCodec;

/// A message decoded from an operator's bytes; `what` names the operator in the error.
pub fn decode<M: prost::Message + Default>(buf: &[u8], what: &str) -> DfResult<M> {
    M::decode(buf).map_err(|e| internal_datafusion_err!("{what}: {e}"))
}

/// `plan` written to bytes with `codec` and read back; an error unless the copy displays
/// exactly as the original (so no operator lost a field on the way).
pub fn roundtrip(
    plan: Arc<dyn ExecutionPlan>,
    task: &TaskContext,
    codec: &dyn PhysicalExtensionCodec,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    use datafusion_proto::bytes::{
        physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
    };
    let bytes = physical_plan_to_bytes_with_extension_codec(plan.clone(), codec)?;
    let copy = physical_plan_from_bytes_with_extension_codec(&bytes, task, codec)?;
    let (a, b) = (
        displayable(plan.as_ref()).indent(true).to_string(),
        displayable(copy.as_ref()).indent(true).to_string(),
    );
    if a != b {
        return internal_err!("plan changed in its round trip:\n{a}\nbecame\n{b}");
    }
    Ok(copy)
}
