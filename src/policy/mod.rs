//! The IAM side of SSH: the policy documents sm-ssh recommends (one source for
//! `sm-ssh policy` and `sm-ssh doctor`) and a local evaluator that tells
//! whether a set of policies grants a request.

pub mod attribution;
pub mod documents;
pub mod eval;
pub mod hyperpod;
pub mod native;
pub mod space;
