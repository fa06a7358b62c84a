//! Who was on which machine, and when: Session Manager's own record of
//! sessions (DescribeSessions), with each target named the way sm-ssh names
//! it, and what it takes to end someone's session.
//!
//! - `listing`: the paged DescribeSessions query and one row per session;
//! - `names`: a session's target mapped back to its SageMaker host name;
//! - `denial`: the messages for a refused DescribeSessions or TerminateSession.

pub mod denial;
pub mod listing;
pub mod names;
