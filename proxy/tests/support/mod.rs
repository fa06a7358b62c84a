#![allow(dead_code)] // each test binary uses a different part

pub mod agent;
pub mod ws_agent;
