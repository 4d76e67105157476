//! Test users against real registrars (two Kamailio pools from Debian's packages):
//! registration under the redirect and authentication policy, interop between users of
//! both pools, and the endpoints against hostile registrars.

#[path = "../common/mod.rs"]
mod common;

mod calls;
mod endpoint_hostile;
mod group_im;
mod interop;
mod msrtc;
mod ntlm;
mod presence;
mod register;
mod trusted;
